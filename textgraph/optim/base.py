"""The Optimizer contract: an optimizer only proposes.

The loop owns evaluation, gating, records and checkpoints; it never names
an optimizer. An optimizer implements `async propose(ctx) -> [Candidate]`
and may learn from how its candidates fared (`observe`) and keep state
across a resume (`state_dict` / `load_state_dict`).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from textgraph.candidate import Candidate
from textgraph.eval.result import EvalResult

if TYPE_CHECKING:
    from textgraph.optim.context import StepContext


@dataclass
class CandidateOutcome:
    """How one proposed candidate fared in a step (what `observe` receives)."""

    candidate: Candidate
    status: str  # accepted | rejected | filtered | unchanged | duplicate | not selected
    reason: str
    result: EvalResult | None = None  # validation, when it was evaluated
    objectives: dict[str, float | None] | None = None


class Optimizer(abc.ABC):
    """Base class: subclass it and implement `propose`; no constructor arguments needed."""

    #: True when `propose` calls `ctx.gradients()` (the Trainer then needs a loss_fn).
    requires_gradients: ClassVar[bool] = False
    #: The label in records and reports (default: the class name).
    name: ClassVar[str] = ""
    #: How far below the best score a candidate may be and still pass the not_worse gate:
    #: for optimizers that trade score for something else (compression). Default 0.
    gate_tolerance: float = 0.0
    #: True when the optimizer needs the full validation scores of every candidate it
    #: proposed, losers included (it learns from them, keeps its own pool, or chooses
    #: itself): `Trainer(validation="sequential")` then validates its candidates in full.
    full_validation: ClassVar[bool] = False
    #: True when a proposal depends only on the context's incumbent, batch and rng and on
    #: the optimizer's own state_dict, and `observe` changes no state: with
    #: `Trainer(speculative=True)` the next step's proposal may then be computed from the
    #: incumbent while this step's candidate is validated (used if it is rejected,
    #: discarded and the state restored if it is accepted).
    allows_speculation: ClassVar[bool] = False

    @abc.abstractmethod
    async def propose(self, ctx: StepContext) -> list[Candidate]:
        """New candidates to evaluate; an empty list means nothing to try this step."""

    def observe(self, outcomes: list[CandidateOutcome]) -> None:  # noqa: B027 - optional hook
        """Learn from this step's outcomes (optional)."""

    def choose(self, validated: list[tuple[Candidate, EvalResult]]) -> Candidate | None:
        """Which of this step's fully validated candidates the gate judges (optional).
        None (the default): the one with the best validation score. An optimizer that
        trades score for something else (compression) picks its own."""
        return None

    def finished(self) -> str | None:
        """Why there is nothing left to propose (the loop then stops), or None."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """JSON-safe state for checkpoints (optional; stateless by default)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Restore what `state_dict` returned (optional)."""

    def config(self) -> dict[str, Any]:
        """Settings recorded in the run's config (a resume refuses a different one)."""
        return {"name": optimizer_name(self)}


def optimizer_name(optimizer: object) -> str:
    name = getattr(optimizer, "name", "")
    return name if isinstance(name, str) and name else type(optimizer).__name__
