"""`tg.get_engine(model, **options)`: model strings to configured engines.

    openai/<model>      OpenAI or any compatible server via base_url
    anthropic/<model>   Anthropic Messages API
    ollama/<model>      Ollama's native API (OLLAMA_HOST)
    local/smollm2       the embedded model (llama.cpp in process)
    local/<path.gguf>   any GGUF file
    scripted            the test double (needs responder=...)

TextGrad's bare names are accepted with a warning naming the textgraph
spelling: "gpt-4o" (and o1/o3/o4 models) is openai/gpt-4o, "claude-..." is
anthropic/claude-..., "ollama-llama3" is ollama/llama3.

Every engine comes wrapped in a ManagedEngine (cache, budget, usage,
record/replay). The cache is on by default for real providers.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

from textgraph.engines.base import Engine
from textgraph.engines.cache import DEFAULT_MAX_BYTES, ResponseCache
from textgraph.engines.checks import split_base_url
from textgraph.engines.http import RetryPolicy
from textgraph.engines.managed import ManagedEngine
from textgraph.engines.scripted import ScriptedEngine
from textgraph.errors import ArgumentError, ConfigurationError, UnknownModelError

DEFAULT_MODEL = "local/smollm2"
FORMS = (
    "openai/<model>, anthropic/<model>, ollama/<model>, local/smollm2, local/<file.gguf>, scripted"
)

HTTP_OPTIONS = {
    "base_url",
    "api_key",
    "timeout_s",
    "connect_timeout_s",
    "total_timeout_s",
    "retry",
    "max_attempts",
    "max_concurrency",
    "requests_per_minute",
    "tokens_per_minute",
    "sleep",
    "transport",
    "default_max_tokens",
}
LOCAL_OPTIONS = {
    "n_ctx",
    "n_threads",
    "default_max_tokens",
    "repeat_penalty",
    "default_temperature",
    "seed",
}
SCRIPTED_OPTIONS = {"responder", "latency", "raw", "max_concurrency"}
MANAGED_OPTIONS = {"cache", "cache_max_bytes", "cache_salt", "budget", "record", "replay"}


def default_model() -> str:
    """TEXTGRAPH_MODEL if set, else the embedded model."""
    return os.environ.get("TEXTGRAPH_MODEL") or DEFAULT_MODEL


# Matched at the start of the name. The reasoning models are o1, o3, o4 alone or followed by
# "-" (o1-mini, o3-2025-04-16): "o10", "o3d" or "o4all" are not OpenAI models.
TEXTGRAD_NAMES = (
    (re.compile(r"(gpt-|chatgpt-|o[134](-|$))"), "openai/"),
    (re.compile(r"claude-"), "anthropic/"),
    (re.compile(r"ollama-"), "ollama/"),
)


def textgraph_spelling(model: str) -> str | None:
    """The textgraph model string for one of TextGrad's bare names, else None."""
    if "/" in model:
        return None
    for pattern, provider in TEXTGRAD_NAMES:
        if pattern.match(model):
            name = model.removeprefix("ollama-") if provider == "ollama/" else model
            return provider + name if name else None
    return None


def textgraph_model(model: str, *, stacklevel: int = 2) -> str:
    """`model`, or its textgraph spelling (with a warning naming it) for a TextGrad name."""
    spelled = textgraph_spelling(model)
    if spelled is None:
        return model
    warnings.warn(
        f"{model!r} is TextGrad's spelling; textgraph's is {spelled!r} (using that)",
        UserWarning,
        stacklevel=stacklevel,
    )
    return spelled


EXPERIMENTAL = "experimental:"


def get_engine(model: str | None = None, **options: Any) -> ManagedEngine:
    """Build the engine for a model string; see the module docstring for the forms."""
    if "engine_name" in options:  # TextGrad's keyword: get_engine(engine_name="gpt-4o")
        given = options.pop("engine_name")
        if model is not None:
            raise ArgumentError(
                f"get_engine got both a model ({model!r}) and TextGrad's engine_name= "
                f"({given!r}); pass one model string, e.g. get_engine('openai/gpt-4o')"
            )
        warnings.warn(
            "engine_name= is TextGrad's keyword; textgraph takes the model string first: "
            f"get_engine({given!r})",
            UserWarning,
            stacklevel=2,
        )
        model = given
    model = model or default_model()
    if not isinstance(model, str):
        raise ArgumentError(f"model must be a string such as 'openai/gpt-4o', got {model!r}")
    if model.startswith(EXPERIMENTAL):  # TextGrad's LiteLLM prefix; our providers speak the wire
        warnings.warn(
            f"{model!r}: TextGrad's {EXPERIMENTAL!r} prefix (its LiteLLM engines) is not needed "
            f"in textgraph; using {model[len(EXPERIMENTAL) :]!r}",
            UserWarning,
            stacklevel=2,
        )
        model = model[len(EXPERIMENTAL) :]
    model = textgraph_model(model, stacklevel=3)
    provider, _, name = model.partition("/")
    managed = {k: options.pop(k) for k in list(options) if k in MANAGED_OPTIONS}
    if provider == "scripted" and not name:
        _check(options, SCRIPTED_OPTIONS, model)
        if "responder" not in options:
            raise ArgumentError("get_engine('scripted') needs responder=callable(request) -> str")
        inner: Engine = ScriptedEngine(options.pop("responder"), **options)
        managed.setdefault("cache", False)
    elif provider in ("openai", "anthropic", "ollama") and name:
        _check(options, HTTP_OPTIONS, model)
        inner = _http_engine(provider, name, options, replaying=managed.get("replay") is not None)
    elif provider == "local" and name:
        _check(options, LOCAL_OPTIONS, model)
        from textgraph.engines.providers.llamacpp import LlamaCppEngine, smollm2_path

        path = smollm2_path() if name == "smollm2" else Path(name).expanduser()
        inner = LlamaCppEngine(path, model_name=model, **options)
    else:
        raise UnknownModelError(f"unknown model string {model!r}; use one of: {FORMS}")
    return ManagedEngine(
        inner,
        cache=_cache(managed.pop("cache", True), managed.pop("cache_max_bytes", DEFAULT_MAX_BYTES)),
        **managed,
    )


def _check(options: dict[str, Any], allowed: set[str], model: str) -> None:
    unknown = sorted(set(options) - allowed - MANAGED_OPTIONS)
    if unknown:
        raise ArgumentError(
            f"unknown option(s) {unknown} for {model!r}; valid: {sorted(allowed | MANAGED_OPTIONS)}"
        )


def _cache(setting: Any, max_bytes: int) -> ResponseCache | None:
    if setting is False or setting is None:
        return None
    if setting is True:
        return ResponseCache(max_bytes=max_bytes)
    if isinstance(setting, ResponseCache):
        return setting
    if isinstance(setting, (str, os.PathLike)):
        return ResponseCache(setting, max_bytes=max_bytes)
    raise ArgumentError(f"cache must be True, False, a path or a ResponseCache, got {setting!r}")


def _env_url(variable: str) -> str | None:
    """A base URL from the environment, checked so a bad one names the variable."""
    value = os.environ.get(variable)
    if value:
        split_base_url(value, what=f"the {variable} environment variable")
    return value


def _http_engine(provider: str, name: str, options: dict[str, Any], *, replaying: bool) -> Engine:
    if "max_attempts" in options:
        options["retry"] = RetryPolicy(max_attempts=options.pop("max_attempts"))
    if provider == "openai":
        from textgraph.engines.providers.openai import OFFICIAL_BASE_URL, OpenAIEngine

        base_url = options.pop("base_url", None) or _env_url("OPENAI_BASE_URL")
        key = options.pop("api_key", None) or os.environ.get("OPENAI_API_KEY")
        if not key and not base_url and not replaying:
            raise ConfigurationError(
                "openai/ needs an API key: set OPENAI_API_KEY or pass api_key=...; for a local "
                "compatible server (vLLM, llama.cpp, LM Studio, Ollama) pass base_url=..."
            )
        return OpenAIEngine(name, base_url=base_url or OFFICIAL_BASE_URL, api_key=key, **options)
    if provider == "anthropic":
        from textgraph.engines.providers.anthropic import OFFICIAL_BASE_URL, AnthropicEngine

        base_url = options.pop("base_url", None) or _env_url("ANTHROPIC_BASE_URL")
        key = options.pop("api_key", None) or os.environ.get("ANTHROPIC_API_KEY")
        if not key and not base_url and not replaying:
            raise ConfigurationError(
                "anthropic/ needs an API key: set ANTHROPIC_API_KEY or pass api_key=..."
            )
        return AnthropicEngine(name, base_url=base_url or OFFICIAL_BASE_URL, api_key=key, **options)
    from textgraph.engines.providers.ollama import OllamaEngine, host_url

    base_url = options.pop("base_url", None)
    if not base_url:
        base_url = host_url(os.environ.get("OLLAMA_HOST"))
        if os.environ.get("OLLAMA_HOST"):
            split_base_url(base_url, what="the OLLAMA_HOST environment variable")
    options.pop("api_key", None)
    return OllamaEngine(name, base_url=base_url, **options)
