"""The one rich progress layout: description, bar, done/total, rate, elapsed, ETA."""

from __future__ import annotations

from typing import Any


def new_progress(*, extra: bool = False, transient: bool = False) -> Any:
    """A rich Progress on stderr; tasks carry a `rate` field (and `info` when extra)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns: list[Any] = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    ]
    if extra:
        columns.append(TextColumn("{task.fields[info]}"))
    return Progress(*columns, console=Console(stderr=True), transient=transient)
