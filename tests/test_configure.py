"""Process-wide defaults (tg.configure, TEXTGRAPH_MODEL) and model strings wherever an
engine is accepted, resolved once per string through tg.get_engine."""

from __future__ import annotations

import re

import pytest

import textgraph as tg
from tests.conftest import by_purpose
from textgraph.engines import ScriptedEngine, context
from textgraph.testing import LLMTestServer

pytestmark = pytest.mark.usefixtures("fresh_engine_defaults")


def question() -> tg.Variable:
    return tg.Variable("How many legs has a spider?", role_description="question")


def test_configure_sets_the_engine_ops_use_and_use_engine_still_overrides():
    configured = ScriptedEngine(lambda r: "from configure")
    block = ScriptedEngine(lambda r: "from the block")
    with pytest.raises(tg.ConfigurationError, match=r"tg.configure\(engine=...\)"):
        tg.LLMCall()(question())
    tg.configure(engine=configured)
    assert tg.LLMCall()(question()).value == "from configure"
    with tg.use_engine(block):
        assert tg.LLMCall()(question()).value == "from the block"
    assert tg.LLMCall()(question()).value == "from configure"
    own = ScriptedEngine(lambda r: "its own")
    assert tg.LLMCall(own)(question()).value == "its own"  # an explicit engine wins


def test_reset_configuration_at_top_level_forgets_every_configured_role():
    tg.configure(
        engine=ScriptedEngine(lambda r: "a"),
        backward_engine=ScriptedEngine(lambda r: "b"),
        optimizer_engine=ScriptedEngine(lambda r: "c"),
    )
    assert tg.LLMCall()(question()).value == "a"
    tg.reset_configuration()
    assert [context.process_engine(role) for role in context.ROLES] == [None] * len(context.ROLES)
    with pytest.raises(tg.ConfigurationError, match=r"tg.configure\(engine=...\)"):
        tg.LLMCall()(question())


def test_backward_and_optimizer_engines_take_their_roles():
    forward = ScriptedEngine(by_purpose())
    critic = ScriptedEngine(by_purpose())
    rewriter = ScriptedEngine(by_purpose(optimizer="better prompt"))
    tg.configure(engine=forward, backward_engine=critic, optimizer_engine=rewriter)
    system = tg.Variable("Answer.", role_description="system prompt", requires_grad=True)
    answer = tg.LLMCall(system_prompt=system)(question())
    loss = tg.TextLoss("Judge the answer.")(answer)
    loss.backward()
    optimizer = tg.TGD([system])
    optimizer.step()
    assert [c.purpose for c in forward.calls] == ["forward"]
    assert {c.purpose for c in critic.calls} == {"loss", "backward"}
    assert [c.purpose for c in rewriter.calls] == ["optimizer"]
    assert system.value == "better prompt"


def test_set_backward_engine_beats_the_ops_own_engine_as_in_textgrad():
    forward = ScriptedEngine(by_purpose())
    critic = ScriptedEngine(by_purpose())
    tg.set_backward_engine(critic)
    system = tg.Variable("Answer.", role_description="system prompt", requires_grad=True)
    answer = tg.LLMCall(forward, system)(question())
    tg.TextLoss("Judge the answer.")(answer).backward()
    assert [c.purpose for c in forward.calls] == ["forward"]
    assert [c.purpose for c in critic.calls] == ["loss", "backward"]


def test_model_strings_are_accepted_everywhere_and_resolved_once(monkeypatch):
    with LLMTestServer(ScriptedEngine(by_purpose(forward="eight"))) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.openai_base_url)
        call = tg.LLMCall("openai/test-model")
        loss = tg.TextLoss("Judge.", engine="openai/test-model")
        optimizer = tg.TGD(
            [tg.Variable("p", role_description="p", requires_grad=True)],
            engine="openai/test-model",
        )
        assert call.engine is loss.engine is optimizer.engine  # one engine per string
        assert call.engine is tg.engines.context.check_engine("openai/test-model", "x")
        assert call(question()).value == "eight"
        assert server.stats.requests[-1].body["model"] == "test-model"
        with tg.use_engine("openai/test-model") as engine:
            assert engine is call.engine
    with pytest.raises(tg.ConfigurationError, match=r"tg.configure\(engine\).*unknown model"):
        tg.configure(engine="nosuch/model")


def test_textgraph_model_is_used_when_nothing_else_is_set(monkeypatch):
    with LLMTestServer(ScriptedEngine(lambda r: "from the environment")) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.openai_base_url)
        monkeypatch.setenv("TEXTGRAPH_MODEL", "openai/env-model")
        assert tg.LLMCall()(question()).value == "from the environment"
        assert server.stats.requests[-1].body["model"] == "env-model"
        tg.configure(engine=ScriptedEngine(lambda r: "configured"))
        assert tg.LLMCall()(question()).value == "configured"  # configure beats the variable
        assert len(server.stats.requests) == 1


def test_trainer_accepts_model_strings(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9")  # never contacted
    module = tg.Module()
    module.system = tg.Variable("Answer.", role_description="system prompt", requires_grad=True)
    trainer = tg.Trainer(
        module,
        lambda output, example: tg.TextLoss("Judge.")(output),
        optimizer=tg.TGD([module.system]),
        train=[{"question": "q", "answer": "a"}],
        val=[{"question": "q", "answer": "a"}],
        metric=lambda pred, ex: 1.0,
        backward_engine="openai/critic",
    )
    assert trainer.backward_engine is context.check_engine("openai/critic", "x")


def _engine_parameters(obj) -> list[tuple[str, str]]:
    """(name, annotation text) of each engine-like parameter: the modules postpone
    annotations, so the text is what a reader and a type checker see."""
    import inspect

    target = obj.__init__ if isinstance(obj, type) else obj
    return [
        (name, str(parameter.annotation))
        for name, parameter in inspect.signature(target).parameters.items()
        if name.endswith("engine") or name == "teacher"
    ]


PUBLIC_WITH_ENGINES = [
    tg.LLMCall, tg.FormattedLLMCall, tg.TextLoss, tg.MultiFieldEvaluation, tg.MetricLoss,
    tg.Retrieve, tg.TGD, tg.optim.APE, tg.optim.OPRO, tg.optim.MIPRO, tg.optim.ParetoTGD,
    tg.optim.BootstrapFewShot, tg.optim.RandomSearchDemos, tg.Trainer, tg.Variable.backward,
    tg.StructuredLLMCall, tg.MetaPrompt, tg.function, tg.op, tg.FunctionOp, tg.StringBasedFunction,
]  # fmt: skip


@pytest.mark.parametrize("obj", PUBLIC_WITH_ENGINES, ids=lambda o: o.__qualname__)
def test_every_engine_parameter_says_it_takes_a_model_string(obj):
    parameters = _engine_parameters(obj)
    assert parameters, f"{obj.__qualname__} has no engine parameter"
    for name, hint in parameters:
        assert re.search(r"\bstr\b", hint), f"{obj.__qualname__}({name}): {hint} lacks str"


def test_optimizers_and_retrieve_resolve_model_strings_to_the_one_engine(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9")  # never contacted
    model = "openai/test-model"
    one = context.check_engine(model, "x")
    built = {
        "APE": tg.optim.APE(engine=model).engine,
        "OPRO": tg.optim.OPRO(engine=model).engine,
        "MIPRO": tg.optim.MIPRO(engine=model, teacher=model).teacher,
        "ParetoTGD": tg.optim.ParetoTGD(engine=model).engine,
        "BootstrapFewShot": tg.optim.BootstrapFewShot(teacher=model).teacher,
        "Retrieve": tg.Retrieve(["the tessel river", "a mill town"], engine=model).engine,
        "MetricLoss": tg.MetricLoss(lambda a, b: 1.0, engine=model).engine,
    }
    assert {name: engine is one for name, engine in built.items()} == dict.fromkeys(built, True)
