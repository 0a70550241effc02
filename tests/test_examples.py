"""The example programs run end to end on the scripted engine."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

from textgraph.engines import ScriptedEngine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
import code_optimization

FIXED = '''def median(values):
    """The median of a list of numbers."""
    if not values:
        raise ValueError("median of an empty list")
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2
'''


def test_code_optimization_reaches_passing_tests():
    replies = iter(
        [
            "def median(values):\n    return sorted(values)[len(values) // 2]\n",
            "def median(values) this is not python",
            FIXED,
        ]
    )

    def respond(request):
        if request.purpose == "optimizer":
            prompt = request.messages[-1].content
            start, end = re.search(
                r"between (<NEW_VALUE_\w+>) and (</NEW_VALUE_\w+>)", prompt
            ).groups()
            assert "AssertionError" in prompt or "SyntaxError" in prompt  # tests' feedback
            return f"{start}\n{next(replies)}\n{end}"
        raise AssertionError(f"no LLM call expected for {request.purpose}")

    engine = ScriptedEngine(respond, raw=True)
    result = asyncio.run(code_optimization.optimize(engine, steps=5))
    scores = [h["score"] for h in result["history"]]
    assert scores[0] < 1.0 and scores[-1] == 1.0 and result["passed"]
    assert scores[2] == 0.0  # the syntax error was a loss, not a crash
    assert result["code"].strip() == FIXED.strip()
    assert [c.request.purpose for c in engine.calls] == ["optimizer"] * 3
