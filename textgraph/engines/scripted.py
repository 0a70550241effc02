"""ScriptedEngine: the deterministic test double.

A test scripts the *words* a model says; the engine supplies the *format*
the framework asked for (JSON object with the schema's string fields filled,
or the text wrapped in the requested delimiters), unless `raw=True`. Every
request is recorded with monotonic start/end timestamps so tests can assert
overlap and ordering without wall-clock thresholds.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from textgraph.engines.base import ChatRequest, ChatResponse, Engine, Usage
from textgraph.engines.content import ImagePart
from textgraph.errors import ArgumentError, EngineError

Reply = str | Callable[[ChatRequest], str]
Responder = Callable[[ChatRequest], str] | Sequence[tuple[str, Reply]]


@dataclass
class ScriptedCall:
    request: ChatRequest
    response: ChatResponse | None
    start: float
    end: float

    @property
    def purpose(self) -> str:
        return self.request.purpose

    @property
    def images(self) -> tuple[ImagePart, ...]:
        """The image parts the request carried (bytes included), in message order."""
        return self.request.images()


def _word_count(text: str) -> int:
    return len(text.split())


class ScriptedEngine(Engine):
    """Answers from a Python callable or from ordered (regex, reply) rules.

    Rules are matched with `re.search` (DOTALL) against the whole prompt
    text; the first match wins; no match raises an EngineError naming the
    request. `latency` (seconds, or a callable of the request) is awaited
    per call, so concurrency is real. Text-only like most test doubles: requests
    with images raise ImagesNotSupported unless `vision=True`, and then each
    recorded call keeps the parts it received (`engine.calls[i].images`). Rules
    see an image as its one-line description ('<image sha256:… image/png>').
    """

    def __init__(
        self,
        responder: Responder,
        latency: float | Callable[[ChatRequest], float] = 0.0,
        *,
        raw: bool = False,
        max_concurrency: int | None = None,
        model_name: str = "scripted",
        vision: bool = False,
    ) -> None:
        super().__init__(max_concurrency=max_concurrency)
        if not isinstance(vision, bool):
            raise ArgumentError(f"vision must be True or False, got {vision!r}")
        self.supports_images = vision
        if callable(responder):
            self._respond: Callable[[ChatRequest], str] = responder
        elif isinstance(responder, Sequence) and not isinstance(responder, str):
            rules = [(re.compile(p, re.DOTALL), reply) for p, reply in _check_rules(responder)]
            self._respond = lambda request: _apply_rules(rules, request)
        else:
            raise ArgumentError(
                "ScriptedEngine(responder) takes a callable(request) -> str or a list of "
                f"(regex, reply) pairs, got {type(responder).__name__}"
            )
        self.latency = latency
        self.raw = raw
        self.model_name = model_name
        self.calls: list[ScriptedCall] = []

    async def _generate(self, request: ChatRequest) -> ChatResponse:
        start = time.perf_counter()
        delay = self.latency(request) if callable(self.latency) else self.latency
        if delay:
            await asyncio.sleep(delay)
        record = ScriptedCall(request=request, response=None, start=start, end=start)
        self.calls.append(record)
        text = self._respond(request)
        if not isinstance(text, str):
            raise EngineError(
                f"ScriptedEngine responder returned {type(text).__name__}, expected str"
            )
        if not self.raw:
            text = format_reply(text, request)
        end = time.perf_counter()
        response = ChatResponse(
            text=text,
            model=request.model or self.model_name,
            usage=Usage(
                prompt_tokens=_word_count(request.prompt_text()),
                completion_tokens=_word_count(text),
            ),
            latency=end - start,
        )
        record.response, record.end = response, end
        return response

    def wire_settings(self) -> dict[str, object]:
        return {"raw": self.raw or None}  # raw=True skips the formatting of replies

    def calls_for(self, purpose: str) -> list[ScriptedCall]:
        return [c for c in self.calls if c.request.purpose == purpose]


def _check_rules(rules: Sequence[object]) -> list[tuple[str, Reply]]:
    checked = []
    for i, rule in enumerate(rules):
        if not (isinstance(rule, tuple) and len(rule) == 2 and isinstance(rule[0], str)):
            raise ArgumentError(f"ScriptedEngine rule {i} must be a (regex, reply) pair")
        checked.append(rule)
    return checked


def _apply_rules(rules: list[tuple[re.Pattern[str], Reply]], request: ChatRequest) -> str:
    text = request.prompt_text()
    for pattern, reply in rules:
        if pattern.search(text):
            return reply(request) if callable(reply) else reply
    raise EngineError(
        f"ScriptedEngine: no rule matched the {request.purpose} request starting "
        f"{text[:160]!r}. Add a (regex, reply) rule for it."
    )


def format_reply(text: str, request: ChatRequest) -> str:
    """Wrap scripted words in the format the request asks for."""
    fmt = request.response_format
    if fmt is None or fmt.type == "text":
        return text
    if fmt.type == "delimited":
        if fmt.start in text and fmt.end in text:
            return text
        return f"{fmt.start}\n{text}\n{fmt.end}"
    if text.lstrip().startswith("{"):
        try:
            if isinstance(json.loads(text), dict):
                return text  # already a JSON object: the test scripted the format itself
        except ValueError:
            pass
    schema = fmt.json_schema or {}
    filled = {
        name: text
        for name, spec in schema.get("properties", {}).items()
        if spec.get("type") == "string"
    }
    return json.dumps(filled)
