"""CodeTestLoss: unit tests decide, their failures are the critique.

`tg.CodeTestLoss(tests)(code)` runs `tests` (functions named test_* with
plain asserts, calling what the code defines) against the code in a
sandbox (see textgraph.sandbox). All passing: a perfect score and no
gradient. Otherwise the failing tests' tracebacks — or the load error, the
timeout, the crash — are the loss text, and that text goes straight back to
the code as its critique. Bad code is a loss, never an exception.
"""

from __future__ import annotations

import asyncio

from textgraph._sync import run_sync
from textgraph.errors import ArgumentError
from textgraph.losses.base import Loss
from textgraph.ops.base import Node, shown
from textgraph.sandbox import SandboxResult, run_tests
from textgraph.variable import Variable, ensure_variable

MAX_CRITIQUE = 6000


def describe_result(result: SandboxResult) -> str:
    if result.passed:
        return f"All {len(result.tests)} tests passed."
    if result.error is not None:
        return f"The tests could not run: {result.error}"
    failed = [t for t in result.tests if not t.passed]
    parts = [f"{len(failed)} of {len(result.tests)} tests failed."]
    for t in failed:
        parts.append(f"\n{t.name} failed:\n{t.traceback.strip()}")
    text = "\n".join(parts)
    return text if len(text) <= MAX_CRITIQUE else text[: MAX_CRITIQUE - 1] + "…"


class CodeTestLoss(Loss):
    name = "code_tests"

    def __init__(self, tests: str, *, timeout_s: float = 10.0, memory_mb: int = 512) -> None:
        if not isinstance(tests, str) or "def test" not in tests:
            raise ArgumentError(
                "CodeTestLoss needs tests as Python source with functions named test_* "
                "(plain asserts), e.g. 'def test_add():\\n    assert add(1, 2) == 3'"
            )
        self.tests, self.timeout_s, self.memory_mb = tests, timeout_s, memory_mb

    def __call__(self, code: Variable) -> Variable:
        return run_sync(self.acall(code))

    async def acall(self, code: Variable) -> Variable:
        code = ensure_variable(code, "CodeTestLoss input")
        result = await asyncio.to_thread(
            run_tests, code.value, self.tests, timeout_s=self.timeout_s, memory_mb=self.memory_mb
        )
        node = Node(op=self, inputs=(code,), saved={"result": result})
        return self.output(
            describe_result(result),
            role_description=f"unit test results of the {code.role_description}",
            node=node,
            score=result.score,
        )

    def is_perfect(self, node: Node) -> bool:
        return node.saved["result"].passed

    def describe(self, node: Node, elide: Variable | None = None) -> str:
        (code,) = node.inputs
        return (
            f'Unit tests were run against the code.\n<INPUT role="{code.role_description}">'
            f'\n{shown(code, elide)}\n</INPUT>\n<INPUT role="unit tests">\n{self.tests}\n'
            "</INPUT>"
        )

    def location_of(self, node: Node, variable: Variable) -> str:
        return "the code under test"
