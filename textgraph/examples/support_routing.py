"""Few-shot + instruction search: route support messages to a team, with MIPRO.

A model reads a customer's message and names the team that should handle
it (billing, shipping, account). The instruction and the
few-shot demonstrations are the parameters; MIPRO bootstraps demo sets
from runs that routed correctly, proposes instructions, searches the
combinations with Optuna's TPE on validation minibatches, and the Trainer
gates the best against the start. Held-out test accuracy is measured
before and after, with 95% confidence intervals.

    textgraph demo                                    # this program, on the embedded model
    textgraph demo --model simulated                  # a scripted stand-in, in seconds
    python -m textgraph.examples.support_routing --model openai/gpt-4o-mini --trials 30

Adapt it: replace `Router.aforward` with your pipeline, `routed_correctly`
with your metric and `load_support_tickets` with your data.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from rich.console import Console

import textgraph as tg
from textgraph.datasets.support_tickets import LABELS, SupportTicket, load_support_tickets
from textgraph.engines import ChatRequest, ScriptedEngine
from textgraph.eval.stats import mean_ci
from textgraph.examples._common import (
    add_engine_arguments,
    default_run_dir,
    example_main,
    make_engines,
    print_trainer_summary,
)
from textgraph.runs import RunDir, Summary

START_INSTRUCTION = (
    "Decide which team should handle the customer's message: billing, shipping or account. "
    "Answer with the team's name only."
)


class Router(tg.Module):
    """One LLM call; its instruction and its demonstrations are optimized."""

    def __init__(self, engine: tg.engines.Engine, *, max_tokens: int | None = 5) -> None:
        self.instruction = tg.Variable(
            START_INSTRUCTION,
            role_description="instruction of a model that routes support messages to a team",
            requires_grad=True,
        )
        self.demos = tg.Demos(
            role_description="example messages with the team each was routed to",
            max_items=6,  # on the embedded model 8 demos did worse than 4-6 (docs/mipro.md)
        )
        self.route = tg.LLMCall(
            engine,
            self.instruction,
            demos=self.demos,
            role_description="the team the message is routed to",
            max_tokens=max_tokens,
            temperature=0.0,
        )

    async def aforward(self, example: SupportTicket) -> tg.Variable:
        message = tg.Variable(example.text, role_description="customer support message")
        return await self.route.acall(message)


def predicted_label(text: str) -> str | None:
    """The first team named in the reply (case and punctuation ignored)."""
    found = re.search(r"\b(" + "|".join(LABELS) + r")\b", text.lower())
    return found.group(1) if found else None


def routed_correctly(prediction: str, example: SupportTicket) -> float:
    """The metric: 1.0 when the first team named is the right one."""
    return float(predicted_label(prediction) == example.label)


# --- a scripted stand-in (--model simulated) -------------------------------------------


def simulated_engine() -> ScriptedEngine:
    """Knows a team only from the demonstrations: it routes a message right when a demo
    with the same team shares a word with it, and otherwise says 'billing'."""

    def words(text: str) -> set[str]:
        return {w for w in re.findall(r"[a-z]{5,}", text.lower())}

    def respond(request: ChatRequest) -> str:
        if request.purpose == "propose":
            if "Dataset description" in request.messages[-1].content:
                return (
                    "Name the team that handles the message: billing for payments and "
                    "refunds, shipping for parcels, technical for app or site faults, "
                    "account for sign-in and profile. Answer with the team only."
                )
            return "Customer messages, each labelled with one of four teams."
        turns = request.messages[1:-1]
        message = words(request.messages[-1].content)
        best, overlap = "billing", 0
        for user, assistant in zip(turns[::2], turns[1::2], strict=False):
            shared = len(message & words(user.content))
            if shared > overlap:
                best, overlap = assistant.content, shared
        return best

    return ScriptedEngine(respond)


# --- the run ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_engine_arguments(parser, simulated=True)
    parser.add_argument(
        "--trials", type=int, help="MIPRO trials (default 10; 20 on a remote model)"
    )
    parser.add_argument("--minibatch", type=int, default=10, help="examples per trial (10)")
    parser.add_argument("--instructions", type=int, default=3, help="instruction options (3)")
    parser.add_argument("--demo-sets", type=int, default=6, help="demo sets (6)")
    parser.add_argument("--test", type=int, default=100, help="held-out test messages (100)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the search (0)")
    parser.add_argument("--max-cost", type=float, help="stop before spending more dollars")
    parser.add_argument("--run-dir", type=Path, help="default: runs/support-routing-<time>")


def test_interval(run_dir: Path, candidate_id: str | None, seed: int) -> tuple[float, float] | None:
    """The 95% bootstrap interval of a candidate's test accuracy, from the run's records."""
    scores = [
        o.score if o.error is None else 0.0
        for r in RunDir(run_dir).read_evaluations()
        if r.split == "test" and r.candidate_id == candidate_id
        for o in r.outcomes
    ]
    return mean_ci(scores, seed=seed) if scores else None


def run(args: argparse.Namespace, console: Console | None = None) -> Summary:
    console = console or Console()
    given = (args.minibatch, args.instructions, args.demo_sets, args.test)
    if min(given) < 1 or (args.trials is not None and args.trials < 1):
        raise tg.ArgumentError(
            "--trials, --minibatch, --instructions, --demo-sets and --test must be >= 1"
        )
    started = time.perf_counter()
    engine, critic = make_engines(args, console, simulated=simulated_engine)
    local = engine.model_name.startswith("local/")
    trials = args.trials or (10 if local else 20)
    train, val = load_support_tickets("train"), load_support_tickets("val")
    test = load_support_tickets("test")[: args.test]
    console.print(
        "[bold]Few-shot + instruction search[/bold] (MIPRO): route support messages to "
        f"{', '.join(LABELS)} ({len(train)} train / {len(val)} val / {len(test)} test, "
        f"{trials} trials of {args.minibatch})."
    )
    optimizer = tg.optim.MIPRO(
        auto=None,
        num_instructions=args.instructions,
        num_demo_sets=args.demo_sets,
        trials=trials,
        minibatch_size=args.minibatch,
        full_eval_every=5,
        seed=args.seed,
        max_bootstrapped=4,
        max_labeled=4,
        engine=critic,
        verbose=True,  # prints the projected number of calls before the search
        # llama.cpp reuses the prompt prefix of the previous call only: trials one at a time
        # keep each candidate's calls back to back (interleaved, every call costs ~1.3 s
        # instead of ~0.2 s here); short instruction proposals from the 135M model.
        concurrency=1 if local else None,
        max_tokens=48 if local else None,
    )
    run_dir = args.run_dir or default_run_dir("support-routing")
    trainer = tg.Trainer(
        Router(engine),
        optimizer=optimizer,
        metric=routed_correctly,
        train=train,
        val=val,
        test=test,
        test_before=True,
        max_steps=optimizer.steps_needed,
        seed=args.seed,
        run_dir=run_dir,
        critic_engine=critic,
        budget=tg.Budget(max_cost_usd=args.max_cost) if args.max_cost else None,
        gate="better",
    )
    result = trainer.fit()
    for record in result.history:
        console.print(f"step {record.step}: {record.reason}", markup=False)
    summary = result.summary
    console.print()
    print_trainer_summary(console, summary, None)
    config = RunDir(run_dir).read_config()
    initial_id = tg.Candidate(config.get("initial_parameters", {})).id
    final_id = tg.Candidate(summary.final_parameters).id
    before, after = (test_interval(run_dir, i, args.seed) for i in (initial_id, final_id))
    console.print(
        f"\n[bold]held-out test accuracy:[/bold] {_with_ci(summary.initial_test_score, before)}"
        f" -> {_with_ci(summary.test_score, after)}  (95% bootstrap intervals, "
        f"{len(test)} messages)"
    )
    console.print(f"wall time: {time.perf_counter() - started:.0f} s")
    console.print(
        f"\nrun directory: {run_dir}\n  textgraph show {run_dir} --step 1   # the trials and "
        f"the candidates\n  textgraph report {run_dir}           # the HTML report"
    )
    return summary


def _with_ci(score: float | None, ci: tuple[float, float] | None) -> str:
    if score is None:
        return "n/a"
    if ci is None:
        return f"{score:.0%}"
    return f"{score:.0%} [{ci[0]:.0%}, {ci[1]:.0%}]"


def main(argv: list[str] | None = None) -> int:
    return example_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
