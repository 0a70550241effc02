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


class StructuredOutputError(ParseError):
    """A StructuredLLMCall's reply did not validate against its output model, even after the
    repair turn. `reply` is the model's last reply, `problem` what was wrong with it."""

    def __init__(self, message: str, *, reply: str = "", problem: str = "") -> None:
        super().__init__(message)
        self.reply = reply
        self.problem = problem


class ConductorError(ParseError):
    """A MetaPrompt conductor's decision cannot be carried out: it named an expert that does
    not exist, left out the expert or question, or kept consulting after its last round."""


class StateDictError(TextgraphError, ValueError):
    """A state dict or saved file does not match the module it is loaded into."""


class ProviderError(EngineError):
    """A provider answered with an error status.

    `status` is the HTTP status (None for transport failures), `retryable`
    says whether trying again may help, `retry_after` is the provider's hint
    in seconds when it gave one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after


class AuthenticationError(ProviderError):
    """401/403: the key is missing, wrong, or lacks permission. Never retried."""


class RateLimitError(ProviderError):
    """429: too many requests or tokens; retried after the provider's Retry-After."""


class EngineTimeout(ProviderError):
    """The provider did not answer in time (connect, read or total timeout)."""


class MalformedResponse(ProviderError):
    """The provider's reply was not in its documented shape (bad JSON, no choices)."""


class TruncatedOutput(EngineError):
    """The model hit max_tokens before writing anything usable."""


class ContentFiltered(EngineError):
    """The provider withheld the output (content filter / refusal)."""


class BudgetExceeded(EngineError):
    """The next call would exceed a tg.Budget; raised before that call is made."""


class ReplayMiss(EngineError):
    """A replay cassette has no recorded response for this request."""


class EvaluationError(TextgraphError):
    """An evaluation cannot go on: more examples failed than max_errors allows."""


class CacheError(ConfigurationError):
    """The on-disk response cache cannot be used: the file is corrupt, has another schema, or
    is not a textgraph cache. The message names the file; `textgraph cache clear --path FILE`
    moves a broken file aside and starts an empty cache (or pass cache=False)."""


class UnknownModelError(ConfigurationError, ValueError):
    """A model string names no provider textgraph knows (a ValueError too, as TextGrad's
    get_engine raises for an unknown name)."""


class CallbackError(TextgraphError):
    """A Trainer callback raised; the message names the callback and the hook."""


class ImageError(ArgumentError):
    """An image cannot be used: the file is missing or empty, its bytes are not PNG, JPEG, GIF
    or WEBP, its media type is not one of those, or it is larger than the size limit."""


class ImagesNotSupported(ConfigurationError):
    """A request carrying images was given to an engine that reads text only (the local
    llama.cpp model, a ScriptedEngine without vision=True, a duck-typed engine that does not
    declare `supports_images = True`). Nothing was sent; see ImagesRefused for a remote model
    that answers so."""


class ImagesRefused(ProviderError, ImagesNotSupported):
    """A remote model answered that it cannot read images (a text-only model behind an
    OpenAI-compatible, Anthropic or Ollama API). Never retried, and like ImagesNotSupported it
    stops an evaluation or a run: every other request with images would fail the same way."""
