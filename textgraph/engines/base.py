"""The engine protocol and the models that cross it.

Every LLM call in textgraph is one `ChatRequest` in and one `ChatResponse`
out through `await engine.generate(request)`. Requests say what they are for
(`purpose`) and which variables they concern, so traces, budgets and test
doubles can tell a forward call from a backward one. When the framework
needs a format back, `response_format` states it in machine-readable form.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Coroutine
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from textgraph.engines.checks import check_int
from textgraph.engines.content import (
    AnyPart,
    ContentPart,
    ImagePart,
    ToolResultPart,
    ToolUsePart,
    parts_text,
)
from textgraph.engines.limits import ConcurrencyLimit
from textgraph.engines.observe import observed
from textgraph.errors import ArgumentError, ImagesNotSupported

# What a call is for: an open label. The built-ins below are what textgraph's own ops,
# losses, backward and optimizers send; a new optimizer labels its calls with its own
# words ("propose", "reflect", ...) and traces, budgets and test doubles still see them.
Purpose = str
PURPOSES: tuple[str, ...] = (
    "forward",
    "loss",
    "backward",
    "optimizer",
    "reduce",
    "validation",
    "propose",
    "reflect",
    "traced",
)


class Message(BaseModel):
    """One turn. `content` is its text; a user turn may instead be given as `parts` (text and
    images in reading order), and then `content` is derived from them: the text with each
    image as its one-line description, so whatever reads text never sees image bytes. A tool
    call the model made (`ToolUsePart`) is an assistant turn's part, and its answer
    (`ToolResultPart`, first in the content) a user turn's."""

    model_config = ConfigDict(frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str = ""
    parts: tuple[ContentPart, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _content_from_parts(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("parts") and "content" not in values:
            parts = tuple(
                p if isinstance(p, AnyPart) else _PART.validate_python(_text_by_default(p))
                for p in values["parts"]
            )
            values = {**values, "parts": parts, "content": parts_text(parts)}
        return values

    @model_validator(mode="after")
    def _check_parts(self) -> Message:
        if not self.parts:
            return self
        if self.role != "user" and any(isinstance(p, ImagePart) for p in self.parts):
            raise ValueError(
                f"images go in user messages only (providers refuse them in {self.role} "
                "messages); put the image in the user turn"
            )
        if self.role != "assistant" and any(isinstance(p, ToolUsePart) for p in self.parts):
            raise ValueError("a tool call (ToolUsePart) is the model's: an assistant turn's part")
        results = [isinstance(p, ToolResultPart) for p in self.parts]
        if any(results) and (self.role != "user" or results != sorted(results, reverse=True)):
            raise ValueError(
                "tool results (ToolResultPart) go first in a user turn, before any other part "
                "(Anthropic refuses text before a tool_result)"
            )
        if self.content != parts_text(self.parts):
            raise ValueError(
                "a message given as parts derives its content from them; pass parts=... "
                "without content=..."
            )
        return self

    @property
    def images(self) -> tuple[ImagePart, ...]:
        return tuple(p for p in self.parts if isinstance(p, ImagePart))


def _text_by_default(value: Any) -> Any:
    """A part given as a dict without "type" is text, as it always was."""
    return {**value, "type": "text"} if isinstance(value, dict) and "type" not in value else value


_PART: TypeAdapter[AnyPart] = TypeAdapter(ContentPart)


class ResponseFormat(BaseModel):
    """What shape the reply must have.

    text: free text. json_schema: a JSON object valid against `json_schema`.
    delimited: the answer sits between `start` and `end` markers.
    """

    model_config = ConfigDict(frozen=True)

    type: Literal["text", "json_schema", "delimited"] = "text"
    name: str | None = None
    json_schema: dict[str, Any] | None = None
    start: str | None = None
    end: str | None = None

    @model_validator(mode="after")
    def _check_fields(self) -> ResponseFormat:
        if self.type == "json_schema" and not self.json_schema:
            raise ValueError("response_format type 'json_schema' needs json_schema")
        if self.type == "delimited" and not (self.start and self.end):
            raise ValueError("response_format type 'delimited' needs start and end markers")
        return self


class ChatRequest(BaseModel):
    messages: list[Message] = Field(min_length=1)
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = Field(default=None, gt=0)
    stop: list[str] | None = None
    seed: int | None = None
    response_format: ResponseFormat | None = None
    purpose: str = Field(default="forward", min_length=1, max_length=64)
    variable_ids: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_prompts(cls, system: str | None, user: str, **fields: Any) -> ChatRequest:
        """A request of an optional system message and one user message."""
        messages = [Message(role="system", content=system)] if system is not None else []
        messages.append(Message(role="user", content=user))
        return cls(messages=messages, **fields)

    def prompt_text(self) -> str:
        """All message contents joined: what rules and token counts look at (an image is its
        one-line description, never its bytes)."""
        return "\n\n".join(m.content for m in self.messages)

    def images(self) -> tuple[ImagePart, ...]:
        """Every image part of the request, in message order."""
        return tuple(image for m in self.messages for image in m.images)


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class ChatResponse(BaseModel):
    text: str
    model: str | None = None
    usage: Usage = Field(default_factory=Usage)
    latency: float = 0.0  # seconds from request to response
    finish_reason: str | None = "stop"
    cached: bool = False
    # The tool call the reply was, when it was one (Anthropic's forced tool for json_schema);
    # `text` is then its input as JSON. Left out of dumps when None, so cache rows and
    # cassettes of every other reply are as they were.
    tool_use: ToolUsePart | None = Field(default=None, exclude_if=lambda value: value is None)

    def repair_turns(self, repair: str) -> tuple[Message, Message]:
        """The two turns that ask for this reply again, fixed: the reply as the assistant turn,
        then `repair` (what was wrong and what to send) as the user turn. A tool call goes back
        as the tool_use it was, answered by an error tool_result for its id (the shape
        Anthropic requires); any other reply as its text, then the repair as plain text."""
        if self.tool_use is None:
            return Message(role="assistant", content=self.text), Message(
                role="user", content=repair
            )
        answer = ToolResultPart(tool_use_id=self.tool_use.id, content=repair, is_error=True)
        return (
            Message(role="assistant", parts=(self.tool_use,)),
            Message(role="user", parts=(answer,)),
        )


class Engine(abc.ABC):
    """Anything that answers chat requests.

    Subclasses implement `_generate`; `generate` adds the per-engine
    concurrency limit. The core only ever calls `generate`, so a duck-typed
    object with an async `generate(request)` works too.
    """

    model_name: str = "engine"
    # Whether requests with image parts may be sent here. Text-only by default: an engine
    # that cannot read images refuses them (ImagesNotSupported) instead of dropping them.
    supports_images: bool = False

    def __init__(self, *, max_concurrency: int | None = None) -> None:
        if max_concurrency is not None:
            check_int(
                "max_concurrency", max_concurrency, minimum=1, instead="pass None for no limit"
            )
        self.max_concurrency = max_concurrency
        # One limit for the engine, across every thread and event loop that uses it.
        self._limit = ConcurrencyLimit(max_concurrency) if max_concurrency is not None else None

    def generate(self, request: ChatRequest) -> Coroutine[Any, Any, ChatResponse]:
        """`await engine.generate(request)`. The argument is checked at once, so TextGrad's
        `engine.generate("text")` fails here instead of leaving a coroutine nobody awaits."""
        if not isinstance(request, ChatRequest):
            plain = isinstance(request, str)
            raise ArgumentError(
                f"generate takes a ChatRequest, got {type(request).__name__}"
                + (
                    "; for plain text write engine.generate_sync(text).text (or "
                    "`await engine.generate(ChatRequest.from_prompts(None, text))`)"
                    if plain
                    else ""
                )
            )
        return self._generate_checked(request)

    def __call__(self, prompt: str, *, system_prompt: str | None = None) -> str:
        """TextGrad's `engine(prompt, system_prompt=...)`: the reply's text, blocking."""
        if not isinstance(prompt, str):
            raise ArgumentError(
                f"engine(prompt) takes a str, got {type(prompt).__name__}; for a ChatRequest "
                "use `await engine.generate(request)` or engine.generate_sync(request)"
            )
        return self.generate_sync(prompt, system_prompt=system_prompt).text

    async def _generate_checked(self, request: ChatRequest) -> ChatResponse:
        check_request_text(request)
        check_request_images(self, request)
        return await observed(request, lambda: self._limited(request), self.model_name)

    async def _limited(self, request: ChatRequest) -> ChatResponse:
        limit = getattr(self, "_limit", None)  # None too for subclasses that skip __init__
        if limit is None:
            return await self._generate(request)
        await limit.acquire()
        try:
            return await self._generate(request)
        finally:
            limit.release()

    def wire_settings(self) -> dict[str, Any]:
        """Engine settings that change what is sent for a request beyond the request itself
        and the model (a default max_tokens, a repeat penalty): part of the cache key, so an
        engine is never served a reply made under other settings. None means "not set"."""
        return {}

    @abc.abstractmethod
    async def _generate(self, request: ChatRequest) -> ChatResponse: ...

    def generate_sync(
        self, request: ChatRequest | str, *, system_prompt: str | None = None
    ) -> ChatResponse:
        """Blocking convenience form of `generate`. Plain text is one user message (with
        `system_prompt`, as TextGrad's `engine(prompt, system_prompt=...)`); the reply's
        text is `.text`."""
        from textgraph._sync import run_sync

        if isinstance(request, str):
            request = ChatRequest.from_prompts(system_prompt, request)
        elif system_prompt is not None:
            raise ArgumentError(
                "system_prompt= goes with a plain-text prompt; a ChatRequest carries its own "
                "system message"
            )
        if not isinstance(request, ChatRequest):
            raise ArgumentError(
                f"generate_sync takes a ChatRequest or a str, got {type(request).__name__}"
            )
        return run_sync(self.generate(request))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model_name!r})"


async def call_engine(engine: Engine, request: ChatRequest) -> ChatResponse:
    """The one path every framework call takes, so observers (traces, usage, budgets) see
    duck-typed engines (any object with an async `generate`) as they see Engine subclasses."""
    if isinstance(engine, Engine):
        return await engine.generate(request)
    check_request_text(request)
    check_request_images(engine, request)
    model = getattr(engine, "model_name", None)
    return await observed(
        request, lambda: engine.generate(request), model if isinstance(model, str) else None
    )


LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


def check_request_text(request: ChatRequest) -> None:
    """Refuse text that is not valid Unicode before anything is sent or cached.

    A lone surrogate (U+D800..U+DFFF, usually from bytes decoded with
    errors="surrogateescape" or a JSON "\\ud800" escape) cannot be encoded as UTF-8, so no
    provider, cache or cassette can take it. ASCII text (the common case) is checked in C.
    """
    texts = [(f"message {i} ({m.role})", m.content) for i, m in enumerate(request.messages)]
    texts += [(f"stop string {i}", s) for i, s in enumerate(request.stop or [])]
    for where, text in texts:
        if text.isascii():
            continue
        found = LONE_SURROGATE.search(text)
        if found is not None:
            at = found.start()
            raise ArgumentError(
                f"the {request.purpose} request's {where} contains a lone surrogate "
                f"{found.group()!r} at character {at} (near {text[max(0, at - 20) : at]!r}), "
                "which is not valid Unicode and cannot be sent; it usually comes from bytes "
                "decoded with errors='surrogateescape'. Clean the text first, e.g. "
                "text.encode('utf-8', 'replace').decode('utf-8')"
            )


# A rough prompt-token cost of one image for estimates made before a call (rate limits,
# budget reservations): about what Anthropic and OpenAI charge for a 1-megapixel image.
IMAGE_TOKEN_ESTIMATE = 1600


def estimated_prompt_tokens(request: ChatRequest) -> int:
    """About 4 characters per token, plus IMAGE_TOKEN_ESTIMATE per image."""
    chars = sum(len(m.content) for m in request.messages)
    return chars // 4 + IMAGE_TOKEN_ESTIMATE * len(request.images())


def check_request_images(engine: object, request: ChatRequest) -> None:
    """Refuse to send images to an engine that does not declare `supports_images = True`."""
    images = request.images()
    if not images or getattr(engine, "supports_images", False) is True:
        return
    while isinstance(getattr(engine, "inner", None), Engine):  # name the engine, not a wrapper
        engine = engine.inner  # type: ignore[attr-defined]
    name = getattr(engine, "model_name", None) or type(engine).__name__
    raise ImagesNotSupported(
        f"the {request.purpose} request carries {len(images)} image(s) "
        f"({', '.join(i.description for i in images)}) but engine {type(engine).__name__} "
        f"({name!r}) reads text only; nothing was sent. Use an engine that accepts images: "
        "an OpenAI-compatible, Anthropic or Ollama engine with a vision model (e.g. "
        "tg.get_engine('openai/gpt-4o-mini')), or in tests ScriptedEngine(..., vision=True). "
        "A duck-typed engine that reads images declares supports_images = True"
    )


def is_engine(obj: object) -> bool:
    return isinstance(obj, Engine) or callable(getattr(obj, "generate", None))
