"""Errors that stop a run: no record is at fault, so nothing is rejected; the message names the fix."""


class FatalError(RuntimeError):
    """Stops the run cleanly (manifest says why); ``flywheel run --resume`` continues once fixed."""
