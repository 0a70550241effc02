"""Ask an engine for a reply in a given format, parse it, repair once.

Models sometimes wrap JSON in code fences, add chatter, or forget the
markers. Each helper parses leniently, and on failure sends one repair
turn that quotes the problem. The caller decides what a final failure means
(backward falls back to free-text calls; the optimizer keeps the old value).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from pydantic.types import StringConstraints

from textgraph.engines.base import (
    ChatRequest,
    ChatResponse,
    Engine,
    Message,
    ResponseFormat,
    call_engine,
)
from textgraph.prompts import render_file
from textgraph.variable import Conversation

NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
_FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")


@dataclass
class Reply:
    """Outcome of a formatted call: the parsed value, or the reason it failed."""

    value: Any
    text: str
    conversation: Conversation
    error: str | None = None
    responses: tuple[ChatResponse, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None


def conversation_of(messages: list[Message], reply: str) -> Conversation:
    return (
        *({"role": m.role, "content": m.content} for m in messages),
        {"role": "assistant", "content": reply},
    )


async def call_text(engine: Engine, request: ChatRequest) -> Reply:
    response = await call_engine(engine, request)
    return Reply(
        value=response.text,
        text=response.text,
        conversation=conversation_of(request.messages, response.text),
        responses=(response,),
    )


def json_schema_for(keys: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {key: {"type": "string"} for key in keys},
        "required": list(keys),
        "additionalProperties": False,
    }


@functools.lru_cache(maxsize=64)
def _json_model(keys: tuple[str, ...]) -> type[BaseModel]:
    """Building a pydantic model costs ~0.5 ms; keys are var_1..var_n, so cache them."""
    fields: dict[str, Any] = {key: (NonEmpty, ...) for key in keys}
    return create_model(  # type: ignore[call-overload]
        "StructuredReply", __config__=ConfigDict(extra="ignore"), **fields
    )


def load_json_object(text: str) -> Any:
    """The JSON object in a reply, tolerating code fences and chatter around it."""
    stripped = _FENCE.sub("", text.strip())
    start, end = stripped.find("{"), stripped.rfind("}")
    if start < 0 or end <= start:
        raise ValueError("the reply contains no JSON object")
    try:
        return json.loads(stripped[start : end + 1], strict=False)  # raw newlines in strings
    except json.JSONDecodeError as exc:
        raise ValueError(f"the JSON object is malformed ({exc.msg} at char {exc.pos})") from exc


def validation_problems(exc: ValidationError) -> str:
    """A pydantic error as one line per field: what the repair turn quotes back."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'object'}: {err['msg']}" for err in exc.errors()
    )


def parse_json_object(text: str, keys: list[str]) -> dict[str, str]:
    """Parse a JSON object with the given string keys, tolerating fences and chatter."""
    data = load_json_object(text)
    try:
        return _json_model(tuple(keys)).model_validate(data).model_dump()
    except ValidationError as exc:
        raise ValueError(
            f"the JSON object does not match the schema ({validation_problems(exc)})"
        ) from exc


async def call_json(engine: Engine, request: ChatRequest, keys: list[str]) -> Reply:
    """One call expecting a JSON object with `keys` (all strings), one repair turn."""
    request = request.model_copy(
        update={
            "response_format": ResponseFormat(
                type="json_schema", name="feedback", json_schema=json_schema_for(keys)
            )
        }
    )

    def parse(text: str) -> dict[str, str]:
        return parse_json_object(text, keys)

    return await call_with_repair(
        engine,
        request,
        parse,
        lambda err: render_file("repair_json", error=err, keys=_quoted(keys)),
    )


def extract_delimited(text: str, start: str, end: str) -> str:
    """The last complete start...end block, stripped; errors say what was missing."""
    end_at = text.rfind(end)
    if end_at < 0:
        raise ValueError(f"the end marker {end} is missing")
    start_at = text.rfind(start, 0, end_at)
    if start_at < 0:
        raise ValueError(f"the start marker {start} is missing before the end marker")
    value = text[start_at + len(start) : end_at].strip("\n").strip()
    if not value:
        raise ValueError("there is nothing between the markers")
    return value


def _format_example(request: ChatRequest, start: str, end: str) -> str | None:
    """The placeholder the request shows between its markers ("like this: START the new
    value END"), if it shows one: a reply that only copies it is not an answer."""
    text = request.messages[-1].content.rstrip()
    if not text.endswith(end):  # textgraph's templates end with their example block
        return None
    try:
        return extract_delimited(text, start, end)
    except ValueError:
        return None


async def call_delimited(
    engine: Engine, request: ChatRequest, start: str, end: str, *, repair: bool = True
) -> Reply:
    request = request.model_copy(
        update={"response_format": ResponseFormat(type="delimited", start=start, end=end)}
    )
    example = _format_example(request, start, end)

    def parse(text: str) -> str:
        value = extract_delimited(text, start, end)
        if example is not None and value == example:  # small models copy the format line
            raise ValueError(
                f"the reply repeats the format example ({example[:80]!r}) instead of a new value"
            )
        return value

    return await call_with_repair(
        engine,
        request,
        parse,
        lambda err: render_file("repair_delimited", error=err, start=start, end=end),
        attempts=2 if repair else 1,
    )


async def call_with_repair(
    engine: Engine,
    request: ChatRequest,
    parse: Callable[[str], Any],
    repair_message: Callable[[str], str],
    attempts: int = 2,
) -> Reply:
    messages = list(request.messages)
    responses: list[ChatResponse] = []
    error = ""
    for attempt in range(attempts):
        response = await call_engine(engine, request.model_copy(update={"messages": messages}))
        responses.append(response)
        try:
            value = parse(response.text)
        except ValueError as exc:
            error = str(exc)
            if attempt < attempts - 1:
                messages = [*messages, *response.repair_turns(repair_message(error))]
            continue
        return Reply(
            value=value,
            text=response.text,
            conversation=conversation_of(messages, response.text),
            responses=tuple(responses),
        )
    return Reply(
        value=None,
        text=responses[-1].text,
        conversation=conversation_of(messages, responses[-1].text),
        error=error,
        responses=tuple(responses),
    )


def _quoted(keys: list[str]) -> str:
    return ", ".join(f'"{k}"' for k in keys)
