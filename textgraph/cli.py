"""The `textgraph` command.

Errors print one line and exit non-zero; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from textgraph import __version__
from textgraph.errors import ArgumentError, TextgraphError


def _demo(args: argparse.Namespace) -> int:
    from textgraph.demo import run_demo

    if args.steps < 1 or args.batch_size < 1 or args.val_size < 1:
        raise ArgumentError("--steps, --batch-size and --val-size must be at least 1")
    asyncio.run(
        run_demo(
            model=args.model,
            steps=args.steps,
            batch_size=args.batch_size,
            val_size=args.val_size,
            seed=args.seed,
        )
    )
    return 0


def _cache(args: argparse.Namespace) -> int:
    from textgraph.engines.cache import ResponseCache, default_cache_path

    path = args.path or default_cache_path()
    if not path.exists():
        print(f"no cache at {path} (nothing cached yet)")
        return 0
    cache = ResponseCache(path)
    if args.action == "clear":
        print(f"removed {cache.clear()} cached responses from {path}")
    else:
        stats = cache.stats()
        print(f"path      {stats['path']}")
        print(f"entries   {stats['entries']}")
        print(f"size      {stats['bytes'] / 1e6:.2f} MB of {stats['max_bytes'] / 1e6:.0f} MB")
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
        "--model",
        default=None,
        help="model string (openai/<m>, anthropic/<m>, ollama/<m>, local/smollm2) or "
        "'simulated'; default: $TEXTGRAPH_MODEL, else the embedded local/smollm2",
    )
    demo.add_argument("--steps", type=int, default=2, help="optimization steps (default 2)")
    demo.add_argument("--batch-size", type=int, default=4, help="questions per step (default 4)")
    demo.add_argument("--val-size", type=int, default=12, help="validation questions (12)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the generated questions")
    demo.set_defaults(handler=_demo)

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
