"""Text helpers shared by displays: one-line previews."""

from __future__ import annotations


def shorten(text: object, limit: int = 80) -> str:
    """`text` on one line (whitespace collapsed), cut to `limit` characters with an ellipsis."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
