"""Shared fixtures: scripted engines that answer by request purpose."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from textgraph.engines import ChatRequest, ScriptedCall, ScriptedEngine

DEFAULT_REPLIES = {
    "forward": "forward output",
    "loss": "The output is wrong: it ignores the question.",
    "backward": "The variable should ask for step-by-step counting.",
    "optimizer": "improved value",
    "reduce": "merged feedback",
    "validation": "ok",
}


def by_purpose(**overrides: str | Callable[[ChatRequest], str]) -> Callable[[ChatRequest], str]:
    replies = {**DEFAULT_REPLIES, **overrides}

    def respond(request: ChatRequest) -> str:
        reply = replies[request.purpose]
        return reply(request) if callable(reply) else reply

    return respond


@pytest.fixture(autouse=True)
def no_process_default_engine(request, monkeypatch):
    """Unit tests see no TEXTGRAPH_MODEL (a developer's shell may set one) and leave no
    tg.configure defaults behind; the real-model tier keeps the variable."""
    from textgraph.engines.context import reset_configuration

    if request.node.get_closest_marker("real_model") is None:
        monkeypatch.delenv("TEXTGRAPH_MODEL", raising=False)
    yield
    reset_configuration()


@pytest.fixture
def fresh_engine_defaults(monkeypatch, tmp_path):
    """A private response cache and no engine resolved from a model string or set by
    tg.configure before the test: for tests of those defaults themselves."""
    from textgraph.engines import context

    monkeypatch.setenv("TEXTGRAPH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(context, "_by_model", {})
    context.reset_configuration()
    yield
    context.reset_configuration()


@pytest.fixture
def engine() -> ScriptedEngine:
    return ScriptedEngine(by_purpose())


def waves(calls: list[ScriptedCall]) -> int:
    """Length of the longest chain of calls where each started after the previous ended."""
    depth: dict[int, int] = {}
    for i, call in sorted(enumerate(calls), key=lambda item: item[1].start):
        before = [
            depth[j] for j, other in enumerate(calls) if j in depth and other.end <= call.start
        ]
        depth[i] = 1 + max(before, default=0)
    return max(depth.values(), default=0)


def overlapped(calls: list[ScriptedCall]) -> bool:
    """True when all the calls were in flight at one moment."""
    return max(c.start for c in calls) < min(c.end for c in calls)
