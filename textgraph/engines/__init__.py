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
from textgraph.engines.cache import ResponseCache
from textgraph.engines.context import default_engine, use_engine
from textgraph.engines.http import HTTPEngine, RetryPolicy
from textgraph.engines.managed import ManagedEngine
from textgraph.engines.registry import get_engine
from textgraph.engines.scripted import ScriptedCall, ScriptedEngine
from textgraph.engines.usage import Budget, UsageStats, register_price, track_usage
from textgraph.errors import CacheError

__all__ = [
    "PURPOSES",
    "Budget",
    "CacheError",
    "ChatRequest",
    "ChatResponse",
    "Engine",
    "HTTPEngine",
    "ManagedEngine",
    "Message",
    "Purpose",
    "ResponseCache",
    "ResponseFormat",
    "RetryPolicy",
    "ScriptedCall",
    "ScriptedEngine",
    "Usage",
    "UsageStats",
    "default_engine",
    "get_engine",
    "register_price",
    "track_usage",
    "use_engine",
]
