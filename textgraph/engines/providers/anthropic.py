"""Anthropic Messages API. `base_url` is the host root, as in the official SDK:
requests go to `{base_url}/v1/messages`."""

from __future__ import annotations

import json
from typing import Any

from textgraph.engines.base import ChatRequest, ChatResponse, Message, Usage
from textgraph.engines.content import ImageLimits, ImagePart, ToolResultPart, ToolUsePart
from textgraph.engines.http import HTTPCall, HTTPEngine
from textgraph.errors import ContentFiltered, MalformedResponse, TruncatedOutput

OFFICIAL_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096

# https://platform.claude.com/docs/en/build-with-claude/vision ("Before you upload", FAQ):
# 5 MB per image (the API measures the base64 text: "image exceeds 5 MB maximum: N bytes >
# 5242880 bytes"), 100 images per request for 200k-token-context models (600 for the others:
# raise max_images for those), and a 32 MB request size limit on the standard endpoints.
IMAGE_LIMITS = ImageLimits(
    provider="anthropic",
    source="https://platform.claude.com/docs/en/build-with-claude/vision",
    max_image_base64_bytes=5 * 1024 * 1024,
    max_images=100,
    max_images_base64_bytes=32 * 1024 * 1024,
)


def wire_content(message: Message) -> str | list[dict[str, Any]]:
    """A text message's content as a str; one with parts as content blocks in reading order:
    {"type": "text", "text"} and {"type": "image", "source": {"type": "base64", "media_type",
    "data"}}, a tool call as {"type": "tool_use", "id", "name", "input"} and its answer as
    {"type": "tool_result", "tool_use_id", "content", "is_error"}. Empty and whitespace-only
    text blocks are left out: the API refuses them (a whitespace-only one unless other text is
    beside it), and between blocks they say nothing."""
    if not message.parts:
        return message.content
    blocks: list[dict[str, Any]] = []
    for part in message.parts:
        if isinstance(part, ImagePart):
            source = {"type": "base64", "media_type": part.media_type, "data": part.base64()}
            blocks.append({"type": "image", "source": source})
        elif isinstance(part, (ToolUsePart, ToolResultPart)):
            blocks.append(part.model_dump())
        elif part.text.strip():
            blocks.append({"type": "text", "text": part.text})
    return blocks


class AnthropicEngine(HTTPEngine):
    provider = "anthropic"
    key_env = "ANTHROPIC_API_KEY"
    # Sent as base64 image blocks; a model without vision answers 400 (raised, not retried).
    supports_images = True
    # Checked before anything is sent; assign an ImageLimits (or None) to change it.
    image_limits: ImageLimits | None = IMAGE_LIMITS

    def build_request(self, request: ChatRequest) -> HTTPCall:
        if self.image_limits is not None:
            self.image_limits.check(request.images())
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        messages = [
            {"role": m.role, "content": wire_content(m)}
            for m in request.messages
            if m.role != "system"
        ]
        body: dict[str, Any] = {
            "model": request.model or self.model_name,
            "max_tokens": request.max_tokens or self.default_max_tokens or DEFAULT_MAX_TOKENS,
            "messages": messages,
        }
        if system:
            body["system"] = system
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.stop:
            body["stop_sequences"] = request.stop
        fmt = request.response_format
        if fmt is not None and fmt.type == "json_schema":
            # Structured output through a forced tool call: its input is the JSON object.
            name = fmt.name or "reply"
            body["tools"] = [
                {
                    "name": name,
                    "description": "Record the reply in the required structure.",
                    "input_schema": fmt.json_schema,
                }
            ]
            body["tool_choice"] = {"type": "tool", "name": name}
        headers = {"Content-Type": "application/json", "anthropic-version": API_VERSION}
        if self._api_key:
            headers["x-api-key"] = self._api_key
        return HTTPCall(f"{self.base_url}/v1/messages", headers, body)

    def parse_body(self, body: Any, request: ChatRequest) -> ChatResponse:
        if not isinstance(body, dict) or not isinstance(body.get("content"), list):
            raise MalformedResponse("anthropic: the response has no content list")
        tool_calls = [b for b in body["content"] if b.get("type") == "tool_use"]
        tool_use = None
        if tool_calls and request.response_format and request.response_format.type == "json_schema":
            tool_use = _tool_use(tool_calls[0])
            text = json.dumps(tool_use.input)
        else:
            text = "".join(b.get("text", "") for b in body["content"] if b.get("type") == "text")
        stop = body.get("stop_reason")
        if stop == "refusal":
            raise ContentFiltered("anthropic: the model refused to answer; rephrase the input")
        if not text and stop == "max_tokens":
            raise TruncatedOutput(
                "anthropic: the model stopped at max_tokens before writing any text; "
                "raise max_tokens"
            )
        usage = body.get("usage") or {}
        return ChatResponse(
            text=text,
            model=body.get("model") or self.model_name,
            usage=Usage(
                prompt_tokens=(usage.get("input_tokens") or 0)
                + (usage.get("cache_read_input_tokens") or 0)
                + (usage.get("cache_creation_input_tokens") or 0),
                completion_tokens=usage.get("output_tokens") or 0,
                cached_tokens=usage.get("cache_read_input_tokens") or 0,
            ),
            finish_reason={"end_turn": "stop", "max_tokens": "length"}.get(stop, stop),
            tool_use=tool_use,
        )


def _tool_use(block: dict[str, Any]) -> ToolUsePart:
    """The forced tool call as received: a repair turn must send it back by its id."""
    try:
        return ToolUsePart.model_validate(block)
    except ValueError:
        raise MalformedResponse(
            f"anthropic: a tool_use block lacks its id, name or object input (keys {sorted(block)})"
        ) from None
