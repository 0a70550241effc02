"""Rate limits, with an injected clock and sleep (no wall time)."""

from __future__ import annotations

import asyncio

import pytest

import textgraph as tg
from textgraph.engines.limits import RateLimiter

pytest_plugins = ["textgraph.testing.fixtures"]


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 3))
        self.now += seconds


def test_requests_per_minute_spaces_calls_once_the_burst_is_spent():
    fake = FakeTime()
    limiter = RateLimiter(requests_per_minute=2, clock=fake.clock)

    async def run() -> None:
        for _ in range(4):
            await limiter.acquire(1, sleep=fake.sleep)

    asyncio.run(run())
    assert fake.sleeps == [30.0, 30.0]  # two in the initial burst, then one per 30 s


def test_tokens_per_minute_waits_for_enough_tokens():
    fake = FakeTime()
    limiter = RateLimiter(tokens_per_minute=100, clock=fake.clock)

    async def run() -> None:
        await limiter.acquire(80, sleep=fake.sleep)
        await limiter.acquire(50, sleep=fake.sleep)  # 20 left, 30 more needed at 100/60 per s

    asyncio.run(run())
    assert fake.sleeps == [18.0]


class Stop(Exception):
    pass


def test_engine_applies_its_rate_limit_before_sending(llm_server):
    server = llm_server()
    sleeps: list[float] = []

    async def refuse_to_wait(seconds: float) -> None:
        sleeps.append(seconds)
        raise Stop

    engine = tg.get_engine(
        "openai/t",
        base_url=server.openai_base_url,
        cache=False,
        requests_per_minute=1,
        sleep=refuse_to_wait,
    )
    request = tg.engines.ChatRequest(messages=[{"role": "user", "content": "hi"}])
    engine.generate_sync(request)
    assert sleeps == [] and server.request_count == 1
    with pytest.raises(Stop):
        engine.generate_sync(request)  # must wait ~60 s for the bucket: never sent
    assert len(sleeps) == 1 and 59 < sleeps[0] <= 60 and server.request_count == 1


def test_limiter_works_across_event_loops():
    fake = FakeTime()
    limiter = RateLimiter(requests_per_minute=1, clock=fake.clock)

    async def yielding_sleep(seconds: float) -> None:
        await fake.sleep(seconds)
        await asyncio.sleep(0)  # let the other waiter run into the held lock

    async def contend() -> None:  # waiters queue on the lock: it must be this loop's
        await asyncio.gather(*(limiter.acquire(1, sleep=yielding_sleep) for _ in range(3)))

    asyncio.run(contend())
    asyncio.run(contend())  # a second loop, as generate_sync makes
    assert fake.sleeps == [60.0] * 5  # one burst token, then one per minute
