"""Imports every built-in operator module so that each registers itself."""

from dataflywheel.ops.enhance import normalize  # noqa: F401
from dataflywheel.ops.select import exact_dedup, length_filter  # noqa: F401
from dataflywheel.ops.score import ifd  # noqa: F401
