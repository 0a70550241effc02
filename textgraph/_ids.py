"""Deterministic, human-readable ids for variables.

Ids come from a process-wide counter, so the same program creates the same
ids in the same order on every run (unlike id(), which varies).
"""

from __future__ import annotations

import itertools

_counter = itertools.count(1)


def next_variable_id() -> str:
    return f"var-{next(_counter)}"
