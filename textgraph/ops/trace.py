"""What each LLM op received and produced in forward: the trace demo optimizers mine.

`with record_op_calls() as calls:` collects one `OpCall` per LLM op call made
in the block (and in tasks and threads started inside it), in call order.
Outside such a block nothing is recorded and nothing is kept alive.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from textgraph.demos import Demos
    from textgraph.ops.base import Operation


@dataclass(frozen=True)
class OpCall:
    """One LLM op call: the op, its inputs as a demo would hold them, its output."""

    op: Operation
    inputs: str | dict[str, str]
    output: str
    demos: Demos | None


_recorder: contextvars.ContextVar[list[OpCall] | None] = contextvars.ContextVar(
    "textgraph_op_calls", default=None
)


@contextlib.contextmanager
def record_op_calls() -> Iterator[list[OpCall]]:
    calls: list[OpCall] = []
    token = _recorder.set(calls)
    try:
        yield calls
    finally:
        _recorder.reset(token)


def record(call: OpCall) -> None:
    calls = _recorder.get()
    if calls is not None:
        calls.append(call)
