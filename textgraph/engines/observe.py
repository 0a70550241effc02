"""Observers of engine calls, and the purpose label of forward calls.

An observer (a trainer's trace, per-run usage, a run budget) sees every
engine call made in its context exactly once, even when engines wrap other
engines. Context-scoped (contextvars): tasks inherit it, other runs do not.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from textgraph.engines.base import ChatRequest, ChatResponse


class CallObserver:
    """Sees every LLM call made in its context, once per logical call.

    `before` runs before the request is sent and may raise (a budget refusing
    the call); its return value is handed back to `after` or `failed`.
    `model` is the engine's model name (requests usually leave theirs unset),
    so cost estimates and budgets price the call by the model that answers it.
    """

    def before(self, request: ChatRequest, model: str | None = None) -> object:
        return None

    def after(
        self,
        request: ChatRequest,
        response: ChatResponse,
        state: object,
        started: float,
        ended: float,
        model: str | None = None,
    ) -> None:
        return None

    def failed(
        self,
        request: ChatRequest,
        error: BaseException,
        state: object,
        started: float,
        ended: float,
        model: str | None = None,
    ) -> None:
        return None


_observers: contextvars.ContextVar[tuple[CallObserver, ...]] = contextvars.ContextVar(
    "textgraph_call_observers", default=()
)
_inside_call: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "textgraph_inside_call", default=False
)
_forward_purpose: contextvars.ContextVar[str] = contextvars.ContextVar(
    "textgraph_forward_purpose", default="forward"
)


@contextlib.contextmanager
def observe_calls(observer: CallObserver) -> Iterator[CallObserver]:
    """Let `observer` see every engine call made inside the block (and its tasks)."""
    token = _observers.set((*_observers.get(), observer))
    try:
        yield observer
    finally:
        _observers.reset(token)


@contextlib.contextmanager
def forward_purpose(purpose: str) -> Iterator[None]:
    """Label forward calls made inside the block (the trainer uses "validation")."""
    token = _forward_purpose.set(purpose)
    try:
        yield
    finally:
        _forward_purpose.reset(token)


def current_forward_purpose() -> str:
    return _forward_purpose.get()


async def observed(
    request: ChatRequest,
    call: Callable[[], Awaitable[ChatResponse]],
    model: str | None = None,
) -> ChatResponse:
    """Run `call` under the context's observers; nested engine calls are not seen twice."""
    observers = _observers.get()
    if not observers or _inside_call.get():
        return await call()
    model = request.model or model
    token = _inside_call.set(True)
    try:
        states = [o.before(request, model=model) for o in observers]
        started = time.perf_counter()
        try:
            response = await call()
        except BaseException as error:
            ended = time.perf_counter()
            for o, state in zip(observers, states, strict=True):
                o.failed(request, error, state, started, ended, model=model)
            raise
        ended = time.perf_counter()
        for o, state in zip(observers, states, strict=True):
            o.after(request, response, state, started, ended, model=model)
        return response
    finally:
        _inside_call.reset(token)
