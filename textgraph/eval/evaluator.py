"""Evaluator: run a program over examples concurrently and score every output.

One component scores everything: `tg.evaluate` and `textgraph eval`, the
Trainer's validation and test, and every optimizer that scores candidates.
Each example runs in its own task with its own call observer, so usage,
tokens, cost and latency are measured per example and per evaluation, even
while other evaluations (other candidates) run at the same time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel
from pydantic_core import PydanticSerializationError

from textgraph._dspy import refuse_dspy_metric
from textgraph._sync import run_sync
from textgraph.candidate import Candidate, candidate_values, module_values, values_id
from textgraph.engines.base import ChatRequest, ChatResponse
from textgraph.engines.limits import ConcurrencyLimit
from textgraph.engines.observe import CallObserver, forward_purpose, observe_calls
from textgraph.engines.usage import list_cost, track_usage
from textgraph.errors import (
    ArgumentError,
    AuthenticationError,
    BudgetExceeded,
    ConfigurationError,
    EvaluationError,
    ProviderError,
    RateLimitError,
)
from textgraph.eval.result import EvalResult, ExampleError, ExampleOutcome, Usage
from textgraph.eval.score import Score, to_score
from textgraph.eval.stats import mean_ci
from textgraph.image import Image
from textgraph.module import Module
from textgraph.ops.trace import OpCall, record_op_calls
from textgraph.variable import Variable

Program = Module | Callable[[Any], Any]
Metric = Callable[[str, Any], float | bool | Score]
Progress = bool | Callable[[int, int], None] | None

# Errors no other example would escape: stop the evaluation and raise them.
FATAL_ERRORS: tuple[type[BaseException], ...] = (
    BudgetExceeded,
    AuthenticationError,
    ConfigurationError,
)
# Provider answers that no retry or other example would change: a rejected key (401/403),
# an unknown model or endpoint (404), an exhausted quota (a 429 that is not retryable).
FATAL_STATUS = (401, 403, 404)


def is_fatal(exc: BaseException) -> bool:
    """True when the whole run must stop on `exc`, not just this example."""
    if isinstance(exc, FATAL_ERRORS):
        return True
    if isinstance(exc, ProviderError) and not exc.retryable:
        return exc.status in FATAL_STATUS or (exc.status == 429 and isinstance(exc, RateLimitError))
    return False


class _ExampleUsage(CallObserver):
    """Counts the calls of one example (tasks give each example its own context)."""

    def __init__(self) -> None:
        self.outcome = ExampleOutcome()

    def after(
        self,
        request: ChatRequest,
        response: ChatResponse,
        state: object,
        started: float,
        ended: float,
        model: str | None = None,
    ) -> None:
        o = self.outcome
        o.calls += 1
        o.cached_calls += int(response.cached)
        o.prompt_tokens += response.usage.prompt_tokens
        o.completion_tokens += response.usage.completion_tokens
        o.cost_usd += list_cost(response.model or model, response.usage)


def example_key(example: Any) -> str:
    """A stable fingerprint of an example (for the evaluation cache)."""
    if isinstance(example, BaseModel):
        try:
            example = example.model_dump(mode="json")
        except PydanticSerializationError:  # a field pydantic cannot write (a tg.Image)
            example = example.model_dump()
    blob = json.dumps(example, sort_keys=True, ensure_ascii=False, default=_fingerprint)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _fingerprint(value: object) -> str:
    """A tg.Image by its content (two loads of one file are one example, in any process);
    anything else by repr."""
    if isinstance(value, Image):
        return f"tg.Image sha256:{value.sha256} {value.media_type}"
    return repr(value)


class Evaluator:
    """`tg.Evaluator(program, metric, *, max_concurrency=None, progress=None, max_errors=None)`.

    program: a tg.Module, or any callable example -> Variable (sync or async).
    metric: metric(prediction_text, example) -> float | bool | tg.Score.
    max_concurrency: examples in flight at once, across every evaluation this Evaluator
        runs concurrently (None: only the engines' own limits).
    progress: True for a progress bar, False for none, None for a bar on a terminal
        (not under CI), or a callable(done, total).
    max_errors: raise EvaluationError once more examples than this have failed.
    cache: remember each (values, example) outcome so it is never run twice
        (the Trainer turns this on; off by default so repeated runs really run).
    purpose: the label of the program's LLM calls ("validation").
    """

    def __init__(
        self,
        program: Program,
        metric: Metric,
        *,
        max_concurrency: int | None = None,
        progress: Progress = None,
        max_errors: int | None = None,
        cache: bool = False,
        seed: int = 0,
        purpose: str = "validation",
    ) -> None:
        if not callable(program):
            raise ArgumentError(
                f"program must be a tg.Module or a callable example -> Variable, got "
                f"{type(program).__name__}"
            )
        if not callable(metric):
            raise ArgumentError(
                "metric must be a callable metric(prediction_text, example) returning a "
                f"float, a bool or a tg.Score; got {type(metric).__name__}"
            )
        refuse_dspy_metric(metric)
        if max_concurrency is not None and (
            not isinstance(max_concurrency, int) or max_concurrency < 1
        ):
            raise ArgumentError(
                f"max_concurrency must be an int >= 1 or None, got {max_concurrency!r}"
            )
        if max_errors is not None and (not isinstance(max_errors, int) or max_errors < 0):
            raise ArgumentError(f"max_errors must be an int >= 0 or None, got {max_errors!r}")
        if not (progress is None or isinstance(progress, bool) or callable(progress)):
            raise ArgumentError("progress must be True, False, None or a callable(done, total)")
        self.program, self.metric = program, metric
        self.max_concurrency, self.progress, self.max_errors = max_concurrency, progress, max_errors
        self.seed, self.purpose = seed, purpose
        self.metric_name = getattr(metric, "__name__", type(metric).__name__)
        self._cache: dict[tuple[str, str], ExampleOutcome] | None = {} if cache else None
        self._limit = ConcurrencyLimit(max_concurrency) if max_concurrency else None

    # --- public ------------------------------------------------------------------

    def evaluate(
        self, examples: Sequence[Any], candidate: Candidate | Mapping[str, Any] | None = None
    ) -> EvalResult:
        return run_sync(self.aevaluate(examples, candidate))

    async def aevaluate(
        self,
        examples: Sequence[Any],
        candidate: Candidate | Mapping[str, Any] | None = None,
        *,
        description: str = "evaluating",
        progress: Progress = None,
        trace: bool = False,
        purpose: str | None = None,
    ) -> EvalResult:
        """Score `examples`; with `candidate`, as if the module held its values (the
        module itself is not touched, so evaluations of other candidates can overlap).

        trace=True records every LLM op call of each example (`result.traces`, what demo
        optimizers mine); every example then really runs, and the outcomes are not
        remembered (a teacher engine may have produced them). purpose: the label of this
        evaluation's LLM calls (default: the Evaluator's)."""
        examples = _examples(examples)
        if candidate is not None and not isinstance(self.program, Module):
            raise ArgumentError(
                "evaluating a candidate needs the program to be a tg.Module (its "
                "parameters are what a candidate sets)"
            )
        if isinstance(candidate, Mapping):
            candidate = Candidate(candidate)
        key = None
        if isinstance(self.program, Module):
            values = module_values(self.program)
            if candidate is not None:
                values.update(candidate.values)
            key = values_id(values)
        started = time.perf_counter()
        outcomes: list[ExampleOutcome | None] = [None] * len(examples)
        variables: list[Variable | None] = [None] * len(examples)
        todo: list[int] = []
        keys: list[str] = []
        traces: list[list[OpCall]] | None = [[] for _ in examples] if trace else None
        cache = None if trace else self._cache
        if cache is not None and key is not None:
            keys = [example_key(e) for e in examples]
            for i, k in enumerate(keys):
                hit = cache.get((key, k))
                if hit is not None:
                    outcomes[i] = hit
                else:
                    todo.append(i)
        else:
            todo = list(range(len(examples)))
        reused = len(examples) - len(todo)
        bar = _bar(self.progress if progress is None else progress, len(examples), description)
        bar.advance(reused)
        failed = [sum(1 for o in outcomes if o is not None and o.error is not None)]
        semaphore = self._semaphore()

        async def one(i: int) -> None:
            with contextlib.ExitStack() as stack:
                if traces is not None:
                    traces[i] = stack.enter_context(record_op_calls())
                if semaphore is not None:
                    await semaphore.acquire()
                    try:
                        outcome, variable = await self._one(i, examples[i])
                    finally:
                        semaphore.release()
                else:
                    outcome, variable = await self._one(i, examples[i])
            outcomes[i], variables[i] = outcome, variable
            if cache is not None and key is not None:
                cache[(key, keys[i])] = outcome
            bar.advance(1)
            if outcome.error is not None:
                failed[0] += 1
                if self.max_errors is not None and failed[0] > self.max_errors:
                    raise EvaluationError(
                        f"{failed[0]} examples failed (max_errors={self.max_errors}); the last: "
                        f"{outcome.error}. Fix the program or raise max_errors."
                    )

        label = self.purpose if purpose is None else purpose
        with bar, forward_purpose(label), track_usage() as spent:
            if candidate is not None:
                assert isinstance(self.program, Module)
                with candidate_values(self.program, candidate):
                    await _run_all([one(i) for i in todo])
            else:
                await _run_all([one(i) for i in todo])
        done = [o for o in outcomes if o is not None]
        seconds = time.perf_counter() - started
        usage = Usage(  # what this evaluation's calls really used: reused outcomes made none
            calls=spent.total.calls,
            cached_calls=spent.total.cached_calls,
            prompt_tokens=spent.total.prompt_tokens,
            completion_tokens=spent.total.completion_tokens,
            cost_usd=round(spent.total.cost_usd, 8),
        )
        result = _result(done, usage, variables, key, reused, seconds, self.seed)
        result.evaluated = todo
        result.traces = traces
        return result

    def remember(
        self, key: str, example_keys: Sequence[str], outcomes: Sequence[ExampleOutcome]
    ) -> None:
        """Seed the evaluation cache (a resumed run reloads what it evaluated before)."""
        if self._cache is None:
            raise ArgumentError("this Evaluator was made with cache=False")
        for k, outcome in zip(example_keys, outcomes, strict=True):
            self._cache[(key, k)] = outcome

    def _semaphore(self) -> ConcurrencyLimit | None:
        """One limit shared by every evaluation this Evaluator runs at once, across event
        loops and threads (a sync program's evaluations may run in several)."""
        return self._limit

    # --- one example -------------------------------------------------------------

    async def _one(self, index: int, example: Any) -> tuple[ExampleOutcome, Variable | None]:
        usage = _ExampleUsage()
        outcome = usage.outcome
        t0 = time.perf_counter()
        variable: Variable | None = None
        with observe_calls(usage):
            try:
                output = await self._run(example)
            except ArgumentError:
                raise
            except Exception as exc:
                if is_fatal(exc):
                    raise
                outcome.error = ExampleError(
                    index=index, type=type(exc).__name__, message=str(exc), stage="program"
                )
                outcome.latency_s = time.perf_counter() - t0
                return outcome, None
        if isinstance(output, Variable):
            variable, text = output, output.value
        elif isinstance(output, str):
            text = output
        else:
            raise ArgumentError(
                f"the program returned {type(output).__name__} for example {index}; it must "
                "return a tg.Variable (or a str)"
            )
        outcome.output = text
        try:
            value = self.metric(text, example)
        except Exception as exc:
            outcome.error = ExampleError(
                index=index, type=type(exc).__name__, message=str(exc), stage="metric"
            )
        else:
            score = to_score(value, f"the metric {self.metric_name}, for example {index},")
            outcome.score, outcome.feedback = score.value, score.feedback
        outcome.latency_s = time.perf_counter() - t0
        return outcome, variable

    async def _run(self, example: Any) -> Any:
        program = self.program
        if isinstance(program, Module):
            aforward = getattr(program, "aforward", None)
            if aforward is not None and inspect.iscoroutinefunction(aforward):
                return await aforward(example)
            result = await asyncio.to_thread(program, example)
        elif inspect.iscoroutinefunction(program) or inspect.iscoroutinefunction(
            getattr(program, "__call__", None)  # noqa: B004 - async __call__ objects
        ):
            return await program(example)
        else:
            result = await asyncio.to_thread(program, example)
        if inspect.isawaitable(result):
            result = await result
        return result


async def _run_all(coroutines: list[Awaitable[None]]) -> None:
    """Run concurrently; on the first fatal error cancel the rest and raise it."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _result(
    outcomes: list[ExampleOutcome],
    usage: Usage,
    variables: list[Variable | None],
    key: str | None,
    reused: int,
    seconds: float,
    seed: int,
) -> EvalResult:
    scores = [o.score if o.error is None else None for o in outcomes]
    scored = [s for s in scores if s is not None]
    errors = [o.error for o in outcomes if o.error is not None]
    latencies = [o.latency_s for o in outcomes if o.error is None]
    p50 = p95 = None
    if latencies:
        p50, p95 = (float(x) for x in np.percentile(latencies, [50, 95]))
    return EvalResult(
        scores=scores,
        outputs=[o.output for o in outcomes],
        feedback=[o.feedback for o in outcomes],
        errors=errors,  # type: ignore[arg-type]
        mean=sum(scored) / len(scored) if scored else None,
        ci=mean_ci(scored, seed=seed),
        n_scored=len(scored),
        n_failed=len(errors),
        usage=usage,
        latency_p50=p50,
        latency_p95=p95,
        candidate_id=key,
        reused=reused,
        seconds=seconds,
        outcomes=outcomes,
        variables=variables,
    )


def _examples(examples: Sequence[Any]) -> list[Any]:
    if isinstance(examples, (str, bytes)) or not isinstance(examples, Sequence):
        raise ArgumentError(f"examples must be a list of examples, got {type(examples).__name__}")
    if not examples:
        raise ArgumentError("no examples to evaluate: pass a non-empty list")
    return list(examples)


class _NoBar:
    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def advance(self, n: int) -> None:
        return None


class _CallbackBar(_NoBar):
    def __init__(self, callback: Callable[[int, int], None], total: int) -> None:
        self.callback, self.total, self.done = callback, total, 0

    def advance(self, n: int) -> None:
        if n:
            self.done += n
            self.callback(self.done, self.total)


class _RichBar(_NoBar):
    """Counts, rate and ETA on stderr; refreshed by rich at a fixed rate, not per example."""

    def __init__(self, total: int, description: str) -> None:
        from textgraph._progress import new_progress

        self.progress = new_progress(transient=True)
        self.task = self.progress.add_task(description, total=total, rate="")
        self.started = time.perf_counter()
        self.done = 0

    def __enter__(self) -> _RichBar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def advance(self, n: int) -> None:
        self.done += n
        elapsed = time.perf_counter() - self.started
        rate = f"{self.done / elapsed:.1f} ex/s" if elapsed > 0 else ""
        self.progress.update(self.task, advance=n, rate=rate)


def progress_enabled(progress: Progress) -> bool:
    if progress is None:
        return sys.stderr.isatty() and not os.environ.get("CI")
    return bool(progress)


def _bar(progress: Progress, total: int, description: str) -> _NoBar:
    if callable(progress) and not isinstance(progress, bool):
        return _CallbackBar(progress, total)
    if progress_enabled(progress):
        return _RichBar(total, description)
    return _NoBar()


def evaluate(
    program: Program,
    examples: Sequence[Any],
    metric: Metric,
    *,
    candidate: Candidate | Mapping[str, Any] | None = None,
    **options: Any,
) -> EvalResult:
    """One line: `tg.evaluate(program, examples, metric, max_concurrency=16)`."""
    return Evaluator(program, metric, **options).evaluate(examples, candidate)
