"""Run untrusted Python (model-written code and its tests) in a contained subprocess.

Fresh temporary directory, isolated interpreter (`python -I`), a CPU and
memory limit, a wall-clock timeout after which the whole process group is
killed, sockets disabled inside the child, and bounded output. Whatever the
code does — syntax errors, infinite loops, failing imports, exhausting
memory — the caller gets a `SandboxResult`, never an exception.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

MAX_OUTPUT = 20_000

# The child's entry point: no network, then run the tests and report as JSON on stdout.
RUNNER = r"""
import json, socket, sys, traceback

def _no_network(*args, **kwargs):
    raise OSError("network access is disabled in the textgraph sandbox")

socket.socket = _no_network
socket.create_connection = _no_network

report = {"tests": [], "error": None}
namespace = {"__name__": "solution"}
try:
    with open("solution.py", encoding="utf-8") as handle:
        exec(compile(handle.read(), "solution.py", "exec"), namespace)
except BaseException:
    report["error"] = "the solution failed to load:\n" + traceback.format_exc(limit=5)
else:
    tests = {"__name__": "tests", **{k: v for k, v in namespace.items() if not k.startswith("__")}}
    try:
        with open("tests.py", encoding="utf-8") as handle:
            exec(compile(handle.read(), "tests.py", "exec"), tests)
    except BaseException:
        report["error"] = "the tests failed to load:\n" + traceback.format_exc(limit=5)
    else:
        for name in sorted(k for k, v in tests.items() if k.startswith("test") and callable(v)):
            try:
                tests[name]()
                report["tests"].append({"name": name, "passed": True})
            except BaseException:
                report["tests"].append({"name": name, "passed": False,
                                        "traceback": traceback.format_exc(limit=6)})
print("\n@@TEXTGRAPH_REPORT@@" + json.dumps(report))
"""


@dataclass
class TestOutcome:
    name: str
    passed: bool
    traceback: str = ""


@dataclass
class SandboxResult:
    tests: list[TestOutcome] = field(default_factory=list)
    error: str | None = None  # load failure, timeout, crash
    timed_out: bool = False
    returncode: int | None = None
    stdout: str = ""

    @property
    def passed(self) -> bool:
        return self.error is None and bool(self.tests) and all(t.passed for t in self.tests)

    @property
    def score(self) -> float:
        if self.error is not None or not self.tests:
            return 0.0
        return sum(t.passed for t in self.tests) / len(self.tests)


def _limits(memory_mb: int, cpu_s: int) -> None:
    os.setsid()  # its own process group, so a timeout kills every child too
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb * 1024 * 1024,) * 2)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))


def run_tests(
    code: str, tests: str, *, timeout_s: float = 10.0, memory_mb: int = 512
) -> SandboxResult:
    """Run `tests` (functions named test_*, using plain asserts) against `code`."""
    with tempfile.TemporaryDirectory(prefix="textgraph-sandbox-") as folder:
        root = Path(folder)
        (root / "solution.py").write_text(code, encoding="utf-8")
        (root / "tests.py").write_text(tests, encoding="utf-8")
        (root / "runner.py").write_text(RUNNER, encoding="utf-8")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin"),
            "HOME": folder,
            "PYTHONDONTWRITEBYTECODE": "1",
            "no_proxy": "*",
        }
        proc = subprocess.Popen(
            [sys.executable, "-I", "runner.py"],
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: _limits(memory_mb, max(1, int(timeout_s) + 1)),
        )
        try:
            out, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            return SandboxResult(
                error=f"the code did not finish within {timeout_s:g} s "
                "(an infinite loop, or far too slow); it was killed",
                timed_out=True,
                returncode=proc.returncode,
                stdout=_tail(out),
            )
    text = out.decode("utf-8", "replace")
    marker = text.rfind("@@TEXTGRAPH_REPORT@@")
    if marker < 0:
        reason = (
            "it ran out of memory"
            if proc.returncode in (-9, 137, 1) and "MemoryError" in text
            else f"exit code {proc.returncode}"
        )
        return SandboxResult(
            error=f"the test run crashed ({reason}):\n{_tail(text)}",
            returncode=proc.returncode,
            stdout=_tail(text),
        )
    report = json.loads(text[marker + len("@@TEXTGRAPH_REPORT@@") :])
    return SandboxResult(
        tests=[
            TestOutcome(t["name"], t["passed"], t.get("traceback", "")) for t in report["tests"]
        ],
        error=report["error"],
        returncode=proc.returncode,
        stdout=_tail(text[:marker]),
    )


def _tail(text: str | bytes) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return text if len(text) <= MAX_OUTPUT else "…" + text[-MAX_OUTPUT:]
