"""The `textgraph` command.

Errors print one line and exit non-zero; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from textgraph import __version__
from textgraph.errors import ArgumentError, TextgraphError

AVAILABLE_MODELS = ("scripted",)


def _demo(args: argparse.Namespace) -> int:
    from textgraph.demo import run_demo

    if args.model not in AVAILABLE_MODELS:
        raise ArgumentError(
            f"unknown model {args.model!r} for the demo; this version supports: "
            + ", ".join(AVAILABLE_MODELS)
        )
    if args.steps < 1 or args.batch_size < 1:
        raise ArgumentError("--steps and --batch-size must be at least 1")
    asyncio.run(run_demo(steps=args.steps, batch_size=args.batch_size, seed=args.seed))
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
    demo = commands.add_parser(
        "demo",
        help="optimize an object-counting system prompt end to end",
        description="Optimize a system prompt on generated BBH-style object-counting "
        "questions: forward, metric loss with LLM explanations, backward, TGD.",
    )
    demo.add_argument(
        "--model", default="scripted", help="model to run on (default: scripted, a simulated model)"
    )
    demo.add_argument("--steps", type=int, default=2, help="optimization steps (default 2)")
    demo.add_argument("--batch-size", type=int, default=4, help="questions per step (default 4)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the generated questions")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.handler(args)
    except (TextgraphError, OSError) as exc:
        if args.debug:
            raise
        print(f"textgraph: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("textgraph: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
