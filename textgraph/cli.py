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
from textgraph.errors import ArgumentError, ConfigurationError
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

    if args.config is not None or args.target is None:
        return _project_eval(args)
    if args.data is None:
        raise ArgumentError("textgraph eval TARGET needs --data FILE (or use --config FILE)")
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


def _project_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", help="project file (default ./textgraph.toml, else ./pyproject.toml)"
    )


def _project_eval(args: argparse.Namespace) -> int:
    from textgraph.project import load_project
    from textgraph.release import score

    project = load_project(args.config)
    split = args.split or "test"
    scored = score(project, args.artifact, split, repeats=args.repeats)
    means = [r.gate_mean() for r in scored.results]
    from textgraph.eval.stats import mean_ci

    per_example = [
        sum(0.0 if row[i] is None else row[i] for row in scored.matrix) / len(scored.matrix)
        for i in range(len(scored.matrix[0]))
    ]
    ci = mean_ci(per_example)
    summary = {
        "artifact": scored.label,
        "split": split,
        "repeats": args.repeats,
        "n": len(per_example),
        "mean": sum(per_example) / len(per_example),
        "ci": list(ci) if ci else None,
        "repeat_means": means,
        **scored.objectives(),
        "repeat_results": [r.to_json() for r in scored.results],
    }
    low, high = summary["ci"] or (float("nan"), float("nan"))
    print(
        f"{scored.label} on {split}: mean {summary['mean']:.3f} [{low:.3f}, {high:.3f}] over "
        f"{summary['n']} examples x {args.repeats} repeat(s); failed {summary['n_failed']}"
    )
    from textgraph._io import atomic_write_text

    output = Path(args.output or f"eval.{split}.json")
    atomic_write_text(output, json.dumps(summary, indent=2) + "\n")
    print(f"wrote {output}")
    return 0


def _optimize(args: argparse.Namespace) -> int:
    from textgraph.project import load_project
    from textgraph.release import optimize

    project = load_project(args.config)
    callbacks = None
    if args.mlflow:
        try:
            from textgraph.integrations.mlflow import MLflowCallback
        except ImportError as exc:
            raise ConfigurationError(
                f"--mlflow needs textgraph's MLflow integration and mlflow ({exc}); install "
                "it with: pip install 'textgraph[mlflow]'"
            ) from None
        callbacks = [MLflowCallback()]
    result = optimize(project, resume=not args.fresh, callbacks=callbacks)
    print(
        f"stopped: {result.stopped}; best val {result.best_val_score}; test "
        f"{result.test_score}; run dir {project.path(project.train.run_dir)}"
    )
    return 0


def _export(args: argparse.Namespace) -> int:
    from textgraph.artifact import export_run

    artifact = export_run(args.run_dir, args.output)
    scores = ", ".join(
        f"{split} {entry['mean']:.3f}" for split, entry in artifact["scores"].items()
    )
    print(
        f"wrote {args.output}: {len(artifact['parameters'])} parameter(s); {scores or 'no scores'}"
    )
    return 0


def _compare(args: argparse.Namespace) -> int:
    """Exit codes: promote (or stable) 0, keep (or degraded) 1, error 2, inconclusive 3."""
    from textgraph.eval.compare import EXIT_ERROR

    outcome: dict[str, int] = {}

    def decide(a: argparse.Namespace) -> int:
        outcome["code"] = _compare_run(a)
        return 0

    status = run_command(decide, args, debug=args.debug)
    if status == 0:
        return outcome["code"]
    return EXIT_ERROR if status == 1 else status


def _compare_run(args: argparse.Namespace) -> int:
    from textgraph._io import atomic_write_text
    from textgraph.project import load_project

    project = load_project(args.config)
    out = Path(args.output_dir)
    if args.drift is not None:
        from textgraph.artifact import read_artifact
        from textgraph.datasets import load_examples
        from textgraph.eval.compare import drift_scores
        from textgraph.release import score

        recorded = read_artifact(args.baseline)["scores"].get(args.split, {}).get("scores")
        if not recorded:
            raise ArgumentError(
                f"{args.baseline} has no recorded per-example {args.split!r} scores to compare "
                "against; export it from a run that scored that split"
            )
        fresh = score(
            project,
            args.baseline,
            args.split,
            repeats=args.repeats,
            examples=load_examples(args.drift),
        )
        drift = drift_scores(recorded, fresh.matrix, alpha=args.alpha, min_delta=args.min_delta)
        payload, text = (
            drift.to_json(),
            (
                f"## Drift check: **{drift.decision}**\n\n{drift.reason}\n\n"
                f"Recorded {args.split} mean {drift.recorded_mean:.3f} "
                f"(n={drift.n_recorded}); fresh mean {drift.fresh_mean:.3f} "
                f"(n={drift.n_fresh}); change "
                f"{drift.mean_difference:+.3f}, interval [{drift.difference_ci[0]:+.3f}, "
                f"{drift.difference_ci[1]:+.3f}], one-sided permutation p = {drift.p_value:.4g}.\n"
            ),
        )
        decision, code = drift.decision, drift.exit_code
    else:
        from textgraph.release import compare, comparison_json, comparison_markdown

        if args.candidate is None:
            raise ArgumentError("compare needs BASELINE and CANDIDATE (or --drift FRESH.jsonl)")
        result, base, cand = compare(
            project,
            args.baseline,
            args.candidate,
            args.split,
            repeats=args.repeats,
            alpha=args.alpha,
            min_delta=args.min_delta,
        )
        payload = comparison_json(result, base, cand)
        text = comparison_markdown(result, base, cand)
        decision, code = result.decision, result.exit_code
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "compare.json", json.dumps(payload, indent=2) + "\n")
    atomic_write_text(out / "compare.md", text)
    print(f"{decision}: {payload['reason']}")
    print(f"wrote {out / 'compare.json'} and {out / 'compare.md'}")
    return code


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
    evaluate.add_argument(
        "target", nargs="?", help="SCRIPT.py:FUNC or package.module:FUNC (or use --config)"
    )
    evaluate.add_argument("--data", help="a .jsonl file, or .json (list or splits)")
    evaluate.add_argument(
        "--split", help="which split of a JSON file of splits; with --config: train, val or test"
    )
    _project_options(evaluate)
    evaluate.add_argument("--artifact", help="with --config: apply this prompts.json first")
    evaluate.add_argument(
        "--repeats", type=int, default=1, help="with --config: score N times, distinct salts"
    )
    evaluate.add_argument("--model", help="model string passed to FUNC as model=")
    evaluate.add_argument("--limit", type=int, help="only the first N examples")
    evaluate.add_argument("--max-concurrency", type=int, help="examples in flight at once")
    evaluate.add_argument("--max-errors", type=int, help="stop after more failures than this")
    evaluate.add_argument(
        "-o", "--output", help="JSON file to write (default DATA[.SPLIT].eval.json)"
    )
    evaluate.set_defaults(handler=_eval)

    opt = commands.add_parser(
        "optimize",
        help="run the project file's optimization into its run directory (resumes it)",
        description="Build the program, data, engines and optimizer of textgraph.toml and fit; "
        "an unfinished run in [train] run_dir is resumed, a finished one returns its result.",
    )
    _project_options(opt)
    opt.add_argument("--fresh", action="store_true", help="do not resume: start a new run")
    opt.add_argument("--mlflow", action="store_true", help="log the run to MLflow")
    opt.set_defaults(handler=_optimize)

    export = commands.add_parser(
        "export",
        help="freeze a finished run's prompts into a JSON artifact (tg.load_prompts reads it)",
    )
    export.add_argument("run_dir")
    export.add_argument("-o", "--output", default="prompts.json", help="file to write")
    export.set_defaults(handler=_export)

    cmp = commands.add_parser(
        "compare",
        help="paired statistical comparison of two artifacts; exit 0 promote, 1 keep, "
        "2 error, 3 inconclusive",
        description="Apply each artifact to the project's program, score both on the same "
        "examples (repeats with distinct cache salts), and decide with a paired test. "
        "With --drift FRESH.jsonl: compare BASELINE's recorded scores with a fresh sample "
        "(exit 0 stable, 1 degraded, 3 inconclusive). Writes compare.json and compare.md.",
    )
    cmp.add_argument("baseline", help="the deployed prompts.json")
    cmp.add_argument("candidate", nargs="?", help="the challenger prompts.json")
    _project_options(cmp)
    cmp.add_argument("--split", default="test", help="train, val or test (default test)")
    cmp.add_argument("--repeats", type=int, default=1, help="score each artifact N times")
    cmp.add_argument("--alpha", type=float, default=0.05, help="significance level")
    cmp.add_argument("--min-delta", type=float, default=0.0, help="smallest gain worth a change")
    cmp.add_argument("--drift", metavar="FRESH.jsonl", help="drift check on a fresh sample")
    cmp.add_argument("--output-dir", default=".", help="where compare.json and .md go")
    cmp.set_defaults(handler=_compare)

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
