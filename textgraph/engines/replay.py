"""Record every request/response to JSONL; replay them with no network.

A cassette line is {"key", "request", "response"}; `key` is the same
canonical hash the cache uses. Replaying answers identical requests in the
order they were recorded (the last answer repeats), and a request that was
never recorded raises ReplayMiss naming it.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from textgraph.engines.base import ChatRequest, ChatResponse
from textgraph.errors import ArgumentError, ReplayMiss


class Recorder:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def write(self, key: str, request: ChatRequest, response: ChatResponse) -> None:
        line = json.dumps(
            {
                "key": key,
                "request": request.model_dump(mode="json"),
                "response": response.model_dump(mode="json"),
            },
            ensure_ascii=False,
        )
        try:
            with self._lock, self.path.open("a", encoding="utf-8") as handle:
                handle.write(line + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:  # a full disk says nothing about which file: name it
            if exc.filename is not None:
                raise
            raise OSError(
                exc.errno, f"{exc.strerror} (recording cassette)", str(self.path)
            ) from exc


class Replayer:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise ArgumentError(f"replay cassette {self.path} does not exist; record it first")
        self._answers: dict[str, list[ChatResponse]] = {}
        self._served: dict[str, int] = {}
        for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                response = ChatResponse.model_validate(row["response"])
                key = row["key"]
            except (ValueError, KeyError, TypeError) as exc:
                raise ArgumentError(
                    f"replay cassette {self.path} line {number} is malformed ({exc}); re-record it"
                ) from None
            self._answers.setdefault(key, []).append(response)
        self._lock = threading.Lock()

    def answer(self, key: str, request: ChatRequest) -> ChatResponse:
        with self._lock:
            answers = self._answers.get(key)
            if not answers:
                last = request.messages[-1].content.replace("\n", " ")
                raise ReplayMiss(
                    f"replay cassette {self.path} has no response for this {request.purpose} "
                    f"request (key {key[:12]}, last message starts {last[:100]!r}); the "
                    "pipeline, prompts or parameters differ from the recording: re-record it"
                )
            served = self._served.get(key, 0)
            self._served[key] = served + 1
        return answers[min(served, len(answers) - 1)].model_copy(update={"cached": True})
