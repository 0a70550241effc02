"""Provider engines against the local test server over real loopback sockets."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

import textgraph as tg
from textgraph.engines import ChatRequest, ResponseFormat, ScriptedEngine
from textgraph.engines.http import RetryPolicy
from textgraph.testing import Fault, LLMTestServer

SECRET = "sk-test-SECRET0123456789abcdef"


def ask(text: str = "hello there", **fields) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}], **fields)


class Sleeps(list):
    """An injected sleep: records how long the engine wanted to wait, waits not at all."""

    async def __call__(self, seconds: float) -> None:
        self.append(round(seconds, 3))


@pytest.fixture
def server():
    with LLMTestServer(ScriptedEngine(lambda r: f"echo: {r.messages[-1].content}")) as s:
        yield s


def openai(server, **options):
    options.setdefault("cache", False)
    return tg.get_engine("openai/test-model", base_url=server.openai_base_url, **options)


def test_openai_round_trip_sends_every_parameter(server):
    engine = openai(server)
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    request = ask(
        temperature=0.3,
        max_tokens=50,
        seed=7,
        stop=["END"],
        response_format=ResponseFormat(type="json_schema", name="r", json_schema=schema),
    )
    response = engine.generate_sync(request)
    assert json.loads(response.text) == {"a": "echo: hello there"}
    body = server.stats.requests[0].body
    assert body["model"] == "test-model" and body["temperature"] == 0.3
    assert body["max_tokens"] == 50 and body["seed"] == 7 and body["stop"] == ["END"]
    assert body["response_format"]["json_schema"]["schema"] == schema
    assert response.usage.prompt_tokens == 2 and response.usage.completion_tokens == 4
    assert engine.usage.total.calls == 1


def test_429_retry_after_is_honoured_then_succeeds(server):
    sleeps = Sleeps()
    engine = openai(server, sleep=sleeps)
    server.inject(
        Fault("status", status=429, retry_after=7), Fault("status", status=429, retry_after_ms=250)
    )
    assert engine.generate_sync(ask()).text == "echo: hello there"
    assert sleeps == [7.0, 0.25]
    assert server.request_count == 3


def test_5xx_backoff_grows_and_the_last_error_is_raised(server):
    sleeps = Sleeps()
    engine = openai(
        server, sleep=sleeps, retry=RetryPolicy(max_attempts=4, initial_backoff_s=1, jitter_s=0)
    )
    server.inject(*[Fault("status", status=503, message="overloaded")] * 4)
    with pytest.raises(tg.ProviderError, match="503: overloaded") as caught:
        engine.generate_sync(ask())
    assert caught.value.status == 503 and caught.value.retryable
    assert sleeps == [1.0, 2.0, 4.0]
    assert server.request_count == 4


def test_401_is_not_retried_names_the_fix_and_never_shows_the_key(caplog):
    caplog.set_level(logging.DEBUG)
    with LLMTestServer(ScriptedEngine(lambda r: "x"), api_key="sk-right-key-000000") as server:
        engine = openai(server, api_key=SECRET)
        with pytest.raises(tg.AuthenticationError) as caught:
            engine.generate_sync(ask())
        assert server.request_count == 1
    message = str(caught.value)
    assert "401" in message and "OPENAI_API_KEY" in message
    assert SECRET not in message and "SECRET" not in message  # the server echoed it back
    assert SECRET not in caplog.text
    assert SECRET not in repr(engine) and "api_key='***'" in repr(engine)


@pytest.mark.parametrize("status", [400, 403, 404, 422])
def test_client_errors_are_raised_at_once(server, status):
    engine = openai(server, sleep=Sleeps())
    server.inject(Fault("status", status=status, message="bad things"))
    with pytest.raises(tg.ProviderError, match=f"{status}: bad things") as caught:
        engine.generate_sync(ask())
    assert not caught.value.retryable and server.request_count == 1


def test_hang_past_the_read_timeout_is_retried(server):
    engine = openai(server, timeout_s=0.3, sleep=Sleeps())
    server.inject(Fault("hang", seconds=5))
    assert engine.generate_sync(ask()).text == "echo: hello there"
    assert [r.fault for r in server.stats.requests] == ["hang", None]


def test_reset_and_malformed_bodies_are_retried(server):
    engine = openai(server, sleep=Sleeps())
    server.inject(Fault("reset"), Fault("malformed"))
    assert engine.generate_sync(ask()).text == "echo: hello there"
    assert [r.fault for r in server.stats.requests] == ["reset", "malformed", None]


def test_truncated_and_empty_replies_are_typed_errors(server):
    engine = openai(server, sleep=Sleeps())
    server.inject(Fault("truncated"))
    with pytest.raises(tg.TruncatedOutput, match="raise max_tokens"):
        engine.generate_sync(ask())
    server.inject(*[Fault("empty")] * 5)  # retried like any malformed body, then raised
    with pytest.raises(tg.MalformedResponse, match="no choices"):
        engine.generate_sync(ask())
    assert server.request_count == 6


async def test_concurrency_limit_is_what_the_server_sees():
    with LLMTestServer(ScriptedEngine(lambda r: "x"), latency=0.05) as server:
        engine = openai(server, max_concurrency=3)
        await asyncio.gather(*(engine.generate(ask(f"q{i}")) for i in range(10)))
        await engine.aclose()
    assert server.request_count == 10 and server.stats.max_in_flight == 3


def test_anthropic_wire_format_and_structured_output_via_a_tool(server):
    engine = tg.get_engine(
        "anthropic/claude-test", base_url=server.anthropic_base_url, api_key=SECRET, cache=False
    )
    schema = {"type": "object", "properties": {"var_1": {"type": "string"}}}
    request = ChatRequest(
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        response_format=ResponseFormat(type="json_schema", name="feedback", json_schema=schema),
    )
    response = engine.generate_sync(request)
    assert json.loads(response.text) == {"var_1": "echo: hi"}
    body = server.stats.requests[0].body
    assert body["system"] == "be brief" and body["messages"] == [{"role": "user", "content": "hi"}]
    assert body["max_tokens"] > 0 and body["tool_choice"] == {"type": "tool", "name": "feedback"}
    assert engine.generate_sync(ask()).text == "echo: hello there"


def test_anthropic_overloaded_529_is_retried(server):
    engine = tg.get_engine(
        "anthropic/claude-test", base_url=server.anthropic_base_url, cache=False, sleep=Sleeps()
    )
    server.inject(Fault("status", status=529, message="Overloaded"))
    assert engine.generate_sync(ask()).text == "echo: hello there"
    assert server.request_count == 2


def test_ollama_native_api_and_missing_model_hint(server):
    engine = tg.get_engine("ollama/llama3", base_url=server.ollama_host, cache=False)
    assert engine.generate_sync(ask(max_tokens=9)).text == "echo: hello there"
    assert server.stats.requests[0].body["options"]["num_predict"] == 9
    server.inject(Fault("status", status=404, message="model 'llama3' not found"))
    with pytest.raises(tg.ProviderError, match="ollama pull llama3"):
        engine.generate_sync(ask())


def test_cache_hit_makes_no_request_and_keys_cover_parameters(server, tmp_path):
    path = tmp_path / "cache.sqlite"
    engine = openai(server, cache=path, api_key=SECRET)
    first = engine.generate_sync(ask())
    again = engine.generate_sync(ask())
    assert server.request_count == 1 and again.cached and again.text == first.text
    engine.generate_sync(ask(temperature=0.9))  # a different parameter: a different key
    salted = openai(server, cache=path, cache_salt="sample-2")
    salted.generate_sync(ask())
    assert server.request_count == 3
    assert engine.usage.total.cached_calls == 1
    for file in tmp_path.iterdir():  # the database and its WAL
        assert b"SECRET" not in file.read_bytes()


def test_cache_evicts_least_recently_used_past_its_size_cap(tmp_path):
    cache = tg.engines.ResponseCache(tmp_path / "c.sqlite", max_bytes=2000)
    for i in range(20):
        cache.put(f"k{i}", tg.engines.ChatResponse(text="x" * 200))
    stats = cache.stats()
    assert stats["bytes"] <= 2000 and stats["entries"] < 20
    assert cache.get("k19") is not None and cache.get("k0") is None


def test_budget_stops_before_the_call_that_would_exceed_it(server):
    budget = tg.Budget(max_calls=3)
    forward = openai(server, budget=budget)
    backward = tg.get_engine(
        "anthropic/x", base_url=server.anthropic_base_url, budget=budget, cache=False
    )
    forward.generate_sync(ask("a"))
    backward.generate_sync(ask("b"))
    forward.generate_sync(ask("c"))
    with pytest.raises(tg.BudgetExceeded, match="calls spent 3 of 3"):
        backward.generate_sync(ask("d"))
    assert server.request_count == 3 and budget.calls == 3


def test_budget_releases_the_reservation_of_a_failed_call(server):
    budget = tg.Budget(max_calls=1)
    engine = openai(server, budget=budget, sleep=Sleeps())
    server.inject(Fault("status", status=400))
    with pytest.raises(tg.ProviderError):
        engine.generate_sync(ask())
    assert budget.calls == 0
    engine.generate_sync(ask())
    assert budget.calls == 1


def test_token_budget_counts_real_usage(server):
    budget = tg.Budget(max_tokens=60)
    engine = openai(server, budget=budget)
    engine.generate_sync(ask("one two three", max_tokens=20))  # ~4 + 20 reserved, 3 + 4 used
    assert budget.tokens == 7
    with pytest.raises(tg.BudgetExceeded, match="tokens"):
        engine.generate_sync(ask("x", max_tokens=60))


def test_record_then_replay_without_a_server(tmp_path):
    cassette = tmp_path / "calls.jsonl"
    with LLMTestServer(ScriptedEngine(lambda r: f"answer to {r.messages[-1].content}")) as server:
        recorder = openai(server, record=cassette)
        originals = [recorder.generate_sync(ask(q)).text for q in ("one", "two")]
    player = tg.get_engine("openai/test-model", replay=cassette, cache=False)
    assert [player.generate_sync(ask(q)).text for q in ("one", "two")] == originals
    with pytest.raises(tg.ReplayMiss, match="starts 'three'"):
        player.generate_sync(ask("three"))
    assert "SECRET" not in cassette.read_text()


def test_get_engine_errors_say_how_to_fix(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    with pytest.raises(tg.ConfigurationError, match="set OPENAI_API_KEY"):
        tg.get_engine("openai/gpt-4o")
    with pytest.raises(tg.ConfigurationError, match="ANTHROPIC_API_KEY"):
        tg.get_engine("anthropic/claude-sonnet-4")
    with pytest.raises(tg.ConfigurationError, match="unknown model string 'gpt4'"):
        tg.get_engine("gpt4")
    with pytest.raises(tg.ArgumentError, match="unknown option"):
        tg.get_engine("openai/x", base_url="http://127.0.0.1:9", temprature=0.2)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    engine = tg.get_engine("openai/gpt-4o", cache=False)
    assert SECRET not in repr(engine)


def test_full_loop_over_http(server):
    def respond(request):
        system = request.messages[0].content if request.messages[0].role == "system" else ""
        if system.startswith("You are the optimizer"):
            start = request.messages[-1].content.rsplit("between ", 1)[1].split(" and ")[0]
            return f"{start}\nBe concise.\n{start.replace('<', '</', 1)}"
        if system.startswith("You are the critic"):
            return "Ask for brevity."
        if system.startswith("You are an evaluator"):
            return "Too long."
        return "A long answer."

    with LLMTestServer(ScriptedEngine(respond)) as server:
        engine = openai(server)
        system = tg.Variable("Be helpful.", role_description="system prompt", requires_grad=True)
        answer = tg.LLMCall(engine, system)(tg.Variable("q", role_description="question"))
        tg.TextLoss("Judge.", engine=engine)(answer).backward()
        tg.TGD([system], engine=engine).step()
    assert system.value == "Be concise." and system.gradients[0].text == "Ask for brevity."
    assert server.request_count == 4
    assert engine.usage.by_purpose.keys() == {"forward", "loss", "backward", "optimizer"}
