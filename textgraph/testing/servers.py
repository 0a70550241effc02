"""A local LLM server speaking the OpenAI, Anthropic and Ollama wire formats.

It listens on 127.0.0.1 on a port the OS picks, answers from any engine
(usually a ScriptedEngine), checks image parts as the real APIs do (valid
base64, a supported type that matches the bytes, images in user turns only:
anything else is a 400; Anthropic tool turns as the API does: a tool_use answered by a
tool_result with its id in the next user turn, tool results first; images for an engine
without `supports_images` are
answered as a text-only model is: a 400, from Ollama a 500), records the decoded images of each
request (`RecordedRequest.images`), and can inject the faults real providers
produce: 429 with Retry-After, 5xx, hangs past the client's timeout,
connection resets, malformed JSON, truncated output. It counts requests,
tokens (whitespace-separated) and the peak number of requests in flight.
Use it as a context manager; it always shuts down.

    with LLMTestServer(ScriptedEngine(lambda r: "hi")) as server:
        engine = tg.get_engine("openai/test", base_url=server.openai_base_url)
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import socket
import struct
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from textgraph._media import SUPPORTED_MEDIA_TYPES, sniff_media_type
from textgraph.engines.base import ChatRequest, Engine, Message, ResponseFormat
from textgraph.engines.content import AnyPart, ImagePart, TextPart, ToolResultPart, ToolUsePart


@dataclass
class Fault:
    """One injected failure, consumed by the next matching request.

    kind: "status" (reply `status` with an error body), "hang" (say nothing
    for `seconds`, then close), "reset" (abort the TCP connection),
    "malformed" (200 with a body that is not JSON), "truncated" (200,
    finish_reason length and no text), "empty" (200 with no reply: OpenAI no
    choices, Anthropic `content: []`, Ollama an empty message), "body" (200
    with `payload` as the JSON body, any shape).
    """

    kind: str
    status: int = 500
    retry_after: float | None = None
    retry_after_ms: float | None = None
    seconds: float = 5.0
    message: str = "injected fault"
    payload: Any = None


@dataclass
class RecordedRequest:
    path: str
    body: dict[str, Any]
    start: float
    headers: dict[str, str] = field(default_factory=dict)  # names lower-cased
    end: float = 0.0
    status: int = 0
    fault: str | None = None
    images: list[tuple[str, bytes]] = field(default_factory=list)  # (media type, bytes)
    reply: Any = None  # the JSON body answered with 200, when one was


@dataclass
class ServerStats:
    requests: list[RecordedRequest] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


def _words(text: str) -> int:
    return len(text.split())


class _Server(ThreadingHTTPServer):
    # socketserver's default backlog of 5 resets connections when 64 clients connect at once
    request_queue_size = 1024


class LLMTestServer:
    """See the module docstring. `latency` (seconds) is added to every request."""

    def __init__(
        self,
        engine: Engine,
        *,
        latency: float = 0.0,
        api_key: str | None = None,
        max_requests: int = 10_000,
        max_hang_s: float = 30.0,
    ) -> None:
        self.engine = engine
        self.latency = latency
        self.api_key = api_key
        self.max_requests = max_requests
        self.max_hang_s = max_hang_s
        self.faults: deque[Fault] = deque()
        self.stats = ServerStats()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------

    def start(self) -> LLMTestServer:
        handler = type("Handler", (_Handler,), {"server_ref": self})
        self._httpd = _Server(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        # A short poll interval: stop() waits for serve_forever to notice (0.5 s by default).
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="textgraph-test-server",
            daemon=True,
        )
        self._thread.start()
        # One event loop answers every request (a loop per request costs ~1 ms each).
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(
            target=self._loop.run_forever, name="textgraph-test-server-engine", daemon=True
        )
        self._loop_thread.start()
        return self

    def _answer_with_engine(self, request: ChatRequest) -> str:
        future = asyncio.run_coroutine_threadsafe(self.engine.generate(request), self._loop)
        return future.result(timeout=300).text

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join(timeout=5)
            self._loop.close()
            self._loop = None

    def __enter__(self) -> LLMTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "start the server first"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    @property
    def ollama_host(self) -> str:
        return self.url

    def inject(self, *faults: Fault) -> None:
        """Queue faults; each request consumes the next one."""
        with self._lock:
            self.faults.extend(faults)

    @property
    def request_count(self) -> int:
        return len(self.stats.requests)

    # --- called by the handler ---------------------------------------------

    def _begin(
        self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> tuple[RecordedRequest, Fault | None]:
        with self._lock:
            record = RecordedRequest(
                path=path, body=body, start=time.perf_counter(), headers=headers or {}
            )
            self.stats.requests.append(record)
            self.stats.in_flight += 1
            self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
            fault = self.faults.popleft() if self.faults else None
            record.fault = fault.kind if fault else None
            return record, fault

    def _end(self, record: RecordedRequest, status: int) -> None:
        with self._lock:
            self.stats.in_flight -= 1
            record.end, record.status = time.perf_counter(), status


class BadRequest(Exception):
    """A request body the real API would refuse with 400; the message says why."""


def _image_bytes(data: object, media_type: str | None, where: str) -> tuple[str, bytes]:
    """Decode and check one base64 image as the real APIs do: valid base64, a supported
    type, bytes that are that type."""
    if not isinstance(data, str) or not data:
        raise BadRequest(f"{where}: image data must be a non-empty base64 string")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{where}: image data is not valid base64") from None
    sniffed = sniff_media_type(raw)
    if sniffed is None:
        raise BadRequest(f"{where}: the image bytes are not a PNG, JPEG, GIF or WEBP")
    if media_type is not None and media_type != sniffed:
        raise BadRequest(
            f"{where}: media type {media_type!r} does not match the image bytes ({sniffed})"
        )
    return sniffed, raw


def _openai_part(part: object, where: str) -> TextPart | ImagePart:
    if not isinstance(part, dict) or part.get("type") not in ("text", "image_url"):
        raise BadRequest(f"{where}: content parts must be of type 'text' or 'image_url'")
    if part["type"] == "text":
        if not isinstance(part.get("text"), str):
            raise BadRequest(f"{where}: a text part needs a string 'text'")
        return TextPart(text=part["text"])
    image_url = part.get("image_url")
    url = image_url.get("url") if isinstance(image_url, dict) else None
    if not isinstance(url, str):
        raise BadRequest(f"{where}: an image_url part needs image_url.url")
    head, sep, data = url.partition(",")
    if not (head.startswith("data:") and head.endswith(";base64") and sep):
        raise BadRequest(f"{where}: this test server takes data:<type>;base64,... URLs only")
    media_type = head[len("data:") : -len(";base64")]
    if media_type not in SUPPORTED_MEDIA_TYPES:
        raise BadRequest(f"{where}: unsupported image media type {media_type!r}")
    media_type, raw = _image_bytes(data, media_type, where)
    return ImagePart(data=raw, media_type=media_type)


ANTHROPIC_BLOCKS = ("text", "image", "tool_use", "tool_result")


def _anthropic_part(block: object, where: str) -> AnyPart:
    if not isinstance(block, dict) or block.get("type") not in ANTHROPIC_BLOCKS:
        raise BadRequest(f"{where}: content blocks must be of type {' or '.join(ANTHROPIC_BLOCKS)}")
    if block["type"] == "tool_use":
        if not (isinstance(block.get("id"), str) and isinstance(block.get("input"), dict)):
            raise BadRequest(f"{where}: a tool_use block needs a string id and an object input")
        return ToolUsePart.model_validate(block)
    if block["type"] == "tool_result":
        if not isinstance(block.get("tool_use_id"), str):
            raise BadRequest(f"{where}: a tool_result block needs a string tool_use_id")
        if not isinstance(block.get("content", ""), str):
            raise BadRequest(f"{where}: this test server takes tool_result content as a string")
        if not isinstance(block.get("is_error", False), bool):
            raise BadRequest(f"{where}: tool_result is_error must be a boolean")
        return ToolResultPart.model_validate(block)
    if block["type"] == "text":
        if not isinstance(block.get("text"), str) or not block["text"]:
            raise BadRequest(f"{where}: text content blocks must be non-empty")
        return TextPart(text=block["text"])
    source = block.get("source")
    if not isinstance(source, dict) or source.get("type") != "base64":
        raise BadRequest(f"{where}: an image block needs source.type 'base64'")
    if source.get("media_type") not in SUPPORTED_MEDIA_TYPES:
        raise BadRequest(f"{where}: source.media_type must be one of {list(SUPPORTED_MEDIA_TYPES)}")
    media_type, raw = _image_bytes(source.get("data"), source["media_type"], where)
    return ImagePart(data=raw, media_type=media_type)


def _message(protocol: str, index: int, m: object) -> Message | None:
    """One wire message as a Message (None for roles the engine does not take), or
    BadRequest for a malformed one."""
    where = f"messages.{index}"
    if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
        return None
    role, content = m["role"], m.get("content")
    parts: list[AnyPart] = []
    if isinstance(content, list) and protocol in ("openai", "anthropic"):
        read = _openai_part if protocol == "openai" else _anthropic_part
        parts = [read(p, f"{where}.content.{i}") for i, p in enumerate(content)]
        texts = [p.text for p in parts if isinstance(p, TextPart)]
        if protocol == "anthropic" and texts and not any(t.strip() for t in texts):
            # Anthropic accepts a whitespace-only text block only beside non-whitespace text
            raise BadRequest(f"{where}: text content blocks must contain non-whitespace text")
    elif not isinstance(content, str):
        raise BadRequest(f"{where}: content must be a string or a list of content parts")
    if protocol == "ollama" and m.get("images") is not None:
        images = m["images"]
        if not isinstance(images, list):
            raise BadRequest(f"{where}: images must be a list of base64 strings")
        for i, data in enumerate(images):
            media_type, raw = _image_bytes(data, None, f"{where}.images.{i}")
            parts.append(ImagePart(data=raw, media_type=media_type))
        if parts:  # Ollama puts a message's images before its text
            parts.append(TextPart(text=content))
    if not parts:
        return Message(role=role, content=content if isinstance(content, str) else "")
    if role != "user" and any(isinstance(p, ImagePart) for p in parts):
        raise BadRequest(f"{where}: images are only allowed in user messages")
    if role != "assistant" and any(isinstance(p, ToolUsePart) for p in parts):
        raise BadRequest(f"{where}: tool_use blocks are only allowed in assistant messages")
    results = [isinstance(p, ToolResultPart) for p in parts]
    if any(results) and role != "user":
        raise BadRequest(f"{where}: tool_result blocks are only allowed in user messages")
    if results != sorted(results, reverse=True):
        raise BadRequest(
            f"{where}: tool_result blocks must come first in the content, before any text"
        )
    return Message(role=role, parts=tuple(parts))


def _check_tool_turns(messages: list[Message]) -> None:
    """What the Messages API checks of tool turns: every tool_use is answered by a tool_result
    with its id in the very next message, a user turn, and every tool_result answers a
    tool_use of the message just before it."""
    for index, message in enumerate(messages):
        previous = messages[index - 1] if index else None
        asked = {p.id for p in previous.parts if isinstance(p, ToolUsePart)} if previous else set()
        answered = [p.tool_use_id for p in message.parts if isinstance(p, ToolResultPart)]
        stray = [i for i in answered if i not in asked]
        if stray:
            raise BadRequest(
                f"messages.{index}.content: unexpected tool_use_id found in tool_result blocks: "
                f"{', '.join(stray)}. Each tool_result block must have a corresponding "
                "tool_use block in the previous message."
            )
    for index, message in enumerate(messages):
        calls = [p.id for p in message.parts if isinstance(p, ToolUsePart)]
        following = messages[index + 1] if index + 1 < len(messages) else None
        given = (
            {p.tool_use_id for p in following.parts if isinstance(p, ToolResultPart)}
            if following is not None and following.role == "user"
            else set()
        )
        missing = [i for i in calls if i not in given]
        if missing:
            raise BadRequest(
                f"messages.{index}: tool_use ids were found without tool_result blocks "
                f"immediately after: {', '.join(missing)}. Each tool_use block must have a "
                "corresponding tool_result block in the next message."
            )


def _chat_request(protocol: str, body: dict[str, Any]) -> ChatRequest:
    """Translate a provider request body back into a ChatRequest for the engine; a body the
    real API would refuse (a malformed image part) raises BadRequest."""
    raw_messages = body.get("messages", [])
    if not isinstance(raw_messages, list):
        raise BadRequest("messages must be a list")
    messages = [
        message
        for i, m in enumerate(raw_messages)
        if (message := _message(protocol, i, m)) is not None
    ]
    if protocol == "anthropic":
        _check_tool_turns(messages)
    if protocol == "anthropic" and body.get("system"):
        messages = [Message(role="system", content=body["system"]), *messages]
    fmt = None
    if protocol == "openai" and (body.get("response_format") or {}).get("type") == "json_schema":
        spec = body["response_format"]["json_schema"]
        fmt = ResponseFormat(type="json_schema", name=spec.get("name"), json_schema=spec["schema"])
    elif protocol == "anthropic" and body.get("tools"):
        tool = body["tools"][0]
        fmt = ResponseFormat(
            type="json_schema", name=tool["name"], json_schema=tool["input_schema"]
        )
    elif protocol == "ollama" and isinstance(body.get("format"), dict):
        fmt = ResponseFormat(type="json_schema", json_schema=body["format"])
    options = body.get("options") or {}
    return ChatRequest(
        messages=messages,
        model=body.get("model"),
        temperature=body.get("temperature", options.get("temperature")),
        max_tokens=body.get("max_tokens") or options.get("num_predict"),
        seed=body.get("seed", options.get("seed")),
        response_format=fmt,
        metadata={"protocol": protocol},
    )


def _reply_body(
    protocol: str,
    body: dict[str, Any],
    text: str,
    prompt: int,
    completion: int,
    finish: str = "stop",
) -> dict[str, Any]:
    model = body.get("model", "test-model")
    if protocol == "openai":
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish,
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }
    if protocol == "anthropic":
        content: list[dict[str, Any]]
        stop = {"stop": "end_turn", "length": "max_tokens"}[finish]
        if body.get("tools") and text:
            content = [
                {
                    "type": "tool_use",
                    "id": f"toolu_{uuid.uuid4().hex[:24]}",
                    "name": body["tools"][0]["name"],
                    "input": json.loads(text),
                }
            ]
            stop = "tool_use"
        else:
            content = [{"type": "text", "text": text}] if text else []
        return {
            "id": f"msg_{uuid.uuid4().hex[:12]}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": completion},
        }
    return {
        "model": model,
        "created_at": "2026-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": text},
        "done": True,
        "done_reason": finish,
        "prompt_eval_count": prompt,
        "eval_count": completion,
    }


def _error_body(protocol: str, status: int, message: str) -> dict[str, Any]:
    if protocol == "anthropic":
        kind = {401: "authentication_error", 429: "rate_limit_error", 529: "overloaded_error"}
        return {
            "type": "error",
            "error": {"type": kind.get(status, "api_error"), "message": message},
        }
    if protocol == "ollama":
        return {"error": message}
    code = {401: "invalid_api_key", 429: "rate_limit_exceeded"}.get(status)
    return {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    }


ROUTES = {"/v1/chat/completions": "openai", "/v1/messages": "anthropic", "/api/chat": "ollama"}


class _Handler(BaseHTTPRequestHandler):
    server_ref: LLMTestServer
    _deadline = 0.0  # perf_counter time before which no response is sent
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # no 40 ms delayed-ACK stalls between header and body
    wbufsize = 64 * 1024  # headers and body leave in one write (flushed per request)

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr logging
        return

    def do_GET(self) -> None:
        if self.path == "/_stats":  # for harnesses running the server in another process
            stats = self.server_ref.stats
            self._send(
                200,
                {
                    "requests": len(stats.requests),
                    "max_in_flight": stats.max_in_flight,
                    "prompt_tokens": stats.prompt_tokens,
                    "completion_tokens": stats.completion_tokens,
                },
            )
        elif self.path.rstrip("/") == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": "test-model", "object": "model"}]})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        server = self.server_ref
        if self.path == "/_reset":
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with server._lock:
                server.stats = ServerStats()
            self._send(200, {"reset": True})
            return
        protocol = ROUTES.get(self.path.rstrip("/"))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if protocol is None:
            self._send(404, {"error": {"message": f"no route {self.path}"}})
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self._send(400, _error_body(protocol, 400, "request body is not JSON"))
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        record, fault = server._begin(self.path, body, headers)
        # The reply is computed first and sent when the latency has passed, so threads that
        # wake together only write bytes: the latency stays fixed under concurrency.
        self._deadline = record.start + server.latency
        status = 200
        try:
            status = self._answer(server, protocol, body, fault, record)
        finally:
            server._end(record, status)

    def _answer(
        self,
        server: LLMTestServer,
        protocol: str,
        body: dict[str, Any],
        fault: Fault | None,
        record: RecordedRequest,
    ) -> int:
        if server.request_count > server.max_requests:
            return self._send(503, _error_body(protocol, 503, "test server request cap reached"))
        if server.api_key is not None:
            given = self.headers.get("x-api-key") or (
                self.headers.get("Authorization", "").removeprefix("Bearer ")
            )
            if given != server.api_key:
                # Like the real OpenAI API, echo the key that was sent: clients must redact it.
                message = f"Incorrect API key provided: {given}."
                return self._send(401, _error_body(protocol, 401, message))
        if fault is not None:
            if fault.kind == "status":
                headers = {}
                if fault.retry_after is not None:
                    headers["Retry-After"] = f"{fault.retry_after:g}"
                if fault.retry_after_ms is not None:
                    headers["retry-after-ms"] = f"{fault.retry_after_ms:g}"
                return self._send(
                    fault.status, _error_body(protocol, fault.status, fault.message), headers
                )
            if fault.kind == "hang":
                server._stopping.wait(min(fault.seconds, server.max_hang_s))
                self.close_connection = True
                return 0
            if fault.kind == "reset":
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.close_connection = True
                self.connection.close()
                return 0
            if fault.kind == "malformed":
                return self._send_raw(200, b'{"choices": [{"message": {"content": "unfinished')
            if fault.kind == "truncated":
                return self._send(200, _reply_body(protocol, body, "", 0, 0, finish="length"))
            if fault.kind == "empty":
                if protocol == "openai":
                    return self._send(200, {"id": "x", "object": "chat.completion", "choices": []})
                return self._send(200, _reply_body(protocol, body, "", 0, 0))
            if fault.kind == "body":
                return self._send(200, fault.payload)
        try:
            request = _chat_request(protocol, body)
        except BadRequest as exc:
            return self._send(400, _error_body(protocol, 400, str(exc)))
        images = request.images()
        if images and not getattr(server.engine, "supports_images", False):
            # What a real server answers for a text-only model: OpenAI and Anthropic a 400
            # ("image_url is only supported by certain models"), Ollama a 500 ("this model is
            # missing data required for image input"). Neither is worth a retry.
            if protocol == "ollama":
                message = "this model is missing data required for image input"
                return self._send(500, _error_body(protocol, 500, message))
            message = f"model {body.get('model')!r} does not support image input"
            return self._send(400, _error_body(protocol, 400, message))
        record.images = [(i.media_type, i.data) for i in images]
        try:
            text = server._answer_with_engine(request)
        except Exception as exc:  # the scripted answer failed: report it as a server error
            return self._send(500, _error_body(protocol, 500, f"test engine failed: {exc}"))
        prompt, completion = _words(request.prompt_text()), _words(text)
        with server._lock:
            server.stats.prompt_tokens += prompt
            server.stats.completion_tokens += completion
        record.reply = _reply_body(protocol, body, text, prompt, completion)
        return self._send(200, record.reply)

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> int:
        return self._send_raw(status, json.dumps(payload).encode(), headers)

    def _send_raw(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> int:
        remaining = self._deadline - time.perf_counter()
        if remaining > 0:
            self.server_ref._stopping.wait(remaining)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        return status
