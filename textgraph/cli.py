"""The `textgraph` command.

Errors print one line and exit non-zero; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from textgraph import __version__
from textgraph._entry import run_command
from textgraph.errors import ArgumentError
from textgraph.examples._common import example_main

DEMO_TASKS = ("support-routing", "object-counting")


def _demo_main(argv: list[str], *, debug: bool) -> int:
    """`textgraph demo [--task T] [task flags]`: each task parses its own flags."""
    chooser = argparse.ArgumentParser(prog="textgraph demo", add_help=False)
    chooser.add_argument("--task", choices=DEMO_TASKS, default=DEMO_TASKS[0])
    try:
        chosen, rest = chooser.parse_known_args(argv)
    except SystemExit as exc:  # argparse printed the usage and the error
        return int(exc.code or 0)
    if chosen.task == "object-counting":
        from textgraph.examples import object_counting as task
    else:
        from textgraph.examples import support_routing as task  # type: ignore[no-redef]
    doc = (task.__doc__ or "") + (
        f"\nOther demos: textgraph demo --task {{{','.join(DEMO_TASKS)}}}\n"
    )
    return example_main(
        doc,
        task.add_arguments,
        task.run,
        (["--debug"] if debug else []) + rest,
        prog=f"textgraph demo --task {chosen.task}",
    )


def _load_target(target: str) -> Callable[..., Any]:
    """'path/to/script.py:func' or 'package.module:func' -> the function."""
    where, sep, name = target.rpartition(":")
    if not sep or not where or not name:
        raise ArgumentError(f"expected SCRIPT.py:FUNC or MODULE:FUNC, got {target!r}")
    if where.endswith(".py"):
        path = Path(where)
        if not path.exists():
            raise ArgumentError(f"no script at {path}")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.path[:0] = [str(path.resolve().parent), os.getcwd()]
        spec.loader.exec_module(module)
    else:
        sys.path.insert(0, os.getcwd())
        module = importlib.import_module(where)
    function = getattr(module, name, None)
    if not callable(function):
        raise ArgumentError(f"{where} has no function {name!r}")
    return function


def _run(args: argparse.Namespace) -> int:
    from textgraph.report.terminal import show_run
    from textgraph.train import Trainer

    build = _load_target(args.target)
    accepted = inspect.signature(build).parameters
    options = {
        k: v
        for k, v in (("model", args.model), ("run_dir", args.run_dir))
        if k in accepted and v is not None
    }
    trainer = build(**options)
    if not isinstance(trainer, Trainer):
        raise ArgumentError(
            f"{args.target} returned {type(trainer).__name__}; it must return a tg.Trainer "
            "(textgraph run calls fit() itself)"
        )
    if args.run_dir is not None:
        trainer.run_dir = args.run_dir
    result = trainer.fit(resume=args.resume, force=args.force)
    if trainer.run_dir is not None:
        show_run(str(trainer.run_dir))
    else:
        print(
            f"stopped: {result.stopped}; best val {result.best_val_score}; test {result.test_score}"
        )
    return 0


def _eval(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console
    from rich.table import Table

    from textgraph.datasets import load_examples
    from textgraph.eval import Evaluator

    build = _load_target(args.target)
    accepted = inspect.signature(build).parameters
    built = build(**({"model": args.model} if args.model and "model" in accepted else {}))
    if isinstance(built, Evaluator):
        evaluator = built
    elif isinstance(built, tuple) and len(built) == 2:
        evaluator = Evaluator(*built)
    elif isinstance(built, dict) and {"program", "metric"} <= set(built):
        evaluator = Evaluator(built["program"], built["metric"])
    else:
        raise ArgumentError(
            f"{args.target} returned {type(built).__name__}; it must return a tg.Evaluator, "
            "a (program, metric) pair or a dict with 'program' and 'metric'"
        )
    if args.max_concurrency is not None:
        evaluator.max_concurrency = args.max_concurrency
    if args.max_errors is not None:
        evaluator.max_errors = args.max_errors
    examples = load_examples(args.data, args.split)
    if args.limit is not None:
        examples = examples[: args.limit]
    result = evaluator.evaluate(examples)
    table = Table(
        title=f"{args.target} on {args.data}" + (f" [{args.split}]" if args.split else "")
    )
    for column in (
        "examples",
        "mean",
        "95% CI",
        "failed",
        "calls",
        "tokens",
        "cost $",
        "p50 s",
        "p95 s",
    ):
        table.add_column(column, justify="right")
    usage = result.usage

    def num(x: float | None, digits: int = 3) -> str:
        return "n/a" if x is None else f"{x:.{digits}f}"

    table.add_row(
        str(result.n),
        num(result.mean),
        f"[{result.ci[0]:.3f}, {result.ci[1]:.3f}]" if result.ci else "n/a",
        str(result.n_failed),
        str(usage.calls),
        str(usage.prompt_tokens + usage.completion_tokens),
        f"{usage.cost_usd:.4f}",
        num(result.latency_p50, 2),
        num(result.latency_p95, 2),
    )
    console = Console()
    console.print(table)
    for error in result.errors[:5]:
        console.print(f"  {error}", markup=False, style="red")
    if len(result.errors) > 5:
        console.print(f"  ... and {len(result.errors) - 5} more in the JSON")
    output = Path(
        args.output or f"{Path(args.data).stem}{'.' + args.split if args.split else ''}.eval.json"
    )
    from textgraph._io import atomic_write_text

    atomic_write_text(output, json.dumps(result.to_json(), indent=2) + "\n")
    print(f"wrote {output}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from textgraph.report.terminal import show_run

    show_run(args.run_dir, step=args.step, lineage=args.lineage)
    return 0


def _report(args: argparse.Namespace) -> int:
    from textgraph.report.html import write_report

    out = write_report(args.run_dir, args.output)
    print(f"wrote {out} (self-contained; open it in any browser, offline)")
    return 0


def _cache(args: argparse.Namespace) -> int:
    from textgraph.engines.cache import ResponseCache, default_cache_path, move_aside
    from textgraph.errors import CacheError

    path = args.path or default_cache_path()
    if not path.exists():
        print(f"no cache at {path} (nothing cached yet)")
        return 0
    if args.action == "clear":
        # Clearing always works: a file SQLite cannot use is moved aside (never deleted) and
        # an empty cache takes its place.
        try:
            cache = ResponseCache(path)
            removed = cache.clear()
            cache.close()
        except CacheError as exc:
            if path.is_dir():
                raise
            aside = move_aside(path)
            ResponseCache(path).close()
            reason = str(exc).split(" cannot be used: ", 1)[-1].split(". Run `", 1)[0]
            print(
                f"{path} could not be read ({reason}); moved it aside to {aside} and started "
                "an empty cache"
            )
            return 0
        print(f"removed {removed} cached responses from {path}")
    else:
        stats = ResponseCache(path).stats()
        print(f"path      {stats['path']}")
        print(f"entries   {stats['entries']}")
        print(f"size      {stats['bytes'] / 1e6:.2f} MB of {stats['max_bytes'] / 1e6:.0f} MB")
    return 0


def _compress(args: argparse.Namespace) -> int:
    from textgraph.compression import PerplexityCompressor, compress

    path = Path(args.file)
    if not path.is_file():
        raise ArgumentError(f"{path} is not a file: give the text file to compress")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ArgumentError(f"{path} is not UTF-8 text ({exc.reason})") from None
    rate = None if args.target_tokens is not None else args.rate
    compressor = PerplexityCompressor(protect=args.protect or ())
    result = compress(
        text,
        rate=rate,
        question=args.question,
        compressor=compressor,
        target_tokens=args.target_tokens,
    )
    if args.output:
        Path(args.output).write_text(result.text, encoding="utf-8")
    if args.json:
        print(json.dumps(result.model_dump(exclude={"kept_mask", "spans"}), indent=2))
    elif not args.output:
        print(result.text)
    summary = (
        f"{result.original_tokens} -> {result.compressed_tokens} tokens "
        f"(ratio {result.ratio:.2f}, requested {result.requested_ratio:.2f}"
        + (", question-aware" if result.question_aware else "")
        + ")"
        + (f"; wrote {args.output}" if args.output else "")
    )
    print(summary, file=sys.stderr)
    if result.reason:
        print(f"note: {result.reason}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="textgraph",
        description="Automatic differentiation over text: optimize LLM pipelines with "
        "textual gradients.",
    )
    parser.add_argument("--version", action="version", version=f"textgraph {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser(
        "demo",
        help="optimize a pipeline end to end: few-shot + instruction search (MIPRO) on "
        "support-message routing; --task object-counting for textual gradients (TGD)",
        add_help=False,
    )

    run = commands.add_parser(
        "run",
        help="run a training script: FUNC builds and returns a tg.Trainer",
        description="Import SCRIPT.py:FUNC or MODULE:FUNC, call it (with model= and run_dir= "
        "if it takes them), and fit the tg.Trainer it returns.",
    )
    run.add_argument("target", help="SCRIPT.py:FUNC or package.module:FUNC")
    run.add_argument("--model", help="model string passed to FUNC as model=")
    run.add_argument("--run-dir", help="run directory (overrides the trainer's)")
    run.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    run.add_argument(
        "--force",
        action="store_true",
        help="overwrite a run dir, or resume one whose config differs",
    )
    run.set_defaults(handler=_run)

    evaluate = commands.add_parser(
        "eval",
        help="evaluate a program on a data file: mean, CI, errors, calls, tokens, cost, latency",
        description="Import SCRIPT.py:FUNC or MODULE:FUNC; FUNC (with model= if it takes it) "
        "returns a tg.Evaluator or a (program, metric) pair. Every example runs "
        "concurrently; prints a table and writes per-example JSON.",
    )
    evaluate.add_argument("target", help="SCRIPT.py:FUNC or package.module:FUNC")
    evaluate.add_argument("--data", required=True, help="a .jsonl file, or .json (list or splits)")
    evaluate.add_argument("--split", help="which split of a JSON file of splits")
    evaluate.add_argument("--model", help="model string passed to FUNC as model=")
    evaluate.add_argument("--limit", type=int, help="only the first N examples")
    evaluate.add_argument("--max-concurrency", type=int, help="examples in flight at once")
    evaluate.add_argument("--max-errors", type=int, help="stop after more failures than this")
    evaluate.add_argument(
        "-o", "--output", help="JSON file to write (default DATA[.SPLIT].eval.json)"
    )
    evaluate.set_defaults(handler=_eval)

    show = commands.add_parser(
        "show",
        help="show a run: steps, decisions, gradients, rewrites",
        description="Terminal view of a run directory: the steps with their decisions and "
        "scores, and the word diff of each accepted rewrite; --step N shows one step's "
        "critiques per parameter and candidates.",
    )
    show.add_argument("run_dir")
    show.add_argument("--step", type=int, help="show one step in detail")
    show.add_argument(
        "--lineage",
        action="store_true",
        help="show every candidate as a tree under the candidate it was made from",
    )
    show.set_defaults(handler=_show)

    report = commands.add_parser(
        "report",
        help="write a self-contained HTML report of a run",
        description="One HTML file with no external assets: the computation graph of each "
        "step (click a node for its value and critiques), the step timeline with diffs, "
        "and charts of scores, calls, tokens and cost.",
    )
    report.add_argument("run_dir")
    report.add_argument("-o", "--output", default="report.html", help="file to write")
    report.set_defaults(handler=_report)

    comp = commands.add_parser(
        "compress",
        help="compress a text file with the embedded small model (LLMLingua-style)",
        description="Drop the tokens a small language model finds predictable (the embedded "
        "SmolLM2 through llama.cpp), keeping numbers, {placeholders}, tags and code. Prints "
        "the compressed text (or writes -o FILE) and the token counts before and after.",
    )
    comp.add_argument("file", help="a UTF-8 text file")
    comp.add_argument(
        "--rate", type=float, default=0.5, help="fraction of tokens kept (default 0.5: 2x)"
    )
    comp.add_argument("--target-tokens", type=int, help="tokens to keep (instead of --rate)")
    comp.add_argument("--question", help="keep what this question needs (question-aware)")
    comp.add_argument(
        "--protect", action="append", metavar="REGEX", help="never drop matches (repeatable)"
    )
    comp.add_argument("-o", "--output", help="write the compressed text here")
    comp.add_argument("--json", action="store_true", help="print the result as JSON")
    comp.set_defaults(handler=_compress)

    cache = commands.add_parser(
        "cache",
        help="inspect or clear the on-disk response cache",
        description="The response cache (SQLite) of real provider engines. Default location: "
        "$TEXTGRAPH_CACHE_DIR, else $XDG_CACHE_HOME/textgraph, else ~/.cache/textgraph.",
    )
    cache.add_argument("action", choices=["stats", "clear"])
    cache.add_argument("--path", type=Path, help="a cache file other than the default")
    cache.set_defaults(handler=_cache)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    leading = [a for a in argv[: argv.index("demo")] if a == "--debug"] if "demo" in argv else []
    if "demo" in argv and len(leading) == argv.index("demo"):
        return _demo_main(argv[argv.index("demo") + 1 :], debug=bool(leading))
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return run_command(args.handler, args, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
