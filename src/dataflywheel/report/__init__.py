"""The self-contained HTML run report."""

from dataflywheel.report.build import write_dataset_report, write_run_report

__all__ = ["write_dataset_report", "write_run_report"]
