"""Objectives, the Pareto front of every evaluated candidate, and selection.

Built-in objectives, measured by the Evaluator on validation: score (mean,
maximized), cost (USD per example priced as if uncached, minimized),
latency (p50 seconds per example, minimized), prompt_tokens (per example,
minimized). `tg.Objective(name, fn, maximize=...)` adds any other, where
`fn(result, candidate)` returns a number.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from textgraph.candidate import Candidate
from textgraph.errors import ArgumentError
from textgraph.eval.result import EvalResult


@dataclass(frozen=True)
class Objective:
    """`tg.Objective(name, fn, maximize=True)`; fn(result, candidate) -> float."""

    name: str
    fn: Callable[[EvalResult, Candidate], float | None]
    maximize: bool = True


BUILTIN: dict[str, Objective] = {
    "score": Objective("score", lambda r, c: r.objectives()["score"], True),
    "cost": Objective("cost", lambda r, c: r.objectives()["cost"], False),
    "latency": Objective("latency", lambda r, c: r.objectives()["latency"], False),
    "prompt_tokens": Objective(
        "prompt_tokens", lambda r, c: r.objectives()["prompt_tokens"], False
    ),
}


def resolve_objectives(objectives: Sequence[str | Objective] | None) -> list[Objective]:
    """Named or custom objectives; "score" is always first (the gate reads it)."""
    if objectives is None:
        objectives = list(BUILTIN)
    if isinstance(objectives, str) or not isinstance(objectives, Sequence):
        raise ArgumentError("objectives must be a list of names or tg.Objective")
    out: list[Objective] = []
    for item in objectives:
        if isinstance(item, str):
            if item not in BUILTIN:
                raise ArgumentError(
                    f"unknown objective {item!r}; built-ins are {', '.join(BUILTIN)}, or pass "
                    "tg.Objective(name, fn, maximize=...)"
                )
            item = BUILTIN[item]
        elif not isinstance(item, Objective) or not callable(item.fn):
            raise ArgumentError(f"objectives must be names or tg.Objective, got {item!r:.40}")
        if any(o.name == item.name for o in out):
            raise ArgumentError(f"objective {item.name!r} is listed twice")
        out.append(item)
    if "score" not in [o.name for o in out]:
        out.insert(0, BUILTIN["score"])
    return out


class ParetoEntry(BaseModel):
    """One fully evaluated candidate and its objective values."""

    candidate_id: str
    step: int
    origin: str = ""
    objectives: dict[str, float | None]
    values: dict[str, Any] = Field(default_factory=dict)


def measure(
    objectives: Sequence[Objective], result: EvalResult, candidate: Candidate
) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for o in objectives:
        value = o.fn(result, candidate)
        if value is not None and not isinstance(value, (int, float)):
            raise ArgumentError(
                f"objective {o.name!r} returned {type(value).__name__}, not a number"
            )
        out[o.name] = None if value is None else float(value)
    return out


def _oriented(entry: ParetoEntry, objectives: Sequence[Objective]) -> list[float]:
    vals = []
    for o in objectives:
        v = entry.objectives.get(o.name)
        vals.append(float("-inf") if v is None else (v if o.maximize else -v))
    return vals


def dominates(a: ParetoEntry, b: ParetoEntry, objectives: Sequence[Objective]) -> bool:
    x, y = _oriented(a, objectives), _oriented(b, objectives)
    return all(p >= q for p, q in zip(x, y, strict=True)) and any(
        p > q for p, q in zip(x, y, strict=True)
    )


def pareto_front(
    entries: Sequence[ParetoEntry], objectives: Sequence[Objective]
) -> list[ParetoEntry]:
    """Non-dominated entries in evaluation order; of identical objective vectors, the first."""
    front = []
    seen: set[tuple[float, ...]] = set()
    for e in entries:
        if any(dominates(o, e, objectives) for o in entries if o is not e):
            continue
        vector = tuple(_oriented(e, objectives))
        if vector in seen:
            continue
        seen.add(vector)
        front.append(e)
    return front


Select = str | tuple[str, float] | Callable[[list[ParetoEntry]], Any]


def check_select(select: object) -> None:
    if select == "best" or callable(select):
        return
    if (
        isinstance(select, tuple)
        and len(select) == 2
        and select[0] == "cheapest_within"
        and isinstance(select[1], (int, float))
        and select[1] >= 0
    ):
        return
    raise ArgumentError(
        "select must be 'best', ('cheapest_within', tolerance >= 0) or a callable(front) -> "
        f"entry; got {select!r:.60}"
    )


def select_entry(
    entries: Sequence[ParetoEntry], select: Select, objectives: Sequence[Objective]
) -> ParetoEntry:
    """The entry the module ends with. "best": highest score (earliest on ties);
    ("cheapest_within", eps): cheapest entry whose score is within eps of the best;
    a callable receives the Pareto front and returns one of its entries (or its id)."""
    if not entries:
        raise ArgumentError("nothing to select from: no candidate was fully evaluated")
    check_select(select)

    def score(e: ParetoEntry) -> float:
        s = e.objectives.get("score")
        return float("-inf") if s is None else s

    if select == "best":
        return max(entries, key=score)  # max keeps the first of equal scores
    if isinstance(select, tuple):
        if not any(o.name == "cost" for o in objectives):
            raise ArgumentError("('cheapest_within', eps) needs the 'cost' objective")
        top = max(score(e) for e in entries)
        near = [e for e in entries if score(e) >= top - float(select[1]) - 1e-12]

        def cost(e: ParetoEntry) -> float:
            c = e.objectives.get("cost")
            return float("inf") if c is None else c

        return min(near, key=lambda e: (cost(e), -score(e)))
    front = pareto_front(entries, objectives)
    chosen = select(front)  # type: ignore[operator]
    by_id = {e.candidate_id: e for e in entries}
    if isinstance(chosen, ParetoEntry) and chosen.candidate_id in by_id:
        return by_id[chosen.candidate_id]
    if isinstance(chosen, str) and chosen in by_id:
        return by_id[chosen]
    raise ArgumentError(
        "the select callable must return one of the ParetoEntry objects it was given "
        f"(or its candidate_id); got {chosen!r:.60}"
    )
