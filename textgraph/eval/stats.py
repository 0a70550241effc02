"""Confidence intervals and paired tests, seeded and vectorized (numpy).

Mean CI: percentile bootstrap. Resample the n scores with replacement B
times, take each resample's mean; the interval is the (alpha/2, 1-alpha/2)
quantiles of those means.

Paired comparison of candidate scores a_i and incumbent scores b_i on the
same examples, d_i = a_i - b_i:
- paired bootstrap: percentile interval of the mean of d resampled by
  example (the pairs stay together);
- sign-flip permutation test of H0 "no difference" against H1 "the
  candidate is better": under H0 each d_i is as likely to be -d_i, so
  p = (1 + #{s : mean(s * d) >= mean(d)}) / (1 + S) over S random sign
  vectors s (exact enumeration of all 2^m flips of the m non-zero
  differences when 2^m <= S).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_CHUNK = 256  # resamples per vectorized batch: bounded memory for large n


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def bootstrap_means(values: Sequence[float], resamples: int, seed: int) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    n = len(x)
    rng = _rng(seed)
    out = np.empty(resamples)
    for start in range(0, resamples, _CHUNK):
        k = min(_CHUNK, resamples - start)
        idx = rng.integers(0, n, size=(k, n))
        out[start : start + k] = x[idx].mean(axis=1)
    return out


def mean_ci(
    values: Sequence[float], *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float] | None:
    """Percentile-bootstrap interval of the mean; None for no values."""
    if len(values) == 0:
        return None
    if len(values) == 1:
        return (float(values[0]), float(values[0]))
    means = bootstrap_means(values, resamples, seed)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return (float(low), float(high))


@dataclass(frozen=True)
class PairedTest:
    """Candidate minus incumbent on the same examples."""

    n: int
    mean_difference: float
    ci: tuple[float, float]  # paired bootstrap interval of the mean difference
    p_value: float  # one-sided sign-flip permutation test, H1: candidate better
    exact: bool  # every sign vector enumerated

    def describe(self, alpha: float | None = None) -> str:
        how = "exact" if self.exact else "Monte Carlo"
        versus = ""
        if alpha is not None:
            versus = f" {'<' if self.p_value < alpha else '>='} alpha {alpha:g}"
        return (
            f"paired sign-flip permutation test ({how}, n={self.n}): mean difference "
            f"{self.mean_difference:+.3f}, p={self.p_value:.4f}{versus}; paired bootstrap 95% "
            f"CI [{self.ci[0]:+.3f}, {self.ci[1]:+.3f}]"
        )


def paired_test(
    candidate: Sequence[float],
    incumbent: Sequence[float],
    *,
    permutations: int = 10000,
    resamples: int = 2000,
    seed: int = 0,
) -> PairedTest:
    a = np.asarray(candidate, dtype=float)
    b = np.asarray(incumbent, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError("paired_test needs two equally long, non-empty score lists")
    d = a - b
    observed = float(d.mean())
    ci = mean_ci(d.tolist(), resamples=resamples, seed=seed) or (observed, observed)
    nonzero = d[d != 0]
    m = len(nonzero)
    if m == 0:
        return PairedTest(len(d), observed, ci, 1.0, True)
    total = float(nonzero.sum())
    if 2**m <= permutations:
        # every sign vector: rows of a 2^m x m matrix of +-1
        codes = np.arange(2**m)[:, None] >> np.arange(m)[None, :] & 1
        sums = ((1 - 2 * codes) * nonzero).sum(axis=1)
        p = float(np.mean(sums >= total - 1e-12))
        return PairedTest(len(d), observed, ci, p, True)
    rng = _rng(seed + 1)
    hits = 0
    for start in range(0, permutations, _CHUNK):
        k = min(_CHUNK, permutations - start)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(k, m))
        hits += int(((signs * nonzero).sum(axis=1) >= total - 1e-12).sum())
    p = (1 + hits) / (1 + permutations)
    return PairedTest(len(d), observed, ci, float(p), False)
