"""Champion vs challenger: a paired comparison on the same examples, with repeats.

Scores come as a (repeats x examples) matrix per artifact, failed examples as
0. Each example's score is its mean over the repeats, so the example is the
unit and the pairs stay together: d_i = candidate_i - baseline_i.

- bootstrap: percentile interval (confidence 1 - alpha) of mean(d), resampled
  by example (`stats.mean_ci`);
- sign-flip permutation test of H0 "mean(d) <= min_delta" against H1
  "mean(d) > min_delta" on d_i - min_delta (`stats.paired_test`); it assumes
  the shifted differences are symmetric about 0 under H0, and examples are
  independent;
- McNemar (exact binomial, one-sided) on the discordant pairs when every
  score is 0 or 1, reported next to the permutation test (with repeats it
  counts every (example, repeat) pair, which treats repeats as independent).

Decision: promote when the permutation p-value < alpha; keep when the upper
end of the interval is <= min_delta (the candidate is shown not better by
min_delta); otherwise inconclusive.

Drift (`drift_scores`) compares an artifact's recorded per-example scores with
scores on a fresh sample: two independent samples, so a two-sample bootstrap
interval of mean(fresh) - mean(recorded) and a label-permutation test of H1
"fresh is worse by more than min_delta".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from math import comb
from typing import Any, Literal

import numpy as np

from textgraph.errors import ArgumentError
from textgraph.eval.stats import bootstrap_means, mean_ci, paired_test

Decision = Literal["promote", "keep", "inconclusive"]
DriftDecision = Literal["stable", "degraded", "inconclusive"]
EXIT_CODES = {"promote": 0, "keep": 1, "inconclusive": 3, "stable": 0, "degraded": 1}
EXIT_ERROR = 2


def repeat_salt(repeat: int) -> str | None:
    """The cache salt of repeat r: none for the first (shares the ordinary cache), a
    distinct one for each further repeat so it is a new sample, not a cache hit."""
    return None if repeat == 0 else f"textgraph-repeat-{repeat}"


def _matrix(scores: Sequence[Any], what: str) -> np.ndarray:
    nested = len(scores) > 0 and isinstance(scores[0], (list, tuple, np.ndarray))
    rows = scores if nested else [scores]
    try:
        x = np.asarray([[0.0 if s is None else float(s) for s in row] for row in rows])
    except (TypeError, ValueError):
        raise ArgumentError(f"{what} scores must be numbers (or None for failed)") from None
    if x.ndim != 2 or x.shape[1] == 0:
        raise ArgumentError(f"{what} needs the same number of scores in every repeat, >= 1")
    if not np.isfinite(x).all():
        raise ArgumentError(f"{what} scores must be finite numbers")
    return x


def _check(alpha: float, min_delta: float) -> None:
    if not (0 < alpha < 1):
        raise ArgumentError(f"alpha must be between 0 and 1, got {alpha!r}")
    if not np.isfinite(min_delta) or min_delta < 0:
        raise ArgumentError(f"min_delta must be a number >= 0, got {min_delta!r}")


def mcnemar(candidate: np.ndarray, baseline: np.ndarray) -> dict[str, Any]:
    """Exact one-sided McNemar test: b = pairs only the candidate gets right, c = only the
    baseline; p = P(Binomial(b + c, 1/2) >= b)."""
    b = int(((candidate == 1) & (baseline == 0)).sum())
    c = int(((candidate == 0) & (baseline == 1)).sum())
    n = b + c
    p = 1.0 if n == 0 else float(Fraction(sum(comb(n, k) for k in range(b, n + 1)), 2**n))
    return {"candidate_only": b, "baseline_only": c, "p_value": p}


@dataclass(frozen=True)
class Comparison:
    decision: Decision
    reason: str
    n: int
    repeats: int
    alpha: float
    min_delta: float
    baseline_mean: float
    baseline_ci: tuple[float, float]
    candidate_mean: float
    candidate_ci: tuple[float, float]
    mean_difference: float
    difference_ci: tuple[float, float]
    p_value: float
    exact: bool
    mcnemar: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.decision]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def compare_scores(
    baseline: Sequence[Any],
    candidate: Sequence[Any],
    *,
    alpha: float = 0.05,
    min_delta: float = 0.0,
    seed: int = 0,
    permutations: int = 10000,
    resamples: int = 2000,
) -> Comparison:
    """Paired comparison of per-example scores: lists, or (repeats x examples) lists."""
    _check(alpha, min_delta)
    b, a = _matrix(baseline, "baseline"), _matrix(candidate, "candidate")
    if a.shape != b.shape:
        raise ArgumentError(
            f"baseline and candidate must be scored on the same examples and repeats: got "
            f"{b.shape[0]}x{b.shape[1]} and {a.shape[0]}x{a.shape[1]} (repeats x examples)"
        )
    a_mean, b_mean = a.mean(axis=0), b.mean(axis=0)
    d = a_mean - b_mean
    confidence = 1 - alpha
    test = paired_test(
        (a_mean - min_delta).tolist(),
        b_mean.tolist(),
        permutations=permutations,
        resamples=resamples,
        seed=seed,
    )
    diff_ci = mean_ci(d.tolist(), confidence=confidence, resamples=resamples, seed=seed)
    assert diff_ci is not None
    binary = bool(np.isin(a, (0.0, 1.0)).all() and np.isin(b, (0.0, 1.0)).all())
    if test.p_value < alpha:
        decision: Decision = "promote"
        why = (
            f"p={test.p_value:.4f} < alpha {alpha:g}: the candidate is better by more than "
            f"{min_delta:g}"
        )
    elif diff_ci[1] <= min_delta:
        decision = "keep"
        why = (
            f"the {confidence:.0%} interval of the difference ends at {diff_ci[1]:+.4f} <= "
            f"min_delta {min_delta:g}: the candidate is not better"
        )
    else:
        decision = "inconclusive"
        why = (
            f"p={test.p_value:.4f} >= alpha {alpha:g}, and the interval "
            f"[{diff_ci[0]:+.4f}, {diff_ci[1]:+.4f}] still allows a gain above {min_delta:g}: "
            "more examples or repeats are needed"
        )
    ci = lambda x: mean_ci(x.tolist(), confidence=confidence, resamples=resamples, seed=seed)  # noqa: E731
    return Comparison(
        decision=decision,
        reason=why,
        n=int(a.shape[1]),
        repeats=int(a.shape[0]),
        alpha=alpha,
        min_delta=min_delta,
        baseline_mean=float(b_mean.mean()),
        baseline_ci=ci(b_mean),
        candidate_mean=float(a_mean.mean()),
        candidate_ci=ci(a_mean),
        mean_difference=float(d.mean()),
        difference_ci=diff_ci,
        p_value=test.p_value,
        exact=test.exact,
        mcnemar=mcnemar(a, b) if binary else None,
    )


@dataclass(frozen=True)
class Drift:
    decision: DriftDecision
    reason: str
    n_recorded: int
    n_fresh: int
    alpha: float
    min_delta: float
    recorded_mean: float
    fresh_mean: float
    fresh_ci: tuple[float, float]
    mean_difference: float  # fresh - recorded
    difference_ci: tuple[float, float]
    p_value: float

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.decision]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def drift_scores(
    recorded: Sequence[float | None],
    fresh: Sequence[float | None],
    *,
    alpha: float = 0.05,
    min_delta: float = 0.0,
    seed: int = 0,
    permutations: int = 10000,
    resamples: int = 2000,
) -> Drift:
    """Has the deployed artifact degraded? Its recorded scores vs a fresh labeled sample."""
    _check(alpha, min_delta)
    r = _matrix(recorded, "recorded")[0]
    f = _matrix(fresh, "fresh").mean(axis=0)
    observed = float(f.mean() - r.mean())
    confidence = 1 - alpha
    diffs = bootstrap_means(f, resamples, seed) - bootstrap_means(r, resamples, seed + 1)
    tail = (1 - confidence) / 2
    low, high = (float(v) for v in np.quantile(diffs, [tail, 1 - tail]))
    # label permutation of H0 "mean(fresh) >= mean(recorded) - min_delta"
    shifted = np.concatenate([f + min_delta, r])
    stat = float((f + min_delta).mean() - r.mean())
    rng = np.random.default_rng(seed + 2)
    hits = 0
    for start in range(0, permutations, 256):
        k = min(256, permutations - start)
        order = np.argsort(rng.random((k, len(shifted))), axis=1)
        perm = shifted[order]
        stats = perm[:, : len(f)].mean(axis=1) - perm[:, len(f) :].mean(axis=1)
        hits += int((stats <= stat + 1e-12).sum())
    p = (1 + hits) / (1 + permutations)
    if p < alpha:
        decision: DriftDecision = "degraded"
        why = f"fresh score is lower by more than {min_delta:g}: p={p:.4f} < alpha {alpha:g}"
    elif low >= -min_delta:
        decision = "stable"
        why = f"the interval of the change starts at {low:+.4f} >= -{min_delta:g}"
    else:
        decision = "inconclusive"
        why = f"p={p:.4f} >= alpha {alpha:g}; the interval [{low:+.4f}, {high:+.4f}] allows a drop"
    fresh_ci = mean_ci(f.tolist(), confidence=confidence, resamples=resamples, seed=seed)
    assert fresh_ci is not None
    return Drift(
        decision=decision,
        reason=why,
        n_recorded=len(r),
        n_fresh=len(f),
        alpha=alpha,
        min_delta=min_delta,
        recorded_mean=float(r.mean()),
        fresh_mean=float(f.mean()),
        fresh_ci=fresh_ci,
        mean_difference=observed,
        difference_ci=(low, high),
        p_value=float(p),
    )
