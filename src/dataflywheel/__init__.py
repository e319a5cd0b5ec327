"""dataflywheel: make LLM post-training data fewer, better and provably more valuable."""

__version__ = "0.1.0"


def run(*args, **kwargs):
    """Run a recipe from Python; see ``dataflywheel.api.run``."""
    from dataflywheel.api import run as _run

    return _run(*args, **kwargs)


run.__doc__ = "Run a recipe from Python (on rows or a datasets.Dataset); see dataflywheel.api.run."
