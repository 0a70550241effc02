"""One gradient pass on a minibatch: forward, metric, loss, backward, reduction.

What `ctx.gradients()` runs for gradient optimizers. An exception on one
example is recorded, not fatal (up to the run's max_errors); the step's
computation graph is written to the run directory with its critiques.
Backward is per-op (the default) or fused (`Trainer(backward="fused")`: one
critic call per example, see textgraph/fused.py); a fused reply that could
not be parsed falls back to per-op for that example, noted in the step record.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from textgraph._io import atomic_write_json
from textgraph.errors import ArgumentError
from textgraph.eval.evaluator import is_fatal
from textgraph.eval.score import as_score
from textgraph.fused import fused_backward
from textgraph.graph import ancestry, graph_record
from textgraph.ops.text import sum as sum_losses
from textgraph.runs import GradientRecord
from textgraph.train.reduce import reduce_gradients
from textgraph.variable import Gradient, Variable

if TYPE_CHECKING:
    from textgraph.train.trainer import Trainer


@dataclass
class GradientPass:
    """What the pass produced, for the step's record."""

    batch: list[int]
    train_scores: list[float | None] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    gradients: dict[str, list[GradientRecord]] = field(default_factory=dict)
    reduced: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def received(self) -> bool:
        return any(self.gradients.values())


async def gradient_pass(trainer: Trainer, step: int, batch: Sequence[int]) -> GradientPass:
    named = trainer.named
    record = GradientPass(batch=list(batch))
    examples = [trainer.train[i] for i in batch]
    trainer._phase = "forward"
    outputs = await asyncio.gather(
        *(run_program(trainer.module, e) for e in examples), return_exceptions=True
    )
    for i, out in zip(batch, outputs, strict=True):
        if isinstance(out, Exception) and is_fatal(out):
            raise out
        if isinstance(out, BaseException):
            record.errors.append(f"example {i}: forward failed: {type(out).__name__}: {out}")
            record.train_scores.append(None)
            continue
        record.train_scores.append(_metric(trainer.metric, out, trainer.train[i], i, record.errors))
    chosen = _choose(trainer, outputs, record.train_scores)

    trainer._phase = "loss"
    loss_fn = trainer.loss_fn
    assert loss_fn is not None
    losses = await asyncio.gather(
        *(_loss(loss_fn, outputs[k], examples[k]) for k in chosen), return_exceptions=True
    )
    usable: list[Variable] = []
    for k, loss in zip(chosen, losses, strict=True):
        if isinstance(loss, Exception) and is_fatal(loss):
            raise loss
        if isinstance(loss, BaseException):
            record.errors.append(f"example {batch[k]}: loss failed: {type(loss).__name__}: {loss}")
        elif isinstance(loss, Variable) and loss.requires_grad:
            usable.append(loss)
    trainer._count_errors(record.errors)

    trainer._phase = "backward"
    total = sum_losses(usable) if usable else None
    example_of = _example_map(named, list(batch), outputs)
    for k, loss in zip(chosen, losses, strict=True):
        if isinstance(loss, Variable):
            example_of[id(loss)] = batch[k]
    if total is not None and trainer.backward == "fused":
        for fallback in await fused_backward(
            total, engine=trainer.backward_engine, limit=trainer.max_gradient_chars
        ):
            where = example_of.get(id(fallback.loss), "?")
            record.notes.append(
                f"example {where}: fused backward fell back to per-op backward ({fallback.error})"
            )
    elif total is not None:
        await total.abackward(engine=trainer.backward_engine)
    if trainer._run is not None and total is not None:
        atomic_write_json(trainer._run.graph_path(step), graph_record(total, example_of))
    record.gradients = {
        name: [
            GradientRecord(
                text=g.text,
                source_role=g.source.role_description,
                operation=g.operation,
                example=example_of.get(id(g.source)),
            )
            for g in p.gradients
        ]
        for name, p in named.items()
    }
    trainer._phase = "reduce"
    record.reduced = await reduce_gradients(
        named, example_of, trainer._reduce_engine(), trainer.max_gradient_chars
    )
    return record


BACKWARD_MODES = ("per_op", "fused")


def check_backward_mode(mode: object) -> str:
    """Trainer(backward=): "per_op" (one critic call per op) or "fused" (one per example)."""
    if mode not in BACKWARD_MODES:
        raise ArgumentError(
            f"backward must be one of {', '.join(repr(m) for m in BACKWARD_MODES)}, got "
            f'{mode!r}: "per_op" asks one critic call per op, "fused" one per example'
        )
    return str(mode)


def gradients_of(named: dict[str, Variable]) -> dict[str, list[Gradient]]:
    return {name: list(p.gradients) for name, p in named.items()}


async def run_program(module: Any, example: Any) -> Variable:
    aforward = getattr(module, "aforward", None)
    if aforward is not None and inspect.iscoroutinefunction(aforward):
        out = await aforward(example)
    else:
        out = await asyncio.to_thread(module, example)
    if not isinstance(out, Variable):
        raise ArgumentError(
            f"the module returned {type(out).__name__}; its forward must return a tg.Variable"
        )
    return out


async def _loss(loss_fn: Callable[..., Any], output: Variable, example: Any) -> Any:
    if inspect.iscoroutinefunction(loss_fn):
        result = await loss_fn(output, example)
    else:
        result = await asyncio.to_thread(loss_fn, output, example)
    if inspect.isawaitable(result):
        result = await result
    if not isinstance(result, Variable):
        raise ArgumentError(
            f"loss_fn returned {type(result).__name__}; it must return a tg.Variable "
            "(for example tg.TextLoss(...)(output) or tg.MetricLoss(...)(output, target))"
        )
    return result


def _metric(
    metric: Callable[[str, Any], Any], output: Variable, example: Any, index: int, errors: list[str]
) -> float | None:
    try:
        value = metric(output.value, example)
    except Exception as exc:  # a metric bug on one example is recorded, not fatal
        errors.append(f"example {index}: metric failed: {type(exc).__name__}: {exc}")
        return None
    return as_score(value, f"the metric, for example {index},")


def _choose(trainer: Trainer, outputs: list[Any], scores: list[float | None]) -> list[int]:
    ok = [k for k, out in enumerate(outputs) if not isinstance(out, BaseException)]
    if not trainer.failures_only:
        return ok
    failing = [k for k in ok if scores[k] is not None and scores[k] < 1.0]
    passing = [k for k in ok if scores[k] is not None and scores[k] >= 1.0]
    return sorted(failing + passing[: trainer.keep_passing])


def _example_map(
    named: dict[str, Variable], batch: list[int], outputs: list[Any]
) -> dict[int, int]:
    """id(variable) -> training example index, for every non-parameter variable."""
    params = {id(p) for p in named.values()}
    owner: dict[int, int] = {}
    for i, out in zip(batch, outputs, strict=True):
        if isinstance(out, Variable):
            for v in ancestry(out):
                if id(v) not in params:
                    owner.setdefault(id(v), i)
    return owner
