"""Engine models, ScriptedEngine behaviour, context default, variable validation."""

from __future__ import annotations

import asyncio
import json

import pydantic
import pytest

import textgraph as tg
from textgraph.engines import ChatRequest, ChatResponse, ResponseFormat, ScriptedEngine


def test_request_models_validate():
    request = ChatRequest(messages=[{"role": "user", "content": "hi"}], temperature=0.2, seed=1)
    assert request.purpose == "forward" and request.messages[0].content == "hi"
    with pytest.raises(pydantic.ValidationError):
        ChatRequest(messages=[])
    # purposes are an open label (new optimizers bring their own), but never empty
    assert ChatRequest(messages=[{"role": "user", "content": "hi"}], purpose="reflect").purpose
    with pytest.raises(pydantic.ValidationError):
        ChatRequest(messages=[{"role": "user", "content": "hi"}], purpose="")
    with pytest.raises(pydantic.ValidationError):
        ResponseFormat(type="delimited", start="<a>")
    assert ChatResponse(text="x").usage.total_tokens == 0


def test_rules_match_in_order_and_unmatched_request_is_named():
    engine = ScriptedEngine([(r"apples", "fruit"), (r".*", lambda r: f"echo {r.purpose}")])
    ask = lambda text: ChatRequest(messages=[{"role": "user", "content": text}])  # noqa: E731
    assert engine.generate_sync(ask("three apples")).text == "fruit"
    assert engine.generate_sync(ask("pears")).text == "echo forward"
    strict = ScriptedEngine([(r"apples", "fruit")])
    with pytest.raises(tg.EngineError, match="no rule matched the forward request"):
        strict.generate_sync(ask("pears"))
    with pytest.raises(tg.ArgumentError):
        ScriptedEngine(42)


def test_scripted_engine_wraps_words_in_the_requested_format():
    engine = ScriptedEngine(lambda r: "words")
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}}}
    request = ChatRequest(
        messages=[{"role": "user", "content": "x"}],
        response_format=ResponseFormat(type="json_schema", json_schema=schema),
    )
    assert json.loads(engine.generate_sync(request).text) == {"a": "words", "b": "words"}
    delimited = request.model_copy(
        update={"response_format": ResponseFormat(type="delimited", start="<S>", end="</S>")}
    )
    assert engine.generate_sync(delimited).text == "<S>\nwords\n</S>"
    raw = ScriptedEngine(lambda r: "words", raw=True)
    assert raw.generate_sync(delimited).text == "words"


def test_scripted_engine_records_timestamps_and_usage():
    engine = ScriptedEngine(lambda r: "one two three", latency=0.01)
    response = engine.generate_sync(ChatRequest(messages=[{"role": "user", "content": "a b"}]))
    (call,) = engine.calls
    assert call.end > call.start and call.response is response
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (2, 3)


async def test_concurrency_limit_is_respected_across_gather():
    engine = ScriptedEngine(lambda r: "x", latency=0.02, max_concurrency=3)
    request = ChatRequest(messages=[{"role": "user", "content": "hi"}])
    await asyncio.gather(*(engine.generate(request) for _ in range(9)))
    peak = max(sum(1 for o in engine.calls if o.start <= c.start < o.end) for c in engine.calls)
    assert peak == 3


def test_engine_is_reusable_across_event_loops():
    engine = ScriptedEngine(lambda r: "x", max_concurrency=1)
    request = ChatRequest(messages=[{"role": "user", "content": "hi"}])
    assert engine.generate_sync(request).text == engine.generate_sync(request).text == "x"


def test_use_engine_is_scoped_and_missing_engine_is_explained(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    engine = ScriptedEngine(lambda r: "x")
    q = tg.Variable("q", role_description="question")
    with tg.use_engine(engine):
        assert tg.LLMCall()(q).value == "x"
    assert tg.engines.default_engine() is None
    with pytest.raises(tg.ConfigurationError, match=r"tg.use_engine"):
        tg.LLMCall()(q)
    with pytest.raises(tg.ArgumentError, match=r"must be an engine .* or a model string"):
        tg.LLMCall(42)
    # a model string is an engine spec now; without a key it says which one is missing
    with pytest.raises(tg.ConfigurationError, match=r"LLMCall\(engine\).*OPENAI_API_KEY"):
        tg.LLMCall("openai/gpt-4o-no-key")


def test_variable_validation_messages():
    with pytest.raises(tg.ArgumentError, match="role_description"):
        tg.Variable("x")
    with pytest.raises(tg.ArgumentError, match="must be a str, got int"):
        tg.Variable(3, role_description="number")
    with pytest.raises(TypeError):  # ArgumentError is also a TypeError
        tg.Variable("x", role_description="r", requires_grad="yes")
    v = tg.Variable("x", role_description="r")
    with pytest.raises(ValueError):  # ...and a ValueError
        v.value = None
    with pytest.raises(tg.ArgumentError, match="Wrap the text"):
        tg.LLMCall(ScriptedEngine(lambda r: "x"))("a bare string")
    with pytest.raises(tg.ArgumentError, match=r"list of tg\.Variable"):
        tg.concat("ab")


def test_function_op_and_decorator(engine):
    @tg.op
    def shout(text: str, suffix: str = "!") -> str:
        """Upper-cases the text and appends a suffix."""
        return text.upper() + suffix

    x = tg.Variable("hi", role_description="greeting", requires_grad=True)
    out = shout(x, suffix="?")
    assert out.value == "HI?" and out.predecessors == (x,) and out.requires_grad
    tg.TextLoss("Judge.", engine=engine)(out).backward(engine=engine)
    prompt = engine.calls_for("backward")[0].request.messages[1].content
    assert "Upper-cases the text" in prompt and "HI?" in prompt
    assert len(x.gradients) == 1 and x.gradients[0].operation == "shout"

    async def fetch(query: str) -> str:
        await asyncio.sleep(0)
        return f"passages for {query}"

    retrieve = tg.function(fetch, purpose="retrieves passages")
    assert retrieve(x).value == "passages for hi"
    with pytest.raises(tg.ArgumentError, match="must return a str"):
        tg.function(lambda s: len(s), purpose="length")(x)
    with pytest.raises(tg.ArgumentError, match="purpose"):
        tg.function(lambda s: s, purpose="")
    with pytest.raises(tg.ArgumentError, match=r"no tg\.Variable"):
        shout("plain")
