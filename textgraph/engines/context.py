"""Context-scoped default engine (contextvars, never a process global).

`with tg.use_engine(engine):` sets the engine for ops, losses and backward
that were not given one explicitly. It is visible in tasks started inside
the block and in `run_sync` worker threads, and restored on exit.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

from textgraph.engines.base import Engine, is_engine
from textgraph.errors import ArgumentError, ConfigurationError

_default_engine: contextvars.ContextVar[Engine | None] = contextvars.ContextVar(
    "textgraph_default_engine", default=None
)


@contextlib.contextmanager
def use_engine(engine: Engine) -> Iterator[Engine]:
    check_engine(engine, "use_engine(engine)")
    token = _default_engine.set(engine)
    try:
        yield engine
    finally:
        _default_engine.reset(token)


_forward_override: contextvars.ContextVar[Engine | None] = contextvars.ContextVar(
    "textgraph_forward_override", default=None
)


@contextlib.contextmanager
def override_forward_engine(engine: Engine) -> Iterator[Engine]:
    """Inside the block every LLM op's forward call goes to `engine`, even ops built with
    their own (a teacher model producing demonstrations). Backward and losses are not
    affected."""
    check_engine(engine, "override_forward_engine(engine)")
    token = _forward_override.set(engine)
    try:
        yield engine
    finally:
        _forward_override.reset(token)


def forward_override() -> Engine | None:
    return _forward_override.get()


def default_engine() -> Engine | None:
    return _default_engine.get()


def check_engine(engine: object, what: str) -> None:
    if engine is not None and not is_engine(engine):
        raise ArgumentError(
            f"{what} must be an engine (an object with async generate(request)), "
            f"got {type(engine).__name__}. Create one with tg.engines.ScriptedEngine(...) "
            "or a provider engine."
        )


def resolve_engine(*candidates: Engine | None, what: str) -> Engine:
    """First engine that is set, else a clear error saying how to set one."""
    for engine in candidates:
        if engine is not None:
            return engine
    context = default_engine()
    if context is not None:
        return context
    raise ConfigurationError(
        f"No engine for {what}: pass engine=... or run it inside `with tg.use_engine(engine):`."
    )
