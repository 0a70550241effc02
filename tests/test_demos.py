"""tg.Demos as a parameter, few-shot rendering, traces, and the demo optimizers."""

from __future__ import annotations

import json
import re

import pytest

import textgraph as tg
from textgraph.candidate import candidate_values
from textgraph.engines import ScriptedEngine
from textgraph.engines.cache import request_key
from textgraph.engines.providers.anthropic import AnthropicEngine
from textgraph.engines.providers.openai import OpenAIEngine
from textgraph.ops.trace import record_op_calls
from textgraph.runs import RunDir

# --- the parameter type ----------------------------------------------------------


def test_demos_validate_and_have_one_canonical_value():
    d = tg.Demos(
        [{"inputs": "2+2", "output": "4"}, tg.Demo(inputs={"q": "3+3"}, output="6")],
        role_description="worked examples",
    )
    assert [x.output for x in d.items] == ["4", "6"]
    assert d.requires_grad and len(d) == 2
    # dicts and Demos give the same value; a Candidate of either is one candidate
    again = tg.Demos(
        [tg.Demo(inputs="2+2", output="4"), {"inputs": {"q": "3+3"}, "output": "6"}],
        role_description="x",
    )
    assert again.value == d.value
    a = tg.Candidate({"d": [{"inputs": "2+2", "output": "4"}]})
    b = tg.Candidate(
        {"d": tg.Demos([tg.Demo(inputs="2+2", output="4")], role_description="x").value}
    )
    assert a.id == b.id
    with pytest.raises(tg.ArgumentError, match="output"):
        tg.Demos([{"inputs": "x"}], role_description="r")
    with pytest.raises(tg.ArgumentError, match="max_items=1"):
        tg.Demos([{"inputs": "a", "output": "b"}] * 2, role_description="r", max_items=1)
    with pytest.raises(tg.ArgumentError, match=r"JSON written by tg\.Demos"):
        d.value = "not demos"
    with pytest.raises(tg.ArgumentError, match=r"must be a tg\.Demos or None"):
        tg.LLMCall(None, demos=[{"inputs": "a", "output": "b"}])


class Classifier(tg.Module):
    def __init__(self, engine, demos=()):
        self.system = tg.Variable("Classify.", role_description="instruction", requires_grad=True)
        self.demos = tg.Demos(list(demos), role_description="labeled examples", max_items=4)
        self.call = tg.LLMCall(engine, self.system, demos=self.demos)

    async def aforward(self, example):
        return await self.call.acall(tg.Variable(example["text"], role_description="message"))


def test_state_dict_round_trip_and_bad_demos_change_nothing(tmp_path):
    m = Classifier(ScriptedEngine(lambda r: "x"), [{"inputs": "hi", "output": "greet"}])
    state = m.state_dict()
    assert state["parameters"]["demos"]["kind"] == "demos"
    path = m.save(tmp_path / "m.json")
    other = Classifier(ScriptedEngine(lambda r: "x"))
    other.load(path)
    assert other.demos.items == m.demos.items
    state["parameters"]["demos"]["value"] = json.dumps(
        {"format": "textgraph.demos/1", "items": [{"inputs": "a", "output": "b"}] * 5}
    )
    before = other.state_dict()
    with pytest.raises(tg.StateDictError, match="max_items=4"):
        other.load_state_dict(state)
    assert other.state_dict() == before


def test_demos_render_as_chat_turns_and_enter_the_cache_key():
    engine = ScriptedEngine(lambda r: "greet")
    m = Classifier(
        engine,
        [
            {"inputs": "hello", "output": "greet"},
            {"inputs": "bye", "output": "farewell", "rationale": "parting"},
        ],
    )
    tg.evaluate(m, [{"text": "hey"}], lambda p, e: 1.0)
    msgs = [(x.role, x.content) for x in engine.calls[-1].request.messages]
    assert msgs == [
        ("system", "Classify."),
        ("user", "hello"),
        ("assistant", "greet"),
        ("user", "bye"),
        ("assistant", "parting\n\nfarewell"),
        ("user", "hey"),
    ]
    with_demos = engine.calls[-1].request
    with candidate_values(m, {"demos": []}):
        tg.evaluate(m, [{"text": "hey"}], lambda p, e: 1.0)
    without = engine.calls[-1].request
    assert len(without.messages) == 2
    key = {"provider": "p", "base_url": None, "model": "m", "salt": None}
    assert request_key(with_demos, **key) != request_key(without, **key)
    # every provider's wire format keeps the turns in order
    openai = OpenAIEngine("gpt-4o", base_url="http://127.0.0.1:9/v1", api_key="k")
    body = openai.build_request(with_demos).body
    assert [m["role"] for m in body["messages"]] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    anthropic = AnthropicEngine("claude", base_url="http://127.0.0.1:9", api_key="k")
    body = anthropic.build_request(with_demos).body
    assert body["system"] == "Classify."
    assert [m["role"] for m in body["messages"]] == ["user", "assistant"] * 2 + ["user"]


def test_formatted_call_fills_its_template_with_each_demo():
    engine = ScriptedEngine(lambda r: "ok")
    demos = tg.Demos(
        [{"inputs": {"q": "1+1", "ctx": "math"}, "output": "2"}], role_description="examples"
    )
    op = tg.FormattedLLMCall(engine, "Context: {ctx}\nQ: {q}", ["q", "ctx"], demos=demos)
    op(q=tg.Variable("2+2", role_description="q"), ctx=tg.Variable("sums", role_description="c"))
    msgs = [x.content for x in engine.calls[-1].request.messages]
    assert msgs == ["Context: math\nQ: 1+1", "2", "Context: sums\nQ: 2+2"]
    demos.items = [{"inputs": {"q": "only q"}, "output": "2"}]
    with pytest.raises(tg.ArgumentError, match=r"lacks field\(s\) \['ctx'\]"):
        op(q=tg.Variable("2+2", role_description="q"), ctx=tg.Variable("s", role_description="c"))


def test_backward_shows_the_demos_and_critiques_them():
    def respond(request):
        if request.purpose == "backward":
            text = request.messages[-1].content
            assert "<DEMONSTRATIONS" in text and "input: hello" in text
            assert "the few-shot demonstrations" in text
            return "The second demonstration is mislabeled."
        return "greet"

    m = Classifier(ScriptedEngine(respond), [{"inputs": "hello", "output": "greet"}])
    m.system.requires_grad = False
    out = m.call(tg.Variable("hey", role_description="message"))
    out.backward(ScriptedEngine(respond))
    assert m.demos.grad == "The second demonstration is mislabeled."


def test_op_calls_are_recorded_per_context():
    m = Classifier(ScriptedEngine(lambda r: "label"))
    with record_op_calls() as calls:
        m.call(tg.Variable("a", role_description="m"))
    m.call(tg.Variable("outside", role_description="m"))
    assert [(c.inputs, c.output, c.demos is m.demos) for c in calls] == [("a", "label", True)]


# --- a two-stage world -------------------------------------------------------------
# Stage 1 maps question i to the fact "f<i>"; stage 2 maps the fact to the answer, which
# is right for every i not divisible by 3 (planted failures). Labels are in the data.


def two_stage_engine():
    def respond(request):
        user = request.messages[-1].content
        if user.startswith("Fact:"):
            i = int(re.search(r"f(\d+)", user).group(1))
            return f"a{i}" if i % 3 else "wrong"
        return "f" + re.search(r"\d+", user).group()

    return ScriptedEngine(respond)


class TwoStage(tg.Module):
    def __init__(self, engine):
        self.d1 = tg.Demos(role_description="examples for the fact finder")
        self.d2 = tg.Demos(role_description="examples for the answerer")
        self.find = tg.LLMCall(engine, "Find the fact.", demos=self.d1)
        self.answer = tg.FormattedLLMCall(
            engine, "Fact: {fact}", ["fact"], "Answer.", demos=self.d2
        )

    async def aforward(self, example):
        fact = await self.find.acall(tg.Variable(example["question"], role_description="q"))
        return await self.answer.acall(fact=fact)


def qa(n, start=0):
    return [{"question": f"question {i}", "answer": f"a{i}"} for i in range(start, start + n)]


def exact(prediction, example):
    return float(prediction == example["answer"])


def fit(module, optimizer, **options):
    """Train with the demo tests' defaults: exact match, no progress bar."""
    return tg.Trainer(module, optimizer=optimizer, metric=exact, progress=False, **options).fit()


def test_bootstrap_collects_exactly_the_passing_traces_op_level_pairs(tmp_path):
    engine = two_stage_engine()
    module = TwoStage(engine)
    opt = tg.optim.BootstrapFewShot(max_bootstrapped=3, max_labeled=0)
    result = fit(module, opt, train=qa(12), val=qa(6, 100), max_steps=3, run_dir=tmp_path / "run")
    assert result.stopped == "optimizer finished: demonstrations bootstrapped"
    d1, d2 = module.d1.items, module.d2.items
    assert len(d1) == len(d2) == 3
    for first, second in zip(d1, d2, strict=True):
        i = int(first.inputs.split()[-1])
        assert i % 3 != 0  # only passing runs
        assert first.output == f"f{i}"  # stage 1's own input and output
        assert second.inputs == {"fact": f"f{i}"} and second.output == f"a{i}"  # same run
    # the candidate record keeps where each demo came from; the step says what happened
    step = RunDir(tmp_path / "run").read_steps()[0]
    assert step.candidates[0].origin == "bootstrap few-shot"
    assert "3 traced + 0 labeled" in step.notes[0]
    assert result.summary.final_parameters["d1"] == module.d1.value
    # the bootstrap's traced runs are labelled apart from validation in usage and traces
    assert engine.calls_for("traced") and "traced" in result.summary.by_purpose


def test_labeled_fill_only_for_the_op_whose_fields_map_to_the_data():
    module = TwoStage(two_stage_engine())
    opt = tg.optim.BootstrapFewShot(max_bootstrapped=1, max_labeled=3)
    fit(module, opt, train=qa(12), val=qa(6, 100), max_steps=1, gate="always")
    # stage 1 (LLMCall, question -> fact) is not the final op: its demos stay traced only;
    # stage 2 needs a "fact" field the data lacks: also traced only.
    assert len(module.d1.items) == 1 and len(module.d2.items) == 1

    one_stage = Classifier(ScriptedEngine(lambda r: "no"))
    data = [{"text": f"t{i}", "label": "yes"} for i in range(10)]
    opt = tg.optim.BootstrapFewShot(max_bootstrapped=2, max_labeled=3)
    tg.Trainer(
        one_stage,
        optimizer=opt,
        metric=lambda p, e: float(p == e["label"]),
        train=data,
        max_steps=1,
        progress=False,
        gate="always",
    ).fit()
    assert [(d.inputs[0], d.output) for d in one_stage.demos.items] == [("t", "yes")] * 3


# --- random search finds a planted demo -------------------------------------------


def planted_engine(key="question 7"):
    """Right on every question when the demos contain the planted one, else wrong."""

    def respond(request):
        seen = [m.content for m in request.messages[1:-1] if m.role == "user"]
        user = request.messages[-1].content
        i = re.search(r"\d+", user).group()
        return f"a{i}" if key in seen or user == key else "no"

    return ScriptedEngine(respond)


class OneStage(tg.Module):
    def __init__(self, engine):
        self.demos = tg.Demos(role_description="examples", max_items=2)
        self.call = tg.LLMCall(engine, "Answer.", demos=self.demos)

    async def aforward(self, example):
        return await self.call.acall(tg.Variable(example["question"], role_description="q"))


def test_random_search_finds_the_planted_demo_set_within_its_candidates():
    module = OneStage(planted_engine())
    opt = tg.optim.RandomSearchDemos(num_candidates=12, max_bootstrapped=2, max_labeled=2)
    result = fit(module, opt, train=qa(12), val=qa(8, 100), max_steps=4)
    assert result.initial_val_score == 0.0
    assert "question 7" in [d.inputs for d in module.demos.items]
    assert result.best_val_score == 1.0
    assert result.stopped == "optimizer finished: every demo set was proposed"
    first = result.history[0]
    assert len(first.candidates) == 12 and first.decision == "accepted"
    assert all(len(json.loads(c.changes[0].new_value)["items"]) <= 2 for c in first.candidates)


def test_random_search_is_seeded():
    def run(seed):
        module = OneStage(planted_engine())
        opt = tg.optim.RandomSearchDemos(num_candidates=5, max_bootstrapped=2, max_labeled=2)
        result = tg.Trainer(
            module,
            optimizer=opt,
            metric=exact,
            train=qa(12),
            val=qa(4, 100),
            max_steps=1,
            progress=False,
            seed=seed,
        ).fit()
        return [c.id for c in result.history[0].candidates]

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_demo_optimizers_need_a_demos_parameter():
    from tests.trainer_task import Pipeline, data, make_engine
    from tests.trainer_task import exact as exact_answer

    trainer = tg.Trainer(
        Pipeline(make_engine()),
        optimizer=tg.optim.BootstrapFewShot(),
        metric=exact_answer,
        train=data(4),
        val=data(2),
        progress=False,
    )
    with pytest.raises(tg.ArgumentError, match=r"tg\.Demos parameters"):
        trainer.fit()
    with pytest.raises(tg.ArgumentError, match="max_rounds"):
        tg.optim.BootstrapFewShot(max_rounds=0)
    with pytest.raises(tg.ArgumentError, match="metric_threshold"):
        tg.optim.BootstrapFewShot(metric_threshold=float("nan"))


def test_show_and_report_print_demonstrations_readably(tmp_path):
    from io import StringIO

    from rich.console import Console

    from textgraph.report.html import build_report
    from textgraph.report.terminal import show_run

    module = TwoStage(two_stage_engine())
    opt = tg.optim.BootstrapFewShot(max_bootstrapped=2, max_labeled=0)
    fit(module, opt, train=qa(12), val=qa(6, 100), max_steps=1, run_dir=tmp_path / "run")
    out = StringIO()
    show_run(str(tmp_path / "run"), step=1, console=Console(file=out, width=200))
    text = out.getvalue()
    assert "Demonstration 1:" in text and "fact: f" in text and '"format"' not in text
    html = build_report(tmp_path / "run")
    assert "Demonstration 1:" in html


def test_tgd_skips_demos_so_a_module_with_demos_trains_with_tgd(tmp_path):
    from tests.trainer_task import data, make_engine
    from tests.trainer_task import exact as exact_answer

    engine = make_engine()

    class WithDemos(tg.Module):
        def __init__(self):
            self.system = tg.Variable(
                "EVEN start", role_description="system prompt", requires_grad=True
            )
            self.demos = tg.Demos(role_description="examples")
            self.call = tg.LLMCall(engine, self.system, demos=self.demos)

        async def aforward(self, example):
            return await self.call.acall(tg.Variable(example["question"], role_description="q"))

    module = WithDemos()
    opt = tg.TGD(module.parameters(), engine=engine)
    assert opt.skipped == [module.demos] and opt.parameters == [module.system]
    loss = tg.MetricLoss(lambda p, t: float(p.strip() == t), engine=engine)
    result = tg.Trainer(
        module,
        lambda o, e: loss(o, e["answer"]),
        optimizer=opt,
        metric=exact_answer,
        train=data(8),
        val=data(6, 100),
        max_steps=2,
        progress=False,
        run_dir=tmp_path / "run",
    ).fit()
    assert result.stopped == "max_steps" and module.demos.items == []
    with pytest.raises(tg.ArgumentError, match=r"only tg\.Demos parameters"):
        tg.TGD([module.demos], engine=engine)


def test_a_missing_label_field_and_positional_demos():
    module = OneStage(planted_engine())
    opt = tg.optim.BootstrapFewShot(max_bootstrapped=1, max_labeled=2, label_field="nope")
    trainer = tg.Trainer(
        module, optimizer=opt, metric=exact, train=qa(6), val=qa(4, 100), progress=False
    )
    with pytest.raises(tg.ArgumentError, match="label_field='nope': no training example"):
        trainer.fit()
    assert tg.Demo("2+2", "4") == tg.Demo(inputs="2+2", output="4")
