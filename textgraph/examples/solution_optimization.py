"""Solution optimization: refine each answer at test time, then take a majority vote.

TextGrad's GPQA setup, on math word problems: a model writes a step-by-step
solution; the solution itself is the parameter; a critic that sees the
question (but not the answer key) points out errors; TGD rewrites the
solution; after a few steps the final answer is the majority vote over the
answers of every iterate. Accuracy of the first answer and of the vote are
compared against the answer key, which the loop never sees.

    python -m textgraph.examples.solution_optimization            # 12 shipped problems
    python -m textgraph.examples.solution_optimization --model openai/gpt-4o \\
        --data gsm8k/test.jsonl --limit 100 --steps 3

Each finished question is appended to results.jsonl in the run directory;
`--resume` skips the questions already there. Adapt it: change the solver
and critic instructions, and `final_number` for answers that are not numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import textgraph as tg
from textgraph._io import atomic_write_json
from textgraph._text import shorten
from textgraph.datasets import GSM8KExample, load_gsm8k, load_word_problems
from textgraph.examples._common import (
    add_engine_arguments,
    default_run_dir,
    example_main,
    make_engines,
    print_usage,
)

SOLVER_PROMPT = (
    "Solve the math problem step by step. The last line of your response must be "
    "'Answer: N', where N is a number without units."
)
CRITIC_INSTRUCTION = (
    "Find the errors in this solution to the math question: misread quantities, wrong "
    "operations, arithmetic mistakes, unjustified steps, a final answer that does not follow "
    "from the work. Check every calculation. Do not write a corrected solution; say precisely "
    "what is wrong and why. Be concise."
)


def final_number(text: str) -> str | None:
    """The first number after the last 'Answer:' (else the last number), no separators."""
    answered = "Answer:" in text
    found = re.findall(r"-?\d[\d,]*(?:\.\d+)?", text.rsplit("Answer:", 1)[-1])
    if not found:
        return None
    number = (found[0] if answered else found[-1]).replace(",", "").rstrip(".")
    return number[:-2] if number.endswith(".0") else number


def majority_vote(answers: list[str | None]) -> str | None:
    """The most common answer; a tie goes to the earliest (TextGrad's rule)."""
    counted = Counter(a for a in answers if a is not None)
    return counted.most_common(1)[0][0] if counted else None


async def optimize_solution(
    question: str,
    engine: tg.engines.Engine,
    critic: tg.engines.Engine,
    *,
    steps: int = 3,
    max_tokens: int | None = None,
    repair: bool = True,
) -> dict[str, Any]:
    """First solution, `steps` critique-and-rewrite rounds, the vote. Never sees the key."""
    question_var = tg.Variable(question, role_description="math question")
    first = await tg.LLMCall(engine, SOLVER_PROMPT, max_tokens=max_tokens).acall(question_var)
    solution = tg.Variable(
        first.value,
        role_description="step-by-step solution to the math question",
        requires_grad=True,
    )
    loss_fn = tg.MultiFieldEvaluation(
        CRITIC_INSTRUCTION, ["math question", "solution to check"], engine=critic
    )
    optimizer = tg.TGD(
        [solution],
        engine=critic,
        constraints=[
            "Keep solving the same question; fix the errors the feedback points out.",
            "End with a last line of the form 'Answer: N', where N is a number.",
        ],
        repair=repair,
    )
    iterates, critiques, warnings = [solution.value], [], []
    for _ in range(steps):
        loss = await loss_fn.acall([question_var, solution])
        critiques.append(loss.value)
        await loss.abackward()
        for update in await optimizer.astep():
            if update.warning:
                warnings.append(update.warning)
        optimizer.zero_grad()
        iterates.append(solution.value)
    answers = [final_number(text) for text in iterates]
    return {
        "iterates": iterates,
        "critiques": critiques,
        "answers": answers,
        "vote": majority_vote(answers),
        "warnings": warnings,
    }


def load_problems(data: Path | None, limit: int | None) -> list[GSM8KExample]:
    problems = load_gsm8k(data) if data is not None else load_word_problems()
    return problems[:limit] if limit else problems


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_engine_arguments(parser)
    parser.add_argument(
        "--data", type=Path, help="GSM8K JSONL (default: the 12 problems shipped with textgraph)"
    )
    parser.add_argument("--limit", type=int, help="only the first N problems")
    parser.add_argument("--steps", type=int, default=3, help="critique-and-rewrite rounds (3)")
    parser.add_argument(
        "--concurrency", type=int, default=8, help="problems optimized at the same time (8)"
    )
    parser.add_argument(
        "--max-tokens", type=int, help="cap per solution (default: 160 on a local model)"
    )
    parser.add_argument("--run-dir", type=Path, help="default: runs/solution-optimization-<time>")
    parser.add_argument(
        "--resume", action="store_true", help="continue in --run-dir, skipping finished problems"
    )


def run(args: argparse.Namespace, console: Console | None = None) -> dict[str, Any]:
    return asyncio.run(arun(args, console or Console()))


async def arun(
    args: argparse.Namespace,
    console: Console,
    engines: tuple[tg.engines.Engine, tg.engines.Engine] | None = None,
) -> dict[str, Any]:
    """The whole program; `engines` = (solver, critic) overrides --model/--critic."""
    started = time.perf_counter()
    if args.steps < 1 or args.concurrency < 1 or (args.limit is not None and args.limit < 1):
        raise tg.ArgumentError("--steps, --concurrency and --limit must be >= 1")
    if args.resume and args.run_dir is None:
        raise tg.ArgumentError("--resume needs --run-dir: the run to continue")
    problems = load_problems(args.data, args.limit)
    engine, critic = engines or make_engines(args, console)
    run_dir = args.run_dir or default_run_dir("solution-optimization")
    results_path = Path(run_dir) / "results.jsonl"
    done = _finished(results_path) if args.resume else {}
    if results_path.exists() and not args.resume:
        raise tg.RunError(f"{run_dir} already holds results; pass --resume or another --run-dir")
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    console.print(
        f"[bold]Solution optimization[/bold]: {len(problems)} problems, {args.steps} "
        f"critique-and-rewrite steps each, majority vote over the iterates"
        + (f"; {len(done)} already done" if done else "")
        + "."
    )
    local = getattr(engine, "model_name", "").startswith("local/")
    max_tokens = args.max_tokens or (160 if local else None)
    limit = asyncio.Semaphore(args.concurrency)

    async def one(index: int, problem: GSM8KExample) -> dict[str, Any]:
        async with limit:
            result = await optimize_solution(
                problem.question,
                engine,
                critic,
                steps=args.steps,
                max_tokens=max_tokens,
                repair=not local,
            )
        row = {"index": index, "question": problem.question, "gold": problem.answer, **result}
        _append(results_path, row)  # a crash loses at most the problems in flight
        console.print(
            f"problem {index}: answers {' -> '.join(a or '?' for a in result['answers'])}, "
            f"vote {result['vote'] or '?'}, key {problem.answer}",
            markup=False,
        )
        return row

    with tg.engines.track_usage() as usage:
        todo = [(i, p) for i, p in enumerate(problems) if i not in done]
        fresh = await asyncio.gather(*(one(i, p) for i, p in todo))
    rows = sorted([*done.values(), *fresh], key=lambda r: r["index"])
    scores = {
        "first": _accuracy(rows, lambda r: r["answers"][0]),
        "last": _accuracy(rows, lambda r: r["answers"][-1]),
        "vote": _accuracy(rows, lambda r: r["vote"]),
    }
    summary = {
        "problems": len(rows),
        "steps": args.steps,
        "accuracy": scores,
        "calls": usage.total.calls,
        "tokens": usage.total.total_tokens,
        "cost_usd": round(usage.total.cost_usd, 6),
        "seconds": round(time.perf_counter() - started, 3),
    }
    atomic_write_json(Path(run_dir) / "summary.json", summary)

    table = Table(title="Accuracy against the answer key", title_justify="left")
    table.add_column("answer used")
    table.add_column("accuracy", justify="right")
    table.add_row("first solution (before)", f"{scores['first']:.0%}")
    table.add_row(f"after {args.steps} steps", f"{scores['last']:.0%}")
    table.add_row("majority vote over the iterates", f"{scores['vote']:.0%}")
    console.print(table)
    print_usage(console, usage, summary["seconds"])
    changed = next((r for r in rows if r["answers"][0] != r["vote"]), rows[0] if rows else None)
    if changed is not None:
        console.print(f"\n[bold]Problem {changed['index']}[/bold]: {changed['question']}")
        console.print("[bold]first critique:[/bold] ", end="")
        console.print(shorten(changed["critiques"][0], 300), markup=False, highlight=False)
        console.print("[bold]final solution:[/bold]")
        console.print(changed["iterates"][-1], markup=False, highlight=False)
    console.print(f"\nrun directory: {run_dir} (results.jsonl has every iterate and critique)")
    return {"rows": rows, "summary": summary, "run_dir": run_dir}


def _accuracy(rows: list[dict[str, Any]], pick: Any) -> float:
    return sum(pick(r) == r["gold"] for r in rows) / len(rows) if rows else 0.0


def _finished(path: Path) -> dict[int, dict[str, Any]]:
    if not path.exists():
        return {}
    rows = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash: that problem runs again
        if not isinstance(row, dict) or "index" not in row:
            raise tg.RunError(f"{path} line {number} is not a result of this example")
        rows[row["index"]] = row
    return rows


def _append(path: Path, row: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def main(argv: list[str] | None = None) -> int:
    return example_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
