"""Candidate: an immutable snapshot of a module's parameter values.

Every optimizer proposes Candidates; the loop evaluates, gates, records and
selects them the same way whichever optimizer made them. `id` is a hash of
the values alone, so equal values are one candidate and are never scored
twice in a run; `parents` and `origin` say where it came from.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from textgraph.demos import demos_text, is_demos_value
from textgraph.errors import ArgumentError
from textgraph.variable import Variable, override_values

if TYPE_CHECKING:
    from textgraph.module import Module


def values_id(values: Mapping[str, Any]) -> str:
    """Content hash of parameter values (names and values, order-free)."""
    blob = json.dumps(dict(values), sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]


class Candidate:
    """`tg.Candidate(values, *, parents=(), origin="", details=None)`."""

    __slots__ = ("details", "id", "origin", "parents", "values")

    values: Mapping[str, Any]
    id: str
    parents: tuple[str, ...]
    origin: str
    details: Any

    def __init__(
        self,
        values: Mapping[str, Any],
        *,
        parents: Sequence[str] = (),
        origin: str = "",
        details: Any = None,
    ) -> None:
        if not isinstance(values, Mapping) or not values:
            raise ArgumentError(
                "Candidate(values) must be a non-empty mapping of parameter name -> value "
                f"(names as in module.named_parameters()), got {type(values).__name__}"
            )
        for name in values:
            if not isinstance(name, str):
                raise ArgumentError(f"Candidate parameter names must be str, got {name!r:.40}")
        if isinstance(parents, str) or not all(isinstance(p, str) for p in parents):
            raise ArgumentError("Candidate(parents) must be a sequence of candidate ids (str)")
        if not isinstance(origin, str):
            raise ArgumentError(f"Candidate(origin) must be a str, got {type(origin).__name__}")
        # Demonstrations may be given as a list; their canonical text is the value, so equal
        # demos are one candidate however they were written.
        frozen = {
            name: demos_text(value) if is_demos_value(value) else value
            for name, value in sorted(values.items())
        }
        object.__setattr__(self, "values", MappingProxyType(frozen))
        object.__setattr__(self, "id", values_id(frozen))
        object.__setattr__(self, "parents", tuple(parents))
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "details", details)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("a Candidate is immutable; make a new one with with_values()")

    @classmethod
    def from_module(cls, module: Module, *, origin: str = "current values") -> Candidate:
        return cls(module_values(module), origin=origin)

    def with_values(
        self, changes: Mapping[str, Any], *, origin: str = "", details: Any = None
    ) -> Candidate:
        """A child: these values changed, the rest as here; this candidate is its parent."""
        unknown = sorted(set(changes) - set(self.values))
        if unknown:
            raise ArgumentError(
                f"unknown parameter(s) {unknown}; this candidate has {sorted(self.values)}"
            )
        return Candidate(
            {**self.values, **changes}, parents=(self.id,), origin=origin, details=details
        )

    def changes_from(self, other: Candidate) -> dict[str, tuple[Any, Any]]:
        """{name: (other's value, this value)} for every parameter that differs."""
        return {
            name: (other.values.get(name), value)
            for name, value in self.values.items()
            if other.values.get(name) != value
        }

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Candidate) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        origin = f", origin={self.origin!r}" if self.origin else ""
        return f"Candidate(id={self.id!r}, parameters={list(self.values)}{origin})"


def module_values(module: Module) -> dict[str, Any]:
    return {name: p.value for name, p in module.named_parameters()}


def _bindings(module: Module, values: Mapping[str, Any]) -> dict[Variable, str]:
    """Each named parameter with the value it would hold (validated by the parameter)."""
    params = dict(module.named_parameters())
    unknown = sorted(set(values) - set(params))
    if unknown:
        raise ArgumentError(
            f"the candidate names parameter(s) {unknown} that the module does not have; "
            f"its parameters are {sorted(params)}"
        )
    bound = {}
    for name, value in values.items():
        try:
            bound[params[name]] = params[name].check_value(value)
        except ArgumentError as exc:
            raise ArgumentError(f"candidate value for {name!r}: {exc}") from None
    return bound


@contextlib.contextmanager
def candidate_values(module: Module, candidate: Candidate | Mapping[str, Any]) -> Iterator[None]:
    """Run the block as if the module held the candidate's values, without changing it.
    Other tasks (concurrent evaluations of other candidates) are not affected."""
    values = candidate.values if isinstance(candidate, Candidate) else candidate
    with override_values(_bindings(module, values)):
        yield


def apply_candidate(module: Module, candidate: Candidate | Mapping[str, Any]) -> None:
    """Set the module's parameters to the candidate's values (all or nothing)."""
    values = candidate.values if isinstance(candidate, Candidate) else candidate
    for variable, value in _bindings(module, values).items():
        variable.value = value
