"""dataflywheel: make LLM post-training data fewer, better and provably more valuable."""

__version__ = "0.1.0"
