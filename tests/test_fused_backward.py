"""Fused backward: a shorter critical path, provenance, same decisions, repair and fallback."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

import textgraph as tg
from tests.conftest import by_purpose, waves
from textgraph.engines import ChatRequest, ScriptedEngine
from textgraph.errors import ArgumentError
from textgraph.fused import fused_backward, render_calls
from textgraph.graph import critical_path_calls, critique_paths, graph_record

LATENCY = 0.02


def param(text: str, role: str) -> tg.Variable:
    return tg.Variable(text, role_description=role, requires_grad=True)


def is_fused(request: ChatRequest) -> bool:
    return request.metadata.get("operation") == "fused_backward"


async def two_stage_step(engine: ScriptedEngine, batch: int, fused: bool) -> tg.Variable:
    """The bench's step: prompt -> LLM call -> LLM call -> TextLoss, summed, backward, TGD."""
    system = param("Answer the question.", "system prompt of the answering model")
    stage1, stage2 = tg.LLMCall(engine, system), tg.LLMCall(engine)
    judge = tg.TextLoss("Is the answer correct? Criticize it.", engine=engine)

    async def example(i: int) -> tg.Variable:
        first = await stage1.acall(tg.Variable(f"question {i}", role_description="question"))
        return await judge.acall(await stage2.acall(first))

    total = tg.sum(await asyncio.gather(*(example(i) for i in range(batch))))
    await total.abackward(engine=engine, fused=fused)
    await tg.TGD([system], engine=engine).astep()
    return total


@pytest.mark.parametrize("batch", [1, 4])
def test_fused_step_runs_in_as_many_waves_as_its_shorter_critical_path(batch):
    counts = {}
    for fused in (False, True):
        engine = ScriptedEngine(by_purpose(), latency=LATENCY)
        total = asyncio.run(two_stage_step(engine, batch, fused))
        counts[fused] = (waves(engine.calls), critical_path_calls(total, fused=fused))
        backward_calls = engine.calls_for("backward")
        assert len(backward_calls) == (batch if fused else 2 * batch)
    # forward 1, forward 2, loss, backward stage 2, backward stage 1, optimizer
    assert counts[False] == (6, 6)
    # forward 1, forward 2, loss, one fused backward per example (concurrent), optimizer
    assert counts[True] == (5, 5)


def test_one_fused_call_per_example_in_parallel_sees_the_whole_chain():
    engine = ScriptedEngine(by_purpose(), latency=LATENCY)
    asyncio.run(two_stage_step(engine, 3, fused=True))
    fused = [c for c in engine.calls if is_fused(c.request)]
    assert len(fused) == 3
    assert max(c.start for c in fused) < min(c.end for c in fused)  # all in flight at once
    prompt = fused[0].request.messages[-1].content
    assert "Call 1 (llm_call)" in prompt and "Call 2 (llm_call)" in prompt
    assert "Answer the question." in prompt  # the parameter's value and the first call
    assert "question 0" in prompt and "question 1" not in prompt  # its own example only
    assert "The output is wrong: it ignores the question." in prompt  # the loss's feedback


def test_fused_gradients_carry_per_parameter_per_example_provenance():
    def critic(request: ChatRequest) -> str:
        keys = request.response_format.json_schema["required"]
        text = request.messages[-1].content
        example = next(f"q{i}" for i in range(3) if f"\nq{i}\n" in text)
        roles = {k: role for k, role in zip(keys, ("planner", "writer"), strict=False)}
        listing = text.split("The parameters to give feedback on:")[1]
        found = {
            k: ("planner" if f'"{k}": the parameter with role "planner' in listing else "writer")
            for k in roles
        }
        return json.dumps({k: f"{found[k]} critique for {example}" for k in keys})

    engine = ScriptedEngine(by_purpose(backward=critic), raw=True)
    planner, writer = param("plan it", "planner prompt"), param("write it", "writer prompt")
    losses = []
    for i in range(3):
        plan = tg.LLMCall(engine, planner)(tg.Variable(f"q{i}", role_description="question"))
        losses.append(tg.TextLoss("Judge it.", engine=engine)(tg.LLMCall(engine, writer)(plan)))
    total = tg.sum(losses)
    assert asyncio.run(fused_backward(total, engine=engine)) == []

    for p, name in ((planner, "planner"), (writer, "writer")):
        assert [g.text for g in p.gradients] == [f"{name} critique for q{i}" for i in range(3)]
        assert [g.source for g in p.gradients] == losses  # which example's loss, in order
        assert {g.operation for g in p.gradients} == {"fused_backward"}
        assert "[the variable being improved" in p.gradients[0].context
    assert "q0" in planner.gradients[0].context and "q1" in planner.gradients[1].context
    example_of = {id(loss): 10 + i for i, loss in enumerate(losses)}
    record = graph_record(total, example_of)
    node = next(n for n in record["nodes"] if n["id"] == writer.id)
    assert [g["example"] for g in node["gradients"]] == [10, 11, 12]
    paths = critique_paths(record, writer.id, example=11)
    assert len(paths) == 1 and paths[0][0]["id"] == losses[1].id
    assert paths[0][-1]["critique"] == "writer critique for q1"


def world_engine() -> ScriptedEngine:
    """A world where answers carry units only when the prompt asks for them; the judge
    and every critic name the missing rule; the optimizer adds what the feedback quotes."""
    rule = "Always state the unit."

    def forward(request: ChatRequest) -> str:
        return "42 apples" if rule in request.messages[0].content else "42"

    def loss(request: ChatRequest) -> str:
        answer = request.prompt_text()
        return "Correct." if "42 apples" in answer else f"Missing unit. Add the rule: {rule}"

    def backward(request: ChatRequest) -> str:
        needs = "Add the rule" in request.prompt_text()
        return f"The prompt lacks this rule: {rule}" if needs else "Keep the prompt."

    def optimizer(request: ChatRequest) -> str:
        text = request.prompt_text()
        return f"Answer the question. {rule}" if rule in text else "Answer the question."

    return ScriptedEngine(
        by_purpose(forward=forward, loss=loss, backward=backward, optimizer=optimizer)
    )


def world_step(fused: bool) -> tuple[str, float, float]:
    engine = world_engine()
    system = param("Answer the question.", "system prompt")
    program = tg.LLMCall(engine, system)
    questions = [tg.Variable(f"How many apples, case {i}?", role_description="q") for i in range(3)]

    def score() -> float:
        return sum("apples" in program(q).value for q in questions) / len(questions)

    before = score()
    losses = [tg.TextLoss("Judge the answer.", engine=engine)(program(q)) for q in questions]
    tg.sum(losses).backward(engine=engine, fused=fused)
    tg.TGD([system], engine=engine).step()
    return system.value, before, score()


def test_fused_and_per_op_reach_the_same_accepted_rewrite_on_a_scripted_world():
    per_op, fused = world_step(False), world_step(True)
    assert fused == per_op
    value, before, after = fused
    assert value == "Answer the question. Always state the unit."
    assert before == 0.0 and after == 1.0  # the rewrite is an improvement, so it is accepted


def test_malformed_fused_reply_is_repaired_once_then_falls_back_to_per_op_recorded():
    def critic(request: ChatRequest) -> str:
        return "I think the prompt is fine." if is_fused(request) else "per-op critique"

    engine = ScriptedEngine(by_purpose(backward=critic), raw=True)
    system = param("sys", "system prompt")
    a = tg.LLMCall(engine, system)(tg.Variable("q", role_description="question"))
    loss = tg.TextLoss("Judge.", engine=engine)(tg.LLMCall(engine)(a))
    fallbacks = asyncio.run(fused_backward(loss, engine=engine))

    fused = [c for c in engine.calls if is_fused(c.request)]
    assert len(fused) == 2  # the request and one repair turn quoting the problem
    assert "no JSON object" in fused[1].request.messages[-1].content
    assert [f.loss for f in fallbacks] == [loss] and "no JSON object" in fallbacks[0].error
    assert [g.text for g in system.gradients] == ["per-op critique"]
    assert system.gradients[0].operation == "llm_call"
    assert any("per-op backward ran for it instead" in w for w in system.warnings)
    assert loss.warnings == system.warnings  # the loss (the root here) says so too


def test_a_fused_reply_fixed_by_the_repair_turn_needs_no_fallback():
    replies = iter(["not json", json.dumps({"var_1": "fused critique"})])

    def critic(request: ChatRequest) -> str:
        return next(replies) if is_fused(request) else "per-op critique"

    engine = ScriptedEngine(by_purpose(backward=critic), raw=True)
    system = param("sys", "system prompt")
    loss = tg.TextLoss("Judge.", engine=engine)(
        tg.LLMCall(engine, system)(tg.Variable("q", role_description="question"))
    )
    assert asyncio.run(fused_backward(loss, engine=engine)) == []
    assert [g.text for g in system.gradients] == ["fused critique"]
    assert system.warnings == []


def test_long_subgraphs_are_cut_with_the_reduction_limits_keeping_both_ends():
    engine = ScriptedEngine(by_purpose(forward=lambda r: "x" * 400))
    system = param("sys", "system prompt")
    v = tg.Variable("start", role_description="question")
    outputs = []
    for _ in range(12):
        v = tg.LLMCall(engine, system)(v)
        outputs.append(v)
    limit = 300
    text = render_calls(outputs, limit)
    shown_calls = re.findall(r"^Call (\d+) \(llm_call\):$", text, re.M)
    assert shown_calls[0] == "1" and shown_calls[-1] == "12"  # both ends kept
    omitted = 12 - len(shown_calls)
    assert omitted > 0 and f"[{omitted} calls in the middle of the pipeline are omitted" in text
    bodies = re.split(r"^Call \d+ \(llm_call\):\n", text, flags=re.M)[1:]
    assert all(len(b.split("\n\n[")[0].strip()) <= limit for b in bodies)  # each call clipped
    assert all(b.split("\n\n[")[0].strip().endswith("…") for b in bodies)
    assert len(text) <= 3 * limit + 100


def test_bad_fused_arguments_get_clear_errors():
    engine = ScriptedEngine(by_purpose())
    loss = tg.TextLoss("Judge.", engine=engine)(
        tg.LLMCall(engine, param("sys", "system prompt"))(tg.Variable("q", role_description="q"))
    )
    with pytest.raises(ArgumentError, match="limit"):
        asyncio.run(fused_backward(loss, engine=engine, limit=0))
    with pytest.raises(ArgumentError, match="requires_grad"):
        asyncio.run(fused_backward(tg.Variable("x", role_description="x"), engine=engine))


def test_a_loss_at_its_perfect_score_sends_no_fused_critique():
    engine = ScriptedEngine(by_purpose(forward="4"))
    system = param("sys", "system prompt")
    loss_fn = tg.MetricLoss(lambda prediction, target: float(prediction == target), engine)
    outputs = [tg.LLMCall(engine, system)(tg.Variable(q, role_description="q")) for q in "ab"]
    losses = [loss_fn(outputs[0], "4"), loss_fn(outputs[1], "5")]  # perfect, then wrong
    asyncio.run(fused_backward(tg.sum(losses), engine=engine))
    assert [g.source for g in system.gradients] == [losses[1]]
    assert len([c for c in engine.calls if is_fused(c.request)]) == 1


def test_fused_loss_evaluates_and_critiques_in_one_call_for_a_four_wave_step():
    def judge(request: ChatRequest) -> str:
        keys = request.response_format.json_schema["required"]
        assert keys[0] == "evaluation" and "Call 2 (llm_call)" in request.prompt_text()
        return json.dumps({k: ("too vague" if k == "evaluation" else f"fix {k}") for k in keys})

    engine = ScriptedEngine(by_purpose(loss=judge), latency=LATENCY)
    system = param("Answer the question.", "system prompt of the answering model")
    stage1, stage2 = tg.LLMCall(engine, system), tg.LLMCall(engine)
    judge_loss = tg.losses.FusedTextLoss("Is the answer correct?", engine=engine)

    async def step() -> tg.Variable:
        async def example(i: int) -> tg.Variable:
            first = await stage1.acall(tg.Variable(f"question {i}", role_description="question"))
            return await judge_loss.acall(await stage2.acall(first))

        total = tg.sum(await asyncio.gather(*(example(i) for i in range(4))))
        await total.abackward(engine=engine, fused=True)
        await tg.TGD([system], engine=engine).astep()
        return total

    total = asyncio.run(step())
    assert engine.calls_for("backward") == []  # the loss call wrote the critiques
    assert waves(engine.calls) == critical_path_calls(total, fused=True) == 4
    assert [g.text for g in system.gradients] == ["fix var_1"] * 4
    assert [g.source for g in system.gradients] == list(total.predecessors)
    assert {loss.value for loss in total.predecessors} == {"too vague"}


def test_a_malformed_fused_loss_reply_falls_back_to_a_plain_evaluation_recorded():
    def judge(request: ChatRequest) -> str:
        return "not json" if request.metadata.get("operation") == "fused_loss" else "plain verdict"

    engine = ScriptedEngine(by_purpose(loss=judge), raw=True)
    system = param("sys", "system prompt")
    output = tg.LLMCall(engine, system)(tg.Variable("q", role_description="question"))
    loss = tg.losses.FusedTextLoss("Judge.", engine=engine)(output)
    assert loss.value == "plain verdict"
    assert any("plain evaluation ran instead" in w for w in loss.warnings)
    assert (
        len([c for c in engine.calls if c.request.metadata.get("operation") == "fused_loss"]) == 2
    )
    assert "parameter_feedback" not in loss.grad_fn.saved
    assert critical_path_calls(loss, fused=True) == 4  # the critic call is back on the path


def test_fused_backward_picks_its_engine_in_the_order_per_op_backward_does():
    """The graph's own engine comes before tg.configure's forward engine (and
    TEXTGRAPH_MODEL); tg.configure's backward_engine comes before the graph's."""
    from textgraph.engines import context

    graph_engine, configured_forward = ScriptedEngine(by_purpose()), ScriptedEngine(by_purpose())
    critic = ScriptedEngine(by_purpose())
    try:
        for configure, expected in (
            ({"engine": configured_forward}, graph_engine),
            ({"backward_engine": critic}, critic),
        ):
            context.reset_configuration()
            tg.configure(**configure)
            system = param("Answer the question.", "system prompt")
            answer = tg.LLMCall(graph_engine, system)(tg.Variable("q", role_description="q"))
            loss = tg.TextLoss("Is it correct?", engine=graph_engine)(answer)
            before = {id(e): len(e.calls_for("backward")) for e in (graph_engine, critic)}
            loss.backward(fused=True)
            assert len(expected.calls_for("backward")) == before[id(expected)] + 1
            assert not configured_forward.calls
    finally:
        context.reset_configuration()


def test_fused_backward_takes_a_model_string_for_its_engine(monkeypatch):
    """textgraph.fused.fused_backward(root, engine="provider/model") resolves the string as
    every engine parameter does (before: the str itself was called, an AttributeError)."""
    from textgraph.engines import context
    from textgraph.testing import LLMTestServer

    def critic_reply(request: ChatRequest) -> str:  # the server sees the wire body only
        keys = re.search(r"exactly these keys: (.*?)\.", request.prompt_text()).group(1)
        return json.dumps({key: "Ask for the number only." for key in re.findall(r'"(\w+)"', keys)})

    critic = ScriptedEngine(critic_reply)
    forward = ScriptedEngine(by_purpose())
    with LLMTestServer(critic) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.openai_base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-fused-test")
        try:
            system = param("Answer the question.", "system prompt")
            answer = tg.LLMCall(forward, system)(tg.Variable("q", role_description="q"))
            loss = tg.TextLoss("Is it correct?", engine=forward)(answer)
            assert asyncio.run(fused_backward(loss, engine="openai/fused-critic")) == []
        finally:
            with context._lock:
                context._by_model.clear()  # the engine points at this server
    assert [g.text for g in system.gradients] == ["Ask for the number only."]
    assert not forward.calls_for("backward")
