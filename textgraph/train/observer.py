"""The run's view of every LLM call: trace line, usage, and the run budget."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from textgraph.engines.base import ChatRequest, ChatResponse
from textgraph.engines.observe import CallObserver
from textgraph.engines.usage import Budget, UsageStats
from textgraph.errors import BudgetExceeded
from textgraph.runs import RunDir, TraceRecord, append_jsonl

if TYPE_CHECKING:
    from textgraph.train.trainer import Trainer


class RunObserver(CallObserver):
    """Traces every call of the run, counts its usage, and applies the run's budget.

    Calls are priced by the engine's model (requests usually leave theirs unset)."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.usage = UsageStats()
        self.by_step: dict[int, tuple[int, int, float]] = {}  # step -> calls, tokens, cost
        self.t0 = time.perf_counter()

    @property
    def budget(self) -> Budget | None:
        return self.trainer.budget

    @property
    def run(self) -> RunDir | None:
        return self.trainer._run

    def before(self, request: ChatRequest, model: str | None = None) -> object:
        return self.budget.reserve(request, model) if self.budget else None

    def after(
        self,
        request: ChatRequest,
        response: ChatResponse,
        state: object,
        started: float,
        ended: float,
        model: str | None = None,
    ) -> None:
        cost = self.usage.record(request, response, response.model or model)
        step = self.trainer._step_no
        calls, tokens, spent = self.by_step.get(step, (0, 0, 0.0))
        used = response.usage.prompt_tokens + response.usage.completion_tokens
        self.by_step[step] = (calls + 1, tokens + used, spent + cost)
        if self.budget is not None and state is not None:
            self.budget.settle(state, None if response.cached else response, cost)  # type: ignore[arg-type]
        self._trace(request, response, None, started, ended, model, cost)

    def failed(
        self,
        request: ChatRequest,
        error: BaseException,
        state: object,
        started: float,
        ended: float,
        model: str | None = None,
    ) -> None:
        if self.budget is not None and state is not None:
            self.budget.settle(state, None)  # type: ignore[arg-type]
        if not isinstance(error, BudgetExceeded):
            self._trace(request, None, error, started, ended, model)

    def _trace(
        self,
        request: ChatRequest,
        response: ChatResponse | None,
        error: BaseException | None,
        started: float,
        ended: float,
        model: str | None,
        cost: float = 0.0,
    ) -> None:
        run = self.run
        if run is None:
            return
        record = TraceRecord(
            step=self.trainer._step_no,
            phase=self.trainer._phase,
            purpose=request.purpose,
            variable_ids=request.variable_ids,
            operation=request.metadata.get("operation"),
            model=(response.model if response else None) or model,
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
