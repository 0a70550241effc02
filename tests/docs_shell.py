"""Run a page's shell commands in one Python process: one import of textgraph per page.

    python tests/docs_shell.py COMMANDS.json RESULTS.json

COMMANDS.json is a list of argv lists; each runs as its command would (`textgraph ...`
through textgraph.cli.main, `python FILE ...` and `python -m MODULE ...` through runpy,
`export NAME=VALUE` for the commands after it), in the current directory. RESULTS.json
gets one {"code", "stdout", "stderr"} per command.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import runpy
import sys
import traceback

TEXTGRAPH = ("textgraph", ".venv/bin/textgraph")  # the README runs it from a checkout's venv
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=.*", re.S)


def is_export(argv: list[str]) -> bool:
    """`export NAME=VALUE ...`: what a page's reader types to set a variable."""
    return argv[:1] == ["export"] and len(argv) > 1 and all(map(ASSIGNMENT.fullmatch, argv[1:]))


def run(argv: list[str]) -> int:
    program, *args = argv
    if is_export(argv):
        os.environ.update(arg.split("=", 1) for arg in args)
        return 0
    if program in TEXTGRAPH:
        from textgraph.cli import main

        return main(args)
    if program == "python" and args[:1] == ["-m"]:
        sys.argv = [args[1], *args[2:]]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        return 0
    if program == "python" and args:
        sys.argv = list(args)
        runpy.run_path(args[0], run_name="__main__")
        return 0
    raise ValueError(f"docs_shell cannot run {argv!r}")


def exit_code(error: SystemExit) -> int:
    if error.code is None:
        return 0
    return error.code if isinstance(error.code, int) else 1


def main() -> None:
    commands_file, results_file = sys.argv[1:3]
    commands = json.loads(open(commands_file).read())
    results = []
    for argv in commands:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = run(argv)
            except SystemExit as error:
                code = exit_code(error)
            except BaseException:  # reported with its traceback, never hidden
                traceback.print_exc()
                code = 1
        results.append({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
        if code != 0:
            break  # later commands build on this one
    with open(results_file, "w") as file:
        json.dump(results, file)


if __name__ == "__main__":
    main()
