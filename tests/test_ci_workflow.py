"""Run examples/ci's workflow commands, read from the YAML, in a temporary repo.

The steps with `run:` execute in order with bash -eo pipefail (as GitHub runs them),
with GITHUB_OUTPUT and `if: steps.<id>.outputs.<key> == '<v>'` conditions honoured;
`uses:` steps and "Install ..." steps are not run (textgraph is already installed here).
PROMPTS_MODEL=scripted selects the example's offline scripted model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "ci"
WORKFLOW = EXAMPLE / ".github" / "workflows" / "prompts.yml"
CONDITION = re.compile(r"^steps\.(\w+)\.outputs\.(\w+) == '([^']*)'$")


def steps() -> list[dict]:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    (job,) = workflow["jobs"].values()
    return job["steps"]


def run_workflow(repo: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PROMPTS_MODEL": "scripted",
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "TEXTGRAPH_CACHE_DIR": str(repo / ".cache"),
    }
    outputs: dict[str, dict[str, str]] = {}
    ran = []
    for step in steps():
        if "run" not in step or step.get("name", "").startswith("Install"):
            continue
        if "if" in step:
            match = CONDITION.match(step["if"])
            assert match, f"the test cannot evaluate if: {step['if']!r}"
            sid, key, want = match.groups()
            if outputs.get(sid, {}).get(key) != want:
                continue
        out_file = repo / ".github_output"
        out_file.write_text("")
        done = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
            cwd=repo,
            env={**env, "GITHUB_OUTPUT": str(out_file)},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"{step['name']}: {done.stdout}\n{done.stderr}"
        if "id" in step:
            lines = [ln.split("=", 1) for ln in out_file.read_text().splitlines() if "=" in ln]
            outputs[step["id"]] = dict(lines)
        ran.append(step["name"])
    return ran, outputs


@pytest.fixture
def repo(tmp_path):
    shutil.copytree(EXAMPLE, tmp_path / "repo", ignore=shutil.ignore_patterns("runs", "out"))
    return tmp_path / "repo"


def test_promote_case_replaces_the_deployed_prompts_and_writes_the_pr_body(repo):
    deployed = json.loads((repo / "prompts.json").read_text())
    ran, outputs = run_workflow(repo)
    assert ran == ["Optimize", "Export", "Compare", "Promote"]
    assert outputs["compare"]["decision_code"] == "0"
    result = json.loads((repo / "out" / "compare.json").read_text())
    assert result["decision"] == "promote" and result["p_value"] < 0.05
    assert result["repeats"] == 2 and result["changed_parameters"] == ["system"]
    body = (repo / "out" / "compare.md").read_text()
    assert "**promote**" in body and "```diff" in body and "one word" in body
    promoted = json.loads((repo / "prompts.json").read_text())
    assert promoted["sha256"] != deployed["sha256"]
    assert promoted["sha256"] == json.loads((repo / "candidate.json").read_text())["sha256"]


def test_keep_case_when_the_deployed_prompts_are_already_as_good(repo):
    run_workflow(repo)  # the first run promotes; the next one cannot beat its result
    shutil.rmtree(repo / "out")
    ran, outputs = run_workflow(repo)
    assert ran == ["Optimize", "Export", "Compare"]
    assert outputs["compare"]["decision_code"] == "1"
    result = json.loads((repo / "out" / "compare.json").read_text())
    assert result["decision"] == "keep" and result["mean_difference"] == 0


def test_a_broken_artifact_is_exit_2_and_fails_the_compare_step(repo):
    (repo / "prompts.json").write_text(
        (repo / "prompts.json").read_text().replace("sentiment of", "mood of")
    )
    with pytest.raises(AssertionError, match=r"(?s)Compare:.*sha256.*assert 2 == 0"):
        run_workflow(repo)
