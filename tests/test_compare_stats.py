"""The paired comparison on seeded simulations: power, false-promote rate, repeats, drift."""

from __future__ import annotations

import numpy as np
import pytest

from textgraph.errors import ArgumentError
from textgraph.eval.compare import compare_scores, drift_scores, mcnemar


def simulate(rng, n=400, base=0.7, fix=0.0, breaks=0.03):
    """Baseline right with probability `base`; the candidate fixes each baseline miss with
    probability `fix` and breaks each baseline hit with probability `breaks`."""
    b = (rng.random(n) < base).astype(float)
    u = rng.random(n)
    a = np.where(b == 1, (u >= breaks).astype(float), (u < fix).astype(float))
    return b, a


def test_detects_a_five_point_gain_on_400_binary_examples_in_80_percent_of_trials():
    # planted effect: 0.3 * fix - 0.7 * 0.03 = +0.05
    fix = (0.05 + 0.7 * 0.03) / 0.3
    promoted, effects = 0, []
    for trial in range(100):
        b, a = simulate(np.random.default_rng(trial), fix=fix)
        effects.append(a.mean() - b.mean())
        result = compare_scores(b, a, seed=trial, permutations=2000, resamples=500)
        promoted += result.decision == "promote"
    assert abs(np.mean(effects) - 0.05) < 0.01  # the planted effect is what it says
    assert promoted >= 80, promoted


def test_at_zero_effect_promotes_at_most_alpha_plus_a_margin_over_200_trials():
    fix = 0.7 * 0.05 / 0.3  # fixes balance breaks: zero expected effect
    promoted = sum(
        compare_scores(
            *reversed(simulate(np.random.default_rng(1000 + t), fix=fix, breaks=0.05)),
            seed=t,
            permutations=2000,
            resamples=500,
        ).decision
        == "promote"
        for t in range(200)
    )
    # mcnemar-like discrete test is conservative; the margin is ~2 binomial s.d. at n=200
    assert promoted / 200 <= 0.05 + 0.03, promoted


def test_identical_or_worse_candidates_are_kept_and_noise_is_inconclusive():
    b, a = simulate(np.random.default_rng(5), fix=0.0, breaks=0.1)
    assert compare_scores(b, b).decision == "keep"
    assert compare_scores(b, a).decision == "keep"  # a only loses
    small = compare_scores([1, 0, 1, 0], [1, 1, 1, 0])
    assert small.decision == "inconclusive" and small.exact


def test_repeats_are_paired_by_example_and_averaged():
    # repeat noise differs, but each example's mean carries the effect
    rng = np.random.default_rng(3)
    base = rng.random(60)
    repeats_b = [base + rng.normal(0, 0.05, 60) for _ in range(3)]
    repeats_a = [base + 0.05 + rng.normal(0, 0.05, 60) for _ in range(3)]
    result = compare_scores(repeats_b, repeats_a)
    assert result.repeats == 3 and result.n == 60
    assert result.decision == "promote"
    # shuffling the examples of the candidate breaks the pairing: no longer significant
    shuffled = [r[rng.permutation(60)] for r in repeats_a]
    assert compare_scores(repeats_b, shuffled).decision != "promote"
    with pytest.raises(ArgumentError, match="same examples and repeats"):
        compare_scores(repeats_b, repeats_a[:2])


def test_mcnemar_exact_counts_discordant_pairs():
    a = np.array([1, 1, 1, 0, 1.0])
    b = np.array([0, 0, 1, 0, 1.0])
    result = mcnemar(a, b)
    assert result["candidate_only"] == 2 and result["baseline_only"] == 0
    assert result["p_value"] == pytest.approx(0.25)
    assert compare_scores(b, a).mcnemar["p_value"] == pytest.approx(0.25)
    assert compare_scores([0.5, 0.2], [0.7, 0.1]).mcnemar is None


def test_min_delta_raises_the_bar():
    b, a = simulate(np.random.default_rng(9), fix=(0.05 + 0.021) / 0.3)
    assert compare_scores(b, a).decision == "promote"
    assert compare_scores(b, a, min_delta=0.2).decision == "keep"


def test_drift_detects_a_drop_and_not_noise():
    rng = np.random.default_rng(11)
    recorded = (rng.random(300) < 0.8).astype(float)
    same = (rng.random(300) < 0.8).astype(float)
    dropped = (rng.random(300) < 0.65).astype(float)
    assert drift_scores(recorded, dropped, permutations=2000).decision == "degraded"
    assert drift_scores(recorded, same, permutations=2000).decision != "degraded"
    false_alarms = sum(
        drift_scores(
            (np.random.default_rng(t).random(200) < 0.7).astype(float),
            (np.random.default_rng(500 + t).random(200) < 0.7).astype(float),
            permutations=500,
            resamples=200,
            seed=t,
        ).decision
        == "degraded"
        for t in range(100)
    )
    assert false_alarms <= 10, false_alarms


def test_bad_inputs_are_typed_errors():
    with pytest.raises(ArgumentError, match="alpha"):
        compare_scores([1], [1], alpha=1.5)
    with pytest.raises(ArgumentError, match="min_delta"):
        compare_scores([1], [1], min_delta=-1)
    with pytest.raises(ArgumentError, match="numbers"):
        compare_scores(["x"], [1])
