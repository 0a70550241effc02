"""Module: a pipeline whose parameters are found from its attributes.

As in PyTorch, assign Variables, ops and sub-modules as attributes;
`named_parameters()` finds every Variable with requires_grad=True (also
inside ops such as an LLMCall's system prompt, and in lists/dicts), each
once, under a dotted name. State dicts are plain JSON, versioned, and
loading is all-or-nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from textgraph._io import atomic_write_json
from textgraph.demos import Demos
from textgraph.errors import ArgumentError, StateDictError
from textgraph.ops.base import Operation
from textgraph.variable import Variable

STATE_FORMAT = "textgraph.state_dict"
STATE_VERSION = 1


def _walk(obj: Any, prefix: str, seen: dict[int, None]) -> Iterator[tuple[str, Variable]]:
    if isinstance(obj, Variable):
        if obj.requires_grad and id(obj) not in seen:
            seen[id(obj)] = None
            yield prefix, obj
        return
    if isinstance(obj, (Module, Operation)):
        if id(obj) in seen:
            return
        seen[id(obj)] = None
        for name, value in vars(obj).items():
            if not name.startswith("_"):
                yield from _walk(value, f"{prefix}.{name}" if prefix else name, seen)
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _walk(value, f"{prefix}.{i}", seen)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _walk(value, f"{prefix}.{key}", seen)


class Module:
    """Base class for optimizable pipelines. Override `forward`; call the module."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def named_parameters(self) -> list[tuple[str, Variable]]:
        """(dotted name, Variable) for each parameter, in attribute order, each once."""
        return list(_walk(self, "", {}))

    def parameters(self) -> list[Variable]:
        return [v for _, v in self.named_parameters()]

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.zero_grad()

    def state_dict(self) -> dict[str, Any]:
        """JSON-safe: format, version, and parameters as {name: {value, role_description}}."""
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "parameters": {name: _entry(v) for name, v in self.named_parameters()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Set every parameter from `state`, or raise and change nothing."""
        params = dict(self.named_parameters())
        values = _validated_values(state, params)
        for name, value in values.items():
            params[name].value = value

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the state dict as JSON atomically (temp file, fsync, rename)."""
        return atomic_write_json(path, self.state_dict())

    def load(self, path: str | os.PathLike[str]) -> Module:
        """Load a file written by `save` into this module (all-or-nothing); returns self.

        Every problem is a StateDictError naming the file."""
        state = read_state(path)
        try:
            self.load_state_dict(state)
        except StateDictError as exc:
            raise StateDictError(f"{Path(path)}: {exc}") from None
        return self


def _entry(variable: Variable) -> dict[str, Any]:
    entry: dict[str, Any] = {"value": variable.value, "role_description": variable.role_description}
    if isinstance(variable, Demos):
        entry["kind"] = "demos"  # the value is the demonstrations' JSON (tg.Demos.items)
    return entry


def read_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a saved state file, with errors that name the file."""
    file = Path(path)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise StateDictError(f"no state file at {file}") from None
    except IsADirectoryError:
        raise StateDictError(
            f"{file} is a directory; give the path of a file written by module.save()"
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StateDictError(
            f"{file} is not a textgraph state file: it is not UTF-8 text (byte {exc.start} "
            "cannot be decoded), so it is binary or damaged. Give the path of a JSON file "
            "written by module.save()."
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StateDictError(
            f"{file} is not valid JSON ({exc.msg}, line {exc.lineno}); it may be truncated "
            "or not a textgraph state file"
        ) from None
    if not isinstance(data, dict):
        raise StateDictError(f"{file} does not hold a state dict (a JSON object)")
    return data


def _validated_values(state: Any, params: dict[str, Variable]) -> dict[str, str]:
    if not isinstance(state, dict):
        raise StateDictError(f"a state dict must be a dict, got {type(state).__name__}")
    if state.get("format") != STATE_FORMAT:
        raise StateDictError(
            f"not a textgraph state dict (format={state.get('format')!r}, "
            f"expected {STATE_FORMAT!r})"
        )
    if state.get("version") != STATE_VERSION:
        raise StateDictError(
            f"state dict version {state.get('version')!r} is not supported (this textgraph "
            f"reads version {STATE_VERSION})"
        )
    entries = state.get("parameters")
    if not isinstance(entries, dict):
        raise StateDictError("state dict has no 'parameters' mapping")
    missing = [n for n in params if n not in entries]
    unexpected = [n for n in entries if n not in params]
    if missing or unexpected:
        raise StateDictError(
            "state dict does not match the module: "
            f"missing {missing or 'none'}, unexpected {unexpected or 'none'}. "
            "Nothing was changed."
        )
    values = {}
    for name, entry in entries.items():
        value = entry.get("value") if isinstance(entry, dict) else None
        if not isinstance(value, str):
            raise StateDictError(
                f"parameter {name!r} in the state dict has no str 'value'. Nothing was changed."
            )
        try:
            values[name] = params[name].check_value(value)
        except ArgumentError as exc:
            raise StateDictError(
                f"parameter {name!r} in the state dict: {exc}. Nothing was changed."
            ) from None
    return values
