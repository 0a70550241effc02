"""Concurrency and rate limits that hold for a whole engine, across threads and event loops.

An engine is shared by many event loops: `generate_sync` runs a fresh loop per call, and sync
user code (a sync `loss_fn` or `forward`) runs calls in worker threads with loops of their
own. asyncio primitives belong to one loop, so a per-loop semaphore lets every loop have its
own `max_concurrency` requests in flight. The limits here count under a `threading.Lock`
and park waiters on futures of their own loop, so one limit holds everywhere while waiting
never blocks a loop.

Requests-per-minute and tokens-per-minute limits are token buckets: each refills
continuously at its per-minute rate and holds at most one minute's worth. `acquire` waits
(with the engine's injectable sleep) until both buckets can pay for the request.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable

from textgraph.engines.checks import check_int, check_optional_number


class _Waiter:
    __slots__ = ("future", "granted", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
        self.loop, self.future, self.granted = loop, future, False


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class ConcurrencyLimit:
    """At most `limit` holders at once, across every thread and event loop; first come,
    first served.

    `await acquire()` then `release()` (in a finally). The uncontended path is one lock
    acquire and no await. A waiter on the releasing thread's own loop is woken directly;
    one on another loop through `call_soon_threadsafe`. A slot handed to a waiter that is
    cancelled before it resumes is passed on, so cancellation never leaks a slot.
    """

    def __init__(self, limit: int) -> None:
        check_int("max_concurrency", limit, minimum=1, instead="pass None for no limit")
        self.limit = limit
        self._lock = threading.Lock()
        self._active = 0
        self._waiters: deque[_Waiter] = deque()

    @property
    def active(self) -> int:
        """How many hold the limit now (granted slots not yet resumed included)."""
        return self._active

    async def acquire(self) -> None:
        with self._lock:
            if self._active < self.limit and not self._waiters:
                self._active += 1
                return
            loop = asyncio.get_running_loop()
            waiter = _Waiter(loop, loop.create_future())
            self._waiters.append(waiter)
        try:
            await waiter.future
        except BaseException:
            with self._lock:
                owned = waiter.granted
                if not owned:
                    try:
                        self._waiters.remove(waiter)
                    except ValueError:  # release() already skipped it as cancelled
                        pass
            if owned:  # a slot was handed over as we were cancelled: pass it on
                self.release()
            raise

    def release(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        with self._lock:
            while self._waiters:
                waiter = self._waiters.popleft()
                if waiter.future.done():  # cancelled: it removes nothing and owns nothing
                    continue
                waiter.granted = True  # the slot moves to the waiter; _active is unchanged
                if waiter.loop is running:
                    waiter.future.set_result(None)
                    return
                try:
                    waiter.loop.call_soon_threadsafe(_wake, waiter.future)
                except RuntimeError:  # its loop is closed: nobody is left to resume
                    waiter.granted = False
                    continue
                return
            self._active -= 1


class _Bucket:
    def __init__(self, per_minute: float, clock: Callable[[], float]) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.level = self.capacity
        self.clock = clock
        self.updated = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` is available (0 when it already is)."""
        self._refill()
        amount = min(amount, self.capacity)  # a single huge request may pass once full
        return 0.0 if self.level >= amount else (amount - self.level) / self.rate

    def take(self, amount: float) -> None:
        self.level -= min(amount, self.capacity)


class RateLimiter:
    def __init__(
        self,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        check_optional_number(
            "requests_per_minute", requests_per_minute, positive=True, none_means="no rate limit"
        )
        check_optional_number(
            "tokens_per_minute", tokens_per_minute, positive=True, none_means="no token limit"
        )
        self.requests = _Bucket(requests_per_minute, clock) if requests_per_minute else None
        self.tokens = _Bucket(tokens_per_minute, clock) if tokens_per_minute else None
        # The buckets are shared by every thread and loop; checking and paying is atomic.
        self._thread_lock = threading.Lock()
        # Waiters queue per event loop (first come, first served within a loop).
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock]
        self._locks = weakref.WeakKeyDictionary()

    async def acquire(self, tokens: int, *, sleep: Callable[[float], Awaitable[None]]) -> None:
        if self.requests is None and self.tokens is None:
            return
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        async with lock:
            while True:
                with self._thread_lock:
                    wait = max(
                        self.requests.wait_for(1) if self.requests else 0.0,
                        self.tokens.wait_for(tokens) if self.tokens else 0.0,
                    )
                    if wait <= 0:
                        if self.requests:
                            self.requests.take(1)
                        if self.tokens:
                            self.tokens.take(tokens)
                        return
                await sleep(wait)
