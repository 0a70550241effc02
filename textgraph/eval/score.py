"""What a metric returns: a number, a bool, or a Score with feedback.

Any finite number is a score (ints, floats, numpy scalars; bools count as
1.0 / 0.0): scores are not limited to [0, 1] — `MetricLoss(perfect=...)`
and the gates compare values on whatever scale the metric uses. NaN, an
infinity, a str, None or any other object is a bug in the metric and raises
`ArgumentError` naming the metric and the example; it is never read as 0.

`feedback` is text explaining the score. Critic- and reflection-based
optimizers reuse it without another LLM call (GEPA's "feedback function").
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from textgraph.errors import ArgumentError


@dataclass(frozen=True)
class Score:
    """`tg.Score(value, feedback=None)`: a metric's value and why."""

    value: float
    feedback: str | None = None

    def __post_init__(self) -> None:
        value = _finite(self.value)
        if value is None:
            raise ArgumentError(
                f"Score(value) must be a number (a finite number, or a bool), got "
                f"{_shown(self.value)}"
            )
        object.__setattr__(self, "value", value)
        if self.feedback is not None and not isinstance(self.feedback, str):
            raise ArgumentError(
                f"Score(feedback) must be a str or None, got {type(self.feedback).__name__}"
            )


def _finite(value: object) -> float | None:
    """`value` as a float when it is a finite real number (or a bool), else None."""
    if isinstance(value, (bool, numbers.Real)) or type(value).__name__ == "bool_":
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError, OverflowError):
            return None
        return number if math.isfinite(number) else None
    return None


def _shown(value: object) -> str:
    return f"{value!r:.40} ({type(value).__name__})"


def to_score(value: object, what: str) -> Score:
    """A metric's result as a Score, or a clear error naming `what` returned it."""
    if isinstance(value, Score):
        return value
    number = _finite(value)
    if number is None:
        raise ArgumentError(
            f"{what} returned {_shown(value)}; a metric must return a number (a finite "
            "number, such as 1.0 for correct and 0.0 for wrong), a bool, or "
            "tg.Score(value, feedback=...). Fix the metric; textgraph never reads such a "
            "value as a score of 0."
        )
    return Score(number)


def as_score(value: object, what: str) -> float:
    """A metric's result as a float (bools count as 1.0 / 0.0), or a clear error."""
    return to_score(value, what).value
