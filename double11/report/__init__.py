"""The end-of-day report: the festival's figures next to the imitated year's."""

from double11.report.figures import Row, rows
from double11.report.render import html_report, text_report

__all__ = ["Row", "html_report", "rows", "text_report"]
