"""The shared machinery of HTTP providers: pooled client, timeouts, retries.

A provider subclass says how to build its request (`build_request`) and how
to read a successful body (`parse_body`) and an error body
(`error_message`). This class does the rest: one pooled `httpx.AsyncClient`
per event loop, connect/read/total timeouts, the concurrency limit and
optional rate limits, and retries with tenacity — 408/409/429/5xx,
connection failures, timeouts and malformed 200s (not JSON, empty, not the
documented shape: `MalformedResponse`) are retried with exponential backoff
and jitter, honouring `Retry-After` / `retry-after-ms`; 400/401/403/404/422
are raised at once with the provider's message and a hint. API keys, and
credentials in `base_url` (sent as basic auth, never shown), are redacted
from every message.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import re
import ssl
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import tenacity

from textgraph._media import human_size
from textgraph.engines.base import (
    LONE_SURROGATE,
    ChatRequest,
    ChatResponse,
    Engine,
    estimated_prompt_tokens,
)
from textgraph.engines.checks import check_int, check_number, check_optional_int, split_base_url
from textgraph.engines.content import ImagePart
from textgraph.engines.limits import RateLimiter
from textgraph.engines.redact import MIN_SECRET_LENGTH, redact
from textgraph.errors import (
    ArgumentError,
    AuthenticationError,
    EngineTimeout,
    ImagesRefused,
    MalformedResponse,
    ProviderError,
    RateLimitError,
    TextgraphError,
)

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 520, 522, 524, 529})
# Statuses a request with images gets when the model or the image is refused; never retried.
IMAGE_REFUSAL_STATUS = frozenset({400, 413, 415, 422})
# What servers say, whatever the status, when the model cannot read images: Ollama answers a
# text-only model with a 500 "this model is missing data required for image input", llama.cpp's
# server "image input is not supported", OpenAI "image_url is only supported by certain models".
_IMAGE_REFUSAL = re.compile(
    r"missing data required for image input|image input is not supported"
    r"|does not support (?:image input|images|vision|multimodal)"
    r"|(?:image_url|image input) is only supported",
    re.IGNORECASE,
)


def refuses_images(message: str) -> bool:
    """Whether a provider's error message says the model cannot take images."""
    return _IMAGE_REFUSAL.search(message) is not None


def image_note(status: int | None, images: tuple[ImagePart, ...], model: str) -> str:
    """What a refused request with images should tell the user to do."""
    carried = f"the request carried {len(images)} image(s)"
    if status == 413:
        total = human_size(sum(image.size for image in images))
        return f"{carried}, {total} in all; shrink them or send fewer"
    return f"{carried}; if {model!r} cannot read images, use a vision model or leave the image out"


Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: attempts, total time, and the backoff curve (seconds)."""

    max_attempts: int = 5
    max_total_s: float = 120.0
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    jitter_s: float = 0.5

    def __post_init__(self) -> None:
        check_int(
            "max_attempts",
            self.max_attempts,
            minimum=1,
            instead="pass max_attempts=1 to try once, without retries",
        )
        check_number(
            "max_total_s",
            self.max_total_s,
            positive=True,
            allow_inf=True,
            instead="give the seconds retrying may take in all (math.inf for no cap)",
        )
        for name in ("initial_backoff_s", "max_backoff_s", "jitter_s"):
            check_number(name, getattr(self, name), positive=False, instead="give seconds")


@dataclass(frozen=True)
class HTTPCall:
    url: str
    headers: dict[str, str]
    body: dict[str, Any]


POOL_SIZE = 8  # connections per httpx pool (see HTTPEngine._client)


@functools.cache
def _shared_ssl_context() -> ssl.SSLContext:
    """The default verifying context (certifi's CA bundle, as httpx builds it), built once
    per process: building one costs ~46 ms of CPU, and a client per pool shard would pay
    it 8 times for a concurrency of 64 (measured in bench/mipro.py)."""
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


class HTTPEngine(Engine):
    """Base class of engines that speak JSON over HTTP."""

    provider = "http"
    key_env: str | None = None

    def __init__(
        self,
        model: str,
        *,
        base_url: str,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        connect_timeout_s: float = 10.0,
        total_timeout_s: float | None = 300.0,
        retry: RetryPolicy | None = None,
        max_concurrency: int | None = 16,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        sleep: Sleep | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        default_max_tokens: int | None = None,
    ) -> None:
        super().__init__(max_concurrency=max_concurrency)
        for name, value in (("timeout_s", timeout_s), ("connect_timeout_s", connect_timeout_s)):
            check_number(name, value, positive=True, instead="give seconds")
        if total_timeout_s is not None:
            check_number(
                "total_timeout_s",
                total_timeout_s,
                positive=True,
                instead="give seconds, or pass None for no total cap",
            )
        check_optional_int(
            "default_max_tokens",
            default_max_tokens,
            minimum=1,
            none_means="the provider's default",
        )
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ArgumentError(
                f"retry must be a RetryPolicy(max_attempts=..., ...), got {type(retry).__name__}"
            )
        self.model_name = model
        # Credentials in the URL (http://user:KEY@host) are sent as basic auth and kept out
        # of base_url, so they never reach reprs, messages, logs, cache keys or run records.
        url, userinfo = split_base_url(base_url)
        self.base_url = url.rstrip("/")
        self._url_auth = httpx.BasicAuth(*userinfo) if userinfo else None
        self._api_key = api_key
        user, password = userinfo or ("", "")
        # A short user name ("me") is not a secret worth erasing from every message.
        self._secrets = tuple(
            secret
            for secret in (api_key, password, user if len(user) >= 8 else None)
            if secret and len(secret) >= MIN_SECRET_LENGTH
        )
        self.timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s)
        self.total_timeout_s = total_timeout_s
        self.retry = retry or RetryPolicy()
        self.limiter = RateLimiter(requests_per_minute, tokens_per_minute)
        self._sleep: Sleep = sleep if sleep is not None else asyncio.sleep
        self._transport = transport
        self.default_max_tokens = default_max_tokens
        self._clients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, list[httpx.AsyncClient]
        ] = weakref.WeakKeyDictionary()
        self._next_client = 0
        self.attempts: int = 0  # every HTTP attempt, retries included (for tests and stats)

    def wire_settings(self) -> dict[str, Any]:
        return {"default_max_tokens": self.default_max_tokens}

    # --- what a provider defines -------------------------------------------

    def build_request(self, request: ChatRequest) -> HTTPCall:
        raise NotImplementedError

    def parse_body(self, body: Any, request: ChatRequest) -> ChatResponse:
        raise NotImplementedError

    def error_message(self, body: Any) -> str:
        """The provider's own error text from an error body."""
        if isinstance(body, dict):
            error = body.get("error")
            if isinstance(error, dict) and error.get("message"):
                return str(error["message"])
            if isinstance(error, str):
                return error
        return json.dumps(body)[:300] if body is not None else ""

    def hint(self, status: int, message: str) -> str:
        if status in (401, 403):
            env = f" (or the {self.key_env} environment variable)" if self.key_env else ""
            return f"check the API key passed as api_key=...{env}"
        if status == 404:
            return f"check the model name {self.model_name!r} and base_url {self.base_url!r}"
        return "check the model name and request parameters"

    # --- the machinery -----------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        """Round-robin over pools of at most POOL_SIZE connections: httpcore checks every
        pooled connection on each request and release, so one pool of 64 costs ~12 ms of
        CPU per request (measured in bench/, evaluate workload) where 8 pools of 8 do not."""
        loop = asyncio.get_running_loop()
        clients = self._clients.get(loop)
        if clients is None or any(c.is_closed for c in clients):
            limit = max(self.max_concurrency or 100, 1)
            shards = 1 if self._transport is not None else -(-limit // POOL_SIZE)
            verify = _shared_ssl_context()  # one context for every shard: each costs ~46 ms
            clients = [
                httpx.AsyncClient(
                    timeout=self.timeout,
                    transport=self._transport,
                    limits=httpx.Limits(max_connections=-(-limit // shards)),
                    verify=verify,
                )
                for _ in range(shards)
            ]
            self._clients[loop] = clients
        self._next_client = (self._next_client + 1) % len(clients)
        return clients[self._next_client]

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        for client in self._clients.pop(loop, []):
            await client.aclose()

    async def _generate(self, request: ChatRequest) -> ChatResponse:
        policy = self.retry
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(policy.max_attempts)
            | tenacity.stop_after_delay(policy.max_total_s),
            wait=self._wait,
            retry=tenacity.retry_if_exception(
                lambda exc: isinstance(exc, ProviderError) and exc.retryable
            ),
            sleep=self._sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._attempt(request)
        raise AssertionError("unreachable: tenacity reraises the last error")

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, ProviderError) and exc.retry_after is not None:
            return min(exc.retry_after, self.retry.max_total_s)
        policy = self.retry
        backoff = policy.initial_backoff_s * 2 ** (state.attempt_number - 1)
        return min(backoff, policy.max_backoff_s) + random.uniform(0, policy.jitter_s)

    async def _attempt(self, request: ChatRequest) -> ChatResponse:
        call = self.build_request(request)
        await self.limiter.acquire(_estimate_tokens(request), sleep=self._sleep)
        self.attempts += 1
        started = time.perf_counter()
        auth: dict[str, Any] = {"auth": self._url_auth} if self._url_auth is not None else {}
        try:
            async with asyncio.timeout(self.total_timeout_s):
                raw = await self._client().post(
                    call.url, headers=call.headers, json=call.body, **auth
                )
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise EngineTimeout(
                f"{self.provider}: no answer from {self.base_url} in time "
                f"({type(exc).__name__}); retried automatically, raise timeout_s if the model "
                "is slow",
                retryable=True,
            ) from None
        except httpx.TransportError as exc:
            raise ProviderError(
                f"{self.provider}: connection to {self.base_url} failed "
                f"({type(exc).__name__}: {self._redact(str(exc))}); is the server running?",
                retryable=True,
            ) from None
        latency = time.perf_counter() - started
        if raw.status_code >= 400:
            error = self._status_error(raw)
            images = request.images()
            if images and (error.status in IMAGE_REFUSAL_STATUS or refuses_images(str(error))):
                # A model without vision (or an image it refuses) fails the request: say so,
                # and never retry (Ollama answers a text-only model with a 500). When the
                # server says the model reads no images, that holds for every other request.
                kind = ImagesRefused if refuses_images(str(error)) else type(error)
                raise kind(
                    f"{error} ({image_note(error.status, images, self.model_name)})",
                    status=error.status,
                ) from None
            raise error
        try:
            body = raw.json()
        except ValueError:
            raise MalformedResponse(
                f"{self.provider}: the response body is not JSON "
                f"(status {raw.status_code}, starts {self._redact(raw.text[:80])!r})",
                status=raw.status_code,
                retryable=True,
            ) from None
        response = self._parse(body, request)
        return response.model_copy(update={"latency": latency})

    def _parse(self, body: Any, request: ChatRequest) -> ChatResponse:
        """The provider's parse, with every unexpected shape made a retryable
        MalformedResponse: a 200 that is not the documented body is a server fault (a proxy,
        a wrong base_url, an overloaded gateway), not a reply, and never an empty text."""
        try:
            response = self.parse_body(body, request)
        except MalformedResponse as exc:
            if exc.retryable:
                raise
            raise MalformedResponse(self._redact(str(exc)), status=200, retryable=True) from None
        except TextgraphError:
            raise  # TruncatedOutput, ContentFiltered: typed answers, not malformed ones
        except Exception as exc:  # AttributeError, KeyError, TypeError, pydantic errors
            raise MalformedResponse(
                f"{self.provider}: the 200 response is not in the documented shape "
                f"({type(exc).__name__}: {self._redact(str(exc).splitlines()[0][:160])}; body "
                f"starts {self._redact(json.dumps(body, ensure_ascii=True)[:120])}); retried "
                f"automatically; check that base_url {self.base_url!r} is the provider's API",
                status=200,
                retryable=True,
            ) from None
        if not response.text:
            raise MalformedResponse(
                f"{self.provider}: the reply is empty (a 200 with no text, finish reason "
                f"{response.finish_reason!r}); retried automatically; if it persists, check "
                "the model and base_url",
                status=200,
                retryable=True,
            )
        if not response.text.isascii():
            text = _valid_unicode(response.text)
            if text is not response.text:
                response = response.model_copy(update={"text": text})
        return response

    def _status_error(self, raw: httpx.Response) -> ProviderError:
        status = raw.status_code
        try:
            body: Any = raw.json()
        except ValueError:
            body = raw.text[:300]
        message = self._redact(self.error_message(body) if not isinstance(body, str) else body)
        retry_after = _retry_after(raw.headers)
        error = body.get("error") if isinstance(body, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        if status == 429 and code == "insufficient_quota":
            return RateLimitError(
                f"{self.provider} 429: {message} (quota exhausted: add credit or use another "
                "key; not retried)",
                status=status,
            )
        if status in (401, 403):
            return AuthenticationError(
                f"{self.provider} {status}: {message}; {self.hint(status, message)}",
                status=status,
            )
        if status in RETRYABLE_STATUS or status >= 500:
            kind = RateLimitError if status == 429 else ProviderError
            return kind(
                f"{self.provider} {status}: {message or raw.reason_phrase}",
                status=status,
                retryable=True,
                retry_after=retry_after,
            )
        return ProviderError(
            f"{self.provider} {status}: {message}; {self.hint(status, message)}", status=status
        )

    def _redact(self, text: str) -> str:
        return redact(text, *self._secrets)

    def __repr__(self) -> str:
        key = "'***'" if self._api_key else "None"
        auth = ", url_credentials='***'" if self._url_auth is not None else ""
        return (
            f"{type(self).__name__}(model={self.model_name!r}, base_url={self.base_url!r}, "
            f"api_key={key}{auth})"
        )


def _valid_unicode(text: str) -> str:
    """Text with lone surrogates (from a JSON "\\ud83d" escape) replaced by U+FFFD, so the
    reply can be cached, recorded and printed; the same object when there are none."""
    return LONE_SURROGATE.sub("\ufffd", text) if LONE_SURROGATE.search(text) else text


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait from retry-after-ms or Retry-After (seconds or an HTTP date)."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(float(millis) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
        except (TypeError, ValueError):
            return None


def _estimate_tokens(request: ChatRequest) -> int:
    """A cheap upper-ish estimate for rate limiting: ~4 characters per token."""
    prompt = estimated_prompt_tokens(request) + 1
    return prompt + (request.max_tokens or 0)
