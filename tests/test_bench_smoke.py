"""Tiny runs of the bench's workloads, so the harness cannot rot.

They assert request counts, the critical path and the result's fields, never time.
DSPy and TextGrad are not installed here: only textgraph's side runs.
"""

from __future__ import annotations

import os

from bench.harness import evaluate_row, fused_comparison
from bench.server import bench_reply, dspy_fields, start_server
from bench.workloads import (
    _scratch_dirs,
    textgraph_evaluate,
    textgraph_evaluate_overhead,
    textgraph_step,
)
from textgraph.engines import ChatRequest, ScriptedEngine
from textgraph.testing import LLMTestServer


def test_step_workload_makes_the_expected_requests():
    batch, repeats = 2, 1
    with LLMTestServer(ScriptedEngine(bench_reply), latency=0.005) as server:
        result = textgraph_step(server.openai_base_url, batch, repeats)
        stats = server.stats
    # per run: 2 forward + 1 loss + 2 backward per example, then 1 optimizer call;
    # the loss's critique reaches the answer without a call
    per_run = 5 * batch + 1
    assert len(stats.requests) == (repeats + 1) * per_run
    assert result["critical_path_calls"] == 6
    assert stats.max_in_flight == batch  # the examples ran side by side
    assert len(result["walls_s"]) == repeats


def test_fused_step_workload_makes_one_backward_call_per_example():
    batch, repeats = 3, 1
    with LLMTestServer(ScriptedEngine(bench_reply), latency=0.005) as server:
        result = textgraph_step(server.openai_base_url, batch, repeats, fused=True)
        stats = server.stats
    # per run: 2 forward + 1 loss + 1 fused backward per example, then 1 optimizer call
    assert len(stats.requests) == (repeats + 1) * (4 * batch + 1)
    assert result["critical_path_calls"] == 5  # forward 2, loss, fused backward, optimizer
    assert stats.max_in_flight == batch


def test_fused_comparison_checks_the_issue_targets():
    fused = {"wall_s": 0.5, "prompt_tokens": 600, "wall_over_bound": 1.2}
    textgrad = {"wall_s": 5.1, "prompt_tokens": 1000}
    row = fused_comparison(fused, textgrad, 8)
    assert row["speedup"] == 10.2 and row["prompt_token_ratio"] == 0.6
    assert row["met_speedup"] is True and row["met_bound"] is False
    assert "target" not in fused_comparison(fused, textgrad, 4)


def test_fused_loss_step_workload_has_a_four_call_critical_path():
    batch, repeats = 3, 1
    with LLMTestServer(ScriptedEngine(bench_reply), latency=0.005) as server:
        result = textgraph_step(server.openai_base_url, batch, repeats, fused_loss=True)
        stats = server.stats
    # per run: 2 forward + 1 fused evaluation-and-critique per example, then 1 optimizer call
    assert len(stats.requests) == (repeats + 1) * (3 * batch + 1)
    assert result["critical_path_calls"] == 4


def test_evaluate_workload_makes_one_request_per_example():
    examples, concurrency, latency = 50, 8, 0.01
    server = start_server(latency)
    try:
        result = textgraph_evaluate(server.openai_base_url, examples, concurrency, repeats=1)
        stats = server.stats  # reset before the timed run: the warm-up is not counted
    finally:
        server.stop()
    assert len(stats.requests) == examples
    assert all(r.status == 200 for r in stats.requests)
    assert 1 < stats.max_in_flight <= concurrency  # side by side, within the limit
    row = evaluate_row(result, examples, concurrency, latency)
    assert row["requests"] == [examples]
    assert row["http_attempts_per_run"] == examples  # no retries
    assert row["n_scored"] == examples and row["n_failed"] == 0 and row["mean"] == 1.0
    assert row["usage"]["calls"] == examples
    assert row["bound_s"] == 0.07  # ceil(50 / 8) rounds of 10 ms
    for key in (
        "wall_s",
        "walls_s",
        "examples_per_s",
        "wall_over_bound",
        "latency_p50_s",
        "latency_p95_s",
        "prompt_tokens",
        "completion_tokens",
        "max_in_flight",
    ):
        assert key in row, key
    assert len(row["walls_s"]) == 1


def test_evaluate_overhead_workload_reports_time_per_example():
    result = textgraph_evaluate_overhead(examples=200, concurrency=16, repeats=1)
    assert result["examples"] == 200
    for key in (
        "wall_s",
        "us_per_example",
        "program_only_us_per_example",
        "evaluator_us_per_example",
        "peak_rss_mb",
    ):
        assert key in result, key


def test_the_server_answers_dspy_in_its_chat_format():
    system = (
        "Your input fields are:\n1. `question` (str):\nYour output fields are:\n"
        "1. `reasoning` (str):\n2. `answer` (str): a short answer\n"
        "All interactions will be structured in the following way, with the appropriate "
        "values filled in.\n\n[[ ## question ## ]]\n{question}\n\n[[ ## reasoning ## ]]\n"
        "{reasoning}\n\n[[ ## answer ## ]]\n{answer}\n\n[[ ## completed ## ]]"
    )
    assert dspy_fields(system) == ["reasoning", "answer"]
    reply = bench_reply(ChatRequest.from_prompts(system, "[[ ## question ## ]]\nHow many?"))
    assert reply.startswith("[[ ## reasoning ## ]]\n[")
    assert "\n\n[[ ## answer ## ]]\n[" in reply
    assert reply.endswith("\n\n[[ ## completed ## ]]")
    plain = bench_reply(ChatRequest.from_prompts("Answer.", "How many?"))
    assert dspy_fields("Answer.\n\nHow many?") is None and "[[ ##" not in plain


def test_textgrad_logs_and_dspy_cache_go_to_scratch_directories(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TEXTGRAD_LOG_DIR", "")  # unset (and restored after the test)
    monkeypatch.setenv("DSPY_CACHEDIR", "")
    _scratch_dirs()
    for name in ("TEXTGRAD_LOG_DIR", "DSPY_CACHEDIR"):
        path = os.environ[name]
        assert os.path.isdir(path) and not path.startswith(str(tmp_path))
        os.rmdir(path)
    assert not (tmp_path / "logs").exists()
