"""What a metric returns: a number, a bool, or a Score with feedback.

`feedback` is text explaining the score. Critic- and reflection-based
optimizers reuse it without another LLM call (GEPA's "feedback function").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from textgraph.errors import ArgumentError


@dataclass(frozen=True)
class Score:
    """`tg.Score(value, feedback=None)`: a metric's value and why."""

    value: float
    feedback: str | None = None

    def __post_init__(self) -> None:
        value = self.value
        if isinstance(value, bool):
            object.__setattr__(self, "value", float(value))
        elif not isinstance(value, (int, float)) or math.isnan(value):
            raise ArgumentError(
                f"Score(value) must be a number, got {value!r:.40} ({type(value).__name__})"
            )
        else:
            object.__setattr__(self, "value", float(value))
        if self.feedback is not None and not isinstance(self.feedback, str):
            raise ArgumentError(
                f"Score(feedback) must be a str or None, got {type(self.feedback).__name__}"
            )


def to_score(value: object, what: str) -> Score:
    """A metric's result as a Score, or a clear error naming `what` returned it."""
    if isinstance(value, Score):
        return value
    if isinstance(value, bool):
        return Score(float(value))
    if not isinstance(value, (int, float)) or math.isnan(value):
        raise ArgumentError(
            f"{what} returned {value!r:.40} ({type(value).__name__}); it must return a "
            "number such as 1.0 for correct and 0.0 for wrong, a bool, or "
            "tg.Score(value, feedback=...)."
        )
    return Score(float(value))


def as_score(value: object, what: str) -> float:
    """A metric's result as a float (bools count as 1.0 / 0.0), or a clear error."""
    return to_score(value, what).value
