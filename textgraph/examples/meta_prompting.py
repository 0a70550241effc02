"""Meta-prompting: a conductor consults experts, and TGD improves their instructions.

Suzgun & Kalai's conductor/experts: `tg.MetaPrompt` lets a conductor LLM
decide, round by round, which expert to consult and what to ask, then give
the final answer. The conductor's and each expert's instructions are
parameters: a critic explains each wrong answer, backward carries the
critique through the conductor's decisions to the instructions of the
experts it consulted, and TGD rewrites them. Accuracy on word problems is
measured before and after.

    python -m textgraph.examples.meta_prompting                  # simulated model, seconds
    python -m textgraph.examples.meta_prompting --model openai/gpt-4o-mini --steps 2
    python -m textgraph.examples.meta_prompting --model local/smollm2 --problems 2 \
        --max-rounds 1 --max-tokens 96                          # the embedded model, minutes

A problem whose conductor decision cannot be carried out (a tg.ParseError:
a consultation without a question, a reply that does not validate) counts
as wrong and is reported as failed, with its reason, in every measurement
(before, the critique pass, after each step); it gets no critique.

By default every call goes to a scripted stand-in (`--model simulated`): an
arithmetic expert that multiplies only the first two quantities of a problem
until its instructions tell it to use every quantity. Adapt it: change the
experts and `PROBLEMS`, and `final_number` for answers that are not numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import sys
from typing import Any

from rich.console import Console

import textgraph as tg
from textgraph.engines import ChatRequest, ScriptedEngine
from textgraph.examples._common import add_engine_arguments, example_main, make_engines

PROBLEMS = [
    ("A crate holds 4 rows of 5 apples. How many apples are in 3 crates?", "60"),
    ("A box has 6 packs of 2 pens. How many pens are in 7 boxes?", "84"),
    ("A shelf holds 3 rows of 8 books. How many books are on 2 shelves?", "48"),
    ("A tray has 5 rows of 4 cups. How many cups are on 6 trays?", "120"),
]

EXPERTS = {
    "arithmetic": (
        "You are an expert in arithmetic. Compute what you are asked and end with "
        "'Answer: N', where N is a number.",
        "instructions of the arithmetic expert, who computes quantities",
    ),
    "editor": (
        "You are an expert editor. Rewrite text to be clear and short.",
        "instructions of the editor expert, who rewrites text",
    ),
}
EVERY_QUANTITY = "Multiply every quantity the question gives, not only the first two."


def final_number(text: str) -> str | None:
    """The last number in `text`, or None."""
    found = re.findall(r"-?\d+(?:\.\d+)?", text)
    return found[-1] if found else None


def build(
    engine: tg.engines.Engine | str | None, max_rounds: int = 2, **options: Any
) -> tg.MetaPrompt:
    """The conductor and experts; `options` are MetaPrompt's call options (max_tokens...)."""
    experts = {
        name: tg.Variable(text, role_description=role, requires_grad=True)
        for name, (text, role) in EXPERTS.items()
    }
    return tg.MetaPrompt(engine, experts, max_rounds=max_rounds, **options)


Problems = list[tuple[str, str]]


async def answer_all(
    meta: tg.MetaPrompt, problems: Problems = PROBLEMS
) -> list[tg.Variable | tg.ParseError]:
    """Each problem's answer, or the ParseError that stopped its conductor."""

    async def one(question: str) -> tg.Variable | tg.ParseError:
        try:
            return await meta.aforward(_problem(question))
        except tg.ParseError as exc:
            return exc

    return list(await asyncio.gather(*(one(q) for q, _ in problems)))


def is_right(outcome: tg.Variable | tg.ParseError, gold: str) -> bool:
    return isinstance(outcome, tg.Variable) and final_number(outcome.value) == gold


async def accuracy(meta: tg.MetaPrompt, problems: Problems = PROBLEMS) -> float:
    return (await scored(meta, problems))[0]


async def scored(meta: tg.MetaPrompt, problems: Problems = PROBLEMS) -> tuple[float, list[str]]:
    """Accuracy, and why each failed problem failed (a failure counts as wrong)."""
    outcomes = await answer_all(meta, problems)
    right = [is_right(o, gold) for o, (_, gold) in zip(outcomes, problems, strict=True)]
    return sum(right) / len(right), failures(outcomes)


def failures(outcomes: list[tg.Variable | tg.ParseError]) -> list[str]:
    return [str(o) for o in outcomes if isinstance(o, tg.ParseError)]


def _problem(text: str) -> tg.Variable:
    return tg.Variable(text, role_description="math word problem")


def _exact(prediction: str, gold: str) -> float:
    return float(final_number(prediction) == gold)


async def improve(
    meta: tg.MetaPrompt, critic: tg.engines.Engine, steps: int, problems: Problems = PROBLEMS
) -> list[dict[str, Any]]:
    """`steps` rounds: answer every problem, critique the wrong ones, one TGD step."""
    optimizer = tg.TGD(
        meta.parameters(),
        engine=critic,
        constraints=["State general rules; never mention a specific problem or number."],
    )
    loss_fn = tg.MetricLoss(_exact, critic)
    history = []
    for step in range(1, steps + 1):
        outcomes = await answer_all(meta, problems)
        failed = failures(outcomes)
        losses = [
            await loss_fn.acall(o, tg.Variable(gold, role_description="correct answer"))
            for o, (_, gold) in zip(outcomes, problems, strict=True)
            if isinstance(o, tg.Variable) and not is_right(o, gold)
        ]
        changed = unusable = 0
        if losses:
            await tg.sum(losses).abackward(engine=critic)
            before = [p.value for p in meta.parameters()]
            updates = await optimizer.astep()
            unusable = sum(1 for u in updates if u.warning)  # no usable rewrite: value kept
            changed = sum(b != p.value for b, p in zip(before, meta.parameters(), strict=True))
            optimizer.zero_grad()
        after, failed_after = await scored(meta, problems)
        history.append(
            {
                "step": step,
                "wrong": len(losses),
                "failed": failed,
                "changed": changed,
                "unusable": unusable,
                "accuracy": after,
                "failed_after": failed_after,  # counted in "accuracy" as wrong
            }
        )
    return history


# --- the simulated model (--model simulated) -------------------------------------------


def simulated_engine() -> ScriptedEngine:
    """A conductor that asks the arithmetic expert, a weak arithmetic expert, a critic."""
    return ScriptedEngine(_simulated, model_name="simulated-meta")


def _simulated(request: ChatRequest) -> str:
    system = request.messages[0].content if request.messages[0].role == "system" else ""
    user = request.messages[-1].content
    if request.purpose == "optimizer":
        return _simulated_rewrite(user)
    if request.purpose in ("loss", "backward"):
        return (
            "The answer multiplied only the first two quantities of the problem and ignored "
            "the number of crates, boxes, shelves or trays. The arithmetic expert's "
            "instructions should require multiplying every quantity the question gives."
        )
    if "conductor" in system[:200]:
        if "The expert replied:" in user:
            reply = user.rsplit("The expert replied:\n", 1)[1]
            answer = final_number(reply.split("\n\n", 1)[0]) or "unknown"
            return _decision("final", answer=answer)
        problem = user.split("Problem:\n", 1)[1].split("\n\nExperts", 1)[0]
        return _decision("consult", expert="arithmetic", question=problem)
    numbers = [int(n) for n in re.findall(r"\d+", user)]
    used = numbers if "every quantity" in system else numbers[:2]
    product = math.prod(used) if used else 0
    return f"Multiplying {' x '.join(map(str, used))} gives {product}.\nAnswer: {product}"


def _decision(action: str, *, expert: str = "", question: str = "", answer: str = "") -> str:
    return json.dumps({"action": action, "expert": expert, "question": question, "answer": answer})


def _simulated_rewrite(prompt: str) -> str:
    role = prompt.split("Role: ", 1)[1].split("\n", 1)[0]
    value = prompt.split("<CURRENT_VALUE>\n", 1)[1].split("\n</CURRENT_VALUE>", 1)[0]
    if "arithmetic expert" in role and EVERY_QUANTITY not in value:
        return f"{value} {EVERY_QUANTITY}"
    return value


# --- the program -----------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_engine_arguments(parser, simulated=True)
    parser.set_defaults(model="simulated")
    parser.add_argument("--steps", type=int, default=1, help="optimization steps (1)")
    parser.add_argument("--max-rounds", type=int, default=2, help="consultations per problem (2)")
    parser.add_argument(
        "--problems", type=int, default=len(PROBLEMS), help="use the first N problems (all)"
    )
    parser.add_argument(
        "--max-tokens", type=int, help="longest conductor and expert reply (the engine's default)"
    )


def run(args: argparse.Namespace, console: Console | None = None) -> dict[str, Any]:
    return asyncio.run(arun(args, console or Console()))


async def arun(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    if args.steps < 1:
        raise tg.ArgumentError("--steps must be >= 1")
    if not 1 <= args.problems <= len(PROBLEMS):
        raise tg.ArgumentError(f"--problems must be between 1 and {len(PROBLEMS)}")
    problems = PROBLEMS[: args.problems]
    engine, critic = make_engines(args, console, simulated=simulated_engine)
    meta = build(engine, max_rounds=args.max_rounds, max_tokens=args.max_tokens, temperature=0)
    before, failed_before = await scored(meta, problems)
    console.print(f"accuracy before: {before:.0%} on {len(problems)} problems")
    for reason in failed_before:
        console.print(f"  failed (counted wrong): {reason}", markup=False)
    history = await improve(meta, critic, args.steps, problems)
    for entry in history:
        console.print(
            f"step {entry['step']}: {entry['wrong']} wrong answer(s) critiqued; "
            f"accuracy after: {entry['accuracy']:.0%}"
        )
        for reason in entry["failed"]:
            console.print(f"  failed (no answer to critique): {reason}", markup=False)
        for reason in entry["failed_after"]:
            console.print(f"  failed after the step (counted wrong): {reason}", markup=False)
    for name, parameter in meta.named_parameters():
        console.print(f"\n[bold]{name}:[/bold]")
        console.print(parameter.value, markup=False, highlight=False)
    after = history[-1]["accuracy"]
    return {"before": before, "after": after, "history": history, "meta": meta}


def main(argv: list[str] | None = None) -> int:
    return example_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
