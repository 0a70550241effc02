"""EvalResult: what one evaluation measured, example by example.

Field names are a contract (optimizers, gates, reports and the CLI read
them). A failed example is counted as failed, with its typed error; it is
never a silent 0.0, and the mean is over the scored examples only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from textgraph.variable import Variable


class ExampleError(BaseModel):
    """One failed example: its index, the exception type and message."""

    index: int
    type: str
    message: str
    stage: str = "program"  # program | metric

    @property
    def text(self) -> str:
        return f"{self.type}: {self.message}"

    def __str__(self) -> str:
        return f"example {self.index}: {self.stage} failed: {self.text}"


class ExampleOutcome(BaseModel):
    """One example under one set of values: kept so the same pair is never run twice."""

    score: float | None = None
    output: str | None = None
    feedback: str | None = None
    error: ExampleError | None = None
    calls: int = 0
    cached_calls: int = 0
    prompt_tokens: int = 0  # as sent, cached or not: the size of the prompt
    completion_tokens: int = 0
    cost_usd: float = 0.0  # priced as if uncached: what these values cost to run
    latency_s: float = 0.0


class Usage(BaseModel):
    calls: int = 0
    cached_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


@dataclass
class EvalResult:
    """Per-example scores, outputs, feedback and errors, with aggregates."""

    scores: list[float | None]
    outputs: list[str | None]
    feedback: list[str | None]
    errors: list[ExampleError]
    mean: float | None
    ci: tuple[float, float] | None
    n_scored: int
    n_failed: int
    usage: Usage
    latency_p50: float | None
    latency_p95: float | None
    candidate_id: str | None = None
    reused: int = 0  # examples answered from the evaluation cache, no call made
    seconds: float = 0.0
    outcomes: list[ExampleOutcome] = field(default_factory=list, repr=False)
    evaluated: list[int] = field(default_factory=list, repr=False)  # run now, not reused
    variables: list[Variable | None] = field(default_factory=list, repr=False)
    # With trace=True: each example's LLM op calls in call order (textgraph.ops.trace.OpCall).
    traces: list[list[Any]] | None = field(default=None, repr=False)

    @property
    def n(self) -> int:
        return len(self.scores)

    def gate_mean(self) -> float | None:
        """The mean with failed examples counted as 0: what gates and run scores use."""
        if not self.scores:
            return None
        return sum(0.0 if s is None else s for s in self.scores) / len(self.scores)

    def objectives(self) -> dict[str, float | None]:
        """The built-in objectives: score (mean, failed examples as 0), cost (USD per
        example, priced as if uncached), latency (p50 seconds per example), prompt_tokens
        (per example)."""
        done = [o for o in self.outcomes if o.error is None] or self.outcomes
        k = len(done) or 1
        return {
            "score": self.gate_mean(),
            "cost": sum(o.cost_usd for o in done) / k if done else None,
            "latency": self.latency_p50,
            "prompt_tokens": sum(o.prompt_tokens for o in done) / k if done else None,
        }

    def summary(self) -> dict[str, Any]:
        """JSON-safe aggregates (what `textgraph eval` prints and writes)."""
        return {
            "n": self.n,
            "mean": self.mean,
            "ci": list(self.ci) if self.ci else None,
            "n_scored": self.n_scored,
            "n_failed": self.n_failed,
            "usage": self.usage.model_dump(),
            "latency_p50": self.latency_p50,
            "latency_p95": self.latency_p95,
            "reused": self.reused,
            "seconds": round(self.seconds, 3),
            "candidate_id": self.candidate_id,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "errors": [e.model_dump() for e in self.errors],
            "examples": [
                {"index": i, **o.model_dump(exclude={"error"}), "error": o.error and o.error.text}
                for i, o in enumerate(self.outcomes)
            ],
        }

    def __repr__(self) -> str:
        mean = "n/a" if self.mean is None else f"{self.mean:.3f}"
        ci = f" [{self.ci[0]:.3f}, {self.ci[1]:.3f}]" if self.ci else ""
        return (
            f"EvalResult(mean={mean}{ci}, n_scored={self.n_scored}, n_failed={self.n_failed}, "
            f"calls={self.usage.calls})"
        )
