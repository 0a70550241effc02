"""Human-facing views: the terminal (rich) and the self-contained HTML report."""

from textgraph.report import html, terminal

__all__ = ["html", "terminal"]
