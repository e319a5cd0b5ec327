"""Pure algorithms (no pipeline, no I/O): testable on their own, wrapped by operators."""
