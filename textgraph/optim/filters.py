"""Filters run on every proposed candidate before it costs an evaluation.

max_chars: a changed value longer than the limit is reverted. reject_copies:
a changed value that contains a training example's text (20+ characters)
is reverted, so a prompt cannot memorize the training set (demonstrations,
tg.Demos values, are exempt from both: they are examples by design). A candidate with
nothing left to change is dropped, with the reason recorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from textgraph.candidate import Candidate
from textgraph.demos import is_demos_text


def strings_of(example: Any) -> list[str]:
    if isinstance(example, BaseModel):
        example = example.model_dump()
    if isinstance(example, dict):
        return [v for v in example.values() if isinstance(v, str)]
    return [example] if isinstance(example, str) else []


def copied_example(value: str, train: Sequence[Any]) -> int | None:
    for i, example in enumerate(train):
        for text in strings_of(example):
            if len(text) >= 20 and text in value:
                return i
    return None


def filter_candidate(
    candidate: Candidate,
    current: Candidate,
    *,
    max_chars: int | dict[str, int] | None,
    reject_copies: bool,
    train: Sequence[Any],
) -> tuple[Candidate | None, list[str]]:
    """The candidate with offending changes reverted (None if nothing is left), and why."""
    reasons: list[str] = []
    keep: dict[str, Any] = {}
    for name, (_old, new) in candidate.changes_from(current).items():
        if is_demos_text(new):  # demonstrations are training examples by design
            keep[name] = new
            continue
        limit = max_chars.get(name) if isinstance(max_chars, dict) else max_chars
        if isinstance(new, str) and limit is not None and len(new) > limit:
            reasons.append(f"{name}: rejected: {len(new)} chars > max_chars {limit}")
            continue
        if isinstance(new, str) and reject_copies and (i := copied_example(new, train)) is not None:
            reasons.append(f"{name}: rejected: copies training example {i}")
            continue
        keep[name] = new
    if not reasons:
        return candidate, []
    if not keep:
        return None, reasons
    kept = Candidate(
        {**current.values, **keep},
        parents=candidate.parents,
        origin=candidate.origin,
        details=candidate.details,
    )
    return kept, reasons
