"""Usage accounting, prices and budgets.

`UsageStats` adds up calls, tokens and cost per purpose. `Budget` is shared
by any number of engines (a forward and a backward model can spend one
budget); it reserves each call before it is made and refuses the call that
would exceed a limit with `BudgetExceeded`, so nothing is half done.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from textgraph.engines.base import ChatRequest, ChatResponse, Usage, estimated_prompt_tokens
from textgraph.engines.checks import check_int, check_number
from textgraph.engines.observe import CallObserver, observe_calls
from textgraph.errors import ArgumentError, BudgetExceeded

# USD per million tokens (input, output). Extend with register_price().
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-3.5-turbo": (0.50, 1.50),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-opus-4": (15.00, 75.00),
}


def register_price(model: str, input_per_million: float, output_per_million: float) -> None:
    """Add or override a model's price (USD per million tokens)."""
    if input_per_million < 0 or output_per_million < 0:
        raise ArgumentError("prices must be >= 0")
    PRICES[model] = (float(input_per_million), float(output_per_million))


def price_of(model: str | None) -> tuple[float, float] | None:
    """Exact name first, then the longest registered prefix (dated model names)."""
    if not model:
        return None
    name = model.split("/", 1)[-1]
    if name in PRICES:
        return PRICES[name]
    matches = [k for k in PRICES if name.startswith(k)]
    return PRICES[max(matches, key=len)] if matches else None


def list_cost(model: str | None, usage: Usage) -> float:
    """What these tokens cost at the model's price, cached or not (0.0 when unpriced)."""
    price = price_of(model)
    if price is None:
        return 0.0
    return (usage.prompt_tokens * price[0] + usage.completion_tokens * price[1]) / 1_000_000


def cost_of(model: str | None, response: ChatResponse) -> float:
    """What a call really cost: cache hits are free."""
    return 0.0 if response.cached else list_cost(model, response.usage)


@dataclass
class Counts:
    calls: int = 0
    cached_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, response: ChatResponse, cost: float) -> None:
        self.calls += 1
        self.cached_calls += int(response.cached)
        if not response.cached:
            self.prompt_tokens += response.usage.prompt_tokens
            self.completion_tokens += response.usage.completion_tokens
            self.cached_tokens += response.usage.cached_tokens
            self.cost_usd += cost


@dataclass
class UsageStats:
    total: Counts = field(default_factory=Counts)
    by_purpose: dict[str, Counts] = field(default_factory=dict)
    unpriced_calls: int = 0

    def record(self, request: ChatRequest, response: ChatResponse, model: str | None) -> float:
        cost = cost_of(model, response)
        if price_of(model) is None and not response.cached:
            self.unpriced_calls += 1
        self.total.add(response, cost)
        self.by_purpose.setdefault(request.purpose, Counts()).add(response, cost)
        return cost

    def add_record(
        self, purpose: str, prompt_tokens: int, completion_tokens: int, cached: bool, cost: float
    ) -> None:
        """Count a call read back from a trace."""
        response = ChatResponse(
            text="",
            cached=cached,
            usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens),
        )
        self.total.add(response, cost)
        self.by_purpose.setdefault(purpose, Counts()).add(response, cost)

    def as_dict(self) -> dict[str, object]:
        def row(c: Counts) -> dict[str, object]:
            return {
                "calls": c.calls,
                "cached_calls": c.cached_calls,
                "prompt_tokens": c.prompt_tokens,
                "completion_tokens": c.completion_tokens,
                "cost_usd": round(c.cost_usd, 6),
            }

        return {
            "total": row(self.total),
            "by_purpose": {k: row(v) for k, v in sorted(self.by_purpose.items())},
            "unpriced_calls": self.unpriced_calls,
        }


class Budget:
    """Limits on calls, tokens and dollars across every engine that shares it.

    Tokens and cost are checked before a call against what was spent plus
    the call's estimate (prompt characters / 4 plus its max_tokens); set
    max_tokens on requests for a hard bound on completion length.
    """

    def __init__(
        self,
        max_calls: int | None = None,
        max_tokens: int | None = None,
        max_cost_usd: float | None = None,
    ) -> None:
        for name, value in (("max_calls", max_calls), ("max_tokens", max_tokens)):
            if value is not None:
                check_int(
                    f"Budget {name}", value, minimum=0, instead=f"pass None for no {name} limit"
                )
        if max_cost_usd is not None:
            check_number(
                "Budget max_cost_usd",
                max_cost_usd,
                positive=False,
                instead="give US dollars (e.g. 5.0), or pass None for no cost limit",
            )
        self.max_calls, self.max_tokens, self.max_cost_usd = max_calls, max_tokens, max_cost_usd
        self.calls = 0
        self.tokens = 0
        self.cost_usd = 0.0
        self._lock = threading.Lock()

    def reserve(self, request: ChatRequest, model: str | None) -> tuple[int, float]:
        """Claim room for one call or raise BudgetExceeded; returns the reservation."""
        tokens = estimated_prompt_tokens(request) + (request.max_tokens or 0)
        price = price_of(model) or (0.0, 0.0)
        cost = (tokens * max(price)) / 1_000_000
        with self._lock:
            if self.max_calls is not None and self.calls + 1 > self.max_calls:
                raise BudgetExceeded(self._message("calls", self.calls, self.max_calls, request))
            if self.max_tokens is not None and self.tokens + tokens > self.max_tokens:
                raise BudgetExceeded(
                    self._message(
                        "tokens",
                        self.tokens,
                        self.max_tokens,
                        request,
                        f" (this call needs about {tokens})",
                    )
                )
            if self.max_cost_usd is not None and self.cost_usd + cost > self.max_cost_usd:
                raise BudgetExceeded(
                    self._message("cost_usd", round(self.cost_usd, 4), self.max_cost_usd, request)
                )
            self.calls += 1
            self.tokens += tokens
            self.cost_usd += cost
        return tokens, cost

    def settle(
        self,
        reservation: tuple[int, float],
        response: ChatResponse | None,
        actual_cost: float = 0.0,
    ) -> None:
        """Replace the estimate with what the call really used (or release it on failure)."""
        tokens, cost = reservation
        with self._lock:
            self.tokens -= tokens
            self.cost_usd -= cost
            if response is None:
                self.calls -= 1
                return
            self.tokens += response.usage.total_tokens
            self.cost_usd += actual_cost

    def _message(
        self, what: str, spent: object, limit: object, request: ChatRequest, extra: str = ""
    ) -> str:
        return (
            f"budget exhausted: {what} spent {spent} of {limit}{extra}; refused the "
            f"{request.purpose} call before sending it. Raise tg.Budget({_arg(what)}=...) "
            "or resume later."
        )

    def __repr__(self) -> str:
        return (
            f"Budget(calls={self.calls}/{self.max_calls}, tokens={self.tokens}/"
            f"{self.max_tokens}, cost_usd={self.cost_usd:.4f}/{self.max_cost_usd})"
        )


def _arg(what: str) -> str:
    return {"calls": "max_calls", "tokens": "max_tokens", "cost_usd": "max_cost_usd"}[what]


class _UsageObserver(CallObserver):
    def __init__(self) -> None:
        self.usage = UsageStats()

    def after(
        self,
        request: ChatRequest,
        response: ChatResponse,
        state: object,
        started: float,
        ended: float,
        model: str | None = None,
    ) -> None:
        self.usage.record(request, response, response.model or model)


@contextlib.contextmanager
def track_usage() -> Iterator[UsageStats]:
    """Count every LLM call made inside the block, across all engines, by purpose.

    `with tg.engines.track_usage() as usage: ...` then `usage.total.calls`,
    `usage.total.cost_usd`, `usage.by_purpose`. Blocks nest; each counts its own.
    """
    observer = _UsageObserver()
    with observe_calls(observer):
        yield observer.usage
