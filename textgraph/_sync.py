"""Run a coroutine to completion from synchronous code.

Works both in a plain script (no loop running) and inside a running event
loop such as Jupyter's, where asyncio.run() would fail: there the coroutine
runs on a fresh loop in a worker thread, with the caller's contextvars (so
`tg.use_engine` still applies).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    context = contextvars.copy_context()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="textgraph-sync") as pool:
        return pool.submit(context.run, asyncio.run, coro).result()
