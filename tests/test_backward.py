"""Backward: graph shapes, pruning, exactly-once pass-through, engines, concurrency."""

from __future__ import annotations

import asyncio
import json

import pytest

import textgraph as tg
from tests.conftest import by_purpose, overlapped, waves
from textgraph.engines import ScriptedEngine


def param(text: str, role: str = "system prompt") -> tg.Variable:
    return tg.Variable(text, role_description=role, requires_grad=True)


def data(text: str, role: str = "question") -> tg.Variable:
    return tg.Variable(text, role_description=role)


def test_chain_gives_each_parameter_one_critique_with_its_context(engine):
    s1, s2 = param("first system prompt"), param("second system prompt")
    q = data("How many apples?")
    a = tg.LLMCall(engine, s1)(q)
    b = tg.LLMCall(engine, s2)(a)
    loss = tg.TextLoss("Judge it.", engine=engine)(b)
    loss.backward()

    assert len(s1.gradients) == 1 and len(s2.gradients) == 1
    assert len(a.gradients) == 1  # from the second call, via the JSON reply keyed per input
    g = s1.gradients[0]
    assert g.source is a and g.operation == "llm_call"
    assert "How many apples?" in g.context
    assert "first system prompt" not in g.context  # own value elided in the context
    assert g.conversation[-1]["role"] == "assistant"
    assert g.conversation[0]["content"].startswith("You are the critic")
    # the loss critique flows to the evaluated output directly, no extra call
    assert b.gradients[0].text == loss.value and b.gradients[0].conversation == ()


def test_diamond_variable_used_twice_gets_two_gradients_each_with_its_context():
    calls = {"n": 0}

    def backward_reply(request):
        calls["n"] += 1
        keys = (
            json.loads(request.response_format.model_dump_json())["json_schema"]["required"]
            if request.response_format
            else []
        )
        text = f"critique from {'branch B' if 'prompt B' in request.prompt_text() else 'branch C'}"
        return json.dumps({k: text for k in keys}) if keys else text

    engine = ScriptedEngine(by_purpose(backward=backward_reply))
    s, pb, pc = param("root prompt"), param("prompt B"), param("prompt C")
    a = tg.LLMCall(engine, s)(data("q"))
    b = tg.LLMCall(engine, pb)(a)
    c = tg.LLMCall(engine, pc)(a)
    loss = tg.TextLoss("Judge.", engine=engine)(tg.concat([b, c]))
    loss.backward()

    assert [g.source for g in a.gradients] == [b, c]  # deterministic order: topological
    assert [g.text for g in a.gradients] == ["critique from branch B", "critique from branch C"]
    assert "prompt B" in a.gradients[0].context and "prompt C" in a.gradients[1].context
    assert len(s.gradients) == 1
    # s's backward prompt shows both critiques a received
    s_request = s.gradients[0].conversation[1]["content"]
    assert "critique from branch B" in s_request and "critique from branch C" in s_request


def test_fan_in_one_call_covers_all_inputs_requiring_grad(engine):
    x, y, z = param("x", "first field"), param("y", "second field"), data("z", "third field")
    op = tg.FormattedLLMCall(engine, "{x} {y} {z}", ["x", "y", "z"])
    out = op(x=x, y=y, z=z)
    tg.TextLoss("Judge.", engine=engine)(out).backward()

    backward_calls = engine.calls_for("backward")
    assert len(backward_calls) == 1
    assert backward_calls[0].request.response_format.type == "json_schema"
    assert sorted(backward_calls[0].request.variable_ids) == sorted([x.id, y.id])
    assert len(x.gradients) == 1 and len(y.gradients) == 1 and z.gradients == []


def test_per_input_uses_one_call_per_input(engine):
    x, y = param("x", "first field"), param("y", "second field")
    out = tg.FormattedLLMCall(engine, "{x} {y}", ["x", "y"])(x=x, y=y)
    tg.TextLoss("Judge.", engine=engine)(out).backward(per_input=True)
    calls = engine.calls_for("backward")
    assert len(calls) == 2
    assert [c.request.variable_ids for c in calls] == [[x.id], [y.id]]
    assert all(c.request.response_format is None for c in calls)


def test_requires_grad_propagates_and_prunes_llm_calls(engine):
    s = param("tunable")
    fixed = tg.Variable("fixed", role_description="fixed system prompt")
    a = tg.LLMCall(engine, s)(data("q1"))  # requires grad through s
    b = tg.LLMCall(engine, fixed)(data("q2"))  # nothing upstream requires grad
    assert a.requires_grad and not b.requires_grad
    loss = tg.TextLoss("Judge.", engine=engine)(tg.concat([a, b]))
    loss.backward()

    backward_calls = engine.calls_for("backward")
    assert len(backward_calls) == 1  # only the branch leading to s
    assert backward_calls[0].request.variable_ids == [s.id]
    assert b.gradients == [] and fixed.gradients == []


def test_backward_without_any_parameter_is_a_clear_error(engine):
    loss = tg.TextLoss("Judge.", engine=engine)(tg.LLMCall(engine)(data("q")))
    with pytest.raises(tg.ArgumentError, match="requires_grad=True"):
        loss.backward()


def test_concat_passes_feedback_exactly_once(engine):
    x, y = param("part one", "first part"), param("part two", "second part")
    joined = tg.concat([x, y])
    loss = tg.TextLoss("Judge.", engine=engine)(joined)
    loss.backward()
    assert [g.text for g in x.gradients] == [loss.value]
    assert [g.text for g in y.gradients] == [loss.value]
    assert engine.calls_for("backward") == []  # pass-through spends no call


def test_same_variable_twice_in_one_concat_gets_one_gradient(engine):
    x = param("repeated")
    loss = tg.TextLoss("Judge.", engine=engine)(tg.concat([x, x]))
    loss.backward()
    assert len(x.gradients) == 1


def test_sum_of_losses_sends_each_answer_only_its_own_critique():
    def judge(request):
        return "critique of ONE" if "answer one" in request.prompt_text() else "critique of TWO"

    engine = ScriptedEngine(by_purpose(loss=judge))
    a1, a2 = param("answer one", "answer"), param("answer two", "answer")
    l1 = tg.TextLoss("Judge.", engine=engine)(a1)
    l2 = tg.TextLoss("Judge.", engine=engine)(a2)
    total = tg.sum([l1, l2])
    assert total.is_loss
    total.backward()
    assert [g.text for g in a1.gradients] == ["critique of ONE"]
    assert [g.text for g in a2.gradients] == ["critique of TWO"]


def test_metric_loss_makes_no_call_on_a_perfect_score_and_gives_no_gradient():
    engine = ScriptedEngine(by_purpose(loss="It said 7 but the items add up to 8."))
    metric = lambda pred, target: float(pred.strip() == target)  # noqa: E731
    loss_fn = tg.MetricLoss(metric, engine=engine)

    right = param("8", "answer")
    ok = loss_fn(right, "8")
    assert ok.score == 1.0 and engine.calls == []
    ok.backward()
    assert right.gradients == [] and engine.calls == []

    wrong = param("7", "answer")
    bad = loss_fn(wrong, tg.Variable("8", role_description="correct answer"))
    assert bad.score == 0.0 and len(engine.calls_for("loss")) == 1
    assert "8" in engine.calls[0].request.prompt_text()
    bad.backward()
    assert wrong.gradients[0].text == bad.value
    assert "items add up to 8" in bad.value


def test_metric_loss_rejects_non_numeric_metric(engine):
    loss_fn = tg.MetricLoss(lambda p, t: "yes", engine=engine)
    with pytest.raises(tg.ArgumentError, match="must return a number"):
        loss_fn(param("x", "answer"), "x")


def test_multi_field_evaluation_critiques_only_fields_requiring_grad(engine):
    question, answer = data("q"), param("a", "answer")
    evaluation = tg.MultiFieldEvaluation(
        "Is the answer right?", role_descriptions=["question", "answer"], engine=engine
    )
    loss = evaluation([question, answer])
    loss.backward()
    assert [g.text for g in answer.gradients] == [loss.value] and question.gradients == []
    with pytest.raises(tg.ArgumentError, match="one variable per role"):
        evaluation([question])


def test_optimizable_loss_instruction_gets_an_llm_critique(engine):
    instruction = param("Judge harshly.", "evaluation instruction")
    answer = param("a", "answer")
    tg.TextLoss(instruction, engine=engine)(answer).backward()
    assert len(instruction.gradients) == 1
    assert engine.calls_for("backward")[0].request.variable_ids == [instruction.id]


def test_backward_engine_precedence_explicit_then_context_then_forward():
    forward_engine = ScriptedEngine(by_purpose())
    strong, context_engine = ScriptedEngine(by_purpose()), ScriptedEngine(by_purpose())

    def build():
        s = param("p")
        out = tg.LLMCall(forward_engine, s)(data("q"))
        return tg.TextLoss("Judge.", engine=forward_engine)(out)

    build().backward(engine=strong)
    assert len(strong.calls_for("backward")) == 1
    with tg.use_engine(context_engine):
        build().backward()
    assert len(context_engine.calls_for("backward")) == 1
    build().backward()
    assert len(forward_engine.calls_for("backward")) == 1


def test_function_op_backward_without_any_engine_says_how_to_fix():
    shout = tg.function(lambda s: s.upper(), purpose="upper-cases the text")
    x = param("hello", "greeting")
    loss = tg.TextLoss("Judge.", engine=ScriptedEngine(by_purpose()))(shout(x))
    # the loss passes to shout's output directly; shout's backward needs an engine
    with pytest.raises(tg.ConfigurationError, match=r"loss.backward\(engine=...\)"):
        loss.backward()
    assert x.gradients == []


def test_failed_backward_leaves_gradients_unchanged():
    def backward_reply(request):
        if "prompt two" in request.prompt_text():
            raise tg.EngineError("provider down")
        return "fine"

    engine = ScriptedEngine(by_purpose(backward=backward_reply))
    s1, s2 = param("prompt one"), param("prompt two")
    out = tg.concat([tg.LLMCall(engine, s1)(data("q")), tg.LLMCall(engine, s2)(data("q"))])
    loss = tg.TextLoss("Judge.", engine=engine)(out)
    with pytest.raises(tg.EngineError, match="provider down"):
        loss.backward()
    assert s1.gradients == [] and s2.gradients == [] and out.gradients == []


async def test_sync_backward_works_inside_a_running_event_loop(engine):
    s = param("p")
    loss = tg.TextLoss("Judge.", engine=engine)(await tg.LLMCall(engine, s).acall(data("q")))
    asyncio.get_running_loop()  # we are inside a loop: asyncio.run() would fail here
    loss.backward()
    assert len(s.gradients) == 1


async def test_context_engine_reaches_sync_calls_made_inside_a_running_loop(engine):
    s = param("p")
    with tg.use_engine(engine):
        answer = tg.LLMCall(system_prompt=s)(data("q"))  # sync call inside the loop
        tg.TextLoss("Judge.")(answer).backward()
    assert len(s.gradients) == 1 and len(engine.calls) == 3


async def test_independent_branches_overlap_and_waves_equal_the_critical_path():
    latency = 0.05
    engine = ScriptedEngine(by_purpose(), latency=latency)
    root = param("root prompt")
    prompts = [param(f"branch prompt {i}") for i in range(3)]
    a = await tg.LLMCall(engine, root).acall(data("q"))
    # branch 0 is a chain of three calls after `a`; branches 1 and 2 are one call each
    b0 = a
    for _ in range(3):
        b0 = await tg.LLMCall(engine, prompts[0]).acall(b0)
    b1 = await tg.LLMCall(engine, prompts[1]).acall(a)
    b2 = await tg.LLMCall(engine, prompts[2]).acall(a)
    loss = await tg.TextLoss("Judge.", engine=engine).acall(tg.concat([b0, b1, b2]))
    engine.calls.clear()

    await loss.abackward()

    calls = engine.calls_for("backward")
    # backward calls: 3 on the long chain, 1 per short branch, 1 for `a` -> root prompt
    assert len(calls) == 6
    # critical path: the long chain (3) then `a` (1) = 4 sequential waves
    assert waves(calls) == 4
    first_wave = [c for c in calls if c.start < min(x.end for x in calls)]
    assert len(first_wave) == 3 and overlapped(first_wave)  # the three branch heads together
    assert len(root.gradients) == 1
    assert len(a.gradients) == 3


async def test_backward_respects_the_engine_concurrency_limit():
    engine = ScriptedEngine(by_purpose(), latency=0.02, max_concurrency=2)
    prompts = [param(f"prompt {i}") for i in range(6)]
    outs = await asyncio.gather(*(tg.LLMCall(engine, p).acall(data("q")) for p in prompts))
    loss = await tg.TextLoss("Judge.", engine=engine).acall(tg.concat(list(outs)))
    engine.calls.clear()
    await loss.abackward()
    calls = engine.calls_for("backward")
    assert len(calls) == 6
    peak = max(sum(1 for o in calls if o.start <= c.start < o.end) for c in calls)
    assert peak == 2
    assert waves(calls) == 3


def test_sum_of_function_judgements_gives_each_example_only_its_own_verdict():
    """TextGrad's prompt-optimization loop: a string judge per example, tg.sum, backward."""
    verdicts = {"2+2": "CORRECT-ALPHA", "3+3": "WRONG-BRAVO", "5+5": "WRONG-CHARLIE"}

    def backward_reply(request):
        text = request.prompt_text()
        seen = [v for v in verdicts.values() if v in text]
        return "feedback about " + " and ".join(seen)

    engine = ScriptedEngine(by_purpose(forward="an answer", backward=backward_reply))
    system = param("Answer the arithmetic question.")
    judge = tg.function(
        lambda answer, question: f"Verdict on {question}: {verdicts[question]}",
        purpose="Judges whether the answer to the question is correct.",
    )
    losses = [judge(tg.LLMCall(engine, system)(data(q)), q) for q in verdicts]
    tg.sum(losses).backward(engine=engine)

    prompts = [c.request.prompt_text() for c in engine.calls_for("backward")]
    assert len(prompts) == 6  # one through each judge, one through each LLM call
    for prompt in prompts:
        assert sum(v in prompt for v in verdicts.values()) == 1, prompt
    assert sorted(g.text for g in system.gradients) == sorted(
        f"feedback about {v}" for v in verdicts.values()
    )


def test_sum_as_an_intermediate_value_passes_its_feedback_to_every_input(engine):
    x, y = param("part one", "first part"), param("part two", "second part")
    loss = tg.TextLoss("Judge.", engine=engine)(tg.sum([x, y]))
    loss.backward()
    assert [g.text for g in x.gradients] == [loss.value]
    assert [g.text for g in y.gradients] == [loss.value]
