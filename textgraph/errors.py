"""The exception hierarchy: every error textgraph raises is a TextgraphError.

Messages say what was wrong and what to do about it. They never contain
secrets (API keys) — engines redact before raising.
"""

from __future__ import annotations


class TextgraphError(Exception):
    """Base class of every error raised by textgraph."""


class ArgumentError(TextgraphError, TypeError, ValueError):
    """A bad argument: wrong type, missing description, empty value.

    It is both a TypeError and a ValueError so ordinary Python handlers
    catch it whichever way they think of the mistake.
    """


class GraphError(TextgraphError):
    """The computation graph is malformed (a cycle, a foreign node)."""


class ConfigurationError(TextgraphError):
    """Something needed is not configured (no engine, missing extra)."""


class EngineError(TextgraphError):
    """An engine failed to produce a response."""


class ParseError(TextgraphError):
    """A model's reply could not be parsed into the requested format."""


class StateDictError(TextgraphError, ValueError):
    """A state dict or saved file does not match the module it is loaded into."""
