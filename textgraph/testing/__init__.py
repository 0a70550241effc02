"""Test doubles and local provider-compatible servers (real sockets, fault injection)."""

from textgraph.engines.scripted import ScriptedEngine
from textgraph.testing.servers import Fault, LLMTestServer

__all__ = ["Fault", "LLMTestServer", "ScriptedEngine"]
