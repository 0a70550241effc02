"""Engines: everything that answers an LLM request.

The core depends only on the protocol in `base`; providers are injected.
"""

from textgraph.engines.base import (
    PURPOSES,
    ChatRequest,
    ChatResponse,
    Engine,
    Message,
    Purpose,
    ResponseFormat,
    Usage,
)
from textgraph.engines.context import default_engine, use_engine
from textgraph.engines.scripted import ScriptedCall, ScriptedEngine

__all__ = [
    "PURPOSES",
    "ChatRequest",
    "ChatResponse",
    "Engine",
    "Message",
    "Purpose",
    "ResponseFormat",
    "ScriptedCall",
    "ScriptedEngine",
    "Usage",
    "default_engine",
    "use_engine",
]
