"""Real provider payloads (../shared/data/llm_responses) and a cache shared by processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import textgraph as tg
from textgraph.engines import ChatRequest, ResponseCache
from textgraph.engines.http import RetryPolicy
from textgraph.engines.providers.anthropic import AnthropicEngine
from textgraph.engines.providers.openai import OpenAIEngine

SHARED_DATA = Path(
    os.environ.get("TEXTGRAPH_SHARED_DATA")
    or Path(__file__).resolve().parents[2] / "shared" / "data"
)
PAYLOADS = SHARED_DATA / "llm_responses"
needs_payloads = pytest.mark.skipif(
    not (PAYLOADS / "index.json").exists(),
    reason=f"recorded provider payloads not found at {PAYLOADS}",
)


def replaying(cls, filename: str, status: int, attempts: list[int]):
    body = (PAYLOADS / filename).read_bytes()

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        return httpx.Response(status, content=body, headers={"Content-Type": "application/json"})

    async def no_sleep(seconds: float) -> None:
        return None

    return cls(
        "model",
        base_url="https://provider.invalid",
        api_key="sk-fake-key",
        transport=httpx.MockTransport(handler),
        sleep=no_sleep,
        retry=RetryPolicy(max_attempts=2),
    )


def ask() -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": "Hello!"}])


@needs_payloads
@pytest.mark.parametrize(
    ("cls", "filename", "text", "prompt", "completion"),
    [
        (
            OpenAIEngine,
            "openai_chat_completion_basic.json",
            "Hello! How can I assist you today?",
            9,
            9,
        ),
        (
            OpenAIEngine,
            "openai_chat_completion_json_schema.json",
            '{"city":"Mexico City","country":"Mexico"}',
            92,
            15,
        ),
        (
            AnthropicEngine,
            "anthropic_message_basic.json",
            "The capital of France is **Paris**.",
            14,
            11,
        ),
    ],
)
def test_real_success_payloads_parse(cls, filename, text, prompt, completion):
    response = replaying(cls, filename, 200, []).generate_sync(ask())
    assert response.text == text
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (prompt, completion)


@needs_payloads
@pytest.mark.parametrize(
    ("cls", "filename", "status", "error", "tries", "words"),
    [
        (
            OpenAIEngine,
            "openai_error_401_invalid_api_key.json",
            401,
            tg.AuthenticationError,
            1,
            "Incorrect API key",
        ),
        (
            OpenAIEngine,
            "openai_error_429_insufficient_quota.json",
            429,
            tg.RateLimitError,
            1,
            "quota exhausted",
        ),
        (
            OpenAIEngine,
            "openai_error_429_rate_limit_tokens.json",
            429,
            tg.RateLimitError,
            2,
            "tokens per min",
        ),
        (OpenAIEngine, "openai_error_400_invalid_request.json", 400, tg.ProviderError, 1, "400"),
        (
            AnthropicEngine,
            "anthropic_error_429_rate_limit.json",
            429,
            tg.RateLimitError,
            2,
            "rate limit",
        ),
        (
            AnthropicEngine,
            "anthropic_error_400_invalid_request.json",
            400,
            tg.ProviderError,
            1,
            "effort level",
        ),
    ],
)
def test_real_error_payloads_become_typed_errors(cls, filename, status, error, tries, words):
    attempts: list[int] = []
    with pytest.raises(error) as caught:
        replaying(cls, filename, status, attempts).generate_sync(ask())
    assert words in str(caught.value) and len(attempts) == tries
    assert "sk-fake-key" not in str(caught.value)


@needs_payloads
def test_anthropic_tool_use_payload_yields_the_tool_input_as_json():
    engine = replaying(AnthropicEngine, "anthropic_message_tool_use.json", 200, [])
    request = ask().model_copy(
        update={
            "response_format": tg.engines.ResponseFormat(
                type="json_schema", json_schema={"type": "object"}
            )
        }
    )
    assert json.loads(engine.generate_sync(request).text) == {"location": "New York, NY"}


WRITER = """
import sys
from textgraph.engines import ChatResponse, ResponseCache
cache = ResponseCache(sys.argv[1])
tag = sys.argv[2]
for i in range(150):
    cache.put(f"{tag}-{i}", ChatResponse(text=f"{tag} {i}"))
    assert cache.get(f"{tag}-{i // 2}").text == f"{tag} {i // 2}"
"""


def test_two_processes_hammering_one_cache_lose_nothing(tmp_path):
    path = tmp_path / "shared.sqlite"
    ResponseCache(path)  # create the schema first, as the first engine would
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), tag], stderr=subprocess.PIPE)
        for tag in ("a", "b")
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    cache = ResponseCache(path)
    assert cache.stats()["entries"] == 300
    assert cache.get("a-149").text == "a 149" and cache.get("b-0").text == "b 0"
