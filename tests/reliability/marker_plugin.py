"""A plugin for the security tests: importing it is visible (``IMPORTED``), and it registers one operator."""

from dataflywheel.ops import Filter, OpConfig, register

IMPORTED = True


@register
class Marker(Filter):
    """Keeps every record (exists to show that a plugin is imported only when a recipe lists it)."""

    name = "reliability.marker"
    Config = OpConfig

    def reject_reason(self, record):
        return None
