"""Code optimization: TGD rewrites a function until its unit tests pass.

The parameter is the function's source. The loss runs the unit tests in a
sandbox (own process, temp dir, time and memory limits, no network); the
failing tests' tracebacks are the critique; TGD rewrites the code. Bad code
(syntax errors, infinite loops, failing imports) is a loss, never a crash.

    python examples/code_optimization.py                      # the embedded model
    python examples/code_optimization.py --model openai/gpt-4o-mini --steps 5

Adapt it: put your function in START, your tests in TESTS.
"""

from __future__ import annotations

import argparse
import asyncio

import textgraph as tg

START = '''def median(values):
    """The median of a list of numbers."""
    values.sort()
    return values[len(values) // 2]
'''

TESTS = """
def test_odd():
    assert median([3, 1, 2]) == 2

def test_even():
    assert median([4, 1, 3, 2]) == 2.5

def test_does_not_modify_its_input():
    data = [3, 1, 2]
    median(data)
    assert data == [3, 1, 2]

def test_empty_raises():
    try:
        median([])
    except ValueError:
        return
    raise AssertionError("median([]) must raise ValueError")
"""


async def optimize(
    engine: tg.engines.Engine, steps: int = 3, start: str = START, tests: str = TESTS
) -> dict:
    code = tg.Variable(
        start, role_description="Python source of the function under test", requires_grad=True
    )
    loss_fn = tg.CodeTestLoss(tests, timeout_s=10)
    optimizer = tg.TGD(
        [code],
        engine=engine,
        constraints=[
            "Return only complete, runnable Python source: no Markdown fences, no explanations.",
            "Keep the function's name and signature.",
        ],
    )
    history = []
    for step in range(steps + 1):
        loss = await loss_fn.acall(code)
        history.append(
            {"step": step, "score": loss.score, "code": code.value, "result": loss.value}
        )
        print(f"step {step}: {loss.value.splitlines()[0]}")
        if loss.score == 1.0 or step == steps:
            break
        await loss.abackward()
        for update in await optimizer.astep():
            if update.warning:
                print(f"  {update.warning}")
        optimizer.zero_grad()
    return {"history": history, "passed": history[-1]["score"] == 1.0, "code": code.value}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model string (default: $TEXTGRAPH_MODEL or local/smollm2)")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args(argv)
    engine = tg.get_engine(args.model)
    print(f"model: {engine.model_name}")
    result = asyncio.run(optimize(engine, args.steps))
    usage = engine.usage.total
    print(
        f"\n{'all tests pass' if result['passed'] else 'tests still failing'} after "
        f"{len(result['history']) - 1} step(s); {usage.calls} LLM calls, "
        f"{usage.total_tokens} tokens, ${usage.cost_usd:.4f}\n\nfinal code:\n{result['code']}"
    )


if __name__ == "__main__":
    main()
