"""Edge cases where sequential validation or speculation once changed a run's outcome:
several candidates with failures, metric ranges below 0, float ties, an optimizer that
finishes, error counts of discarded speculations, budgets."""

from __future__ import annotations

import re

import pytest

import textgraph as tg
from tests.test_sequential_validation import Listed, Probing
from textgraph.engines import ScriptedEngine


class Program(tg.Module):
    def __init__(self, engine, start):
        self.system = tg.Variable(start, role_description="system prompt", requires_grad=True)
        self.call = tg.LLMCall(engine, self.system)

    async def aforward(self, example):
        return await self.call.acall(tg.Variable(example["question"], role_description="question"))


def table_engine(table):
    """table: prompt -> the reply to question i (a score, or FAIL)."""

    def respond(request):
        i = int(re.search(r"\d+", request.messages[-1].content).group())
        return table[request.messages[0].content][i]

    return ScriptedEngine(respond)


def metric(prediction, example):
    if prediction.strip() == "FAIL":
        raise ValueError("this example failed")
    return float(prediction)


def data(n, start=0):
    return [{"question": f"Q {i}?", "answer": ""} for i in range(start, start + n)]


def fit(table, steps, optimizer=None, **options):
    n = len(next(iter(table.values())))
    settings = dict(
        train=data(n),
        val=data(n),
        max_steps=len(steps),
        progress=False,
        metric=metric,
        max_errors=1000,
        gate="better",
    )
    settings.update(options)
    trainer = tg.Trainer(
        Program(table_engine(table), "INC"), optimizer=optimizer or Listed(*steps), **settings
    )
    return trainer.fit(), trainer


def outcome(result):
    return [
        (r.decision, r.current, [(c.status, c.val_score) for c in r.candidates])
        for r in result.history
    ]


@pytest.mark.parametrize("gate", ["better", "not_worse"])
def test_a_gate_drop_never_hands_the_decision_to_a_candidate_with_failures(gate):
    n = 10
    table = {
        "INC": ["0.5"] * n,
        "X": ["0"] * 5 + ["1"] * 5,  # cannot pass by the first half alone... but it is the top
        "Y": ["0.6"] * 5 + ["FAIL"] * 5,  # fails only after the first look
    }
    full, _ = fit(table, [["X", "Y"]], gate=gate)
    seq, _ = fit(table, [["X", "Y"]], gate=gate, validation="sequential", val_chunk=5)
    assert outcome(seq) == outcome(full)


def test_the_significant_gate_judges_the_candidate_full_validation_would():
    n = 20
    table = {"INC": ["0.3"] * n, "X": ["0"] * 10 + ["1"] * 10, "Y": ["0.4"] * n}
    full, _ = fit(table, [["X", "Y"]], gate="significant")
    seq, _ = fit(table, [["X", "Y"]], gate="significant", validation="sequential", val_chunk=10)
    assert [r.decision for r in full.history] == ["rejected"]
    assert outcome(seq) == outcome(full)


def test_a_metric_range_below_zero_bounds_failures_as_zero():
    n = 10
    table = {"INC": ["-9"] * n, "A": ["-10"] * 6 + ["FAIL"] * 4, "B": ["-5"] * 6 + ["-10"] * 4}
    options = dict(metric_range=(-10, -5))
    full, _ = fit(table, [["A", "B"]], **options)
    seq, _ = fit(table, [["A", "B"]], validation="sequential", val_chunk=6, **options)
    assert outcome(seq) == outcome(full)


def test_a_tie_in_floating_point_is_decided_as_full_validation_decides_it():
    # the same scores in another order: the means differ in the last bit
    inc = ["0.7", "0.9", "0.8", "0.6", "0.9", "0.7", "0.8", "0.9", "0.8", "0.7"]
    cand = ["0.6", "0.7", "0.7", "0.8", "0.8", "0.8", "0.9", "0.9", "0.9", "0.7"]
    table = {"INC": inc, "C": cand}
    full, _ = fit(table, ["C"])
    seq, _ = fit(table, ["C"], validation="sequential", val_chunk=5)
    assert outcome(seq) == outcome(full)


def test_an_optimizer_that_finishes_stops_where_it_would_without_speculation():
    n = 10
    table = {"INC": ["0.5"] * n, "W1": ["0.1"] * n, "W2": ["0.9"] * n}
    plain, _ = fit(table, ["W1", "W2"], optimizer=Probing("W1", "W2"))
    spec, _ = fit(table, ["W1", "W2"], optimizer=Probing("W1", "W2"), speculative=True)
    assert [r.decision for r in plain.history] == ["rejected", "accepted"]
    assert outcome(spec) == outcome(plain) and spec.stopped == plain.stopped


def test_a_discarded_speculation_does_not_count_its_failed_examples():
    # the incumbent fails on every training question; W1 is accepted at step 1, so step
    # 2's speculative probe of the old incumbent (3 failures) is discarded
    table = {"INC": ["0.1"] * 10 + ["FAIL"] * 10, "W1": ["0.9"] * 20, "W2": ["0.2"] * 20}
    options = dict(train=data(6, 10), val=data(10), batch_size=3, max_errors=4)
    plain, plain_trainer = fit(table, ["W1", "W2"], optimizer=Probing("W1", "W2"), **options)
    spec, spec_trainer = fit(
        table, ["W1", "W2"], optimizer=Probing("W1", "W2"), speculative=True, **options
    )
    assert outcome(spec) == outcome(plain)
    assert spec_trainer._errors == plain_trainer._errors == 3


def test_speculation_and_a_budget_are_refused_together():
    with pytest.raises(tg.ArgumentError, match="budget"):
        fit(
            {"INC": ["0.5"] * 4, "W": ["0.1"] * 4},
            ["W"],
            speculative=True,
            budget=tg.Budget(max_calls=100),
        )
