"""Textual Gradient Descent: rewrite each parameter from its critiques.

One optimizer call per parameter that has gradients, all parameters
concurrently. The prompt shows the full current value, its role, every
critique with the call it came from, numbered constraints, optional
examples, and momentum (earlier values with the feedback they received).
The new value comes back between markers unique to the call; a reply
without them gets one repair turn, then the old value is kept and a
warning recorded — `step()` never raises over a bad reply.

TGD is one optimizer on the contract (`propose`): under the Trainer it asks
the context for gradients and proposes one candidate with every rewritten
parameter. The manual API (`step()`, `zero_grad()`) works as before.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from textgraph._sync import run_sync
from textgraph._textgrad import refuse_options
from textgraph.demos import Demos
from textgraph.engines.base import ChatRequest, Engine
from textgraph.engines.context import check_engine, resolve_engine
from textgraph.errors import ArgumentError, StateDictError
from textgraph.ops.llm import sampling_parameters
from textgraph.optim.base import Optimizer
from textgraph.prompts import fence, load, render_file
from textgraph.structured import call_delimited
from textgraph.variable import Conversation, Variable, ensure_variable

if TYPE_CHECKING:
    from textgraph.candidate import Candidate
    from textgraph.optim.context import StepContext

logger = logging.getLogger("textgraph.optim")


@dataclass
class Update:
    """What one step did to one parameter."""

    parameter: Variable
    old_value: str
    new_value: str
    warning: str | None = None
    conversation: Conversation = field(default=(), repr=False)

    @property
    def changed(self) -> bool:
        return self.new_value != self.old_value


@dataclass
class _Memory:
    """Past (value, feedback) pairs of one parameter, newest last."""

    entries: list[tuple[int, str, str]] = field(default_factory=list)


class TGD(Optimizer):
    """`TGD(parameters, engine=, constraints=[...], momentum=k, in_context_examples=[...])`."""

    requires_gradients: ClassVar[bool] = True
    name: ClassVar[str] = "tgd"
    # propose reads the incumbent, the batch and steps_taken/momentum (in state_dict);
    # observe is the base no-op
    allows_speculation: ClassVar[bool] = True

    def __init__(
        self,
        parameters: Iterable[Variable],
        engine: Engine | str | None = None,
        *,
        constraints: Sequence[str] | None = None,
        in_context_examples: Sequence[str] | None = None,
        momentum: int = 0,
        temperature: float | None = None,
        max_tokens: int | None = None,
        repair: bool = True,
        **textgrad_options: Any,
    ) -> None:
        refuse_options("TGD", textgrad_options)
        engine = check_engine(engine, "TGD(engine)")
        if isinstance(parameters, Variable):
            parameters = [parameters]
        params = [ensure_variable(p, f"TGD parameter {i}") for i, p in enumerate(parameters)]
        if not params:
            raise ArgumentError("TGD got no parameters: pass a list of tg.Variable to optimize")
        for p in params:  # what you hand an optimizer is what it optimizes (as in TextGrad)
            p.requires_grad = True
        # Demonstrations are structured (tg.Demos): TGD rewrites text and leaves them to the
        # demo optimizers, so TGD(module.parameters()) works on a module that has some.
        self.skipped = [p for p in dict.fromkeys(params) if isinstance(p, Demos)]
        self.parameters = [p for p in dict.fromkeys(params) if not isinstance(p, Demos)]
        if not self.parameters:
            raise ArgumentError(
                "TGD got only tg.Demos parameters; TGD rewrites text. Optimize demonstrations "
                "with tg.optim.BootstrapFewShot, RandomSearchDemos or MIPRO."
            )
        self.engine = engine
        self.repair = repair  # ask once more when the reply lacks the markers
        self.constraints = _text_list(constraints, "constraints")
        self.in_context_examples = _text_list(in_context_examples, "in_context_examples")
        if not isinstance(momentum, int) or momentum < 0:
            raise ArgumentError(
                f"momentum is how many past values to show: an int >= 0, got {momentum!r}"
            )
        self.momentum = momentum
        checked = sampling_parameters("TGD", temperature=temperature, max_tokens=max_tokens)
        self.sampling = {"temperature": checked["temperature"], "max_tokens": checked["max_tokens"]}
        self.steps_taken = 0
        self._memory: dict[Variable, _Memory] = {p: _Memory() for p in self.parameters}

    def step(self) -> list[Update]:
        """Rewrite every parameter that has gradients. Never raises over a bad reply."""
        return run_sync(self.astep())

    async def astep(self) -> list[Update]:
        updates = await self._updates()
        for update in updates:
            update.parameter.value = update.new_value
        return updates

    async def propose(self, ctx: StepContext) -> list[Candidate]:
        """Gradients on the step's batch, then one candidate with every rewrite."""
        names = self._names_in(ctx)
        await ctx.gradients()
        critiques = {names[id(p)]: p.grad[:4000] for p in self.parameters if p.gradients}
        updates = await self._updates(warn_without_gradients=False)
        changes = {}
        for update in updates:
            name = names[id(update.parameter)]
            if update.warning:
                ctx.note(f"{name}: {update.warning}")
            elif update.changed:
                changes[name] = update.new_value
        if not changes:
            return []
        details = {
            "optimizer": self.name,
            "critique": {n: c for n, c in critiques.items() if n in changes},
        }
        return [
            ctx.current.with_values(changes, origin=f"tgd step {self.steps_taken}", details=details)
        ]

    def _names_in(self, ctx: StepContext) -> dict[int, str]:
        """id(parameter) -> its name in the trained module; an ArgumentError naming every
        parameter of this TGD that the module does not have (it would never change)."""
        owned = {id(p): name for name, p in ctx.module.named_parameters()}
        strays = [(i, p) for i, p in enumerate(self.parameters) if id(p) not in owned]
        if strays:
            listed = "; ".join(f"parameter {i}: {p.id} ({p.role_description!r})" for i, p in strays)
            raise ArgumentError(
                f"TGD optimizes variables that are not a parameter of the module being trained "
                f"({listed}), so no step could ever change them. Give TGD the module's own "
                f"variables, e.g. tg.TGD(module.parameters(), ...); its parameters are: "
                f"{', '.join(owned.values()) or 'none'}"
            )
        return {id(p): owned[id(p)] for p in self.parameters}

    async def _updates(self, warn_without_gradients: bool = True) -> list[Update]:
        """New values for every parameter with gradients; the values are not set here."""
        todo = [p for p in self.parameters if p.gradients]
        if not todo:
            if warn_without_gradients:
                logger.warning("TGD.step(): no parameter has gradients; call loss.backward() first")
            return []
        engine = resolve_engine(self.engine, what="TGD.step()", role="optimizer_engine")
        step = self.steps_taken + 1
        updates = await asyncio.gather(*(self._update(p, engine, step) for p in todo))
        if self.momentum:
            for update in updates:
                memory = self._memory[update.parameter].entries
                memory.append((step, update.old_value, update.parameter.grad))
                del memory[: -self.momentum]
        self.steps_taken = step
        return list(updates)

    async def rewrite(self, parameter: Variable) -> Update:
        """One parameter's new value from its current gradients, not set on it (search
        optimizers such as ParetoTGD decide what to do with it). Never raises over a bad
        reply: the Update then carries a warning and the old value."""
        if not any(p is parameter for p in self.parameters):
            raise ArgumentError(
                f"{parameter.id} ({parameter.role_description}) is not one of this TGD's parameters"
            )
        engine = resolve_engine(self.engine, what="TGD rewrite", role="optimizer_engine")
        self.steps_taken += 1
        return await self._update(parameter, engine, self.steps_taken)

    def config(self) -> dict[str, Any]:
        return {"name": "tgd", "constraints": self.constraints, "momentum": self.momentum}

    def zero_grad(self) -> None:
        for p in self.parameters:
            p.zero_grad()

    async def _update(self, parameter: Variable, engine: Engine, step: int) -> Update:
        request, start, end = self.build_request(parameter, step)
        reply = await call_delimited(engine, request, start, end, repair=self.repair)
        if reply.ok:
            return Update(parameter, parameter.value, reply.value, conversation=reply.conversation)
        after = " even after a repair request" if self.repair else ""
        warning = (
            f"step {step}: the optimizer's reply had no usable new value ({reply.error}){after}; "
            "kept the previous value."
        )
        parameter.warnings.append(warning)
        logger.warning("%s (%s): %s", parameter.id, parameter.role_description, warning)
        return Update(parameter, parameter.value, parameter.value, warning, reply.conversation)

    def build_request(self, parameter: Variable, step: int) -> tuple[ChatRequest, str, str]:
        """The optimizer request for one parameter, and its start/end markers."""
        feedback = "\n".join(
            render_file(
                "optimizer_feedback_item",
                index=i,
                source_role=g.source.role_description,
                operation=g.operation,
                context=g.context or "(no context recorded)",
                critique=fence(g.text),
            )
            for i, g in enumerate(parameter.gradients, 1)
        )
        momentum = ""
        past = self._memory[parameter].entries
        if self.momentum and past:
            momentum = (
                render_file(
                    "optimizer_momentum",
                    past="\n".join(
                        render_file(
                            "optimizer_past_value", step=s, value=fence(v), feedback=fence(f)
                        )
                        for s, v, f in past
                    ),
                )
                + "\n"
            )
        examples = ""
        if self.in_context_examples:
            examples = (
                render_file(
                    "optimizer_examples",
                    examples="\n".join(
                        f"<EXAMPLE>\n{fence(e)}\n</EXAMPLE>" for e in self.in_context_examples
                    ),
                )
                + "\n"
            )
        constraints = ""
        if self.constraints:
            constraints = (
                render_file(
                    "optimizer_constraints",
                    constraints="\n".join(f"{i}. {c}" for i, c in enumerate(self.constraints, 1)),
                )
                + "\n"
            )
        data = parameter.value + feedback + momentum + examples + constraints
        # Seeded by position and step, not the process-local id: a resumed run sends the same
        # bytes, so cache and replay keys match the uninterrupted run.
        start, end = unique_markers(data, f"{self.parameters.index(parameter)}|{step}")
        user = render_file(
            "optimizer_user",
            role=parameter.role_description,
            value=fence(parameter.value),
            feedback=feedback,
            momentum=momentum,
            examples=examples,
            constraints=constraints,
            start=start,
            end=end,
        )
        request = ChatRequest.from_prompts(
            load("optimizer_system"),
            user,
            purpose="optimizer",
            variable_ids=[parameter.id],
            **self.sampling,
        )
        return request, start, end

    def state_dict(self) -> dict[str, Any]:
        """Momentum memory and step count, keyed by parameter position (JSON-safe)."""
        return {
            "steps_taken": self.steps_taken,
            "memory": [[[s, v, f] for s, v, f in self._memory[p].entries] for p in self.parameters],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        memory = state.get("memory") if isinstance(state, dict) else None
        if not isinstance(memory, list) or len(memory) != len(self.parameters):
            raise StateDictError(
                f"optimizer state has memory for {len(memory) if isinstance(memory, list) else 0} "
                f"parameters, this TGD has {len(self.parameters)}"
            )
        steps = state.get("steps_taken")
        if not isinstance(steps, int) or steps < 0:
            raise StateDictError("optimizer state needs steps_taken, an int >= 0")
        try:
            entries = [[(int(s), str(v), str(f)) for s, v, f in rows] for rows in memory]
        except (TypeError, ValueError) as exc:
            raise StateDictError(
                f"optimizer memory rows must be [step, value, feedback]: {exc}"
            ) from exc
        self.steps_taken = steps
        for p, rows in zip(self.parameters, entries, strict=True):
            self._memory[p] = _Memory(rows)


def unique_markers(data: str, seed: str) -> tuple[str, str]:
    """Start/end markers that do not occur in `data` (deterministic per seed)."""
    for attempt in range(1000):
        tag = hashlib.sha256(f"{seed}|{attempt}|{data}".encode()).hexdigest()[:8].upper()
        start, end = f"<NEW_VALUE_{tag}>", f"</NEW_VALUE_{tag}>"
        if start not in data and end not in data:
            return start, end
    raise AssertionError("unreachable: could not find markers absent from the data")


def _text_list(items: Sequence[str] | None, what: str) -> list[str]:
    if items is None:
        return []
    if isinstance(items, str):
        return [items]
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, str) or not item.strip():
            raise ArgumentError(f"{what}[{i}] must be a non-empty str, got {item!r:.40}")
        out.append(item)
    return out
