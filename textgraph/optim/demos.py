"""Demonstration optimizers: BootstrapFewShot and RandomSearchDemos.

Both mine traces: the program runs over training examples (optionally on a
teacher engine) with every LLM op call recorded; an example whose final
output passes the metric is a successful run, and what each op received and
produced in it becomes a demonstration for that op's `tg.Demos` (a
multi-stage program gets per-op demos from the same run). Labeled examples
fill the remaining slots where the op's fields map to the dataset's.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel

from textgraph._checks import check_int, check_optional_int
from textgraph.candidate import Candidate
from textgraph.demos import Demo, Demos, demos_text
from textgraph.engines.base import Engine
from textgraph.engines.context import check_engine
from textgraph.errors import ArgumentError
from textgraph.image import Image
from textgraph.module import Module
from textgraph.ops.base import Operation
from textgraph.optim.base import Optimizer
from textgraph.optim.context import StepContext

logger = logging.getLogger("textgraph.optim")

LABEL_FIELDS = ("answer", "label", "output", "target", "y")


# --- finding what to fill --------------------------------------------------------


def ops_of(module: Module) -> list[Operation]:
    """Every op reachable from the module's attributes, each once, in attribute order."""
    found: dict[int, Operation] = {}

    def walk(obj: Any) -> None:
        if isinstance(obj, Operation):
            if id(obj) in found:
                return
            found[id(obj)] = obj
            for name, value in vars(obj).items():
                if not name.startswith("_"):
                    walk(value)
        elif isinstance(obj, Module):
            if id(obj) in found:
                return
            found[id(obj)] = obj  # type: ignore[assignment]
            for name, value in vars(obj).items():
                if not name.startswith("_"):
                    walk(value)
        elif isinstance(obj, (list, tuple)):
            for value in obj:
                walk(value)
        elif isinstance(obj, dict):
            for value in obj.values():
                walk(value)

    walk(module)
    return [o for o in found.values() if isinstance(o, Operation)]


def demo_parameters(ctx: StepContext) -> dict[str, Demos]:
    """The module's tg.Demos parameters by name; a clear error when there are none."""
    found = {n: p for n, p in ctx.parameters.items() if isinstance(p, Demos)}
    if not found:
        raise ArgumentError(
            "this optimizer fills tg.Demos parameters, and the module has none: give an "
            "LLMCall/FormattedLLMCall demos=tg.Demos(role_description=...) "
            "(requires_grad=True)"
        )
    return found


def _fields_of(example: Any) -> dict[str, Any] | None:
    if isinstance(example, BaseModel):
        return example.model_dump()
    if isinstance(example, Mapping):
        return dict(example)
    return None


def labeled_demo(
    example: Any, op: Operation, label_field: str | None, input_field: str | None = None
) -> Demo | None:
    """A demo from a labeled example, when the op's fields map to the example's."""
    data = _fields_of(example)
    if data is None:
        return None
    label = label_field or next((k for k in LABEL_FIELDS if k in data), None)
    if label is None or not isinstance(data.get(label), (str, int, float)):
        return None
    names = getattr(op, "field_names", None)
    if names:  # FormattedLLMCall: every template field must be in the example
        if not all(isinstance(data.get(n), str) for n in names):
            return None
        return Demo(inputs={n: data[n] for n in names}, output=str(data[label]))
    if input_field is not None:
        text = data.get(input_field)
    elif any(isinstance(v, Image) for v in data.values()):
        return None  # the call reads an image too: its text field alone is not its input
    else:  # LLMCall: the example's one text field besides the label
        texts = [k for k, v in data.items() if k != label and isinstance(v, str)]
        text = data[texts[0]] if len(texts) == 1 else None
    if not isinstance(text, str):
        return None
    return Demo(inputs=text, output=str(data[label]))


# --- bootstrapping -------------------------------------------------------------------


@dataclass
class BootstrapResult:
    """Demonstrations per Demos parameter and which training examples produced them."""

    traced: dict[str, list[Demo]] = field(default_factory=dict)
    sources: dict[str, list[int]] = field(default_factory=dict)  # train index of each demo
    used: set[int] = field(default_factory=set)  # examples whose traces passed
    tried: int = 0
    calls_per_example: float = 0.0
    outputs: list[Any] = field(default_factory=list)  # output Variables of passing runs
    final_ops: set[int] = field(default_factory=set)  # ids of ops that produced the output
    by_op: dict[int, list[Demo]] = field(default_factory=dict)  # every op's passing calls


def passes(score: float | None, threshold: float | None) -> bool:
    if score is None:
        return False
    return score >= threshold if threshold is not None else score >= 1.0


async def bootstrap(
    ctx: StepContext,
    params: dict[str, Demos],
    *,
    want: int,
    threshold: float | None,
    teacher: Engine | None,
    max_rounds: int,
    order: Sequence[int] | None = None,
    chunk: int | None = None,
    min_tried: int = 0,
) -> BootstrapResult:
    """Run the program over training examples (in `order`) with traces until every Demos
    parameter has `want` demonstrations from passing runs, or the examples run out.

    Round 1 runs the incumbent; each later round re-runs the examples that failed, with
    the demonstrations found so far in place (different prompts, so different runs).
    """
    result = BootstrapResult(traced={n: [] for n in params}, sources={n: [] for n in params})
    if want <= 0 and min_tried <= 0:
        return result
    pending = list(order if order is not None else range(len(ctx.train)))
    size = chunk or max(4, 2 * want)
    calls = 0
    candidate = ctx.current
    by_param = {id(p): n for n, p in params.items()}
    for round_no in range(max_rounds):
        failed: list[int] = []
        while pending and (
            any(len(d) < want for d in result.traced.values()) or result.tried < min_tried
        ):
            batch, pending = pending[:size], pending[size:]
            evaluation = await ctx.evaluate(
                candidate, [ctx.train[i] for i in batch], trace=True, engine=teacher
            )
            result.tried += len(batch)
            traces = evaluation.traces or [[] for _ in batch]
            for pos, index in enumerate(batch):
                calls += len(traces[pos])
                if traces[pos] and traces[pos][-1].output == evaluation.outputs[pos]:
                    result.final_ops.add(id(traces[pos][-1].op))
                if not passes(evaluation.scores[pos], threshold):
                    failed.append(index)
                    continue
                result.used.add(index)
                if evaluation.variables[pos] is not None:
                    result.outputs.append(evaluation.variables[pos])
                for call in traces[pos]:
                    seen_op = result.by_op.setdefault(id(call.op), [])
                    if len(seen_op) < 3 * want:
                        seen_op.append(Demo(inputs=call.inputs, output=call.output))
                    name = by_param.get(id(call.demos)) if call.demos is not None else None
                    if name is None or len(result.traced[name]) >= want:
                        continue
                    demo = Demo(inputs=call.inputs, output=call.output)
                    if demo not in result.traced[name]:
                        result.traced[name].append(demo)
                        result.sources[name].append(index)
        if round_no + 1 < max_rounds and any(len(d) < want for d in result.traced.values()):
            pending = failed + pending
            found = {n: d for n, d in result.traced.items() if d}
            if found:
                candidate = ctx.current.with_values(
                    {n: demos_text(d) for n, d in found.items()}, origin="bootstrap round"
                )
    result.calls_per_example = calls / result.tried if result.tried else 0.0
    return result


def labeled_pool(
    ctx: StepContext,
    params: dict[str, Demos],
    *,
    label_field: str | None,
    found: BootstrapResult,
) -> dict[str, list[tuple[int, Demo]]]:
    """For each Demos parameter, (train index, demo) for every example that maps onto the
    op showing it. A label is the program's final answer, so only the op that produced
    the program's output in the traced runs (or the only LLM op) takes labeled demos;
    its input fields must be the example's."""
    if label_field is not None and not any(label_field in (_fields_of(e) or {}) for e in ctx.train):
        raise ArgumentError(
            f"label_field={label_field!r}: no training example has that field; the first "
            f"has {sorted(_fields_of(ctx.train[0]) or {}) if ctx.train else []}"
        )
    ops = ops_of(ctx.module)
    llm_ops = [op for op in ops if op.calls_llm]
    exclude = found.used
    pool: dict[str, list[tuple[int, Demo]]] = {}
    for name, param in params.items():
        shown_by = [
            op
            for op in ops
            if getattr(op, "demos", None) is param
            and (id(op) in found.final_ops or len(llm_ops) == 1)
        ]
        pool[name] = []
        if not shown_by:
            continue
        for i, example in enumerate(ctx.train):
            if i in exclude:
                continue
            demo = labeled_demo(example, shown_by[0], label_field)
            if demo is not None:
                pool[name].append((i, demo))
    return pool


def fill(
    traced: list[Demo],
    labeled: list[tuple[int, Demo]],
    *,
    total: int,
    limit: int | None,
    rng: Any,
) -> list[Demo]:
    """Traced demos first, then a seeded sample of labeled ones up to `total` (and the
    parameter's max_items)."""
    cap = total if limit is None else min(total, limit)
    out = list(traced[:cap])
    room = cap - len(out)
    others = [d for _, d in labeled if d not in out]
    if room > 0 and others:
        out.extend(rng.sample(others, min(room, len(others))))
    return out


def _check_common(
    max_bootstrapped: int,
    max_labeled: int,
    metric_threshold: float | None,
    teacher: Engine | None,
    max_rounds: int,
) -> Engine | None:
    check_int("max_bootstrapped", max_bootstrapped, minimum=0)
    check_int("max_labeled", max_labeled, minimum=0)
    check_int("max_rounds", max_rounds, minimum=1)
    if metric_threshold is not None and (
        isinstance(metric_threshold, bool)
        or not isinstance(metric_threshold, (int, float))
        or not math.isfinite(metric_threshold)
    ):
        raise ArgumentError(
            f"metric_threshold must be a finite number or None, got {metric_threshold!r}"
        )
    return check_engine(teacher, "teacher")


# --- optimizers ------------------------------------------------------------------------


class BootstrapFewShot(Optimizer):
    """`BootstrapFewShot(max_bootstrapped=4, max_labeled=16, metric_threshold=None,
    teacher=None, max_rounds=1)`: one candidate whose Demos hold demonstrations from
    passing runs, then labeled examples up to `max_labeled` demos in all.

    metric_threshold: a run passes when its score is >= this (None: a perfect 1.0).
    teacher: an engine that runs the program while bootstrapping (a stronger model).
    label_field: the example field holding the answer (default: answer, label, output,
    target or y, whichever the examples have).
    """

    name: ClassVar[str] = "bootstrap_few_shot"

    def __init__(
        self,
        max_bootstrapped: int = 4,
        max_labeled: int = 16,
        metric_threshold: float | None = None,
        teacher: Engine | str | None = None,
        max_rounds: int = 1,
        *,
        label_field: str | None = None,
    ) -> None:
        teacher = _check_common(
            max_bootstrapped, max_labeled, metric_threshold, teacher, max_rounds
        )
        self.max_bootstrapped, self.max_labeled = max_bootstrapped, max_labeled
        self.metric_threshold, self.teacher, self.max_rounds = (
            metric_threshold,
            teacher,
            max_rounds,
        )
        self.label_field = label_field
        self._done = False

    async def propose(self, ctx: StepContext) -> list[Candidate]:
        if self._done:
            return []
        params = demo_parameters(ctx)
        order = list(range(len(ctx.train)))
        ctx.rng.shuffle(order)
        found = await bootstrap(
            ctx,
            params,
            want=self.max_bootstrapped,
            threshold=self.metric_threshold,
            teacher=self.teacher,
            max_rounds=self.max_rounds,
            order=order,
        )
        labeled = labeled_pool(ctx, params, label_field=self.label_field, found=found)
        values: dict[str, str] = {}
        described = []
        for name, param in params.items():
            total = max(self.max_labeled, len(found.traced[name]))
            items = fill(
                found.traced[name], labeled[name], total=total, limit=param.max_items, rng=ctx.rng
            )
            values[name] = demos_text(items)
            described.append(
                f"{name}: {min(len(found.traced[name]), len(items))} traced + "
                f"{max(0, len(items) - len(found.traced[name]))} labeled"
            )
        ctx.note(
            f"bootstrap: {len(found.used)} of {found.tried} traced runs passed; "
            + "; ".join(described)
        )
        self._done = True
        return [
            ctx.current.with_values(
                values, origin="bootstrap few-shot", details={"traced_from": found.sources}
            )
        ]

    def finished(self) -> str | None:
        return "demonstrations bootstrapped" if self._done else None

    def state_dict(self) -> dict[str, Any]:
        return {"done": self._done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._done = bool(state.get("done", False))

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "max_bootstrapped": self.max_bootstrapped,
            "max_labeled": self.max_labeled,
            "metric_threshold": self.metric_threshold,
            "teacher": getattr(self.teacher, "model_name", None) if self.teacher else None,
            "max_rounds": self.max_rounds,
        }


async def demo_sets(
    ctx: StepContext,
    params: dict[str, Demos],
    *,
    count: int,
    max_bootstrapped: int,
    max_labeled: int,
    threshold: float | None,
    teacher: Engine | None,
    max_rounds: int,
    label_field: str | None,
    pool_factor: int = 3,
    min_tried: int = 0,
) -> tuple[dict[str, list[str]], BootstrapResult]:
    """`count` distinct demo sets per Demos parameter, as canonical values: the current
    demos, labeled only, the bootstrapped ones in order, then seeded shuffled subsets of
    a bootstrapped pool (`pool_factor` x max_bootstrapped) with labeled fill."""
    order = list(range(len(ctx.train)))
    ctx.rng.shuffle(order)
    found = await bootstrap(
        ctx,
        params,
        want=max_bootstrapped * pool_factor,
        threshold=threshold,
        teacher=teacher,
        max_rounds=max_rounds,
        order=order,
        min_tried=min_tried,
    )
    labeled = labeled_pool(ctx, params, label_field=label_field, found=found)
    sets: dict[str, list[str]] = {}
    for name, param in params.items():
        pool = found.traced[name]
        options: list[str] = [param.value]

        def add(items: list[Demo], options: list[str] = options) -> None:
            text = demos_text(items)
            if text not in options:
                options.append(text)

        if labeled[name] and max_labeled:
            add(fill([], labeled[name], total=max_labeled, limit=param.max_items, rng=ctx.rng))
        if pool:
            add(
                fill(
                    pool[:max_bootstrapped],
                    labeled[name],
                    total=max(max_labeled, min(len(pool), max_bootstrapped)),
                    limit=param.max_items,
                    rng=ctx.rng,
                )
            )
        attempts = 0
        while len(options) < count and attempts < count * 10 and (pool or labeled[name]):
            attempts += 1
            shuffled = list(pool)
            ctx.rng.shuffle(shuffled)
            k = ctx.rng.randint(1, max(1, min(max_bootstrapped, len(shuffled)))) if pool else 0
            add(
                fill(
                    shuffled[:k],
                    labeled[name],
                    total=max(max_labeled, k),
                    limit=param.max_items,
                    rng=ctx.rng,
                )
            )
        sets[name] = options[:count]
    return sets, found


class RandomSearchDemos(Optimizer):
    """`RandomSearchDemos(num_candidates=16, max_bootstrapped=4, max_labeled=16, ...)`:
    several demo sets (labeled only, bootstrapped in order, seeded shuffled subsets of
    a bootstrapped pool) proposed as candidates; the loop evaluates and gates them.

    per_step: candidates proposed per step (default: all in the first step, evaluated
    concurrently).
    """

    name: ClassVar[str] = "random_search_demos"

    def __init__(
        self,
        num_candidates: int = 16,
        max_bootstrapped: int = 4,
        max_labeled: int = 16,
        metric_threshold: float | None = None,
        teacher: Engine | str | None = None,
        max_rounds: int = 1,
        *,
        label_field: str | None = None,
        per_step: int | None = None,
    ) -> None:
        teacher = _check_common(
            max_bootstrapped, max_labeled, metric_threshold, teacher, max_rounds
        )
        check_int("num_candidates", num_candidates, minimum=1)
        check_optional_int("per_step", per_step, minimum=1, none_means="all in the first step")
        self.num_candidates = num_candidates
        self.max_bootstrapped, self.max_labeled = max_bootstrapped, max_labeled
        self.metric_threshold, self.teacher, self.max_rounds = (
            metric_threshold,
            teacher,
            max_rounds,
        )
        self.label_field, self.per_step = label_field, per_step
        self._pending: list[dict[str, str]] | None = None

    async def propose(self, ctx: StepContext) -> list[Candidate]:
        if self._pending is None:
            params = demo_parameters(ctx)
            sets, found = await demo_sets(
                ctx,
                params,
                count=self.num_candidates + 1,  # the first option is the current demos
                max_bootstrapped=self.max_bootstrapped,
                max_labeled=self.max_labeled,
                threshold=self.metric_threshold,
                teacher=self.teacher,
                max_rounds=self.max_rounds,
                label_field=self.label_field,
            )
            width = max(len(v) for v in sets.values())
            self._pending = []
            for i in range(1, width):
                values = {n: v[i] for n, v in sets.items() if i < len(v)}
                if values:
                    self._pending.append(values)
            self._pending = self._pending[: self.num_candidates]
            ctx.note(
                f"random search: {len(found.used)} of {found.tried} traced runs passed; "
                f"{len(self._pending)} demo sets to try"
            )
        take = self.per_step or len(self._pending)
        now, self._pending = self._pending[:take], self._pending[take:]
        return [
            ctx.current.with_values(values, origin=f"random demo set {i + 1}")
            for i, values in enumerate(now)
        ]

    def finished(self) -> str | None:
        if self._pending is not None and not self._pending:
            return "every demo set was proposed"
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"pending": self._pending}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pending = state.get("pending")
        self._pending = [dict(v) for v in pending] if pending is not None else None

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "num_candidates": self.num_candidates,
            "max_bootstrapped": self.max_bootstrapped,
            "max_labeled": self.max_labeled,
            "metric_threshold": self.metric_threshold,
            "teacher": getattr(self.teacher, "model_name", None) if self.teacher else None,
            "max_rounds": self.max_rounds,
            "per_step": self.per_step,
        }
