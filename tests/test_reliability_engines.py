"""Engine-layer reliability (issue 12): malformed replies are typed and retried, one
concurrency limit per engine across threads and event loops, bad settings are refused at
construction, the cache key covers every setting that reaches the wire, a corrupt cache is a
clear error that `textgraph cache clear` repairs, secrets never leave the engine, and bad
base URLs and text are refused before anything is sent."""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import socket
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

import textgraph as tg
from textgraph.cli import main
from textgraph.engines import ChatRequest, ChatResponse, ResponseCache, ScriptedEngine
from textgraph.engines.http import RetryPolicy
from textgraph.engines.managed import ManagedEngine
from textgraph.errors import CacheError
from textgraph.testing import Fault

pytest_plugins = ["textgraph.testing.fixtures"]

SECRET = "sk-test-SECRET-XYZ0123456789"
PROTOCOLS = ["openai", "anthropic", "ollama"]


def ask(text: str = "hello there", **fields: Any) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}], **fields)


class Sleeps(list):
    """An injected sleep: records how long the engine wanted to wait, waits not at all."""

    async def __call__(self, seconds: float) -> None:
        self.append(round(seconds, 3))


def engine_for(protocol: str, server: Any, **options: Any) -> ManagedEngine:
    options.setdefault("cache", False)
    options.setdefault("sleep", Sleeps())
    url = {
        "openai": server.openai_base_url,
        "anthropic": server.anthropic_base_url,
        "ollama": server.ollama_host,
    }[protocol]
    options.setdefault("base_url", url)
    return tg.get_engine(f"{protocol}/test-model", **options)


# --- 4: empty and unexpected 200 replies are MalformedResponse, retried per policy ------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_empty_reply_is_malformed_and_retried_per_policy(llm_server, protocol):
    server = llm_server(lambda r: "")  # anthropic: content [], openai/ollama: content ""
    engine = engine_for(protocol, server, max_attempts=3)
    with pytest.raises(tg.MalformedResponse, match="empty") as caught:
        engine.generate_sync(ask())
    assert caught.value.retryable and server.request_count == 3


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_empty_reply_then_a_good_one_succeeds(llm_server, protocol):
    server = llm_server(lambda r: "fine")
    server.inject(Fault("empty"))
    engine = engine_for(protocol, server)
    assert engine.generate_sync(ask()).text == "fine"
    assert [r.fault for r in server.stats.requests] == ["empty", None]


SHAPES = [
    ("openai", {"choices": ["hello"]}),
    ("openai", {"choices": [{"message": "hello", "finish_reason": "stop"}]}),
    ("openai", {"choices": [{"message": {"content": 5}}]}),
    ("openai", {"choices": [{"message": {"content": "hi"}}], "usage": "lots"}),
    ("openai", ["hello"]),
    ("anthropic", {"content": ["hello"], "stop_reason": "end_turn"}),
    ("anthropic", {"content": [{"type": "text", "text": 5}]}),
    ("anthropic", {"content": [{"type": "text", "text": "hi"}], "usage": {"input_tokens": "x"}}),
    ("anthropic", "hello"),
    ("ollama", {"message": "hello"}),
    ("ollama", {"message": {"content": None}}),
    ("ollama", []),
]


@pytest.mark.parametrize(("protocol", "payload"), SHAPES)
def test_unexpected_200_shapes_are_malformed_and_retried(llm_server, protocol, payload):
    server = llm_server(lambda r: "ok")
    engine = engine_for(protocol, server, max_attempts=2)
    server.inject(Fault("body", payload=payload), Fault("body", payload=payload))
    with pytest.raises(tg.MalformedResponse, match=protocol) as caught:
        engine.generate_sync(ask())
    assert caught.value.retryable and server.request_count == 2
    server.inject(Fault("body", payload=payload))  # one bad body, then a good one
    assert engine.generate_sync(ask()).text == "ok"
    assert server.request_count == 4


# --- 11: max_concurrency is one limit per engine, across threads and event loops ---------------


def test_max_concurrency_holds_across_threads_each_running_its_own_loop(llm_server):
    server = llm_server(lambda r: "ok", latency=0.1)
    engine = engine_for("openai", server, max_concurrency=2)

    def sync_worker(i: int) -> list[str]:  # what a sync loss_fn or forward in a thread does
        async def batch() -> list[str]:
            replies = await asyncio.gather(*(engine.generate(ask(f"{i}-{j}")) for j in range(3)))
            return [r.text for r in replies]

        return asyncio.run(batch())

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(sync_worker, range(4)))
    assert results == [["ok"] * 3] * 4
    assert server.request_count == 12 and server.stats.max_in_flight == 2


def test_generate_sync_from_many_threads_shares_the_limit(llm_server):
    server = llm_server(lambda r: "ok", latency=0.05)
    engine = engine_for("anthropic", server, max_concurrency=3)
    with ThreadPoolExecutor(8) as pool:
        texts = list(pool.map(lambda i: engine.generate_sync(ask(str(i))).text, range(16)))
    assert texts == ["ok"] * 16 and server.stats.max_in_flight == 3


def test_concurrency_limit_survives_cancellation_in_several_loops():
    from textgraph.engines.limits import ConcurrencyLimit

    limit = ConcurrencyLimit(2)
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}

    async def hold(seconds: float) -> None:
        await limit.acquire()
        try:
            with lock:
                state["now"] += 1
                state["peak"] = max(state["peak"], state["now"])
            await asyncio.sleep(seconds)
            with lock:
                state["now"] -= 1
        finally:
            limit.release()

    async def loop_body() -> None:
        tasks = [asyncio.create_task(hold(0.01)) for _ in range(10)]
        await asyncio.sleep(0.015)
        for task in tasks[5:]:
            task.cancel()  # some waiting, maybe some granted but not yet running
        await asyncio.gather(*tasks, return_exceptions=True)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: asyncio.run(loop_body()), range(8)))
    assert state["peak"] <= 2 and limit.active == 0

    async def after() -> None:  # nothing leaked: the full limit is available again
        await asyncio.wait_for(asyncio.gather(limit.acquire(), limit.acquire()), 1)
        limit.release()
        limit.release()

    asyncio.run(after())
    assert limit.active == 0


# --- 12: limits that mean "no limit" or "stop at once" are refused at construction -------------

URL = "http://127.0.0.1:9/v1"


def _engine(**options: Any) -> Any:
    options.setdefault("cache", False)
    return tg.get_engine("openai/x", base_url=URL, **options)


BAD_SETTINGS = [
    (lambda: _engine(requests_per_minute=0), "requests_per_minute", "None"),
    (lambda: _engine(requests_per_minute=-5), "requests_per_minute", "None"),
    (lambda: _engine(requests_per_minute=math.nan), "requests_per_minute", "None"),
    (lambda: _engine(requests_per_minute="60"), "requests_per_minute", "None"),
    (lambda: _engine(tokens_per_minute=0), "tokens_per_minute", "None"),
    (lambda: tg.Budget(max_cost_usd=math.nan), "max_cost_usd", "None"),
    (lambda: tg.Budget(max_cost_usd=math.inf), "max_cost_usd", "None"),
    (lambda: tg.Budget(max_cost_usd=-1.0), "max_cost_usd", "None"),
    (lambda: tg.Budget(max_calls="10"), "max_calls", "int"),
    (lambda: tg.Budget(max_calls=2.5), "max_calls", "int"),
    (lambda: tg.Budget(max_tokens=True), "max_tokens", "int"),
    (lambda: _engine(max_attempts=0), "max_attempts", "max_attempts=1"),
    (lambda: RetryPolicy(max_attempts=0), "max_attempts", "max_attempts=1"),
    (lambda: RetryPolicy(max_total_s=math.nan), "max_total_s", "seconds"),
    (lambda: _engine(max_concurrency=0), "max_concurrency", "None"),
    (lambda: _engine(max_concurrency="4"), "max_concurrency", "None"),
    (lambda: ScriptedEngine(lambda r: "x", max_concurrency=0), "max_concurrency", "None"),
    (lambda: _engine(timeout_s=0), "timeout_s", "seconds"),
    (lambda: _engine(default_max_tokens=0), "default_max_tokens", "None"),
]


@pytest.mark.parametrize(("make", "name", "advice"), BAD_SETTINGS)
def test_bad_limits_are_refused_at_construction_saying_what_to_pass(make, name, advice):
    with pytest.raises(tg.ArgumentError, match=name) as caught:
        make()
    assert advice in str(caught.value)


def test_good_limits_are_still_accepted():
    assert _engine(requests_per_minute=0.5, max_attempts=1, max_concurrency=1) is not None
    assert tg.Budget(max_calls=0, max_tokens=10, max_cost_usd=0).max_cost_usd == 0
    assert tg.Budget(max_cost_usd=2).max_cost_usd == 2


# --- 13: every engine setting that reaches the wire is part of the cache key ------------------

# A value different from the default for every constructor setting of every engine. A new
# setting must be added here, so this test decides whether it belongs in the key.
ALTERNATIVES: dict[str, Any] = {
    "api_key": "sk-another-key-000000",
    "timeout_s": 5.0,
    "connect_timeout_s": 2.0,
    "total_timeout_s": 9.0,
    "retry": RetryPolicy(max_attempts=2),
    "max_concurrency": 3,
    "requests_per_minute": 100,
    "tokens_per_minute": 10_000,
    "sleep": Sleeps(),
    "transport": httpx.MockTransport(lambda request: httpx.Response(500)),
    "default_max_tokens": 4000,
    "model_name": "local/other-name",
    "n_ctx": 1024,
    "n_threads": 3,
    "repeat_penalty": 1.31,
    "default_temperature": 0.93,
    "seed": 11,
}
IDENTITY = {"model", "base_url", "model_path"}  # in the key already (model, where it is served)


def _settings(cls: type) -> list[str]:
    parameters = inspect.signature(cls.__init__).parameters
    return [n for n, p in parameters.items() if n != "self" and n not in IDENTITY]


REQUESTS = [
    ask(),
    ask(temperature=0.3, max_tokens=12, seed=3, stop=["END"]),
    ask(response_format=tg.engines.ResponseFormat(type="delimited", start="<a>", end="</a>")),
]


def _http_wire(engine: Any, request: ChatRequest) -> tuple[str, Any]:
    call = engine.build_request(request)
    return call.url, call.body  # headers carry the key and the API version, not the content


def _changed_settings(make: Any, wire: Any, names: list[str]) -> list[str]:
    """Names whose alternative value changes the wire for some request, each checked to
    change the cache key of that request too."""
    base = make()
    found = []
    for name in names:
        assert name in ALTERNATIVES, f"add {name!r} to ALTERNATIVES"
        other = make(**{name: ALTERNATIVES[name]})
        for request in REQUESTS:
            if wire(base, request) != wire(other, request):
                key = ManagedEngine(base).key(request)
                assert ManagedEngine(other).key(request) != key, (
                    f"{type(base).__name__}({name}=...) changes the request sent but not the "
                    "cache key"
                )
                found.append(name)
                break
    return found


@pytest.mark.parametrize("provider", PROTOCOLS)
def test_every_http_engine_setting_that_reaches_the_wire_is_in_the_cache_key(provider):
    from textgraph.engines.providers.anthropic import AnthropicEngine
    from textgraph.engines.providers.ollama import OllamaEngine
    from textgraph.engines.providers.openai import OpenAIEngine

    cls = {"openai": OpenAIEngine, "anthropic": AnthropicEngine, "ollama": OllamaEngine}[provider]

    def make(**options: Any) -> Any:
        return cls("m", base_url="http://127.0.0.1:9", **options)

    found = _changed_settings(make, _http_wire, _settings(cls))
    assert "default_max_tokens" in found  # the test has teeth: this setting is on the wire


def test_every_llamacpp_setting_that_reaches_the_wire_is_in_the_cache_key(tmp_path, monkeypatch):
    pytest.importorskip("llama_cpp")
    import llama_cpp

    from textgraph.engines.providers.llamacpp import LlamaCppEngine

    class FakeLlama:  # records what the engine hands llama.cpp: the in-process "wire"
        def __init__(self, **kwargs: Any) -> None:
            self.init = kwargs
            self.calls: list[dict[str, Any]] = []

        def create_chat_completion(self, **kwargs: Any) -> dict[str, Any]:
            self.calls.append(kwargs)
            return {"choices": [{"message": {"content": "x"}, "finish_reason": "stop"}]}

    monkeypatch.setattr(llama_cpp, "Llama", FakeLlama)
    monkeypatch.setattr("textgraph.engines.providers.llamacpp.delimited_grammar", lambda s, e: s)
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")

    def make(**options: Any) -> Any:
        return LlamaCppEngine(model, **options)

    def wire(engine: Any, request: ChatRequest) -> Any:
        engine._complete(request)
        init = {k: v for k, v in engine._llama.init.items() if k not in ("n_threads",)}
        init.pop("n_threads_batch", None)  # how fast, not what: threads do not change replies
        return init, engine._llama.calls[-1]

    found = _changed_settings(make, wire, [n for n in _settings(LlamaCppEngine)])
    assert {"default_max_tokens", "repeat_penalty", "default_temperature", "seed"} <= set(found)


def test_an_engine_with_a_larger_default_max_tokens_is_not_served_a_shorter_reply(
    llm_server, tmp_path
):
    server = llm_server(lambda r: f"max_tokens={r.max_tokens}")
    path = tmp_path / "cache.sqlite"
    short = engine_for("openai", server, cache=path, default_max_tokens=7)
    long = engine_for("openai", server, cache=path, default_max_tokens=4000)
    assert short.generate_sync(ask()).text == "max_tokens=7"
    assert long.generate_sync(ask()).text == "max_tokens=4000"
    assert server.request_count == 2


# --- 14: a corrupt cache is a clear error; `cache clear` always works; a bad row is a miss ----


def test_a_corrupt_cache_file_is_a_clear_error_and_cache_clear_repairs_it(tmp_path, capsys):
    path = tmp_path / "cache.sqlite"
    path.write_bytes(b"this is not a database\n" * 200)
    with pytest.raises(CacheError) as caught:
        _engine(cache=path)
    message = str(caught.value)
    assert isinstance(caught.value, tg.TextgraphError)
    assert str(path) in message and "textgraph cache clear" in message
    assert main(["cache", "stats", "--path", str(path)]) == 1
    err = capsys.readouterr().err
    assert str(path) in err and "DatabaseError" not in err and "Traceback" not in err
    assert main(["cache", "clear", "--path", str(path)]) == 0
    out = capsys.readouterr().out
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("cache.sqlite.corrupt")]
    assert len(aside) == 1 and str(aside[0]) in out and "moved" in out
    assert aside[0].read_bytes().startswith(b"this is not a database")  # kept, not deleted
    assert ResponseCache(path).stats()["entries"] == 0


def test_a_cache_with_another_schema_is_a_clear_error_and_clear_repairs_it(tmp_path, capsys):
    path = tmp_path / "cache.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE responses (key TEXT PRIMARY KEY, value BLOB)")
    db.execute("INSERT INTO responses VALUES ('k', 'v')")
    db.commit()
    db.close()
    with pytest.raises(CacheError, match="cache clear"):
        ResponseCache(path)
    assert main(["cache", "clear", "--path", str(path)]) == 0
    assert "moved" in capsys.readouterr().out
    cache = ResponseCache(path)
    cache.put("k", ChatResponse(text="x"))
    assert cache.get("k").text == "x"


def test_a_bad_cache_row_is_a_logged_miss_that_is_replaced(llm_server, tmp_path, caplog, capsys):
    server = llm_server(lambda r: "fresh")
    path = tmp_path / "cache.sqlite"
    engine = engine_for("openai", server, cache=path)
    request = ask()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO responses VALUES (?, ?, 3, 0, 0)", (engine.key(request), '{"text": 5}'))
    db.commit()
    db.close()
    with caplog.at_level(logging.WARNING, logger="textgraph"):
        assert engine.generate_sync(request).text == "fresh"
    assert server.request_count == 1 and str(path) in caplog.text
    again = engine.generate_sync(request)
    assert again.cached and again.text == "fresh" and server.request_count == 1
    assert capsys.readouterr().out == ""


# --- 15: keys in base_url userinfo and echoed key fragments never leave the engine ------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_key_in_base_url_userinfo_never_leaves_the_engine(llm_server, protocol, caplog):
    caplog.set_level(logging.DEBUG)
    server = llm_server(lambda r: "ok")
    url = {
        "openai": server.openai_base_url,
        "anthropic": server.anthropic_base_url,
        "ollama": server.ollama_host,
    }[protocol].replace("http://", f"http://user:{SECRET}@")
    engine = engine_for(protocol, server, base_url=url)
    assert SECRET not in repr(engine) and "SECRET" not in repr(engine)
    assert engine.generate_sync(ask()).text == "ok"
    assert server.stats.requests[0].headers.get("authorization", "").startswith("Basic ")
    dead_url = f"http://user:{SECRET}@127.0.0.1:{_closed_port()}/v1"
    dead = engine_for(protocol, server, base_url=dead_url, max_attempts=2)
    with pytest.raises(tg.ProviderError) as caught:
        dead.generate_sync(ask())
    assert "SECRET" not in str(caught.value) and "SECRET" not in repr(dead)
    assert "SECRET" not in caplog.text


ECHOES = [
    "Invalid API key: key ending in ...CRET-XYZ0123456789",
    "Incorrect API key provided: sk-...6789. You can find your API key at example.com",
    "Incorrect API key provided: sk-test-************************6789.",
    "key ****6789 is not valid",
    "the key SECRET-XYZ0123 was revoked",
]


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
@pytest.mark.parametrize("echo", ECHOES)
@pytest.mark.parametrize("status", [401, 400, 503])
def test_error_bodies_that_echo_part_of_the_key_are_redacted(llm_server, protocol, echo, status):
    server = llm_server(lambda r: "ok")
    engine = engine_for(protocol, server, api_key=SECRET, max_attempts=1)
    server.inject(Fault("status", status=status, message=echo))
    with pytest.raises(tg.ProviderError) as caught:
        engine.generate_sync(ask())
    message = str(caught.value)
    for fragment in ("SECRET", "CRET-XYZ", "6789", "XYZ0123"):
        assert fragment not in message, message
    assert str(status) in message


def test_redaction_leaves_ordinary_text_alone():
    from textgraph.engines.redact import redact

    text = "model 'test-model' not found at http://127.0.0.1:9/v1; check the model name"
    assert redact(text, SECRET) == text
    assert "***" in redact(f"bad key {SECRET}", SECRET)


# --- 16: malformed base URLs and lone surrogates are refused before anything is sent ---------


@pytest.mark.parametrize("url", ["not a url", "ftp://x", "http://", "localhost:8000/v1", "://x"])
@pytest.mark.parametrize("provider", PROTOCOLS)
def test_a_malformed_base_url_is_refused_at_construction(provider, url):
    started = time.perf_counter()
    with pytest.raises(tg.ArgumentError, match="base_url") as caught:
        tg.get_engine(f"{provider}/x", base_url=url, cache=False)
    assert "http://" in str(caught.value)  # says what a valid one looks like
    assert time.perf_counter() - started < 1


@pytest.mark.parametrize("where", ["content", "system", "stop"])
def test_a_lone_surrogate_is_an_argument_error_before_anything_is_sent(llm_server, tmp_path, where):
    server = llm_server(lambda r: "ok")
    engine = engine_for("openai", server, cache=tmp_path / "c.sqlite")
    bad = "broken \ud800 text"
    if where == "content":
        request = ask(bad)
    elif where == "system":
        request = ChatRequest.from_prompts(bad, "hi")
    else:
        request = ask(stop=[bad])
    with pytest.raises(tg.ArgumentError, match="surrogate"):
        engine.generate_sync(request)
    assert server.request_count == 0
    with pytest.raises(tg.ArgumentError, match="surrogate"):
        ScriptedEngine(lambda r: "ok").generate_sync(request)


def test_a_lone_surrogate_in_a_reply_does_not_break_the_cache(llm_server, tmp_path):
    server = llm_server(lambda r: "ok")
    engine = engine_for("openai", server, cache=tmp_path / "c.sqlite")
    payload = {"choices": [{"message": {"content": "half \ud83d pair"}, "finish_reason": "stop"}]}
    server.inject(Fault("body", payload=payload))
    assert engine.generate_sync(ask()).text == "half \ufffd pair"
    assert engine.generate_sync(ask()).cached


def test_cache_files_never_hold_keys(llm_server, tmp_path):
    server = llm_server(lambda r: "ok")
    url = server.openai_base_url.replace("http://", f"http://user:{SECRET}@")
    engine = engine_for("openai", server, base_url=url, api_key=SECRET, cache=tmp_path / "c.db")
    engine.generate_sync(ask())
    for file in Path(tmp_path).iterdir():
        assert b"SECRET" not in file.read_bytes()
