"""Prompt optimization: BBH object counting, the TextGrad paper's setup.

A model answers counting questions under a system prompt, which is the
parameter. Exact match of the final number decides; the critic explains
each failure; backward turns the explanations into critiques of the
prompt; TGD rewrites it; a rewrite is kept only if validation accuracy does
not drop. Test accuracy is measured before and after on held-out questions.

    textgraph demo                                   # this program, small sizes
    python -m textgraph.examples.object_counting --model openai/gpt-4o-mini \\
        --critic openai/gpt-4o --paper --data bbh/object_counting.json

Adapt it: replace `ObjectCounter.aforward` with your pipeline, `exact_match`
with your metric, and `load_splits` with your data.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from pathlib import Path

from rich.console import Console

import textgraph as tg
from textgraph.datasets import generate_object_counting, load_bbh
from textgraph.examples._common import (
    add_engine_arguments,
    default_run_dir,
    example_main,
    make_engines,
    print_trainer_summary,
)
from textgraph.runs import Summary

START_PROMPT = (
    "You will answer a reasoning question. Think step by step. The last line of your "
    "response must be 'Answer: N', where N is a number."
)

Example = dict[str, str]  # {"question": ..., "answer": ...}


class ObjectCounter(tg.Module):
    """One LLM call; its system prompt is what gets optimized."""

    def __init__(self, engine: tg.engines.Engine, *, max_tokens: int | None = None) -> None:
        self.system_prompt = tg.Variable(
            START_PROMPT,
            role_description="system prompt of a model that answers object-counting questions",
            requires_grad=True,
        )
        self.model = tg.LLMCall(
            engine,
            self.system_prompt,
            role_description="answer to the counting question",
            max_tokens=max_tokens,
        )

    async def aforward(self, example: Example) -> tg.Variable:
        question = tg.Variable(example["question"], role_description="object-counting question")
        return await self.model.acall(question)


_NUMBER_WORDS = "zero one two three four five six seven eight nine ten eleven twelve".split()


def final_number(text: str) -> str | None:
    """The first number after the last 'Answer:', else the last number (digits or a word)."""
    answered = "Answer:" in text
    tail = text.rsplit("Answer:", 1)[-1]
    found = re.findall(r"-?\d+|\b(?:" + "|".join(_NUMBER_WORDS) + r")\b", tail.lower())
    if not found:
        return None
    last = found[0] if answered else found[-1]
    return str(_NUMBER_WORDS.index(last)) if last in _NUMBER_WORDS else str(int(last))


def exact_match(prediction: str, example: Example) -> float:
    """The metric: 1.0 when the final number is the right count."""
    return same_number(prediction, example["answer"])


def same_number(prediction: str, target: str) -> float:
    return float(final_number(prediction) == target)


def load_splits(
    data: Path | None, sizes: tuple[int, int, int], seed: int
) -> tuple[list[Example], list[Example], list[Example]]:
    """Train, val and test: from a BBH JSON file (shuffled with the seed) or generated."""
    need = sum(sizes)
    if data is not None:
        rows = [{"question": e.input, "answer": e.target} for e in load_bbh(data)]
        if len(rows) < need:
            raise tg.ArgumentError(
                f"{data} has {len(rows)} examples; the splits need {need} "
                f"({sizes[0]} train + {sizes[1]} val + {sizes[2]} test): choose smaller sizes"
            )
        random.Random(seed).shuffle(rows)
    else:
        rows = [
            {"question": e.question, "answer": e.answer}
            for e in generate_object_counting(need, seed=seed)
        ]
    train, val = rows[: sizes[0]], rows[sizes[0] : sizes[0] + sizes[1]]
    return train, val, rows[sizes[0] + sizes[1] : need]


def build_trainer(
    engine: tg.engines.Engine,
    critic: tg.engines.Engine,
    train: list[Example],
    val: list[Example],
    test: list[Example],
    *,
    steps: int = 3,
    batch_size: int = 4,
    seed: int = 0,
    run_dir: Path | None = None,
    max_tokens: int | None = None,
    budget: tg.Budget | None = None,
    repair: bool = True,
    val_subset: int | None = None,
) -> tg.Trainer:
    module = ObjectCounter(engine, max_tokens=max_tokens)
    loss = tg.MetricLoss(same_number, critic)
    optimizer = tg.TGD(
        module.parameters(),
        engine=critic,
        constraints=[
            "The prompt must keep asking for a last line of the form 'Answer: N'.",
            "Keep the prompt under 150 words; state general rules, never specific questions.",
        ],
        repair=repair,
    )
    return tg.Trainer(
        module,
        lambda output, example: loss.acall(output, example["answer"]),
        optimizer=optimizer,
        metric=exact_match,
        train=train,
        val=val,
        test=test,
        batch_size=batch_size,
        max_steps=steps,
        seed=seed,
        run_dir=run_dir,
        budget=budget,
        gate="not_worse",
        val_subset=val_subset,
        backward_engine=critic,
        reject_copies=True,
        test_before=True,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_engine_arguments(parser, simulated=True)
    parser.add_argument("--train", type=int, default=12, help="training questions (12)")
    parser.add_argument("--val", type=int, default=20, help="validation questions (20)")
    parser.add_argument("--test", type=int, default=20, help="held-out test questions (20)")
    parser.add_argument("--steps", type=int, default=3, help="optimization steps (3)")
    parser.add_argument(
        "--batch-size", type=int, default=3, help="questions per step (3, as in the paper)"
    )
    parser.add_argument(
        "--paper",
        action="store_true",
        help="the TextGrad paper's sizes: 50 train / 100 val / 100 test, 12 steps of 3",
    )
    parser.add_argument(
        "--data", type=Path, help="a BBH object_counting.json (default: generated questions)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of data, splits and batches")
    parser.add_argument(
        "--max-tokens",
        type=int,
        help="cap on each answer's tokens (default: 64 on a local model, else none)",
    )
    parser.add_argument("--max-cost", type=float, help="stop before spending more dollars")
    parser.add_argument("--run-dir", type=Path, help="default: runs/object-counting-<time>")


def run(args: argparse.Namespace, console: Console | None = None) -> Summary:
    console = console or Console()
    if args.paper:
        args.train, args.val, args.test, args.steps, args.batch_size = 50, 100, 100, 12, 3
    if min(args.train, args.val, args.test, args.steps, args.batch_size) < 1:
        raise tg.ArgumentError("--train, --val, --test, --steps and --batch-size must be >= 1")
    console.print(
        "[bold]Prompt optimization[/bold]: a system prompt for object-counting questions "
        f"({args.train} train / {args.val} val / {args.test} test, {args.steps} steps of "
        f"{args.batch_size})."
    )
    from textgraph.examples.simulated_counting import simulated_engine

    engine, critic = make_engines(args, console, simulated=simulated_engine)
    max_tokens, repair, val_subset = args.max_tokens, True, None
    if engine.model_name.startswith("local/"):
        # Every call costs seconds on a CPU, and a small model rambles and seldom fixes its
        # format when asked again: cap the answers, skip the optimizer's repair turn, and
        # stop scoring a rewrite after 8 validation questions when it is already worse there.
        max_tokens, repair = max_tokens or 64, False
        val_subset = 8 if args.val > 8 else None
    train, val, test = load_splits(args.data, (args.train, args.val, args.test), args.seed)
    run_dir = args.run_dir or default_run_dir("object-counting")
    trainer = build_trainer(
        engine,
        critic,
        train,
        val,
        test,
        steps=args.steps,
        batch_size=args.batch_size,
        seed=args.seed,
        run_dir=run_dir,
        max_tokens=max_tokens,
        budget=tg.Budget(max_cost_usd=args.max_cost) if args.max_cost else None,
        repair=repair,
        val_subset=val_subset,
    )
    result = trainer.fit()
    for record in result.history:
        console.print(f"step {record.step}: {record.reason}")
        for note in record.notes:
            console.print(f"  {note}", markup=False)
    critiques = [(r.step, g) for r in result.history for g in r.gradients["system_prompt"]]
    if critiques:
        step, first = critiques[0]
        console.print(
            f"\n[bold]A critique the system prompt received (step {step}, training example "
            f"{first.example}):[/bold]"
        )
        console.print(first.text, markup=False, highlight=False)
    console.print()
    print_trainer_summary(console, result.summary, run_dir)
    return result.summary


def main(argv: list[str] | None = None) -> int:
    return example_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
