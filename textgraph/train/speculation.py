"""Speculative proposals: the next step's proposal, made while this step validates.

With `Trainer(speculative=True)` and an optimizer whose `allows_speculation`
is True, the loop starts step t+1's proposal from the incumbent as soon as
step t's proposal is in, and validates step t meanwhile. The speculation
assumes step t is rejected (the incumbent stays): if it is, the proposal is
exactly the one step t+1 would have made (same incumbent, batch, rng and
optimizer state), and it is used; if step t is accepted, the task is
cancelled, the optimizer's state restored to what it was before, and step
t+1 proposes again from the new incumbent. The calls a discarded proposal
made stay in the trace (phase "speculative ...") and in step t+1's counts.

Checkpoints stay exact: step t's checkpoint holds the optimizer state from
before the speculation started, so a resume recomputes step t+1's proposal
from the same state (the contract: `observe` changes no state).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Coroutine
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

_LABELS: ContextVar[dict[str, Any] | None] = ContextVar("textgraph_step_labels", default=None)


class StepLocal:
    """The step number and phase that trace lines and records are labelled with. A
    speculative proposal runs in its own task, labelled with its own (the next) step."""

    def __init__(self) -> None:
        self._default: dict[str, Any] = {"owner": self, "step": 0, "phase": "setup"}

    def labels(self) -> dict[str, Any]:
        mine = _LABELS.get()
        return mine if mine is not None and mine["owner"] is self else self._default

    def fork(self, step: int) -> None:
        """Called at the start of a speculative task: its labels are its own from now on
        (its child tasks share them, as the loop's share the trainer's)."""
        _LABELS.set({"owner": self, "step": step, "phase": "optimizer", "speculative": True})

    def phase(self) -> str:
        labels = self.labels()
        phase = str(labels["phase"])
        return f"speculative {phase}" if labels.get("speculative") else phase


@dataclass
class Speculation:
    """The next step's proposal in flight, the incumbent it assumed, and the optimizer
    state from before it (what step t's checkpoint holds, and what a discard restores)."""

    step: int
    base_id: str
    optimizer_state: dict[str, Any]
    task: asyncio.Task[Any]

    @classmethod
    def start(
        cls, step: int, base_id: str, optimizer: Any, work: Coroutine[Any, Any, Any]
    ) -> Speculation:
        state = json.loads(json.dumps(optimizer.state_dict()))  # a copy, not a view
        return cls(step, base_id, state, asyncio.ensure_future(work))

    async def take(self) -> Any:
        return await self.task

    async def discard(self, optimizer: Any) -> None:
        """Cancel the proposal (or drop its result) and restore the optimizer's state."""
        if not self.task.done():
            self.task.cancel()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await self.task
        optimizer.load_state_dict(self.optimizer_state)
