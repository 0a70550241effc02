"""ManagedEngine: replay, cache, budget, usage and recording around a provider.

    request -> replay? -> cache hit? -> budget reserve -> provider (retries,
    limits) -> usage + budget settle -> cache put -> record -> response

One place decides the order, so a cache hit never spends budget and a
refused call never reaches the provider.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from textgraph.engines.base import ChatRequest, ChatResponse, Engine
from textgraph.engines.cache import ResponseCache, request_key
from textgraph.engines.replay import Recorder, Replayer
from textgraph.engines.usage import Budget, UsageStats
from textgraph.errors import ArgumentError


class ManagedEngine(Engine):
    def __init__(
        self,
        inner: Engine,
        *,
        cache: ResponseCache | None = None,
        cache_salt: str | None = None,
        budget: Budget | None = None,
        record: str | os.PathLike[str] | None = None,
        replay: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(max_concurrency=None)
        self.inner = inner
        self.model_name = inner.model_name
        self.cache = cache
        self.cache_salt = cache_salt
        self.budget = budget
        self.recorder = Recorder(record) if record is not None else None
        self.replayer = Replayer(replay) if replay is not None else None
        self.usage = UsageStats()
        self.provider = getattr(inner, "provider", type(inner).__name__)
        self.base_url = getattr(inner, "base_url", None)

    @property
    def supports_images(self) -> bool:  # type: ignore[override]
        """What the wrapped engine says: the wrapper adds no reading of its own."""
        return getattr(self.inner, "supports_images", False) is True

    @property
    def image_limits(self) -> Any:
        """The wrapped provider's image limits (tg.get_engine(...).image_limits = ...)."""
        if not hasattr(self.inner, "image_limits"):
            raise AttributeError(
                f"{type(self.inner).__name__} has no image limits (it checks none before upload)"
            )
        return self.inner.image_limits

    @image_limits.setter
    def image_limits(self, limits: Any) -> None:
        if not hasattr(self.inner, "image_limits"):
            raise ArgumentError(
                f"{type(self.inner).__name__} checks no image limits; only the OpenAI and "
                "Anthropic engines do"
            )
        self.inner.image_limits = limits

    def key(self, request: ChatRequest, *, with_base_url: bool = True) -> str:
        """Cache key of the request as sent; cassettes leave out where it was served from."""
        return request_key(
            request,
            provider=self.provider,
            base_url=self.base_url if with_base_url else None,
            model=self.model_name,
            salt=self.cache_salt,
            settings=self.wire_settings(),
        )

    def wire_settings(self) -> dict[str, Any]:
        settings = getattr(self.inner, "wire_settings", None)
        return dict(settings()) if callable(settings) else {}

    async def _generate(self, request: ChatRequest) -> ChatResponse:
        if self.replayer is not None:
            response = self.replayer.answer(self.key(request, with_base_url=False), request)
            self.usage.record(request, response, self.model_name)
            return response
        key = self.key(request)
        if self.cache is not None:
            hit = await asyncio.to_thread(self.cache.get, key)
            if hit is not None:
                response = hit.model_copy(update={"cached": True})
                self.usage.record(request, response, self.model_name)
                return response
        reservation = self.budget.reserve(request, self.model_name) if self.budget else None
        try:
            response = await self.inner.generate(request)
        except BaseException:
            if self.budget is not None and reservation is not None:
                self.budget.settle(reservation, None)
            raise
        cost = self.usage.record(request, response, self.model_name)
        if self.budget is not None and reservation is not None:
            self.budget.settle(reservation, response, cost)
        if self.cache is not None:
            await asyncio.to_thread(self.cache.put, key, response)
        if self.recorder is not None:
            cassette_key = self.key(request, with_base_url=False)
            await asyncio.to_thread(self.recorder.write, cassette_key, request, response)
        return response

    async def aclose(self) -> None:
        closer = getattr(self.inner, "aclose", None)
        if closer is not None:
            await closer()

    def __repr__(self) -> str:
        extras = [f"cache={str(self.cache.path)!r}" if self.cache else "cache=False"]
        if self.budget:
            extras.append(repr(self.budget))
        if self.replayer:
            extras.append(f"replay={str(self.replayer.path)!r}")
        if self.recorder:
            extras.append(f"record={str(self.recorder.path)!r}")
        return f"ManagedEngine({self.inner!r}, {', '.join(extras)})"
