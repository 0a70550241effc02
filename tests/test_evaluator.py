"""Evaluator: per-example errors, CI, usage, candidates evaluated side by side, cache."""

from __future__ import annotations

import asyncio
import re

import pytest

import textgraph as tg
from textgraph.engines import ScriptedEngine
from textgraph.eval.stats import mean_ci


def echo_engine(latency: float = 0.0, model_name: str = "gpt-4o-mini") -> ScriptedEngine:
    """Answers the number in the question when the system prompt says GOOD, else 'no'."""

    def respond(request):
        system, question = request.messages[0].content, request.messages[-1].content
        n = re.search(r"\d+", question).group()
        return n if "GOOD" in system else "no"

    return ScriptedEngine(respond, latency=latency, model_name=model_name)


class Echo(tg.Module):
    def __init__(self, engine, prompt="GOOD"):
        self.system = tg.Variable(prompt, role_description="system prompt", requires_grad=True)
        self.call = tg.LLMCall(engine, self.system)

    async def aforward(self, example):
        if example.get("crash"):
            raise ValueError(f"cannot answer {example['q']}")
        return await self.call.acall(tg.Variable(example["q"], role_description="question"))


def exact(prediction, example):
    return prediction == example["a"]


def examples(n, crash=()):
    return [{"q": f"What is {i}?", "a": str(i), "crash": i in crash} for i in range(n)]


def test_failed_examples_are_counted_and_typed_never_zero():
    engine = echo_engine()
    result = tg.evaluate(Echo(engine), examples(10, crash={3, 7}), exact, max_concurrency=4)
    assert result.scores[3] is None and result.scores[7] is None
    assert result.n_failed == 2 and result.n_scored == 8 and result.mean == 1.0
    assert [(e.index, e.type) for e in result.errors] == [(3, "ValueError"), (7, "ValueError")]
    assert "cannot answer What is 3?" in result.errors[0].message
    assert result.gate_mean() == 0.8  # what gates use: a failure is not a success
    assert result.usage.calls == len(engine.calls) == 8
    # usage measured on these calls: words of each prompt, priced as gpt-4o-mini
    assert result.usage.prompt_tokens == sum(c.response.usage.prompt_tokens for c in engine.calls)
    assert result.usage.cost_usd > 0
    assert result.latency_p50 is not None and result.latency_p95 >= result.latency_p50


def test_confidence_interval_is_seeded_and_brackets_the_mean():
    engine = echo_engine()

    def half(prediction, example):  # right on even examples only
        return tg.Score(float(int(example["a"]) % 2 == 0), feedback=f"checked {example['a']}")

    a = tg.evaluate(Echo(engine), examples(40), half)
    b = tg.evaluate(Echo(engine), examples(40), half)
    assert a.mean == 0.5 and a.ci == b.ci  # seeded: the same interval every time
    low, high = a.ci
    assert low < 0.5 < high and high - low < 0.5
    assert a.feedback[2] == "checked 2"
    # the percentile bootstrap narrows as n grows
    wide, narrow = mean_ci([0, 1] * 10), mean_ci([0, 1] * 500)
    assert (narrow[1] - narrow[0]) < (wide[1] - wide[0]) / 3


def test_max_errors_stops_the_evaluation_with_a_typed_error():
    with pytest.raises(tg.EvaluationError, match="max_errors=1"):
        tg.evaluate(Echo(echo_engine()), examples(8, crash={1, 2, 5}), exact, max_errors=1)


def test_bad_metric_and_program_results_are_explained():
    with pytest.raises(tg.ArgumentError, match="must return a number"):
        tg.evaluate(Echo(echo_engine()), examples(2), lambda p, e: "yes")
    with pytest.raises(tg.ArgumentError, match=r"must return a tg\.Variable"):
        tg.evaluate(lambda e: 42, examples(2), exact)
    with pytest.raises(tg.ArgumentError, match="non-empty list"):
        tg.evaluate(Echo(echo_engine()), [], exact)
    with pytest.raises(tg.ArgumentError, match=r"needs the program to be a tg\.Module"):
        tg.evaluate(lambda e: "x", examples(1), exact, candidate={"system": "x"})


async def test_concurrent_candidates_do_not_interfere_and_leave_the_module_alone():
    engine = echo_engine(latency=0.02)
    module = Echo(engine, prompt="start")
    evaluator = tg.Evaluator(module, exact)
    good, bad = tg.Candidate({"system": "GOOD"}), tg.Candidate({"system": "BAD"})
    data = examples(6)
    r_good, r_bad, r_now = await asyncio.gather(
        evaluator.aevaluate(data, good),
        evaluator.aevaluate(data, bad),
        evaluator.aevaluate(data),
    )
    assert r_good.mean == 1.0 and r_bad.mean == 0.0 and r_now.mean == 0.0
    assert r_good.candidate_id == good.id and r_bad.candidate_id == bad.id
    assert module.system.value == "start"
    systems = {c.request.messages[0].content for c in engine.calls}
    assert systems == {"GOOD", "BAD", "start"}
    # they really ran at the same time: every call started before any ended
    assert max(c.start for c in engine.calls) < min(c.end for c in engine.calls)


def test_the_cache_never_runs_the_same_values_on_the_same_example_twice():
    engine = echo_engine()
    module = Echo(engine)
    evaluator = tg.Evaluator(module, exact, cache=True)
    first = evaluator.evaluate(examples(5))
    again = evaluator.evaluate(examples(7))
    assert len(engine.calls) == 7 and again.reused == 5 and again.usage.calls == 2
    assert again.scores[:5] == first.scores
    module.system.value = "GOOD again"  # new values: a new candidate id, evaluated afresh
    evaluator.evaluate(examples(2))
    assert len(engine.calls) == 9


def test_duck_typed_engines_are_observed_like_engine_subclasses():
    class Bare:  # only an async generate: no tg Engine base class
        model_name = "gpt-4o"

        async def generate(self, request):
            return tg.engines.ChatResponse(
                text="7", usage=tg.engines.Usage(prompt_tokens=1000, completion_tokens=10)
            )

    call = tg.LLMCall(Bare(), tg.Variable("s", role_description="system prompt"))
    with tg.engines.track_usage() as usage:
        call(tg.Variable("q", role_description="question"))
    assert usage.total.calls == 1
    result = tg.evaluate(
        lambda e: call(tg.Variable("q", role_description="q")), [{}], lambda p, e: 1
    )
    assert result.usage.calls == 1
    # priced by the engine's model although the request names none: 1000 in + 10 out of gpt-4o
    assert result.usage.cost_usd == pytest.approx((1000 * 2.5 + 10 * 10) / 1e6)


def test_sync_programs_and_progress_callbacks():
    engine = echo_engine()
    call = tg.LLMCall(engine, tg.Variable("GOOD", role_description="system prompt"))
    seen = []
    result = tg.Evaluator(
        lambda e: call(tg.Variable(e["q"], role_description="question")),
        exact,
        progress=lambda done, total: seen.append((done, total)),
    ).evaluate(examples(4))
    assert result.mean == 1.0 and seen[-1] == (4, 4) and len(seen) == 4


async def test_max_concurrency_holds_across_concurrent_evaluations():
    engine = echo_engine(latency=0.01)
    evaluator = tg.Evaluator(Echo(engine, prompt="start"), exact, max_concurrency=3)
    candidates = [tg.Candidate({"system": f"GOOD {i}"}) for i in range(3)]
    await asyncio.gather(*(evaluator.aevaluate(examples(4), c) for c in candidates))
    events = sorted([(c.start, 1) for c in engine.calls] + [(c.end, -1) for c in engine.calls])
    in_flight = peak = 0
    for _, delta in events:
        in_flight += delta
        peak = max(peak, in_flight)
    assert len(engine.calls) == 12 and peak == 3
