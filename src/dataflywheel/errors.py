"""Errors that stop a run: no record is at fault, so nothing is rejected; the message names the fix."""

import errno


class RunError(RuntimeError):
    """A run that cannot start, continue or write its output; the message says what to do."""


class FatalError(RuntimeError):
    """Stops the run cleanly (manifest says why); ``flywheel run --resume`` continues once fixed."""


class DiskFullError(FatalError):
    """The disk (or quota) of the run directory is full: the run stops; ``--resume`` continues once there is
    space again (finished steps are kept)."""


def out_of_space(err: BaseException) -> bool:
    """Whether ``err`` is a full disk or an exhausted quota (the run stops; ``--resume`` continues once there is
    space again). Also recognised in the message of an error raised by a writer process."""
    return (isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)) \
        or "No space left on device" in str(err)
