"""Run a command-line handler: one clear error line for users, tracebacks on --debug."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from textgraph.errors import TextgraphError


def run_command(handler: Callable[[Any], int | None], args: Any, *, debug: bool) -> int:
    try:
        return handler(args) or 0
    except KeyboardInterrupt:
        print("textgraph: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        known = isinstance(exc, (TextgraphError, OSError))
        kind = "" if known else f"{type(exc).__name__}: "
        hint = "" if known else " (run with --debug for the traceback)"
        print(f"textgraph: error: {kind}{exc}{hint}", file=sys.stderr)
        return 1
