"""A plugin that fails while it is imported (the recipe loader must name it, not crash)."""

raise RuntimeError("this plugin is broken on purpose")
