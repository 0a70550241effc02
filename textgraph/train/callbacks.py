"""Callbacks: how a tracker (MLflow, a dashboard, a log line) follows a Trainer run.

A callback is one small class with no-op methods to override. The Trainer calls them
in a fixed order: `on_start` when `fit()` begins; for each finished step,
`on_candidate` once per candidate the step considered (in the step record's order,
with its final status), then `on_step`; once per `fit()` call, `on_end` with the
result, or `on_error` when the fit raised instead.
A step's hooks run after it is checkpointed, so what a tracker sees is on disk too.

A callback that raises stops the run: its error is re-raised as a CallbackError naming
the callback and the hook (the cause chained), never swallowed. The step it saw was
already checkpointed, so `fit(resume=True)` continues from there once it is fixed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from textgraph.errors import ArgumentError, CallbackError

if TYPE_CHECKING:
    from textgraph.runs import CandidateRecord, StepRecord
    from textgraph.train.trainer import FitResult, Trainer

HOOKS = ("on_start", "on_step", "on_candidate", "on_end", "on_error")


class Callback:
    """Base class of Trainer callbacks; override the hooks you need.

    `trainer.run_dir` is the run directory (None without one); `trainer.optimizer`,
    `trainer.module` and the settings are attributes of the trainer.
    """

    def on_start(self, trainer: Trainer) -> None:
        """fit() begins (before the run directory is opened or anything is scored)."""

    def on_candidate(self, trainer: Trainer, step: StepRecord, record: CandidateRecord) -> None:
        """One candidate of a finished step: id, status, reason, val score, changes."""

    def on_step(self, trainer: Trainer, record: StepRecord) -> None:
        """A finished, checkpointed step: scores, decision, calls, tokens, cost, seconds."""

    def on_end(self, trainer: Trainer, result: FitResult) -> None:
        """The fit finished (also when it stopped early on a budget or patience)."""

    def on_error(self, trainer: Trainer, error: BaseException) -> None:
        """The fit raised `error` (re-raised after every callback's on_error)."""


def check_callbacks(callbacks: Sequence[Any] | None) -> list[Any]:
    """The callbacks as a list; a clear error for anything that is not one."""
    if callbacks is None:
        return []
    if isinstance(callbacks, (str, bytes)) or not isinstance(callbacks, Sequence):
        raise ArgumentError(
            f"callbacks must be a list of tg.Callback objects, got {type(callbacks).__name__}"
        )
    out = list(callbacks)
    for i, callback in enumerate(out):
        if isinstance(callback, type):
            raise ArgumentError(
                f"callbacks[{i}] is the class {callback.__name__}, not an instance: "
                f"pass {callback.__name__}()"
            )
        if not any(callable(getattr(callback, hook, None)) for hook in HOOKS):
            raise ArgumentError(
                f"callbacks[{i}] ({type(callback).__name__}) has none of the hooks "
                f"{', '.join(HOOKS)}; subclass tg.Callback and override the ones you need"
            )
    return out


def _call(callback: Any, hook: str, *args: Any) -> None:
    method = getattr(callback, hook, None)
    if method is None:
        return
    try:
        method(*args)
    except Exception as exc:
        raise CallbackError(
            f"callback {type(callback).__name__}.{hook} raised {type(exc).__name__}: {exc}. "
            "The run stopped here; fix the callback and resume (completed steps are "
            "checkpointed)"
        ) from exc


def notify_start(callbacks: Sequence[Any], trainer: Trainer) -> None:
    for callback in callbacks:
        _call(callback, "on_start", trainer)


def notify_step(callbacks: Sequence[Any], trainer: Trainer, record: StepRecord) -> None:
    for callback in callbacks:
        for candidate in record.candidates:
            _call(callback, "on_candidate", trainer, record, candidate)
        _call(callback, "on_step", trainer, record)


def notify_end(callbacks: Sequence[Any], trainer: Trainer, result: FitResult) -> None:
    for callback in callbacks:
        _call(callback, "on_end", trainer, result)


def notify_error(callbacks: Sequence[Any], trainer: Trainer, error: BaseException) -> None:
    """Every callback hears of the error; one that fails too adds a note, never hides it."""
    for callback in callbacks:
        method = getattr(callback, "on_error", None)
        if method is None:
            continue
        try:
            method(trainer, error)
        except Exception as exc:
            error.add_note(
                f"callback {type(callback).__name__}.on_error also raised "
                f"{type(exc).__name__}: {exc}"
            )
