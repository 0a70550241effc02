"""Gates: may a candidate replace the incumbent?

better: its validation mean beats the best so far. not_worse: it ties or
beats it. always: every candidate is taken. significant: a paired test on
the per-example validation scores of candidate and incumbent (see
`textgraph.eval.stats`): accepted when the one-sided sign-flip permutation
p-value is below `alpha`. Failed examples count as 0 here (a candidate that
crashes is not better for it); records keep them as failures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from textgraph.errors import ArgumentError
from textgraph.eval.stats import PairedTest, paired_test

Gate = Literal["better", "not_worse", "always", "significant"]
GATES: tuple[str, ...] = ("better", "not_worse", "always", "significant")


@dataclass(frozen=True)
class GateDecision:
    accepted: bool
    reason: str
    score: float | None
    test: PairedTest | None = None


def gate_scores(scores: Sequence[float | None]) -> list[float]:
    return [0.0 if s is None else s for s in scores]


def check_gate(gate: object, alpha: float) -> None:
    if gate not in GATES:
        raise ArgumentError(f"gate must be one of {', '.join(map(repr, GATES))}; got {gate!r}")
    if not (0 < alpha < 1):
        raise ArgumentError(f"alpha must be between 0 and 1, got {alpha!r}")


def decide(
    gate: Gate,
    candidate: Sequence[float | None],
    incumbent: Sequence[float | None] | None,
    *,
    best_score: float | None,
    alpha: float = 0.05,
    seed: int = 0,
    tolerance: float = 0.0,
) -> GateDecision:
    """Decide on full per-example validation scores of the candidate (and incumbent).
    tolerance: how far below the best a candidate may score and still pass not_worse (an
    optimizer that trades score for something else, such as compression, declares it)."""
    values = gate_scores(candidate)
    score = sum(values) / len(values) if values else None
    old = _fmt(best_score)
    if gate == "always":
        return GateDecision(True, f"accepted (gate always): val {old} -> {_fmt(score)}", score)
    if best_score is None or score is None:
        return GateDecision(True, f"accepted: val {old} -> {_fmt(score)}", score)
    if gate == "significant":
        if incumbent is None or len(incumbent) != len(values):
            raise ArgumentError(
                "the significant gate needs the incumbent's per-example scores on the same "
                "validation examples"
            )
        test = paired_test(values, gate_scores(incumbent), seed=seed)
        ok = test.mean_difference > 0 and test.p_value < alpha
        why = test.describe(alpha)
        word = "accepted" if ok else "rejected"
        return GateDecision(ok, f"{word}: val {old} -> {score:.3f}; {why}", score, test)
    if gate == "better":
        ok = score > best_score
    else:
        ok = score >= best_score - tolerance - 1e-12
    within = f" (within the optimizer's tolerance {tolerance:g})" if tolerance and ok else ""
    word = "accepted" if ok else "rejected"
    return GateDecision(ok, f"{word}: val {old} -> {score:.3f}{within}", score)


def _fmt(score: float | None) -> str:
    return "n/a" if score is None else f"{score:.3f}"
