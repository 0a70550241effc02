"""StepContext: what an optimizer sees and may do during one step."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from textgraph.candidate import Candidate, candidate_values
from textgraph.demos import Demos
from textgraph.engines.base import Engine
from textgraph.engines.context import override_forward_engine
from textgraph.errors import ArgumentError
from textgraph.eval.pareto import ParetoEntry
from textgraph.eval.result import EvalResult
from textgraph.module import Module
from textgraph.variable import Gradient, Variable

Evaluate = Callable[..., Awaitable[EvalResult]]
# The gradient pass: gradients per parameter name, and the metric's score of each example.
Gradients = Callable[[Sequence[int]], Awaitable[tuple[dict[str, list[Gradient]], list[Any]]]]
Filter = Callable[[Candidate, Candidate], tuple[Candidate | None, list[str]]]


def _no_filter(candidate: Candidate, base: Candidate) -> tuple[Candidate | None, list[str]]:
    return candidate, []


@dataclass
class StepContext:
    """One step's view of the run.

    current / best: the incumbent and the best candidate so far. pool: every
    fully evaluated candidate with its objective values (the Pareto pool).
    rng: seeded per run and step (use it, not `random`, so runs repeat).
    batch: this step's training examples (batch_indices: their positions in
    train). val: the run's validation examples (what the loop gates on; search
    optimizers may score minibatches of it).
    `await ctx.evaluate(candidate, examples)` scores any candidate on any
    examples (cached per candidate and example). `await ctx.gradients()` runs
    forward, loss, backward and bounded reduction on the batch and returns
    each parameter's critiques (they are also on the parameters); with
    `candidate=` the pass runs on that candidate's values (a search that
    learns from a parent other than the incumbent), and `ctx.train_scores`
    then holds the metric's score of each example of the pass.
    `ctx.filter(candidate, base)` applies the run's filters (max_chars,
    reject_copies) to what the candidate changed from `base`.
    engine / critic_engine: the forward and the critic/optimizer engines,
    when the run was given them (None: ops use their own or the default).
    """

    step: int
    module: Module
    current: Candidate
    best: Candidate
    pool: list[ParetoEntry]
    rng: random.Random
    batch: list[Any]
    batch_indices: list[int]
    train: Sequence[Any]
    engine: Engine | None
    critic_engine: Engine | None
    _evaluate: Evaluate = field(repr=False)
    _gradients: Gradients = field(repr=False)
    val: Sequence[Any] = ()
    notes: list[str] = field(default_factory=list)
    gradients_computed: bool = False
    train_scores: list[float | None] = field(default_factory=list)
    _filter: Filter = field(default=_no_filter, repr=False)

    @property
    def parameters(self) -> dict[str, Variable]:
        """Parameter name -> Variable, as in module.named_parameters()."""
        return dict(self.module.named_parameters())

    def text_parameters(self, who: str) -> list[str]:
        """Names of the text parameters (not tg.Demos), in module order; an ArgumentError
        naming `who` when there is none."""
        names = [n for n, p in self.parameters.items() if not isinstance(p, Demos)]
        if not names:
            raise ArgumentError(
                f"{who} rewrites text parameters and the module has none; tg.Demos are "
                "demonstrations: optimize them with tg.optim.BootstrapFewShot, "
                "RandomSearchDemos or MIPRO"
            )
        return names

    def name_of(self, variable: Variable) -> str:
        for name, p in self.module.named_parameters():
            if p is variable:
                return name
        raise ArgumentError(
            f"{variable.id} ({variable.role_description}) is not a parameter of the module "
            "being trained; give the optimizer the module's parameters (module.parameters())"
        )

    async def evaluate(
        self,
        candidate: Candidate,
        examples: Sequence[Any] | None = None,
        *,
        trace: bool = False,
        engine: Engine | None = None,
    ) -> EvalResult:
        """Score `candidate` on `examples` (default: this step's batch).

        trace=True also records each example's LLM op calls (`result.traces`); engine
        runs every forward call on that engine (a teacher; implies trace, as such
        outcomes are not the candidate's own and are never cached)."""
        if not isinstance(candidate, Candidate):
            raise ArgumentError(
                f"ctx.evaluate needs a tg.Candidate, got {type(candidate).__name__}"
            )
        examples = self.batch if examples is None else examples
        if engine is None:
            return await self._evaluate(candidate, examples, trace=trace)
        with override_forward_engine(engine):
            return await self._evaluate(candidate, examples, trace=True)

    async def gradients(
        self, batch: Sequence[int] | None = None, *, candidate: Candidate | None = None
    ) -> dict[str, list[Gradient]]:
        """Forward, loss, backward and reduction on the batch (indices into train), with
        the module's values or, given `candidate`, that candidate's. The critiques stay on
        the parameters; an optimizer rewriting from them under `candidate_values(module,
        candidate)` sees the candidate's values as the old ones."""
        indices = self.batch_indices if batch is None else list(batch)
        if candidate is not None and not isinstance(candidate, Candidate):
            raise ArgumentError(
                f"ctx.gradients(candidate=) needs a tg.Candidate, got {type(candidate).__name__}"
            )
        self.gradients_computed = True
        if candidate is None:
            grads, scores = await self._gradients(indices)
        else:
            with candidate_values(self.module, candidate):
                grads, scores = await self._gradients(indices)
        self.train_scores = list(scores)
        return grads

    def filter(
        self, candidate: Candidate, base: Candidate | None = None
    ) -> tuple[Candidate | None, list[str]]:
        """The run's filters on what `candidate` changed from `base` (default: the
        incumbent): the candidate with offending changes reverted to base's values (None if
        nothing is left), and the reasons. The loop applies them again to every proposal."""
        return self._filter(candidate, base if base is not None else self.current)

    def note(self, text: str) -> None:
        """A line for the step's record; `textgraph show` and the report print it."""
        self.notes.append(str(text))
