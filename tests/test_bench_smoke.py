"""A tiny run of the bench's `step` workload, so the harness cannot rot.

It asserts request counts and the critical path, never time.
"""

from __future__ import annotations

from bench.server import bench_reply
from bench.workloads import textgraph_step
from textgraph.engines import ScriptedEngine
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
