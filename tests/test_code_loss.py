"""CodeTestLoss and the sandbox: bad code is a loss, never a crash."""

from __future__ import annotations

import textgraph as tg
from textgraph.sandbox import run_tests

TESTS = """
def test_small():
    assert add(1, 2) == 3

def test_negative():
    assert add(-1, -2) == -3
"""


def code(text: str) -> tg.Variable:
    return tg.Variable(text, role_description="Python function add", requires_grad=True)


def test_passing_code_scores_one_and_sends_no_critique():
    loss = tg.CodeTestLoss(TESTS)(code("def add(a, b):\n    return a + b\n"))
    assert loss.score == 1.0 and loss.value == "All 2 tests passed."


def test_failures_and_tracebacks_become_the_critique():
    source = code("def add(a, b):\n    return abs(a) + abs(b)\n")
    loss = tg.CodeTestLoss(TESTS)(source)
    assert loss.score == 0.5 and "1 of 2 tests failed" in loss.value
    assert "test_negative" in loss.value and "AssertionError" in loss.value
    loss.backward()
    assert source.gradients[0].text == loss.value  # no LLM call: the tests are the critique


def test_syntax_errors_failing_imports_and_network_are_losses():
    assert "SyntaxError" in tg.CodeTestLoss(TESTS)(code("def add(a, b) return a+b")).value
    failing = tg.CodeTestLoss(TESTS)(code("import not_a_real_module\n"))
    assert failing.score == 0.0 and "ModuleNotFoundError" in failing.value
    network = run_tests(
        "import socket\ndef add(a, b):\n    socket.create_connection(('127.0.0.1', 9))\n", TESTS
    )
    assert not network.passed and "network access is disabled" in network.tests[0].traceback


def test_infinite_loops_are_killed_within_the_timeout():
    result = run_tests("def add(a, b):\n    while True:\n        pass\n", TESTS, timeout_s=1.5)
    assert result.timed_out and "did not finish within 1.5 s" in result.error
    loss = tg.CodeTestLoss(TESTS, timeout_s=1.5)(code("while True:\n    pass\n"))
    assert loss.score == 0.0 and "killed" in loss.value


def test_memory_limit_turns_a_hog_into_a_failed_test():
    result = run_tests(
        "def add(a, b):\n    x = bytearray(2 * 1024 ** 3)\n    return a + b\n", TESTS, memory_mb=256
    )
    assert not result.passed
    assert all("MemoryError" in t.traceback for t in result.tests)
