"""Trainer: minibatches, validation-gated steps with rollback, budgets, resume.

Each step: sample a seeded minibatch; forward every example concurrently
(an exception on one example is recorded, not fatal); compute losses and
run one backward; merge each parameter's critiques when they exceed
`max_gradient_chars`; let the optimizer propose; reject candidates that are
too long or copy training examples; score on validation and keep the
candidate only if the gate allows, else revert. Every step is written to
the run directory and checkpointed, so `fit(resume=True)` continues after a
crash and loses at most the step in flight.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from textgraph._io import atomic_write_json
from textgraph._sync import run_sync
from textgraph.engines.base import ChatRequest, ChatResponse, Engine
from textgraph.engines.context import check_engine, resolve_engine
from textgraph.engines.observe import CallObserver, forward_purpose, observe_calls
from textgraph.engines.usage import Budget, UsageStats
from textgraph.errors import ArgumentError, BudgetExceeded
from textgraph.graph import ancestry, graph_record
from textgraph.loss import as_score
from textgraph.module import Module
from textgraph.ops.text import sum as sum_losses
from textgraph.optim.tgd import TGD
from textgraph.prompts import fence, load, render_file
from textgraph.runs import (
    CandidateRecord,
    Checkpoint,
    GradientRecord,
    RunDir,
    RunError,
    StepRecord,
    Summary,
    TraceRecord,
    TrainerState,
    append_jsonl,
    rewrite_jsonl,
)
from textgraph.variable import Gradient, Variable

Gate = Literal["better", "not_worse", "always"]
Metric = Callable[[str, Any], float]


@dataclass
class FitResult:
    best_state: dict[str, Any]
    history: list[StepRecord]
    test_score: float | None
    best_val_score: float | None
    initial_val_score: float | None
    stopped: str
    summary: Summary
    initial_test_score: float | None = None


class _RunObserver(CallObserver):
    """Traces every call of the run, counts its usage, and applies the run's budget."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.usage = UsageStats()
        self.t0 = time.perf_counter()

    def before(self, request: ChatRequest) -> object:
        budget = self.trainer.budget
        return budget.reserve(request, request.model) if budget else None

    def after(
        self,
        request: ChatRequest,
        response: ChatResponse,
        state: object,
        started: float,
        ended: float,
    ) -> None:
        model = response.model or request.model
        cost = self.usage.record(request, response, model)
        budget = self.trainer.budget
        if budget is not None and state is not None:
            budget.settle(state, None if response.cached else response, cost)  # type: ignore[arg-type]
        self._trace(request, response, None, started, ended, cost)

    def failed(
        self,
        request: ChatRequest,
        error: BaseException,
        state: object,
        started: float,
        ended: float,
    ) -> None:
        if self.trainer.budget is not None and state is not None:
            self.trainer.budget.settle(state, None)  # type: ignore[arg-type]
        if not isinstance(error, BudgetExceeded):
            self._trace(request, None, error, started, ended)

    def _trace(
        self,
        request: ChatRequest,
        response: ChatResponse | None,
        error: BaseException | None,
        started: float,
        ended: float,
        cost: float = 0.0,
    ) -> None:
        run = self.trainer._run
        if run is None:
            return
        record = TraceRecord(
            step=self.trainer._step_no,
            phase=self.trainer._phase,
            purpose=request.purpose,
            variable_ids=request.variable_ids,
            operation=request.metadata.get("operation"),
            model=(response.model if response else None) or request.model,
            messages=[{"role": m.role, "content": m.content} for m in request.messages],
            response=response.text if response else None,
            error=f"{type(error).__name__}: {error}" if error else None,
            prompt_tokens=response.usage.prompt_tokens if response else 0,
            completion_tokens=response.usage.completion_tokens if response else 0,
            cached=response.cached if response else False,
            cost_usd=round(cost, 8),
            latency_s=round(ended - started, 6),
            started_s=round(started - self.t0, 6),
        )
        append_jsonl(run.trace, record)


class Trainer:
    """Optimize a Module's parameters on a dataset; see docs/training.md."""

    def __init__(
        self,
        module: Module,
        loss_fn: Callable[[Variable, Any], Any],
        *,
        optimizer: TGD,
        metric: Metric,
        train: Sequence[Any],
        val: Sequence[Any] | None = None,
        test: Sequence[Any] | None = None,
        batch_size: int = 4,
        max_steps: int = 12,
        seed: int = 0,
        run_dir: str | os.PathLike[str] | None = None,
        budget: Budget | None = None,
        gate: Gate = "not_worse",
        val_subset: int | None = None,
        patience: int | None = None,
        max_errors: int = 20,
        failures_only: bool = False,
        keep_passing: int = 1,
        max_gradient_chars: int = 6000,
        reduce_engine: Engine | None = None,
        backward_engine: Engine | None = None,
        max_chars: int | dict[str, int] | None = None,
        reject_copies: bool = False,
        progress: bool | None = None,
        test_before: bool = False,
    ) -> None:
        if not isinstance(module, Module):
            raise ArgumentError(f"Trainer needs a tg.Module, got {type(module).__name__}")
        self.named = dict(module.named_parameters())
        if not self.named:
            raise ArgumentError("the module has no parameters (Variables with requires_grad=True)")
        if not isinstance(optimizer, TGD):
            raise ArgumentError(f"optimizer must be a tg.TGD, got {type(optimizer).__name__}")
        if not callable(metric) or not callable(loss_fn):
            raise ArgumentError("metric and loss_fn must be callables")
        self.train = _split(train, "train", required=True)
        self.val = _split(val, "val", required=gate != "always")
        self.test = _split(test, "test", required=False)
        if batch_size < 1 or max_steps < 0:
            raise ArgumentError("batch_size must be >= 1 and max_steps >= 0")
        if gate not in ("better", "not_worse", "always"):
            raise ArgumentError(f"gate must be 'better', 'not_worse' or 'always', got {gate!r}")
        if val_subset is not None and not (0 < val_subset < len(self.val)):
            raise ArgumentError(f"val_subset must be between 1 and {len(self.val) - 1}")
        self.module, self.loss_fn, self.optimizer, self.metric = module, loss_fn, optimizer, metric
        self.batch_size, self.max_steps, self.seed = batch_size, max_steps, seed
        self.run_dir, self.budget, self.gate = run_dir, budget, gate
        self.val_subset, self.patience, self.max_errors = val_subset, patience, max_errors
        self.failures_only, self.keep_passing = failures_only, keep_passing
        self.max_gradient_chars, self.reduce_engine = max_gradient_chars, reduce_engine
        check_engine(backward_engine, "Trainer(backward_engine)")
        check_engine(reduce_engine, "Trainer(reduce_engine)")
        self.backward_engine = backward_engine
        self.max_chars, self.reject_copies = max_chars, reject_copies
        self.progress = progress
        if test_before and not self.test:
            raise ArgumentError("test_before=True needs a test split (test=[...])")
        self.test_before = test_before
        self._initial_test: float | None = None
        self._run: RunDir | None = None
        self._step_no = 0
        self._phase = "setup"
        self._errors = 0
        self._val_scores: list[float] = []

    # --- public ------------------------------------------------------------

    def fit(self, *, resume: bool = False, force: bool = False) -> FitResult:
        return run_sync(self.afit(resume=resume, force=force))

    async def afit(self, *, resume: bool = False, force: bool = False) -> FitResult:
        started = time.perf_counter()
        observer = _RunObserver(self)
        checkpoint = self._open_run(resume=resume, force=force)
        history: list[StepRecord] = []
        elapsed_before = 0.0
        with observe_calls(observer), _Progress(self) as bar:
            initial_values = self._values()
            if checkpoint is None:
                self._step_no, self._phase = 0, "initial validation"
                score, self._initial_test = await asyncio.gather(
                    self._score_full(self.val) if self.val else _none(),
                    self._score_test() if self.test_before else _none(),
                )
                state = TrainerState(step=0, best_score=score, current_score=score)
                best = self._values()
                self._checkpoint(state, best, observer, started, 0.0)
                initial = score
            else:
                state, best = checkpoint.trainer, checkpoint.best_parameters
                self.module.load_state_dict(checkpoint.parameters)
                self.optimizer.load_state_dict(checkpoint.optimizer)
                self._errors = state.errors
                elapsed_before = state.seconds
                history = self._run.read_steps() if self._run else []
                config = self._run.read_config() if self._run else {}
                initial_values = config.get("initial_parameters", initial_values)
                initial = config.get("initial_val_score")
                self._initial_test = config.get("initial_test_score")
            stopped = "max_steps"
            while state.step < self.max_steps:
                if self.patience is not None and state.rejections_in_a_row >= self.patience:
                    stopped = f"patience: {state.rejections_in_a_row} rejected steps in a row"
                    break
                step = state.step + 1
                self._step_no = step
                bar.update(step, observer, state)
                before_step = self._values()
                try:
                    record, state, best = await self._step(step, state, best, observer)
                except BudgetExceeded as exc:
                    # The step in flight is dropped whole: parameters as after the last step.
                    self.module.load_state_dict(self._state(before_step))
                    self.optimizer.zero_grad()
                    stopped = f"budget: {exc}"
                    break
                history.append(record)
                if self._run:
                    append_jsonl(self._run.steps, record)
                self._checkpoint(state, best, observer, started, elapsed_before)
                bar.update(step, observer, state)
            self.module.load_state_dict(self._state(best))
            self._phase, self._step_no = "test", state.step
            test_score = None
            if self.test and self._initial_test is not None and best == initial_values:
                test_score = self._initial_test  # same parameters as before training: same score
            elif self.test:
                try:
                    test_score = await self._score_test()
                except BudgetExceeded as exc:
                    stopped += f"; test not scored ({exc})"
        summary = self._summary(
            state,
            stopped,
            initial,
            test_score,
            history,
            observer,
            elapsed_before + time.perf_counter() - started,
        )
        if self._run:
            atomic_write_json(self._run.summary, summary.model_dump(mode="json"))
        return FitResult(
            best_state=self._state(best),
            history=history,
            test_score=test_score,
            best_val_score=state.best_score,
            initial_val_score=initial,
            stopped=stopped,
            summary=summary,
            initial_test_score=self._initial_test,
        )

    # --- one step ------------------------------------------------------------

    async def _step(
        self, step: int, state: TrainerState, best: dict[str, str], observer: _RunObserver
    ) -> tuple[StepRecord, TrainerState, dict[str, str]]:
        t0 = time.perf_counter()
        calls0, tokens0, cost0 = (
            observer.usage.total.calls,
            observer.usage.total.total_tokens,
            observer.usage.total.cost_usd,
        )
        batch = self._batch(step)
        examples = [self.train[i] for i in batch]
        errors: list[str] = []

        self._phase = "forward"
        outputs = await asyncio.gather(
            *(self._forward(e) for e in examples), return_exceptions=True
        )
        scores: list[float | None] = []
        for i, out in zip(batch, outputs, strict=True):
            if isinstance(out, BudgetExceeded):
                raise out
            if isinstance(out, BaseException):
                errors.append(f"example {i}: forward failed: {type(out).__name__}: {out}")
                scores.append(None)
                continue
            scores.append(self._metric(out, self.train[i], i, errors))
        chosen = self._choose(batch, outputs, scores)

        self._phase = "loss"
        losses = await asyncio.gather(
            *(self._loss(outputs[k], examples[k]) for k in chosen), return_exceptions=True
        )
        usable: list[Variable] = []
        for k, loss in zip(chosen, losses, strict=True):
            if isinstance(loss, BudgetExceeded):
                raise loss
            if isinstance(loss, BaseException):
                errors.append(f"example {batch[k]}: loss failed: {type(loss).__name__}: {loss}")
            elif isinstance(loss, Variable) and loss.requires_grad:
                usable.append(loss)
        self._count_errors(errors)

        self._phase = "backward"
        total = sum_losses(usable) if usable else None
        if total is not None:
            await total.abackward(engine=self.backward_engine)
        example_of = self._example_map(batch, outputs)
        for k, loss in zip(chosen, losses, strict=True):
            if isinstance(loss, Variable):
                example_of[id(loss)] = batch[k]
        if self._run is not None and total is not None:
            atomic_write_json(self._run.graph_path(step), graph_record(total, example_of))
        gradients = {
            name: [
                GradientRecord(
                    text=g.text,
                    source_role=g.source.role_description,
                    operation=g.operation,
                    example=example_of.get(id(g.source)),
                )
                for g in p.gradients
            ]
            for name, p in self.named.items()
        }
        self._phase = "reduce"
        reduced = await self._reduce_all(example_of)

        self._phase = "optimizer"
        before = self._values()
        candidates = await self._propose(before)
        self.optimizer.zero_grad()
        changed = self._values() != before

        self._phase = "validation"
        val_score = state.current_score
        if not changed:
            received = any(gradients.values())
            decision, reason = "unchanged", (
                "no usable candidate: parameters kept"
                if received
                else "no critiques (every loss was perfect or failed): parameters kept"
            )
            state = state.model_copy(update={"rejections_in_a_row": state.rejections_in_a_row + 1})
        else:
            decision, reason, val_score = await self._gate(state)
            if decision == "accepted":
                current = self._values()
                new_best = state.best_score is None or (val_score or 0) >= state.best_score
                if self.gate == "always" and not new_best:
                    best_values = best
                else:
                    best_values = current
                state = state.model_copy(
                    update={
                        "current_score": val_score,
                        "best_score": val_score
                        if new_best or state.best_score is None
                        else state.best_score,
                        "rejections_in_a_row": 0,
                    }
                )
                best = best_values
            else:
                self.module.load_state_dict(self._state(before))
                state = state.model_copy(
                    update={"rejections_in_a_row": state.rejections_in_a_row + 1}
                )
        usage = observer.usage.total
        record = StepRecord(
            step=step,
            batch=batch,
            errors=errors,
            train_scores=scores,
            gradients=gradients,
            reduced=reduced,
            candidates=candidates,
            val_score=val_score,
            best_score=state.best_score,
            decision=decision,
            reason=reason,
            calls=usage.calls - calls0,
            tokens=usage.total_tokens - tokens0,
            cost_usd=round(usage.cost_usd - cost0, 6),
            seconds=round(time.perf_counter() - t0, 3),
        )
        state = state.model_copy(update={"step": step, "errors": self._errors})
        return record, state, best

    # --- pieces --------------------------------------------------------------

    def _batch(self, step: int) -> list[int]:
        n = len(self.train)
        per_epoch = math.ceil(n / self.batch_size)
        epoch, k = divmod(step - 1, per_epoch)
        order = list(range(n))
        random.Random(f"{self.seed}:{epoch}").shuffle(order)
        return order[k * self.batch_size : (k + 1) * self.batch_size]

    async def _forward(self, example: Any) -> Variable:
        aforward = getattr(self.module, "aforward", None)
        if aforward is not None and inspect.iscoroutinefunction(aforward):
            out = await aforward(example)
        else:
            out = await asyncio.to_thread(self.module, example)
        if not isinstance(out, Variable):
            raise ArgumentError(
                f"the module returned {type(out).__name__}; its forward must return a tg.Variable"
            )
        return out

    async def _loss(self, output: Variable, example: Any) -> Any:
        if inspect.iscoroutinefunction(self.loss_fn):
            result = await self.loss_fn(output, example)
        else:
            result = await asyncio.to_thread(self.loss_fn, output, example)
        if inspect.isawaitable(result):
            result = await result
        if not isinstance(result, Variable):
            raise ArgumentError(
                f"loss_fn returned {type(result).__name__}; it must return a tg.Variable "
                "(for example tg.TextLoss(...)(output) or tg.MetricLoss(...)(output, target))"
            )
        return result

    def _metric(
        self, output: Variable, example: Any, index: int, errors: list[str]
    ) -> float | None:
        try:
            value = self.metric(output.value, example)
        except Exception as exc:  # a metric bug on one example is recorded, not fatal
            errors.append(f"example {index}: metric failed: {type(exc).__name__}: {exc}")
            return None
        return as_score(value, f"the metric, for example {index},")

    def _choose(
        self, batch: list[int], outputs: list[Any], scores: list[float | None]
    ) -> list[int]:
        ok = [k for k, out in enumerate(outputs) if not isinstance(out, BaseException)]
        if not self.failures_only:
            return ok
        failing = [k for k in ok if scores[k] is not None and scores[k] < 1.0]
        passing = [k for k in ok if scores[k] is not None and scores[k] >= 1.0]
        return sorted(failing + passing[: self.keep_passing])

    def _count_errors(self, errors: list[str]) -> None:
        self._errors += len(errors)
        if self._errors > self.max_errors:
            raise RunError(
                f"{self._errors} examples failed so far (max_errors={self.max_errors}); the last: "
                f"{errors[-1] if errors else '?'}. Fix the pipeline or raise max_errors."
            )

    def _example_map(self, batch: list[int], outputs: list[Any]) -> dict[int, int]:
        """id(variable) -> training example index, for every non-parameter variable."""
        params = {id(p) for p in self.named.values()}
        owner: dict[int, int] = {}
        for i, out in zip(batch, outputs, strict=True):
            if isinstance(out, Variable):
                for v in ancestry(out):
                    if id(v) not in params:
                        owner.setdefault(id(v), i)
        return owner

    async def _reduce_all(self, example_of: dict[int, int]) -> dict[str, str]:
        reduced = {}
        for name, p in self.named.items():
            size = sum(len(g.text) + len(g.context) for g in p.gradients)
            if size <= self.max_gradient_chars:
                continue
            items = [(str(example_of.get(id(g.source), "?")), g.text) for g in p.gradients]
            text = await self._reduce(p, items)
            merged = Variable(
                f"merged feedback from {len(p.gradients)} critiques",
                role_description="merged critiques of several examples",
            )
            p.gradients[:] = [Gradient(text=text, source=merged, operation="reduce")]
            reduced[name] = text
        return reduced

    async def _reduce(self, parameter: Variable, items: list[tuple[str, str]]) -> str:
        """Merge critiques in bounded chunks until the result fits max_gradient_chars."""
        engine = resolve_engine(
            self.reduce_engine,
            self.optimizer.engine,
            what="gradient reduction (pass reduce_engine=)",
        )
        limit = self.max_gradient_chars
        chunk_limit = 3 * limit
        while True:
            chunks: list[list[tuple[str, str]]] = [[]]
            size = 0
            for label, text in items:
                text = text[:chunk_limit]  # one oversized critique cannot blow up a prompt
                if chunks[-1] and size + len(text) > chunk_limit:
                    chunks.append([])
                    size = 0
                chunks[-1].append((label, text))
                size += len(text)
            merged = await asyncio.gather(
                *(self._reduce_chunk(engine, parameter, c, limit) for c in chunks)
            )
            if len(merged) == 1:
                return merged[0]
            items = [
                (",".join(sorted({lbl for lbl, _ in c})), m)
                for c, m in zip(chunks, merged, strict=True)
            ]

    async def _reduce_chunk(
        self, engine: Engine, parameter: Variable, chunk: list[tuple[str, str]], limit: int
    ) -> str:
        critiques = "\n".join(
            render_file("reduce_item", examples=label, text=fence(text)) for label, text in chunk
        )
        user = render_file(
            "reduce_user",
            role=parameter.role_description,
            count=len(chunk),
            critiques=critiques,
            limit=limit,
        )
        request = ChatRequest.from_prompts(
            load("reduce_system"),
            user,
            purpose="reduce",
            variable_ids=[parameter.id],
            max_tokens=max(64, limit // 3),
        )
        text = (await engine.generate(request)).text.strip()
        return text if len(text) <= limit else text[: limit - 1] + "…"

    async def _propose(self, before: dict[str, str]) -> list[CandidateRecord]:
        names = {id(p): n for n, p in self.named.items()}
        records = []
        for update in await self.optimizer.astep():
            name = names.get(id(update.parameter), update.parameter.id)
            status = "proposed" if update.changed else "unchanged"
            if update.warning:
                status = "optimizer failed"
            limit = self.max_chars.get(name) if isinstance(self.max_chars, dict) else self.max_chars
            if update.changed and limit is not None and len(update.new_value) > limit:
                status = f"rejected: {len(update.new_value)} chars > max_chars {limit}"
            elif (
                update.changed and self.reject_copies and (copied := self._copied(update.new_value))
            ):
                status = f"rejected: copies training example {copied}"
            if status.startswith("rejected"):
                update.parameter.value = before[name]
            records.append(
                CandidateRecord(
                    parameter=name,
                    old_value=update.old_value,
                    new_value=update.new_value,
                    status=status,
                    warning=update.warning,
                )
            )
        return records

    def _copied(self, candidate: str) -> int | None:
        for i, example in enumerate(self.train):
            for text in _strings(example):
                if len(text) >= 20 and text in candidate:
                    return i
        return None

    async def _gate(self, state: TrainerState) -> tuple[str, str, float | None]:
        old = state.current_score
        if self.gate == "always":
            score = await self._score_full(self.val) if self.val else None
            return "accepted", f"accepted (gate always): val {_fmt(old)} -> {_fmt(score)}", score
        if self.val_subset is not None:
            subset = self.val[: self.val_subset]
            cand = await self._score(subset)
            base = (
                sum(self._val_scores[: self.val_subset]) / self.val_subset
                if len(self._val_scores) >= self.val_subset
                else None
            )
            cand_mean = sum(cand) / len(cand)
            if base is not None and cand_mean < base:
                return (
                    "rejected",
                    f"rejected on the first {self.val_subset} val examples: "
                    f"{base:.3f} -> {cand_mean:.3f}",
                    old,
                )
            rest = await self._score(self.val[self.val_subset :])
            per_example = cand + rest
        else:
            per_example = await self._score(self.val)
        score = sum(per_example) / len(per_example)
        best = state.best_score
        ok = best is None or (score > best if self.gate == "better" else score >= best)
        if ok:
            self._val_scores = per_example
            return "accepted", f"accepted: val {_fmt(best)} -> {score:.3f}", score
        return "rejected", f"rejected: val {_fmt(best)} -> {score:.3f}", old

    async def _score_test(self) -> float:
        with forward_purpose("validation"):
            return await self._score_full(self.test, remember=False)

    async def _score_full(self, examples: Sequence[Any], remember: bool = True) -> float:
        per_example = await self._score(examples)
        if remember:
            self._val_scores = per_example
        return sum(per_example) / len(per_example)

    async def _score(self, examples: Sequence[Any]) -> list[float]:
        errors: list[str] = []
        with forward_purpose("validation"):
            outputs = await asyncio.gather(
                *(self._forward(e) for e in examples), return_exceptions=True
            )
        scores = []
        for i, out in enumerate(outputs):
            if isinstance(out, BudgetExceeded):
                raise out
            if isinstance(out, BaseException):
                errors.append(f"validation example {i}: {type(out).__name__}: {out}")
                scores.append(0.0)
            else:
                scores.append(self._metric(out, examples[i], i, errors) or 0.0)
        self._count_errors(errors)
        return scores

    # --- state, files ----------------------------------------------------------

    def _values(self) -> dict[str, str]:
        return {name: p.value for name, p in self.named.items()}

    def _state(self, values: dict[str, str]) -> dict[str, Any]:
        state = self.module.state_dict()
        for name, value in values.items():
            state["parameters"][name]["value"] = value
        return state

    def _config(self) -> dict[str, Any]:
        return {
            "format": "textgraph.run",
            "version": 1,
            "module": type(self.module).__qualname__,
            "parameters": sorted(self.named),
            "initial_parameters": self._values(),
            "optimizer": {
                "constraints": self.optimizer.constraints,
                "momentum": self.optimizer.momentum,
            },
            "data": {
                split: {"size": len(data), "sha256": _fingerprint(data)}
                for split, data in (("train", self.train), ("val", self.val), ("test", self.test))
            },
            "batch_size": self.batch_size,
            "max_steps": self.max_steps,
            "seed": self.seed,
            "gate": self.gate,
            "val_subset": self.val_subset,
            "test_before": self.test_before,
            "patience": self.patience,
            "failures_only": self.failures_only,
            "max_gradient_chars": self.max_gradient_chars,
            "max_chars": self.max_chars,
            "reject_copies": self.reject_copies,
            "budget": (
                {
                    "max_calls": self.budget.max_calls,
                    "max_tokens": self.budget.max_tokens,
                    "max_cost_usd": self.budget.max_cost_usd,
                }
                if self.budget
                else None
            ),
        }

    def _open_run(self, *, resume: bool, force: bool) -> Checkpoint | None:
        if self.run_dir is None:
            if resume:
                raise ArgumentError("resume=True needs a run_dir to resume from")
            return None
        run = self._run = RunDir(self.run_dir)
        config = self._config()
        if not run.exists():
            run.create(config)
            return None
        if not resume:
            if not force:
                raise RunError(
                    f"{run.path} already holds a run; pass resume=True to continue it "
                    "(--resume) or force=True to start over and overwrite it (--force)"
                )
            run.create(config)
            return None
        saved = run.read_config()
        measured = ("initial_val_score", "initial_test_score")
        comparable = {k: v for k, v in saved.items() if k not in measured}
        if comparable != config and not force:
            differ = sorted(
                k for k in set(comparable) | set(config) if comparable.get(k) != config.get(k)
            )
            raise RunError(
                f"{run.path} was created with a different configuration ({', '.join(differ)} "
                "differ); refusing to resume it. Use another run_dir, or force=True (--force)."
            )
        checkpoint, skipped = run.latest_checkpoint()
        for note in skipped:
            print(f"textgraph: warning: {note}", file=sys.stderr)
        if checkpoint is None:
            run.create(config)
            return None
        done = checkpoint.trainer.step
        rewrite_jsonl(run.steps, [r for r in run.read_steps() if r.step <= done])
        rewrite_jsonl(run.trace, [r for r in run.read_trace() if r.step <= done])
        for path in run.checkpoints.glob("step-*.json"):
            if int(path.stem.split("-")[1]) > done:
                path.unlink()
        return checkpoint

    def _checkpoint(
        self,
        state: TrainerState,
        best: dict[str, str],
        observer: _RunObserver,
        started: float,
        elapsed_before: float,
    ) -> None:
        if self._run is None:
            return
        usage = observer.usage.total
        state = state.model_copy(
            update={
                "calls": usage.calls,
                "tokens": usage.total_tokens,
                "cost_usd": round(usage.cost_usd, 6),
                "seconds": round(elapsed_before + time.perf_counter() - started, 3),
            }
        )
        if state.step == 0:
            config = self._run.read_config()
            config["initial_val_score"] = state.current_score
            config["initial_test_score"] = self._initial_test
            atomic_write_json(self._run.config, config)
        self._run.write_checkpoint(
            Checkpoint(
                parameters=self.module.state_dict(),
                best_parameters=best,
                optimizer=self.optimizer.state_dict(),
                trainer=state,
            )
        )
        atomic_write_json(
            self._run.best, {"step": state.step, "val_score": state.best_score, "parameters": best}
        )

    def _summary(
        self,
        state: TrainerState,
        stopped: str,
        initial: float | None,
        test_score: float | None,
        history: list[StepRecord],
        observer: _RunObserver,
        seconds: float,
    ) -> Summary:
        usage = observer.usage
        if self._run is not None:  # the trace covers every session of a resumed run
            usage = UsageStats()
            for record in self._run.read_trace():
                usage.add_record(
                    record.purpose,
                    record.prompt_tokens,
                    record.completion_tokens,
                    record.cached,
                    record.cost_usd,
                )
        return Summary(
            steps=state.step,
            stopped=stopped,
            initial_val_score=initial,
            initial_test_score=self._initial_test,
            best_val_score=state.best_score,
            test_score=test_score,
            accepted_steps=sum(r.decision == "accepted" for r in history),
            calls=usage.total.calls,
            cached_calls=usage.total.cached_calls,
            prompt_tokens=usage.total.prompt_tokens,
            completion_tokens=usage.total.completion_tokens,
            cost_usd=round(usage.total.cost_usd, 6),
            seconds=round(seconds, 3),
            by_purpose=usage.as_dict()["by_purpose"],  # type: ignore[arg-type]
            final_parameters=self._values(),
        )


class _Progress:
    """A rich status line while running; silent when not a TTY or when CI is set."""

    def __init__(self, trainer: Trainer) -> None:
        enabled = trainer.progress
        if enabled is None:
            enabled = sys.stderr.isatty() and not os.environ.get("CI")
        self.trainer = trainer
        self.live: Any = None
        if enabled:
            from rich.console import Console
            from rich.status import Status

            self.live = Status("starting", console=Console(stderr=True))

    def __enter__(self) -> _Progress:
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()

    def update(self, step: int, observer: _RunObserver, state: TrainerState) -> None:
        if self.live is None:
            return
        usage = observer.usage.total
        self.live.update(
            f"step {step}/{self.trainer.max_steps} · {usage.calls} LLM calls · "
            f"{usage.total_tokens} tokens · ${usage.cost_usd:.4f} · val "
            f"{_fmt(state.current_score)} (best {_fmt(state.best_score)})"
        )


async def _none() -> None:
    return None


def _split(data: Sequence[Any] | None, name: str, *, required: bool) -> list[Any]:
    if data is None:
        if required:
            raise ArgumentError(f"the {name} split is missing; pass {name}=[...] examples")
        return []
    if isinstance(data, (str, bytes)) or not isinstance(data, Sequence):
        raise ArgumentError(f"{name} must be a list of examples, got {type(data).__name__}")
    if required and not data:
        raise ArgumentError(f"the {name} split is empty; it needs at least one example")
    return list(data)


def _strings(example: Any) -> list[str]:
    if isinstance(example, BaseModel):
        example = example.model_dump()
    if isinstance(example, dict):
        return [v for v in example.values() if isinstance(v, str)]
    return [example] if isinstance(example, str) else []


def _fingerprint(data: list[Any]) -> str:
    def plain(x: Any) -> Any:
        return x.model_dump(mode="json") if isinstance(x, BaseModel) else x

    blob = json.dumps([plain(x) for x in data], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _fmt(score: float | None) -> str:
    return "n/a" if score is None else f"{score:.3f}"
