"""Which engine a call uses when it was not given one.

`with tg.use_engine(engine):` sets the engine for ops, losses and backward
that were not given one explicitly. It is visible in tasks started inside
the block and in `run_sync` worker threads, and restored on exit.

`tg.configure(engine=, backward_engine=, optimizer_engine=)` sets
process-wide defaults beneath it (like `dspy.configure`); beneath those,
`TEXTGRAPH_MODEL` names the model ops use when nothing else is set.
Wherever an engine is accepted a model string is too: `check_engine` resolves
it through `tg.get_engine`, once per string per process, so every op
naming "openai/gpt-4o" shares one engine (its cache, limits and usage).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
from collections.abc import Iterator
from typing import Any

from textgraph.engines.base import Engine, is_engine
from textgraph.errors import ArgumentError, ConfigurationError

_default_engine: contextvars.ContextVar[Engine | None] = contextvars.ContextVar(
    "textgraph_default_engine", default=None
)


ROLES = ("engine", "backward_engine", "optimizer_engine")
_configured: dict[str, Engine | None] = dict.fromkeys(ROLES)
_by_model: dict[str, Engine] = {}
_lock = threading.Lock()


def configure(
    *,
    engine: Engine | str | None = None,
    backward_engine: Engine | str | None = None,
    optimizer_engine: Engine | str | None = None,
) -> None:
    """Process-wide defaults beneath `use_engine`: `engine` for ops, `backward_engine` for
    losses and the critiques backward writes, `optimizer_engine` for optimizers' rewrites
    (see FALLBACKS). Only the roles passed change; `tg.configure(engine=None)` cannot clear
    one, use `tg.engines.context.reset_configuration()` for that."""
    given = (engine, backward_engine, optimizer_engine)
    for role, value in zip(ROLES, given, strict=True):
        if value is not None:
            _configured[role] = check_engine(value, f"tg.configure({role})")


def set_backward_engine(engine: Engine | str, override: bool = False) -> None:
    """TextGrad's `tg.set_backward_engine`: `tg.configure(backward_engine=engine)`.
    `override` is accepted for TextGrad code (by keyword or, as TextGrad's tests pass it,
    positionally); the new engine always replaces the old."""
    if engine is None:
        raise ArgumentError("set_backward_engine needs an engine or a model string")
    configure(backward_engine=engine)


def reset_configuration() -> None:
    """Forget what `tg.configure` set (tests; a fresh start in a notebook)."""
    for role in ROLES:
        _configured[role] = None


# An optimizer's rewrite is critic work: without an optimizer_engine it goes to the
# backward_engine (as TextGrad's optimizers default to its backward engine), then engine.
FALLBACKS = {
    "engine": ("engine",),
    "backward_engine": ("backward_engine", "engine"),
    "optimizer_engine": ("optimizer_engine", "backward_engine", "engine"),
}


def configured(role: str = "engine", *, fallback: bool = True) -> Engine | None:
    """What `tg.configure` set for `role`, falling back (see FALLBACKS) unless told not to."""
    if role not in ROLES:
        raise ArgumentError(f"unknown engine role {role!r}; one of {ROLES}")
    for name in FALLBACKS[role] if fallback else (role,):
        if _configured[name] is not None:
            return _configured[name]
    return None


@contextlib.contextmanager
def use_engine(engine: Engine | str) -> Iterator[Engine]:
    engine = check_engine(engine, "use_engine(engine)")
    token = _default_engine.set(engine)
    try:
        yield engine
    finally:
        _default_engine.reset(token)


_forward_override: contextvars.ContextVar[Engine | None] = contextvars.ContextVar(
    "textgraph_forward_override", default=None
)


@contextlib.contextmanager
def override_forward_engine(engine: Engine | str) -> Iterator[Engine]:
    """Inside the block every LLM op's forward call goes to `engine`, even ops built with
    their own (a teacher model producing demonstrations). Backward and losses are not
    affected."""
    engine = check_engine(engine, "override_forward_engine(engine)")
    token = _forward_override.set(engine)
    try:
        yield engine
    finally:
        _forward_override.reset(token)


def forward_override() -> Engine | None:
    return _forward_override.get()


def context_engine() -> Engine | None:
    """The engine of the innermost `with tg.use_engine(...)` block, if any."""
    return _default_engine.get()


def default_engine(role: str = "engine") -> Engine | None:
    """A `use_engine` block, else `tg.configure`'s engine for `role`, else TEXTGRAPH_MODEL."""
    return context_engine() or process_engine(role)


def process_engine(role: str = "engine") -> Engine | None:
    """`tg.configure`'s engine for `role` (or its `engine`), else TEXTGRAPH_MODEL's."""
    engine = configured(role)
    if engine is not None:
        return engine
    model = os.environ.get("TEXTGRAPH_MODEL")
    return check_engine(model, "the TEXTGRAPH_MODEL environment variable") if model else None


def engine_for_model(model: str, what: str) -> Engine:
    # the registry builds on this module
    from textgraph.engines.registry import get_engine, textgraph_model

    model = textgraph_model(model, stacklevel=4)
    with _lock:
        if model not in _by_model:
            try:
                _by_model[model] = get_engine(model)
            except (ArgumentError, ConfigurationError) as error:
                raise type(error)(f"{what}: {error}") from None
        return _by_model[model]


def check_engine(engine: object, what: str) -> Any:
    """Raise unless `engine` is None, an engine or a model string; return the engine."""
    if isinstance(engine, str):
        return engine_for_model(engine, what)
    if engine is not None and not is_engine(engine):
        raise ArgumentError(
            f"{what} must be an engine (an object with async generate(request)) or a model "
            f"string such as 'openai/gpt-4o-mini', got {type(engine).__name__}. Create one with "
            "tg.get_engine(...) or tg.engines.ScriptedEngine(...)."
        )
    return engine


def resolve_engine(*candidates: Engine | None, what: str, role: str = "engine") -> Engine:
    """First engine that is set, else the defaults, else a clear error saying how to set one."""
    for engine in candidates:
        if engine is not None:
            return check_engine(engine, what)
    fallback = default_engine(role)
    if fallback is not None:
        return fallback
    raise ConfigurationError(
        f"No engine for {what}: pass engine=... (an engine or a model string), run it inside "
        "`with tg.use_engine(engine):`, call tg.configure(engine=...) or set TEXTGRAPH_MODEL."
    )
