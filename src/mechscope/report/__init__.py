"""Reports: self-contained HTML pages of specimens (the web app renders with the same functions)."""

from .graph import graph_html, graph_svg
from .page import specimen_report, write_report

__all__ = ["graph_html", "graph_svg", "specimen_report", "write_report"]
