"""Argument checks shared by every layer: refuse, at construction, values that would
silently mean "no limit" or "stop at once" (0, negative, NaN, a string), saying what to
pass instead."""

from __future__ import annotations

import math
from typing import Any

from textgraph.errors import ArgumentError


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_int(name: str, value: Any, *, minimum: int | None, instead: str = "") -> None:
    """`value` must be an int (>= minimum); "3", 1.5 and True are refused, not coerced.
    `instead` says what to pass otherwise."""
    if not _is_int(value) or (minimum is not None and value < minimum):
        need = f"an int >= {minimum}" if minimum is not None else "an int"
        raise ArgumentError(
            f"{name} must be {need}, got {value!r}" + (f"; {instead}" if instead else "")
        )


def check_number(
    name: str, value: Any, *, positive: bool, instead: str, allow_inf: bool = False
) -> None:
    """`value` must be a finite number > 0 (positive) or >= 0; `instead` says what else."""
    ok = _is_number(value) and not math.isnan(value) and (allow_inf or not math.isinf(value))
    if ok:
        ok = value > 0 if positive else value >= 0
    if not ok:
        bound = "> 0" if positive else ">= 0"
        raise ArgumentError(f"{name} must be a finite number {bound}, got {value!r}; {instead}")


def check_optional_int(name: str, value: Any, *, minimum: int, none_means: str) -> None:
    if value is not None:
        check_int(name, value, minimum=minimum, instead=f"pass None for {none_means}")


def check_optional_number(name: str, value: Any, *, positive: bool, none_means: str) -> None:
    if value is not None:
        check_number(name, value, positive=positive, instead=f"pass None for {none_means}")
