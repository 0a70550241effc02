"""Ollama's native chat API (`/api/chat`, non-streaming)."""

from __future__ import annotations

import re
from typing import Any

from textgraph.engines.base import ChatRequest, ChatResponse, Message, Usage
from textgraph.engines.content import ImagePart
from textgraph.engines.http import HTTPCall, HTTPEngine
from textgraph.errors import ArgumentError, MalformedResponse, TruncatedOutput

DEFAULT_HOST = "http://localhost:11434"


def host_url(host: str | None) -> str:
    """OLLAMA_HOST may be 'host:port' without a scheme."""
    host = (host or DEFAULT_HOST).strip().rstrip("/")
    return host if "://" in host else f"http://{host}"


# Where image N stood in a message's text: "[image N sha256:<first 12 hex of its bytes>]".
# The hash ties the marker to the image in "images", so text a user wrote ("[image 1]",
# "compare image 1 and image 2") never reads as a marker; text that holds something of the
# marker's own form is refused, as it would be ambiguous.
MARKER = re.compile(r"\[image \d+ sha256:[0-9a-f]{12}\]")


def image_marker(number: int, image: ImagePart) -> str:
    return f"[image {number} sha256:{image.sha256[:12]}]"


def wire_message(message: Message) -> dict[str, Any]:
    """A message as /api/chat takes it. Images go in the message's "images" list (base64,
    no data: prefix) and the text in "content"; Ollama cannot place an image inside the
    text, so each image's place in the text is marked `image_marker(N, image)` (N counts the
    images of the message from 1, in the order of "images")."""
    if not message.parts:
        return {"role": message.role, "content": message.content}
    text, images = [], []
    for part in message.parts:
        if isinstance(part, ImagePart):
            images.append(part.base64())
            text.append(image_marker(len(images), part))
        else:
            found = MARKER.search(part.text) if message.images else None
            if found is not None:
                raise ArgumentError(
                    f"ollama: the {message.role} message's text contains {found.group()!r}, "
                    "which has the form of the marker textgraph writes where an image stood "
                    "(Ollama takes images beside the text, not in it), so the model could not "
                    "tell it from a real image's place. Reword that text (e.g. drop the "
                    "brackets) and send again"
                )
            text.append(part.text)
    return {"role": message.role, "content": "".join(text), "images": images}


class OllamaEngine(HTTPEngine):
    provider = "ollama"
    # Sent in "images"; a model without vision answers with an error status (raised).
    supports_images = True

    def build_request(self, request: ChatRequest) -> HTTPCall:
        options = {
            "temperature": request.temperature,
            "num_predict": request.max_tokens or self.default_max_tokens,
            "seed": request.seed,
            "stop": request.stop,
        }
        body: dict[str, Any] = {
            "model": request.model or self.model_name,
            "messages": [wire_message(m) for m in request.messages],
            "stream": False,
            "options": {k: v for k, v in options.items() if v is not None},
        }
        fmt = request.response_format
        if fmt is not None and fmt.type == "json_schema":
            body["format"] = fmt.json_schema
        return HTTPCall(f"{self.base_url}/api/chat", {"Content-Type": "application/json"}, body)

    def error_message(self, body: Any) -> str:
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            return body["error"]
        return super().error_message(body)

    def hint(self, status: int, message: str) -> str:
        if status == 404:
            return f"pull the model first: ollama pull {self.model_name}"
        return super().hint(status, message)

    def parse_body(self, body: Any, request: ChatRequest) -> ChatResponse:
        message = body.get("message") if isinstance(body, dict) else None
        if not isinstance(message, dict) or "content" not in message:
            raise MalformedResponse("ollama: the response has no message")
        text = message["content"]
        if not text and body.get("done_reason") == "length":
            raise TruncatedOutput("ollama: the model stopped at num_predict before writing text")
        return ChatResponse(
            text=text,
            model=body.get("model") or self.model_name,
            usage=Usage(
                prompt_tokens=body.get("prompt_eval_count") or 0,
                completion_tokens=body.get("eval_count") or 0,
            ),
            finish_reason=body.get("done_reason") or "stop",
        )
