"""Progress for a run: steps with ETA, and each evaluation's examples, on stderr.

Quiet when stderr is not a terminal or CI is set, unless asked (progress=True).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from textgraph.eval.evaluator import progress_enabled


class RunProgress:
    def __init__(self, enabled: bool | None, max_steps: int) -> None:
        self.enabled = progress_enabled(enabled)
        self.max_steps = max_steps
        self.progress: Any = None
        if self.enabled:
            from textgraph._progress import new_progress

            self.progress = new_progress(extra=True)
            self.steps = self.progress.add_task("steps", total=max_steps, rate="", info="")

    def __enter__(self) -> RunProgress:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def step(self, done: int, info: str) -> None:
        if self.progress is not None:
            self.progress.update(self.steps, completed=done, info=info)

    def evaluation(self, description: str) -> Callable[[int, int], None] | bool:
        """A progress callback for one evaluation (its own row, removed when done)."""
        if self.progress is None:
            return False
        progress = self.progress
        task = progress.add_task(f"  {description}", total=None, rate="", info="")
        started = time.perf_counter()

        def update(done: int, total: int) -> None:
            elapsed = time.perf_counter() - started
            rate = f"{done / elapsed:.1f} ex/s" if elapsed > 0 else ""
            progress.update(task, completed=done, total=total, rate=rate)
            if done >= total:
                progress.remove_task(task)

        return update
