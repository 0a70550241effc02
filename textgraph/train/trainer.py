"""Trainer: the one search loop every optimizer runs in.

Each step: the optimizer proposes candidates (TGD from the critiques of a
minibatch, others however they like); filters revert over-long or copied
values; the survivors are scored on validation concurrently (each
candidate's scores cached, a validation subset rejecting early); the best
is gated against the incumbent and committed or dropped; every candidate,
its objectives and the decision are recorded and the step checkpointed, so
`fit(resume=True)` continues after a crash and loses at most the step in
flight. The loop names no optimizer.
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
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from textgraph._checks import check_int, check_optional_int
from textgraph._io import atomic_write_json
from textgraph._sync import run_sync
from textgraph.candidate import Candidate, apply_candidate, module_values, values_id
from textgraph.engines.base import Engine
from textgraph.engines.context import check_engine
from textgraph.engines.observe import observe_calls
from textgraph.engines.usage import Budget, UsageStats
from textgraph.errors import ArgumentError, BudgetExceeded, EvaluationError
from textgraph.eval.evaluator import Evaluator, example_key
from textgraph.eval.gate import Gate, GateDecision, check_gate, decide
from textgraph.eval.pareto import (
    Objective,
    ParetoEntry,
    Select,
    check_select,
    measure,
    pareto_front,
    resolve_objectives,
    select_entry,
)
from textgraph.eval.result import EvalResult
from textgraph.losses.metric import example_metric_loss
from textgraph.module import Module
from textgraph.optim.base import CandidateOutcome, Optimizer, optimizer_name
from textgraph.optim.context import StepContext
from textgraph.optim.filters import filter_candidate
from textgraph.runs import (
    RUN_FORMAT,
    RUN_VERSION,
    CandidateRecord,
    Checkpoint,
    EvaluationRecord,
    ParameterChange,
    RunDir,
    RunError,
    StepRecord,
    Summary,
    TrainerState,
    append_jsonl,
    rewrite_jsonl,
)
from textgraph.train.callbacks import (
    check_callbacks,
    notify_end,
    notify_error,
    notify_start,
    notify_step,
)
from textgraph.train.gradients import (
    GradientPass,
    check_backward_mode,
    gradient_pass,
    gradients_of,
)
from textgraph.train.observer import RunObserver
from textgraph.train.progress import RunProgress
from textgraph.train.speculation import Speculation, StepLocal
from textgraph.train.validation import (
    SequentialSettings,
    check_validation,
    default_chunk,
    metric_range_of,
    screen,
)
from textgraph.variable import Variable

Metric = Callable[[str, Any], Any]


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
    pareto: list[ParetoEntry] = field(default_factory=list)  # the front, evaluation order
    pool: list[ParetoEntry] = field(default_factory=list)  # every fully evaluated candidate
    selected: ParetoEntry | None = None  # what the module ended with


@dataclass
class _Proposal:
    """One step's proposals with what produced them (made now, or speculatively)."""

    step: int
    t0: float
    batch: list[int]
    current: Candidate
    ctx: StepContext
    passes: list[GradientPass]
    proposals: list[Candidate]
    deferred_errors: list[str] = field(default_factory=list)  # a speculation's, until taken


class Trainer:
    """Optimize a Module's parameters on a dataset; see docs/training.md."""

    def __init__(
        self,
        module: Module,
        loss_fn: Callable[[Variable, Any], Any] | None = None,
        *,
        optimizer: Any,
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
        alpha: float = 0.05,
        objectives: Sequence[str | Objective] | None = None,
        select: Select = "best",
        val_subset: int | None = None,
        patience: int | None = None,
        max_errors: int = 20,
        failures_only: bool = False,
        keep_passing: int = 1,
        max_gradient_chars: int = 6000,
        reduce_engine: Engine | str | None = None,
        backward_engine: Engine | str | None = None,
        backward: str = "per_op",
        engine: Engine | str | None = None,
        critic_engine: Engine | str | None = None,
        max_chars: int | dict[str, int] | None = None,
        reject_copies: bool = False,
        max_concurrency: int | None = None,
        progress: bool | None = None,
        test_before: bool = False,
        validation: str = "full",
        val_chunk: int | None = None,
        metric_range: tuple[float, float] | None = None,
        speculative: bool = False,
        callbacks: Sequence[Any] | None = None,
    ) -> None:
        # engines or model strings, resolved once through tg.get_engine
        backward_engine, reduce_engine, engine, critic_engine = (
            check_engine(e, f"Trainer({what})")
            for what, e in (
                ("backward_engine", backward_engine),
                ("reduce_engine", reduce_engine),
                ("engine", engine),
                ("critic_engine", critic_engine),
            )
        )
        if not isinstance(module, Module):
            raise ArgumentError(f"Trainer needs a tg.Module, got {type(module).__name__}")
        self.named = dict(module.named_parameters())
        if not self.named:
            raise ArgumentError("the module has no parameters (Variables with requires_grad=True)")
        propose = getattr(optimizer, "propose", None)
        if propose is None or not inspect.iscoroutinefunction(propose):
            raise ArgumentError(
                f"optimizer must be a tg.optim.Optimizer (an object with async propose(ctx)), "
                f"got {type(optimizer).__name__}"
            )
        if not callable(metric):
            raise ArgumentError("metric must be a callable metric(prediction_text, example)")
        if loss_fn is not None and not callable(loss_fn):
            raise ArgumentError("loss_fn must be a callable loss_fn(output, example) -> Variable")
        if (
            getattr(optimizer, "requires_gradients", False)
            and loss_fn is None
            and getattr(optimizer, "default_loss_from_metric", False)
        ):
            # the metric's tg.Score feedback (or an LLM's explanation of a failure) is the loss
            loss_fn = example_metric_loss(metric, backward_engine or critic_engine or engine)
        if getattr(optimizer, "requires_gradients", False) and loss_fn is None:
            raise ArgumentError(
                f"{optimizer_name(optimizer)} learns from textual gradients: pass "
                "loss_fn(output, example) returning a loss Variable (e.g. tg.MetricLoss)"
            )
        self.train = _split(train, "train", required=True)
        check_gate(gate, alpha)
        self.val = _split(val, "val", required=gate != "always")
        self.test = _split(test, "test", required=False)
        check_int("batch_size", batch_size, minimum=1)
        check_int("max_steps", max_steps, minimum=0)
        check_int("seed", seed, minimum=None)
        check_int("max_errors", max_errors, minimum=0)
        check_int("keep_passing", keep_passing, minimum=0)
        check_int("max_gradient_chars", max_gradient_chars, minimum=1)
        check_optional_int("patience", patience, minimum=1, none_means="no patience limit")
        check_optional_int(
            "max_concurrency", max_concurrency, minimum=1, none_means="the engines' limits"
        )
        check_optional_int("val_subset", val_subset, minimum=1, none_means="full validation")
        if run_dir is not None and (
            not isinstance(run_dir, (str, os.PathLike)) or not str(os.fspath(run_dir)).strip()
        ):
            raise ArgumentError(
                f"run_dir must be a directory path (or None for no run directory), got "
                f"{run_dir!r}; an empty path would write into the current directory"
            )
        if budget is not None and not isinstance(budget, Budget):
            raise ArgumentError(f"budget must be a tg.Budget, got {type(budget).__name__}")
        if val_subset is not None and not (0 < val_subset < len(self.val)):
            raise ArgumentError(f"val_subset must be between 1 and {len(self.val) - 1}")
        self.objectives = resolve_objectives(objectives)
        check_select(select)
        if select != "best" and not self.val:
            raise ArgumentError(f"select={select!r} chooses among validated candidates: pass val")
        self.module, self.loss_fn, self.optimizer, self.metric = module, loss_fn, optimizer, metric
        self.batch_size, self.max_steps, self.seed = batch_size, max_steps, seed
        self.run_dir, self.budget, self.gate, self.alpha = run_dir, budget, gate, alpha
        self.select = select
        self.val_subset, self.patience, self.max_errors = val_subset, patience, max_errors
        self.failures_only, self.keep_passing = failures_only, keep_passing
        self.max_gradient_chars, self.reduce_engine = max_gradient_chars, reduce_engine
        self.backward_engine = backward_engine or critic_engine
        self.backward = check_backward_mode(backward)
        self.engine, self.critic_engine = engine, critic_engine
        self.max_chars, self.reject_copies = max_chars, reject_copies
        self.max_concurrency, self.progress = max_concurrency, progress
        if test_before and not self.test:
            raise ArgumentError("test_before=True needs a test split (test=[...])")
        self.test_before = test_before
        check_validation(validation, val_chunk, metric_range)
        self.validation, self.val_chunk, self.metric_range = validation, val_chunk, metric_range
        if validation == "sequential":
            self._check_sequential(optimizer, gate, select, val_subset)
        if not isinstance(speculative, bool):
            raise ArgumentError(f"speculative must be True or False, got {speculative!r}")
        if speculative and not getattr(optimizer, "allows_speculation", False):
            raise ArgumentError(
                f"{optimizer_name(optimizer)} does not allow speculative proposals (its "
                "allows_speculation is False: a proposal may depend on the previous step's "
                "outcome); drop speculative=True"
            )
        if speculative and budget is not None:
            raise ArgumentError(
                "speculative=True spends calls on proposals that are discarded when a step is "
                "accepted, and those calls could use up the budget this step's validation "
                "needs; with a tg.Budget, drop speculative=True"
            )
        self.speculative = speculative
        self._local = StepLocal()
        self.callbacks = check_callbacks(callbacks)  # see train/callbacks.py
        self._initial_test: float | None = None
        self._run: RunDir | None = None
        self._step_no = 0
        self._phase = "setup"
        self._errors = 0
        self._bar: RunProgress | None = None
        self._keys: dict[str, list[str]] = {}
        self._evaluator: Evaluator | None = None
        self._speculation: Speculation | None = None
        self._discarded: dict[int, str] = {}
        self._finished_before_speculation: Any = None  # step -> note on a discarded speculation

    @property
    def _step_no(self) -> int:  # what trace lines are labelled with (a speculation: its own)
        return int(self._local.labels()["step"])

    @_step_no.setter
    def _step_no(self, value: int) -> None:
        self._local.labels()["step"] = value

    @property
    def _phase(self) -> str:
        return self._local.phase()

    @_phase.setter
    def _phase(self, value: str) -> None:
        self._local.labels()["phase"] = value

    # --- public ----------------------------------------------------------------

    def fit(self, *, resume: bool = False, force: bool = False) -> FitResult:
        return run_sync(self.afit(resume=resume, force=force))

    async def afit(self, *, resume: bool = False, force: bool = False) -> FitResult:
        try:
            notify_start(self.callbacks, self)
            if self.run_dir is None:
                result = await self._fit(resume=resume, force=force)
            else:
                with RunDir(self.run_dir).lock():
                    result = await self._fit(resume=resume, force=force)
        except BaseException as exc:
            notify_error(self.callbacks, self, exc)
            raise
        notify_end(self.callbacks, self, result)
        return result

    async def _fit(self, *, resume: bool, force: bool) -> FitResult:
        started = time.perf_counter()
        observer = RunObserver(self)
        self._evaluator = Evaluator(
            self.module,
            self.metric,
            max_concurrency=self.max_concurrency,
            progress=False,
            cache=True,
            seed=self.seed,
        )
        opened = self._open_run(resume=resume, force=force)
        if isinstance(opened, FitResult):
            return opened
        checkpoint = opened
        history: list[StepRecord] = []
        elapsed_before = 0.0
        budget_stop: str | None = None
        fatal: BaseException | None = None
        self._usage_before = (0, 0, 0.0)
        with observe_calls(observer), RunProgress(self.progress, self.max_steps) as bar:
            self._bar = bar
            initial_values = module_values(self.module)
            if checkpoint is None:
                initial = Candidate(initial_values, origin="initial")
                self._step_no, self._phase = 0, "initial validation"
                try:
                    val_result, test_result = await asyncio.gather(
                        self._evaluate(initial, "val") if self.val else _none(),
                        self._evaluate(initial, "test") if self.test_before else _none(),
                    )
                except BudgetExceeded as exc:  # not even the start could be scored
                    val_result = test_result = None
                    budget_stop = f"budget: {exc} (during the initial validation)"
                except Exception as exc:
                    # fatal (a rejected key, an unknown model) or a bug: either way the
                    # run directory must say why it stopped
                    self._stop_on_error(exc, observer, started, 0.0, None)
                    raise
                if val_result is not None and val_result.n_scored == 0:
                    error = EvaluationError(
                        f"the initial validation could not be scored: all {val_result.n_failed} "
                        f"examples failed (the first: {val_result.errors[0]}). Fix the program "
                        "or the engine and run again; no score was checkpointed."
                    )
                    self._stop_on_error(error, observer, started, 0.0, None)
                    raise error
                score = val_result.mean if val_result else None
                self._initial_test = test_result.mean if test_result else None
                pool = [self._entry(initial, val_result, 0)] if val_result else []
                state = TrainerState(
                    step=0,
                    best_score=score,
                    current_score=score,
                    current_id=initial.id,
                    best_id=initial.id,
                    pool=pool,
                )
                best = dict(initial_values)
                self._checkpoint(state, best, observer, started, 0.0)
                initial_score = score
            else:
                state, best = checkpoint.trainer, checkpoint.best_parameters
                self.module.load_state_dict(checkpoint.parameters)
                self.optimizer.load_state_dict(checkpoint.optimizer)
                self._errors = state.errors
                elapsed_before = state.seconds
                self._usage_before = (state.calls, state.tokens, state.cost_usd)
                assert self._run is not None
                history = self._run.read_steps()
                config = self._run.read_config()
                initial_values = config.get("initial_parameters", initial_values)
                initial_score = config.get("initial_val_score")
                self._initial_test = config.get("initial_test_score")
                self._reload_evaluations()
            stopped = budget_stop or "max_steps"
            while budget_stop is None and state.step < self.max_steps:
                if self.patience is not None and state.rejections_in_a_row >= self.patience:
                    stopped = f"patience: {state.rejections_in_a_row} rejected steps in a row"
                    break
                # while a speculation is in flight the optimizer's state is already a step
                # ahead: ask what it said before the speculation started
                done = (
                    self._finished_before_speculation
                    if self._speculation is not None
                    else getattr(self.optimizer, "finished", lambda: None)()
                )
                if done:
                    stopped = f"optimizer finished: {done}"
                    break
                step = state.step + 1
                self._step_no = step
                bar.step(state.step, self._info(observer, state))
                before_step = module_values(self.module)
                try:
                    record, state, best = await self._step(step, state, best, observer)
                except BudgetExceeded as exc:
                    # The step in flight is dropped whole: parameters as after the last step.
                    apply_candidate(self.module, before_step)
                    self.module.zero_grad()
                    stopped = budget_stop = f"budget: {exc}"
                    break
                except Exception as exc:
                    # fatal (a rejected key, an unknown model) or a bug: either way the
                    # run directory must say why it stopped
                    apply_candidate(self.module, before_step)
                    self.module.zero_grad()
                    fatal = exc
                    break
                history.append(record)
                if self._run:
                    append_jsonl(self._run.steps, record)
                self._checkpoint(state, best, observer, started, elapsed_before)
                try:
                    notify_step(self.callbacks, self, record)
                except Exception as exc:  # a CallbackError: stop, the step is checkpointed
                    fatal = exc
                    break
                bar.step(step, self._info(observer, state))
            if self._speculation is not None:  # the loop stopped: nothing will use it
                await self._drop_speculation(self._speculation, observer)
                self._speculation = None
            if fatal is not None:
                self._stop_on_error(fatal, observer, started, elapsed_before, state, history)
                raise fatal
            if stopped == "max_steps" and state.step >= self.max_steps:
                done = getattr(self.optimizer, "finished", lambda: None)()
                stopped = f"optimizer finished: {done}" if done else stopped
            final, selected = self._select(state, best)
            apply_candidate(self.module, final)
            self._phase, self._step_no = "test", state.step
            test_score = None
            if self.test and budget_stop is None:
                try:
                    result = await self._evaluate(Candidate(final, origin="final"), "test")
                    test_score = result.mean
                except BudgetExceeded as exc:
                    stopped += f"; test not scored ({exc})"
                    budget_stop = stopped
                except Exception as exc:
                    # fatal (a rejected key, an unknown model) or a bug: either way the
                    # run directory must say why it stopped
                    self._stop_on_error(exc, observer, started, elapsed_before, state, history)
                    raise
        front = pareto_front(state.pool, self.objectives)
        summary = self._summary(
            state,
            stopped,
            initial_score,
            test_score,
            history,
            observer,
            elapsed_before + time.perf_counter() - started,
            selected,
            front,
        )
        summary.resumable = budget_stop is not None
        if self._run:
            atomic_write_json(self._run.summary, summary.model_dump(mode="json"))
        return FitResult(
            best_state=self._state(final),
            history=history,
            test_score=test_score,
            best_val_score=state.best_score,
            initial_val_score=initial_score,
            stopped=stopped,
            summary=summary,
            initial_test_score=self._initial_test,
            pareto=front,
            pool=list(state.pool),
            selected=selected,
        )

    def _stop_on_error(
        self,
        exc: BaseException,
        observer: RunObserver,
        started: float,
        elapsed_before: float,
        state: TrainerState | None,
        history: list[StepRecord] | None = None,
    ) -> None:
        """A fatal error: write the summary with the reason (the checkpoints stay), so the
        run directory says what happened; resume=True continues once it is fixed."""
        if self._run is None:
            return
        state = state or TrainerState(step=0, best_score=None, current_score=None)
        summary = self._summary(
            state,
            f"error: {type(exc).__name__}: {exc}",
            state.best_score if state.step == 0 else None,
            None,
            history or [],
            observer,
            elapsed_before + time.perf_counter() - started,
            None,
            [],
        )
        summary.resumable = True
        atomic_write_json(self._run.summary, summary.model_dump(mode="json"))

    # --- one step --------------------------------------------------------------

    async def _step(
        self, step: int, state: TrainerState, best: dict[str, Any], observer: RunObserver
    ) -> tuple[StepRecord, TrainerState, dict[str, Any]]:
        spec, self._speculation = self._speculation, None
        proposal: _Proposal | None = None
        if spec is not None:
            if spec.step == step and spec.base_id == values_id(module_values(self.module)):
                proposal = await spec.take()
                self._count_errors(proposal.deferred_errors)  # counted once it is used
                proposal.ctx.notes.append(
                    f"proposed speculatively (from the incumbent) during step {step - 1}'s "
                    "validation, which rejected its candidate: the proposal stands"
                )
            else:
                await self._drop_speculation(spec, observer)
        if proposal is None:
            proposal = await self._propose(step, state, best)
            if step in self._discarded:
                proposal.ctx.notes.append(self._discarded.pop(step))
        if self.speculative and step < self.max_steps:
            self._finished_before_speculation = getattr(self.optimizer, "finished", lambda: None)()
            base = values_id(module_values(self.module))
            self._speculation = Speculation.start(
                step + 1, base, self.optimizer, self._speculate(step + 1, state, best)
            )
        try:
            record, state, best = await self._decide(proposal, state, best, observer)
        except BaseException:
            if self._speculation is not None:
                await self._drop_speculation(self._speculation, observer)
                self._speculation = None
            raise
        if record.decision == "accepted" and self._speculation is not None:
            await self._drop_speculation(self._speculation, observer)
            self._speculation = None
        return record, state, best

    async def _speculate(self, step: int, state: TrainerState, best: dict[str, Any]) -> _Proposal:
        self._local.fork(step)
        proposal = await self._propose(step, state, best)
        proposal.deferred_errors = list(self._local.labels().get("errors", []))
        return proposal

    async def _drop_speculation(self, spec: Speculation, observer: RunObserver) -> None:
        await spec.discard(self.optimizer)
        self.module.zero_grad()
        calls = observer.by_step.get(spec.step, (0, 0, 0.0))[0]
        self._discarded[spec.step] = (
            f"a speculative proposal made during step {spec.step - 1}'s validation was "
            f"discarded ({calls} calls): step {spec.step - 1} accepted a new incumbent, so "
            "this step proposed again from it"
        )

    async def _propose(self, step: int, state: TrainerState, best: dict[str, Any]) -> _Proposal:
        """Everything up to the optimizer's checked proposals (what a speculation runs)."""
        t0 = time.perf_counter()
        batch = self._batch(step)
        current = Candidate(module_values(self.module), origin="incumbent")
        passes: list[GradientPass] = []

        async def gradients(indices: Sequence[int]) -> tuple[dict[str, Any], list[float | None]]:
            for i in indices:
                if not (isinstance(i, int) and 0 <= i < len(self.train)):
                    raise ArgumentError(f"ctx.gradients: {i!r} is not an index into train")
            if self.loss_fn is None:
                raise ArgumentError(
                    "ctx.gradients() needs the Trainer's loss_fn; pass loss_fn=... to tg.Trainer"
                )
            passes.append(await gradient_pass(self, step, indices))
            self._phase = "optimizer"
            return gradients_of(self.named), passes[-1].train_scores

        def run_filters(
            candidate: Candidate, base: Candidate
        ) -> tuple[Candidate | None, list[str]]:
            return filter_candidate(
                candidate,
                base,
                max_chars=self.max_chars,
                reject_copies=self.reject_copies,
                train=self.train,
            )

        async def evaluate(
            candidate: Candidate, examples: Sequence[Any], *, trace: bool = False
        ) -> EvalResult:
            assert self._evaluator is not None
            phase, self._phase = self._phase, "propose evaluation"
            try:
                result = await self._evaluator.aevaluate(
                    examples,
                    candidate,
                    progress=False,
                    trace=trace,
                    purpose="traced" if trace else None,
                )
            finally:
                self._phase = phase
            self._count_errors(
                [
                    str(result.outcomes[i].error)
                    for i in result.evaluated
                    if result.outcomes[i].error
                ]
            )
            return result

        ctx = StepContext(
            step=step,
            module=self.module,
            current=current,
            best=Candidate(best, origin="best"),
            pool=list(state.pool),
            rng=random.Random(f"{self.seed}:{step}"),
            batch=[self.train[i] for i in batch],
            batch_indices=batch,
            train=self.train,
            engine=self.engine,
            critic_engine=self.critic_engine,
            _evaluate=evaluate,
            _gradients=gradients,
            val=self.val,
            _filter=run_filters,
        )
        self._phase = "optimizer"
        proposals = await self.optimizer.propose(ctx)
        self.module.zero_grad()
        proposals = self._check_proposals(proposals, current)
        return _Proposal(step, t0, batch, current, ctx, passes, proposals)

    async def _decide(
        self,
        proposal: _Proposal,
        state: TrainerState,
        best: dict[str, Any],
        observer: RunObserver,
    ) -> tuple[StepRecord, TrainerState, dict[str, Any]]:
        """Filter, validate and gate the proposals; observe; the step's record."""
        step, t0, batch, current, ctx = (
            proposal.step,
            proposal.t0,
            proposal.batch,
            proposal.current,
            proposal.ctx,
        )
        passes, proposals = proposal.passes, proposal.proposals
        grad = passes[-1] if passes else GradientPass(batch=batch)
        errors = [e for p in passes for e in p.errors]
        records: dict[str, CandidateRecord] = {}
        outcomes: list[CandidateOutcome] = []
        survivors: list[Candidate] = []
        for candidate in proposals:
            kept, reasons = filter_candidate(
                candidate,
                current,
                max_chars=self.max_chars,
                reject_copies=self.reject_copies,
                train=self.train,
            )
            ctx.notes.extend(reasons)
            if kept is None:
                status, reason = "filtered", "; ".join(reasons)
            elif kept.id == current.id:
                status, reason = "unchanged", "same values as the incumbent"
            elif kept.id in records:
                status, reason = "duplicate", "proposed twice in this step"
            else:
                survivors.append(kept)
                records[kept.id] = self._record(kept, current, "proposed", "")
                continue
            shown = kept or candidate
            outcomes.append(CandidateOutcome(shown, status, reason))
            records.setdefault(
                f"{status}:{len(records)}", self._record(shown, current, status, reason)
            )

        val_score = state.current_score
        if not survivors:
            decision = "unchanged"
            if (
                getattr(self.optimizer, "requires_gradients", False)
                and passes
                and not grad.received
            ):
                reason = "no critiques (every loss was perfect or failed): parameters kept"
            else:
                reason = "no usable candidate: parameters kept"
            state = state.model_copy(update={"rejections_in_a_row": state.rejections_in_a_row + 1})
        else:
            self._phase = "validation"
            decision, reason, val_score, state, best = await self._validate(
                step, survivors, current, state, best, records, outcomes, errors
            )
        self.optimizer.observe(outcomes)
        calls, tokens, cost = observer.by_step.get(step, (0, 0, 0.0))
        record = StepRecord(
            step=step,
            batch=batch,
            errors=errors,
            train_scores=grad.train_scores,
            gradients=grad.gradients,
            reduced=grad.reduced,
            candidates=list(records.values()),
            optimizer=optimizer_name(self.optimizer),
            notes=[*ctx.notes, *(n for p in passes for n in p.notes)],
            current=state.current_id,
            val_score=val_score,
            best_score=state.best_score,
            decision=decision,
            reason=reason,
            calls=calls,
            tokens=tokens,
            cost_usd=round(cost, 6),
            seconds=round(time.perf_counter() - t0, 3),
        )
        state = state.model_copy(update={"step": step, "errors": self._errors})
        return record, state, best

    async def _validate(
        self,
        step: int,
        survivors: list[Candidate],
        current: Candidate,
        state: TrainerState,
        best: dict[str, Any],
        records: dict[str, CandidateRecord],
        outcomes: list[CandidateOutcome],
        errors: list[str],
    ) -> tuple[str, str, float | None, TrainerState, dict[str, Any]]:
        if not self.val:  # gate "always" without validation data: take the first
            top = survivors[0]
            apply_candidate(self.module, top)
            records[top.id].status = "accepted"
            records[top.id].reason = "accepted (gate always, no validation data)"
            outcomes.append(CandidateOutcome(top, "accepted", records[top.id].reason))
            state = state.model_copy(
                update={"current_id": top.id, "best_id": top.id, "rejections_in_a_row": 0}
            )
            return "accepted", records[top.id].reason, None, state, dict(top.values)
        remaining = list(survivors)
        first_reason = ""
        if self._stops_early():
            remaining, first_reason = await self._screen(
                step, current, remaining, state, records, outcomes, errors
            )
        if self.val_subset is not None and self.gate != "always":
            k = self.val_subset
            base, *subs = await asyncio.gather(
                self._evaluate(current, "val", limit=k, errors=errors),
                *(self._evaluate(c, "val", limit=k, errors=errors) for c in remaining),
            )
            base_mean = base.gate_mean()
            kept = []
            for c, sub in zip(remaining, subs, strict=True):
                mean = sub.gate_mean()
                if base_mean is not None and mean is not None and mean < base_mean:
                    why = f"rejected on the first {k} val examples: {base_mean:.3f} -> {mean:.3f}"
                    first_reason = first_reason or why
                    records[c.id].status, records[c.id].reason = "rejected", why
                    records[c.id].val_score = mean
                    records[c.id].val_examples = k
                    outcomes.append(CandidateOutcome(c, "rejected", why, sub))
                else:
                    kept.append(c)
            remaining = kept
        if not remaining:
            state = state.model_copy(update={"rejections_in_a_row": state.rejections_in_a_row + 1})
            return "rejected", first_reason, state.current_score, state, best
        results = await asyncio.gather(
            *(self._evaluate(c, "val", errors=errors) for c in remaining)
        )
        pool = list(state.pool)
        known = {e.candidate_id for e in pool}
        for c, r in zip(remaining, results, strict=True):
            objectives = measure(self.objectives, r, c)
            records[c.id].objectives = objectives
            records[c.id].val_score = r.gate_mean()
            records[c.id].n_failed = r.n_failed
            records[c.id].val_examples = r.n
            if c.id not in known:
                pool.append(self._entry(c, r, step, objectives))
                known.add(c.id)
        order = sorted(
            range(len(remaining)), key=lambda i: -(results[i].gate_mean() or 0.0)
        )  # stable: the first proposed wins ties
        chooser = getattr(self.optimizer, "choose", None)
        chosen = chooser(list(zip(remaining, results, strict=True))) if chooser else None
        if chosen is not None:
            if not any(chosen is c or chosen == c for c in remaining):
                raise ArgumentError(
                    f"{optimizer_name(self.optimizer)}.choose() must return one of the "
                    f"candidates it was given (or None), got {chosen!r:.80}"
                )
            at = next(i for i, c in enumerate(remaining) if c == chosen)
            order = [at] + [i for i in order if i != at]
        top_i = order[0]
        top, top_result = remaining[top_i], results[top_i]
        incumbent = None
        if self.gate == "significant" or top_result.n_failed:
            incumbent = (await self._evaluate(current, "val", errors=errors)).scores
        if incumbent is not None and (top_result.n_failed or None in incumbent):
            verdict = _decide_on_common(
                self.gate,
                top_result.scores,
                incumbent,
                self.alpha,
                self.seed * 1000 + step,
                _tolerance(self.optimizer),
            )
        else:
            verdict = decide(
                self.gate,
                top_result.scores,
                incumbent,
                best_score=state.best_score,
                alpha=self.alpha,
                seed=self.seed * 1000 + step,
                tolerance=_tolerance(self.optimizer),
            )
        for i in order[1:]:
            c = remaining[i]
            why = (
                f"not selected: {top.id} scored higher on val "
                f"({top_result.gate_mean():.3f} vs {results[i].gate_mean():.3f})"
                if chosen is None
                else f"not selected: the optimizer chose {top.id} "
                f"(val {top_result.gate_mean():.3f}; this one {results[i].gate_mean():.3f})"
            )
            records[c.id].status, records[c.id].reason = "not selected", why
            outcomes.append(
                CandidateOutcome(c, "not selected", why, results[i], records[c.id].objectives)
            )
        word = "accepted" if verdict.accepted else "rejected"
        records[top.id].status, records[top.id].reason = word, verdict.reason
        outcomes.append(
            CandidateOutcome(top, word, verdict.reason, top_result, records[top.id].objectives)
        )
        score = verdict.score
        state = state.model_copy(update={"pool": pool})
        if not verdict.accepted:
            state = state.model_copy(update={"rejections_in_a_row": state.rejections_in_a_row + 1})
            return "rejected", verdict.reason, state.current_score, state, best
        apply_candidate(self.module, top)
        new_best = state.best_score is None or (score or 0.0) >= state.best_score
        update: dict[str, Any] = {
            "current_score": score,
            "current_id": top.id,
            "rejections_in_a_row": 0,
        }
        if new_best or self.gate != "always":  # "always" may accept worse: best stays
            update.update(best_score=score, best_id=top.id)
            best = dict(top.values)
        return "accepted", verdict.reason, score, state.model_copy(update=update), best

    # --- sequential validation -------------------------------------------------

    def _check_sequential(self, optimizer: Any, gate: str, select: Any, val_subset: Any) -> None:
        if gate == "always":
            raise ArgumentError(
                'validation="sequential" stops a validation once the gate\'s answer is known; '
                'the gate "always" accepts without looking: use validation="full"'
            )
        if val_subset is not None:
            raise ArgumentError(
                'val_subset and validation="sequential" both reject early; pass one of them '
                "(sequential validation is exact for the better/not_worse gates)"
            )
        if select != "best":
            raise ArgumentError(
                f'validation="sequential" keeps early-stopped candidates out of the Pareto '
                f'pool, and select={select!r} chooses from that pool: use validation="full"'
            )

    def _sequential_settings(self) -> SequentialSettings:
        low, high = metric_range_of(self.metric, self.metric_range)
        chunk = self.val_chunk or default_chunk(len(self.val))
        return SequentialSettings(
            chunk=chunk, low=low, high=high, futility=self.alpha, alpha=self.alpha
        )

    def _stops_early(self) -> bool:
        """Sequential validation applies: asked for, and the optimizer does not need every
        candidate's full scores (its flag, or a choose() of its own)."""
        if self.validation != "sequential":
            return False
        choose = getattr(type(self.optimizer), "choose", None)
        own_choose = choose is not None and choose is not Optimizer.choose
        return not getattr(self.optimizer, "full_validation", False) and not own_choose

    async def _screen(
        self,
        step: int,
        current: Candidate,
        remaining: list[Candidate],
        state: TrainerState,
        records: dict[str, CandidateRecord],
        outcomes: list[CandidateOutcome],
        errors: list[str],
    ) -> tuple[list[Candidate], str]:
        """Sequential validation's early rejections (textgraph/train/validation.py)."""
        # the incumbent was validated in full before: its scores come from the cache
        incumbent = (await self._evaluate(current, "val", errors=errors)).scores
        screened = await screen(
            remaining,
            lambda c, k: self._evaluate(c, "val", limit=k, errors=errors),
            n=len(self.val),
            gate=self.gate,
            best_score=state.best_score,
            incumbent=incumbent,
            settings=self._sequential_settings(),
            tolerance=_tolerance(self.optimizer),
            seed=self.seed * 1000 + step,
            gather=asyncio.gather,
        )
        kept, first = [], ""
        for s in screened:
            if s.dropped is None or s.result is None:
                kept.append(s.candidate)
                continue
            record = records[s.candidate.id]
            record.status, record.reason = "rejected", s.dropped
            record.val_score, record.n_failed = s.result.gate_mean(), s.result.n_failed
            record.val_examples, record.val_stop = s.examples, s.dropped
            outcomes.append(CandidateOutcome(s.candidate, "rejected", s.dropped, s.result))
            first = first or s.dropped
        return kept, first

    # --- pieces ----------------------------------------------------------------

    async def _evaluate(
        self,
        candidate: Candidate,
        split: str,
        *,
        limit: int | None = None,
        errors: list[str] | None = None,
    ) -> EvalResult:
        assert self._evaluator is not None
        data = self.val if split == "val" else self.test
        keys = self._keys.get(split)
        if keys is None:
            keys = self._keys[split] = [example_key(e) for e in data]
        if limit is not None:
            data, keys = data[:limit], keys[:limit]
        progress = self._bar.evaluation(f"{split} {candidate.id}") if self._bar else False
        result = await self._evaluator.aevaluate(
            data, candidate, description=f"{split} {candidate.id}", progress=progress
        )
        fresh = result.evaluated
        if self._run is not None and fresh:
            append_jsonl(
                self._run.evaluations,
                EvaluationRecord(
                    step=self._step_no,
                    candidate_id=result.candidate_id or candidate.id,
                    split=split,
                    example_keys=[keys[i] for i in fresh],
                    outcomes=[result.outcomes[i] for i in fresh],
                    phase="test" if self._phase == "test" else "",
                ),
            )
        label = "validation" if split == "val" else split
        failed = [
            f"{label} example {i}: {error.text}"
            for i in fresh
            if (error := result.outcomes[i].error) is not None
        ]
        if errors is not None:
            errors.extend(failed)
        self._count_errors(failed)
        return result

    def _reload_evaluations(self) -> None:
        assert self._run is not None and self._evaluator is not None
        for record in self._run.read_evaluations():
            self._evaluator.remember(record.candidate_id, record.example_keys, record.outcomes)

    def _entry(
        self,
        candidate: Candidate,
        result: EvalResult,
        step: int,
        objectives: dict[str, float | None] | None = None,
    ) -> ParetoEntry:
        return ParetoEntry(
            candidate_id=candidate.id,
            step=step,
            origin=candidate.origin,
            objectives=objectives or measure(self.objectives, result, candidate),
            values=dict(candidate.values),
        )

    def _record(
        self, candidate: Candidate, current: Candidate, status: str, reason: str
    ) -> CandidateRecord:
        details = candidate.details
        try:
            json.dumps(details)
        except (TypeError, ValueError):
            details = repr(details)
        return CandidateRecord(
            id=candidate.id,
            parents=list(candidate.parents),
            origin=candidate.origin,
            details=details,
            changes=[
                ParameterChange(parameter=name, old_value=str(old), new_value=str(new))
                for name, (old, new) in candidate.changes_from(current).items()
            ],
            status=status,
            reason=reason,
        )

    def _check_proposals(self, proposals: Any, current: Candidate) -> list[Candidate]:
        name = optimizer_name(self.optimizer)
        if not isinstance(proposals, list) or not all(isinstance(c, Candidate) for c in proposals):
            raise ArgumentError(
                f"{name}.propose() must return a list of tg.Candidate, got {proposals!r:.80}"
            )
        out = []
        for c in proposals:
            unknown = sorted(set(c.values) - set(self.named))
            if unknown:
                raise ArgumentError(
                    f"{name} proposed values for unknown parameter(s) {unknown}; the module's "
                    f"parameters are {sorted(self.named)}"
                )
            if set(c.values) != set(self.named):  # a partial snapshot: the rest as now
                c = Candidate(
                    {**current.values, **c.values},
                    parents=c.parents or (current.id,),
                    origin=c.origin,
                    details=c.details,
                )
            out.append(c)
        return out

    def _select(
        self, state: TrainerState, best: dict[str, Any]
    ) -> tuple[dict[str, Any], ParetoEntry | None]:
        by_id = {e.candidate_id: e for e in state.pool}
        if self.select == "best" or not state.pool:
            return best, by_id.get(state.best_id or "")
        entry = select_entry(state.pool, self.select, self.objectives)
        return dict(entry.values), entry

    def _reduce_engine(self) -> Engine | None:
        return self.reduce_engine or self.critic_engine or getattr(self.optimizer, "engine", None)

    def _batch(self, step: int) -> list[int]:
        n = len(self.train)
        per_epoch = math.ceil(n / self.batch_size)
        epoch, k = divmod(step - 1, per_epoch)
        order = list(range(n))
        random.Random(f"{self.seed}:{epoch}").shuffle(order)
        return order[k * self.batch_size : (k + 1) * self.batch_size]

    def _count_errors(self, errors: list[str]) -> None:
        labels = self._local.labels()
        if labels.get("speculative"):  # counted (and checkpointed) only if the proposal is used
            labels.setdefault("errors", []).extend(errors)
            return
        self._errors += len(errors)
        if self._errors > self.max_errors:
            raise RunError(
                f"{self._errors} examples failed so far (max_errors={self.max_errors}); the last: "
                f"{errors[-1] if errors else '?'}. Fix the pipeline or raise max_errors."
            )

    def _info(self, observer: RunObserver, state: TrainerState) -> str:
        usage = observer.usage.total
        return (
            f"{usage.calls} calls · {usage.total_tokens} tokens · ${usage.cost_usd:.4f} · val "
            f"{_fmt(state.current_score)} (best {_fmt(state.best_score)})"
        )

    # --- state, files ----------------------------------------------------------

    def _state(self, values: dict[str, Any]) -> dict[str, Any]:
        state = self.module.state_dict()
        for name, value in values.items():
            state["parameters"][name]["value"] = value
        return state

    def _config(self) -> dict[str, Any]:
        return {
            "format": RUN_FORMAT,
            "version": RUN_VERSION,
            "module": type(self.module).__qualname__,
            "parameters": sorted(self.named),
            "initial_parameters": module_values(self.module),
            "optimizer": self.optimizer.config()
            if hasattr(self.optimizer, "config")
            else {"name": optimizer_name(self.optimizer)},
            "data": {
                split: {"size": len(data), "sha256": _fingerprint(data)}
                for split, data in (("train", self.train), ("val", self.val), ("test", self.test))
            },
            "batch_size": self.batch_size,
            "max_steps": self.max_steps,
            "seed": self.seed,
            "gate": self.gate,
            "alpha": self.alpha,
            "objectives": [o.name for o in self.objectives],
            "select": self.select
            if not callable(self.select)
            else getattr(self.select, "__name__", "callable"),
            "val_subset": self.val_subset,
            "test_before": self.test_before,
            "patience": self.patience,
            "failures_only": self.failures_only,
            "max_gradient_chars": self.max_gradient_chars,
            **({"backward": self.backward} if self.backward != "per_op" else {}),  # old runs resume
            "max_chars": self.max_chars,
            "reject_copies": self.reject_copies,
            **self._new_settings(),
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

    def _new_settings(self) -> dict[str, Any]:
        """Settings added after run format 2, recorded only when set (older runs resume)."""
        out: dict[str, Any] = {}
        if self.validation != "full":
            settings = self._sequential_settings()
            out.update(
                validation=self.validation,
                val_chunk=settings.chunk,
                metric_range=[settings.low, settings.high],
            )
        if self.speculative:
            out["speculative"] = True
        return out

    def _open_run(self, *, resume: bool, force: bool) -> Checkpoint | FitResult | None:
        """The checkpoint to continue from (None: a fresh run), or the saved result of a
        run that already finished."""
        if self.run_dir is None:
            if resume:
                raise ArgumentError("resume=True needs a run_dir to resume from")
            return None
        run = self._run = RunDir(self.run_dir)
        config = json.loads(json.dumps(self._config()))
        if not run.exists():
            if resume:
                raise RunError(
                    f"nothing to resume at {run.path}: it holds no run (no config.json). "
                    "Check the path, or drop resume=True (--resume) to start a new run there."
                )
            run.create(config)
            return None
        if not resume:
            if not force:
                raise RunError(
                    f"{run.path} already holds a run; pass resume=True to continue it "
                    "(--resume) or force=True to start over (--force; the old run's files "
                    "are moved to previous/, not deleted)"
                )
            aside = run.create(config)
            if aside is not None:
                print(f"textgraph: the earlier run's files are in {aside}", file=sys.stderr)
            return None
        saved = run.read_config()
        if saved.get("version", 1) != RUN_VERSION and not force:
            raise RunError(
                f"{run.path} was written by an older textgraph (run format version "
                f"{saved.get('version', 1)}; this one resumes version {RUN_VERSION}). "
                "`textgraph show` and `textgraph report` still read it; continue in a new run_dir."
            )
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
        corrupt = [path for path, _ in skipped]
        if checkpoint is None and corrupt:
            problems = "; ".join(why for _, why in skipped)
            raise RunError(
                f"cannot resume {run.path}: every checkpoint is corrupt ({problems}). "
                "Nothing was changed. Start a fresh run with force=True (--force): the old "
                "files are moved to previous/, not deleted."
            )
        summary = run.read_summary()
        finished = (
            checkpoint is not None
            and summary is not None
            and not summary.resumable
            and not corrupt
            and summary.steps == checkpoint.trainer.step
        )
        if finished and not force:
            assert checkpoint is not None and summary is not None
            return self._finished_result(run, checkpoint, summary)
        if corrupt:
            aside = run.set_aside(corrupt, "corrupt")
            print(
                f"textgraph: warning: {'; '.join(why for _, why in skipped)}; moved to "
                f"{aside}; resuming from "
                f"step {checkpoint.trainer.step if checkpoint else 0}",
                file=sys.stderr,
            )
        if checkpoint is None:  # stopped before the first checkpoint: start over
            aside = run.create(config)
            if aside is not None:
                print(f"textgraph: the unfinished start is in {aside}", file=sys.stderr)
            return None
        done = checkpoint.trainer.step
        # Work past the checkpoint was in flight (a step, or the final test): drop its lines.
        rewrite_jsonl(run.steps, [r for r in run.read_steps() if r.step <= done])
        rewrite_jsonl(
            run.trace, [r for r in run.read_trace() if r.step <= done and r.phase != "test"]
        )
        rewrite_jsonl(
            run.evaluations,
            [r for r in run.read_evaluations() if r.step <= done and r.phase != "test"],
        )
        later = [p for p in run.checkpoints.glob("step-*.json") if int(p.stem.split("-")[1]) > done]
        if later:
            run.set_aside(later, "past-checkpoint")
        return checkpoint

    def _finished_result(self, run: RunDir, checkpoint: Checkpoint, summary: Summary) -> FitResult:
        """A finished run resumed: its saved result, nothing re-run or re-billed."""
        final = dict(summary.final_parameters)
        apply_candidate(self.module, final)
        pool = list(checkpoint.trainer.pool)
        selected = next((e for e in pool if e.candidate_id == summary.selected), None)
        return FitResult(
            best_state=self._state(final),
            history=run.read_steps(),
            test_score=summary.test_score,
            best_val_score=summary.best_val_score,
            initial_val_score=summary.initial_val_score,
            stopped=summary.stopped,
            summary=summary,
            initial_test_score=summary.initial_test_score,
            pareto=list(summary.pareto),
            pool=pool,
            selected=selected,
        )

    def _checkpoint(
        self,
        state: TrainerState,
        best: dict[str, Any],
        observer: RunObserver,
        started: float,
        elapsed_before: float,
    ) -> None:
        if self._run is None:
            return
        usage = observer.usage.total
        calls, tokens, cost = getattr(self, "_usage_before", (0, 0, 0.0))
        state = state.model_copy(  # cumulative over every session of a resumed run
            update={
                "calls": calls + usage.calls,
                "tokens": tokens + usage.total_tokens,
                "cost_usd": round(cost + usage.cost_usd, 6),
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
                version=2,
                parameters=self.module.state_dict(),
                best_parameters=best,
                # a speculation in flight: the state from before it (what resume recomputes)
                optimizer=self._speculation.optimizer_state
                if self._speculation is not None
                else self.optimizer.state_dict(),
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
        observer: RunObserver,
        seconds: float,
        selected: ParetoEntry | None,
        front: list[ParetoEntry],
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
            failed_examples=self._errors,
            final_parameters=module_values(self.module),
            optimizer=optimizer_name(self.optimizer),
            selected=selected.candidate_id if selected else None,
            pareto=front,
        )


def _decide_on_common(
    gate: Gate,
    candidate: list[float | None],
    incumbent: list[float | None],
    alpha: float,
    seed: int,
    tolerance: float = 0.0,
) -> GateDecision:
    """Some validation examples could not be scored: compare the candidate with the
    incumbent only on the examples both scored; with none in common, keep the incumbent."""
    both = [
        i
        for i, (c, n) in enumerate(zip(candidate, incumbent, strict=True))
        if c is not None and n is not None
    ]
    failed = sum(c is None for c in candidate)
    if not both:
        return GateDecision(
            False,
            f"inconclusive: no validation example was scored for both the candidate "
            f"({failed} failed) and the incumbent; the incumbent is kept",
            None,
        )
    cand = [candidate[i] for i in both]
    inc = [incumbent[i] for i in both]
    old = sum(x for x in inc if x is not None) / len(inc)
    verdict = decide(gate, cand, inc, best_score=old, alpha=alpha, seed=seed, tolerance=tolerance)
    scored = [c for c in candidate if c is not None]
    score = sum(scored) / len(scored) if scored else None
    note = (
        f" (compared on the {len(both)} of {len(candidate)} validation examples both "
        f"scored; {failed} failed for the candidate)"
    )
    return GateDecision(verdict.accepted, verdict.reason + note, score, verdict.test)


def _tolerance(optimizer: Any) -> float:
    value = getattr(optimizer, "gate_tolerance", 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ArgumentError(
            f"{optimizer_name(optimizer)}.gate_tolerance must be a number >= 0, got {value!r}"
        )
    return float(value)


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


def _fingerprint(data: list[Any]) -> str:
    def plain(x: Any) -> Any:
        return x.model_dump(mode="json") if isinstance(x, BaseModel) else x

    blob = json.dumps([plain(x) for x in data], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _fmt(score: float | None) -> str:
    return "n/a" if score is None else f"{score:.3f}"
