"""Sequential validation: score candidates in chunks, drop one once its answer is known.

The Trainer's `validation="sequential"` runs this before its usual full
validation. Candidates are scored on the validation set a chunk at a time
(every example of a chunk concurrently, every live candidate at once); after
each chunk a candidate is dropped as soon as it can no longer be the one the
gate accepts. The survivors go on to the full validation unchanged, so the
gate, the choice between candidates and the records are those of a full run;
the dropped candidates are rejected with their partial scores and are kept
out of the Pareto pool.

Why a candidate is dropped, with k of n examples scored, metric range
[lo, hi] (failed examples count as 0, as in the gates):

The gate judges only the top candidate, so with several live candidates
only the "cannot be the top" rule drops any; the gate's own rules below
apply once a single candidate is left (otherwise dropping one by the gate's
rule could hand the decision to another that full validation never judges).

- better / not_worse (exact): even if every one of the n - k remaining
  examples scored hi, the final mean could not pass the gate against the
  incumbent's score; or it could not pass on the examples both scored, were
  some of the remaining examples to fail (the rule the loop uses when a
  candidate has failures). A candidate with a failure in the scored prefix
  is never dropped; it is validated in full.
- better / not_worse (exact): another live candidate's lowest possible
  final mean is above this one's highest (it cannot be the top).
- significant: (a) exact: even with hi - lo as the remaining paired
  differences the final mean difference cannot be positive; (b) futility
  test: a one-sided sign-flip permutation test of "the candidate is worse"
  on the k pairs has p below this look's share of `futility` (spent over
  the looks by a Pocock-type function, front-loaded so losers stop early).
  Acceptance is decided only at the end, by the gate's own test at alpha on
  all n examples, so the false-accept rate stays the fixed test's
  (dropping the last live candidate can only turn an acceptance into a
  rejection); a candidate
  no worse than the incumbent is dropped by (b) with probability at most
  `futility` (union bound over the looks); (c) conditional power: the chance
  that the final test ends significant, were the remaining examples to follow
  the observed trend (Lan & Wittes), is below `conditional_power` (0.1). Rule
  (c) is non-binding futility: it can only turn acceptances into rejections,
  so the false-accept rate stays at most alpha; the power it costs is measured
  on seeded simulations (tests/test_sequential_validation.py).

Every candidate the gate would accept is validated in full anyway (its
scores become the incumbent's), so stopping early saves calls only on
candidates that lose.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist

from textgraph.candidate import Candidate
from textgraph.errors import ArgumentError
from textgraph.eval.gate import Gate, gate_scores
from textgraph.eval.result import EvalResult
from textgraph.eval.stats import paired_test

#: Validation modes of the Trainer.
VALIDATIONS = ("full", "sequential")
_EPS = 1e-12
_MARGIN = 1e-9  # bounds are decided with this much room for floating-point sums
#: Conditional power is only acted on once this share of the validation set is scored.
CP_MIN_FRACTION = 0.4


@dataclass(frozen=True)
class SequentialSettings:
    """How sequential validation looks: chunk size, metric range, futility budget."""

    chunk: int
    low: float = 0.0
    high: float = 1.0
    futility: float = 0.05
    alpha: float = 0.05  # the significant gate's level
    conditional_power: float = 0.05  # drop below this chance of ending significant


@dataclass
class Screened:
    """One candidate after screening: dropped (with why and its partial result) or not."""

    candidate: Candidate
    examples: int  # validation examples it was scored on when screening stopped
    dropped: str | None = None  # why it was rejected early; None: go on to full validation
    result: EvalResult | None = None


def check_validation(validation: object, chunk: object, metric_range: object) -> None:
    if validation not in VALIDATIONS:
        raise ArgumentError(
            f"validation must be one of {', '.join(map(repr, VALIDATIONS))}; got {validation!r}"
        )
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise ArgumentError(f"val_chunk must be an int >= 1 (or None), got {chunk!r}")
    if metric_range is not None:
        ok = (
            isinstance(metric_range, (tuple, list))
            and len(metric_range) == 2
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in metric_range)
            and math.isfinite(metric_range[0])
            and math.isfinite(metric_range[1])
            and metric_range[0] < metric_range[1]
        )
        if not ok:
            raise ArgumentError(
                f"metric_range must be (lowest, highest) finite numbers with lowest < highest, "
                f"got {metric_range!r}; it bounds the scores of examples not yet scored"
            )


def metric_range_of(metric: object, declared: tuple[float, float] | None) -> tuple[float, float]:
    """The declared range, else the metric's own `range` attribute, else (0, 1)."""
    if declared is not None:
        return (float(declared[0]), float(declared[1]))
    own = getattr(metric, "range", None)
    if own is not None:
        check_validation("full", None, own)
        return (float(own[0]), float(own[1]))
    return (0.0, 1.0)


def default_chunk(n: int) -> int:
    """About five looks: a fifth of the validation set, at least 5 examples."""
    return max(5, math.ceil(n / 5))


def looks(n: int, chunk: int) -> list[int]:
    """How many examples are scored at each look: chunk, 2 chunk, ... (the last is n)."""
    return [min(n, k) for k in range(chunk, n + chunk, chunk)]


def spending(total: float, fractions: Sequence[float]) -> list[float]:
    """Each look's share of `total` under the Lan-DeMets Pocock-type function
    a(t) = total * ln(1 + (e - 1) t); the shares add up to `total`. Pocock-type spends
    more at early looks than O'Brien-Fleming-type, which is what stopping losers early
    needs (a futility drop never causes a false acceptance)."""
    spent = [total * math.log(1 + (math.e - 1) * t) for t in fractions]
    spent[-1] = total
    return [b - a for a, b in zip([0.0, *spent[:-1]], spent, strict=True)]


EvaluatePrefix = Callable[[Candidate, int], Awaitable[EvalResult]]


async def screen(
    candidates: list[Candidate],
    evaluate: EvaluatePrefix,
    *,
    n: int,
    gate: Gate,
    best_score: float | None,
    incumbent: Sequence[float | None],
    settings: SequentialSettings,
    tolerance: float = 0.0,
    seed: int = 0,
    gather: Callable[..., Awaitable[list[EvalResult]]],
) -> list[Screened]:
    """Score `candidates` look by look on the first k validation examples (evaluate(c, k)
    runs only the examples not scored yet) and drop each once it cannot be accepted."""
    state = {c.id: Screened(c, 0) for c in candidates}
    plan = looks(n, settings.chunk)
    shares = spending(settings.futility, [k / n for k in plan])
    inc = list(incumbent)
    for look, k in enumerate(plan):
        if k >= n:
            break  # the last look is the full validation itself
        live = [s for s in state.values() if s.dropped is None]
        if not live:
            break
        results = await gather(*(evaluate(s.candidate, k) for s in live))
        for s, r in zip(live, results, strict=True):
            s.examples, s.result = k, r
        _drop(live, n, k, gate, best_score, inc, settings, tolerance, shares[look], seed)
    return list(state.values())


def _drop(
    live: list[Screened],
    n: int,
    k: int,
    gate: Gate,
    best_score: float | None,
    inc: list[float | None],
    settings: SequentialSettings,
    tolerance: float,
    share: float,
    seed: int,
) -> None:
    # a failure later counts as 0, which may lie outside the metric's range
    lo, hi = min(settings.low, 0.0), max(settings.high, 0.0)
    bounds: dict[str, tuple[float, float]] = {}
    for s in live:
        assert s.result is not None
        _check_range(s.result, settings)
        if s.result.n_failed:
            continue  # the loop compares on the examples both scored: validate in full
        total = sum(gate_scores(s.result.scores))
        bounds[s.candidate.id] = ((total + (n - k) * lo) / n, (total + (n - k) * hi) / n)
    _drop_rivals(live, n, k, bounds)
    # The gate judges only the top candidate: dropping one by the gate's rule while another
    # is live could hand the decision to that other one (which full validation would never
    # judge). So the gate's rules apply only to the last live candidate.
    alive = [s for s in live if s.dropped is None]
    if len(alive) != 1 or alive[0].candidate.id not in bounds:
        return
    last = alive[0]
    assert last.result is not None
    seen = gate_scores(last.result.scores)
    if gate == "significant":
        why = _futile(seen, inc, n, k, settings, share, seed)
    else:
        why = _cannot_pass(gate, seen, inc, n, k, best_score, settings.high, tolerance)
    if why:
        last.dropped = f"stopped after {k} of {n} validation examples: {why}"


def _drop_rivals(
    live: list[Screened], n: int, k: int, bounds: dict[str, tuple[float, float]]
) -> None:
    for s in live:  # cannot be the top: another candidate's floor is above its ceiling
        if s.dropped is None and s.candidate.id in bounds:
            ceiling = bounds[s.candidate.id][1]
            rival = next(
                (
                    o
                    for o in live
                    if o is not s
                    and o.candidate.id in bounds
                    and o.dropped is None
                    and bounds[o.candidate.id][0] > ceiling + _MARGIN
                ),
                None,
            )
            if rival is not None:
                s.dropped = (
                    f"stopped after {k} of {n} validation examples: at most {ceiling:.3f} "
                    f"at the end, below {rival.candidate.id}'s floor "
                    f"{bounds[rival.candidate.id][0]:.3f}"
                )


def _cannot_pass(
    gate: Gate,
    seen: list[float],
    inc: list[float | None],
    n: int,
    k: int,
    best_score: float | None,
    high: float,
    tolerance: float,
) -> str | None:
    if best_score is None:
        return None  # no score to beat: the gate accepts
    ceiling = (sum(seen) + (n - k) * high) / n
    # conservative by _MARGIN: the final mean is summed in another order than the bound
    if gate == "better":
        fails = ceiling < best_score - _MARGIN
    else:
        fails = ceiling < best_score - tolerance - _MARGIN
    if not fails:
        return None
    # Were some remaining examples to fail, the loop would compare on the examples both
    # scored: the best case there includes each remaining example only if it helps.
    diff = sum(c - i for c, i in zip(seen, inc, strict=False) if i is not None) + sum(
        max(0.0, high - i) for i in inc[k:] if i is not None
    )
    if gate == "better" and diff > -_MARGIN:
        return None
    if gate != "better" and diff >= -tolerance * n - _MARGIN:
        return None
    need = "above" if gate == "better" else "at least"
    target = best_score if gate == "better" else best_score - tolerance
    return (
        f"at most {ceiling:.3f} at the end even if every remaining example scored "
        f"{high:g}; the {gate} gate needs {need} {target:.3f}"
    )


def _futile(
    seen: list[float],
    inc: list[float | None],
    n: int,
    k: int,
    settings: SequentialSettings,
    share: float,
    seed: int,
) -> str | None:
    both = [(c, i) for c, i in zip(seen, inc[:k], strict=True) if i is not None]
    d = [c - i for c, i in both]
    best_case = sum(d) + (n - k) * (settings.high - settings.low)
    if best_case < -_MARGIN:
        return (
            "the mean difference from the incumbent cannot end above 0 even if every "
            "remaining example favoured the candidate"
        )
    if not d:
        return None
    power = conditional_power(d, n, settings.alpha)
    if power is not None and power < settings.conditional_power:
        return (
            f"futility: conditional power {power:.3f} < {settings.conditional_power:g} (the "
            f"chance, were the remaining examples to follow the trend of the first {k}, that "
            f"the gate's test at alpha={settings.alpha:g} ends significant)"
        )
    if sum(d) >= 0:
        return None
    worse = paired_test([i for _, i in both], [c for c, _ in both], seed=seed + k)
    if worse.p_value < share:
        return (
            f"futility: the candidate is worse than the incumbent (sign-flip p="
            f"{worse.p_value:.4f} < this look's futility share {share:.4f})"
        )
    return None


def conditional_power(d: Sequence[float], n: int, alpha: float) -> float | None:
    """The chance that the one-sided test at `alpha` on all n paired differences ends
    significant, if the remaining n - k follow the trend of the k seen (Lan & Wittes's
    B-value form: CP = 1 - Phi((z_{1-alpha} - Z_k / sqrt(t)) / sqrt(1 - t)), t = k / n,
    Z_k the z statistic of the k differences). None before CP_MIN_FRACTION of the set
    (and 10 pairs) is scored, when all differences are equal, or when nothing is left."""
    k = len(d)
    if k < max(10, CP_MIN_FRACTION * n) or k >= n:
        return None  # early trends are too noisy to act on
    mean = sum(d) / k
    var = sum((x - mean) ** 2 for x in d) / (k - 1)
    if var <= _EPS:
        return None
    z_k = mean / math.sqrt(var / k)
    t = k / n
    z_alpha = NormalDist().inv_cdf(1 - alpha)
    return 1 - NormalDist().cdf((z_alpha - z_k / math.sqrt(t)) / math.sqrt(1 - t))


def _check_range(result: EvalResult, settings: SequentialSettings) -> None:
    for i, s in enumerate(result.scores):
        if s is not None and not (settings.low - _EPS <= s <= settings.high + _EPS):
            raise ArgumentError(
                f"validation example {i} scored {s:g}, outside the metric range "
                f"[{settings.low:g}, {settings.high:g}] that sequential validation bounds the "
                "unscored examples with; pass Trainer(metric_range=(lowest, highest)) or give "
                "the metric a `range` attribute"
            )
