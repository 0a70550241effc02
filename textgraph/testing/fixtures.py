"""pytest fixtures: add `pytest_plugins = ["textgraph.testing.fixtures"]` to a conftest.py.

def test_my_pipeline(llm_server):
    server = llm_server(lambda request: "scripted reply", latency=0.05)
    engine = tg.get_engine("openai/test", base_url=server.openai_base_url, cache=False)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from textgraph.engines.scripted import ScriptedEngine
from textgraph.testing.servers import LLMTestServer


@pytest.fixture
def llm_server() -> Iterator[Callable[..., LLMTestServer]]:
    """A factory of started LLMTestServers, all stopped when the test ends."""
    servers: list[LLMTestServer] = []

    def start(responder: Any = None, *, vision: bool = False, **options: Any) -> LLMTestServer:
        """vision=True: the server's model reads images (else it answers them with a 400)."""
        engine = ScriptedEngine(responder or (lambda request: "ok"), vision=vision)
        server = LLMTestServer(engine, **options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
