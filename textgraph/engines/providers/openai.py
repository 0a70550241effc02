"""OpenAI Chat Completions, and every server that speaks it (vLLM, llama.cpp
server, LM Studio, Ollama's /v1, OpenRouter) through `base_url`."""

from __future__ import annotations

from typing import Any

from textgraph.engines.base import ChatRequest, ChatResponse, Message, Usage
from textgraph.engines.content import ImageLimits, ImagePart
from textgraph.engines.http import HTTPCall, HTTPEngine
from textgraph.errors import ContentFiltered, MalformedResponse, TruncatedOutput

OFFICIAL_BASE_URL = "https://api.openai.com/v1"

# https://platform.openai.com/docs/guides/images-vision ("Image input requirements"): up to
# 50 MB total payload per request and up to 500 image inputs per request. The page states no
# separate per-image size, so the total bounds each image too.
IMAGE_LIMITS = ImageLimits(
    provider="openai",
    source="https://platform.openai.com/docs/guides/images-vision",
    max_images=500,
    max_images_base64_bytes=50 * 1024 * 1024,
)


def wire_message(message: Message) -> dict[str, Any]:
    """A text message as {"role", "content": str}; one with parts as a content array of
    {"type": "text"} and {"type": "image_url", "image_url": {"url": "data:<type>;base64,..."}}
    parts in reading order (empty text parts left out; a tool call or tool result, which only
    an Anthropic reply makes, is its text)."""
    if not message.parts:
        return {"role": message.role, "content": message.content}
    content: list[dict[str, Any]] = []
    for part in message.parts:
        if isinstance(part, ImagePart):
            content.append({"type": "image_url", "image_url": {"url": part.data_uri()}})
        elif part.text:  # text, or a tool part as its text
            content.append({"type": "text", "text": part.text})
    return {"role": message.role, "content": content}


class OpenAIEngine(HTTPEngine):
    provider = "openai"
    key_env = "OPENAI_API_KEY"
    # Sent as image_url parts; whether the model has vision is the server's to say (a 400).
    supports_images = True

    _image_limits: ImageLimits | str | None = "official only"  # str: the default

    @property
    def image_limits(self) -> ImageLimits | None:
        """OpenAI's documented limits, for api.openai.com only: compatible servers (vLLM,
        llama.cpp, OpenRouter) have their own. Assign an ImageLimits (or None) to change it."""
        if isinstance(self._image_limits, str):
            return IMAGE_LIMITS if self.base_url == OFFICIAL_BASE_URL else None
        return self._image_limits

    @image_limits.setter
    def image_limits(self, limits: ImageLimits | None) -> None:
        self._image_limits = limits

    def build_request(self, request: ChatRequest) -> HTTPCall:
        if self.image_limits is not None:
            self.image_limits.check(request.images())
        body: dict[str, Any] = {
            "model": request.model or self.model_name,
            "messages": [wire_message(m) for m in request.messages],
        }
        max_tokens = request.max_tokens or self.default_max_tokens
        optional = {
            "temperature": request.temperature,
            "max_tokens": max_tokens,
            "stop": request.stop,
            "seed": request.seed,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        fmt = request.response_format
        if fmt is not None and fmt.type == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": fmt.name or "reply", "schema": fmt.json_schema},
            }
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return HTTPCall(f"{self.base_url}/chat/completions", headers, body)

    def parse_body(self, body: Any, request: ChatRequest) -> ChatResponse:
        choices = body.get("choices") if isinstance(body, dict) else None
        if not choices:
            raise MalformedResponse(
                "openai: the response has no choices; the server returned an empty or non-chat body"
            )
        choice = choices[0]
        message = choice.get("message") or {}
        text = message.get("content")
        finish = choice.get("finish_reason")
        if finish == "content_filter" or (not text and message.get("refusal")):
            raise ContentFiltered(
                f"openai: the provider withheld the output ({message.get('refusal') or finish}); "
                "rephrase the input or use another model"
            )
        if not text and finish == "length":
            raise TruncatedOutput(
                "openai: the model stopped at max_tokens before writing any text; raise max_tokens"
            )
        if text is None:
            raise MalformedResponse("openai: the first choice has no message content")
        usage = body.get("usage") or {}
        details = usage.get("prompt_tokens_details") or {}
        return ChatResponse(
            text=text,
            model=body.get("model") or self.model_name,
            usage=Usage(
                prompt_tokens=usage.get("prompt_tokens") or 0,
                completion_tokens=usage.get("completion_tokens") or 0,
                cached_tokens=details.get("cached_tokens") or 0,
            ),
            finish_reason=finish,
        )
