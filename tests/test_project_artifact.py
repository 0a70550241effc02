"""The project file, prompt artifacts, and repeats with distinct cache salts."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

import textgraph as tg
from textgraph.artifact import export_run, load_prompts, read_artifact, save_prompts
from textgraph.cli import main
from textgraph.errors import StateDictError
from textgraph.project import ProjectError, load_project
from textgraph.release import optimize, score

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ci"


@pytest.fixture
def project_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPTS_MODEL", "scripted")
    shutil.copytree(EXAMPLE, tmp_path / "p", ignore=shutil.ignore_patterns("runs", "out"))
    return tmp_path / "p"


def test_errors_name_the_key(tmp_path):
    bad = tmp_path / "textgraph.toml"
    bad.write_text('[program]\nmodule = "nocolon"\nmetric = "m:x"\n[data]\n[engines]\n')
    with pytest.raises(ProjectError, match=r"program\.module: .*package\.module:name"):
        load_project(bad)
    bad.write_text(
        '[program]\nmodule = "a:b"\nmetric = "m:x"\n[data]\n[engines]\ndefault = "x"\n'
        "[train]\nmax_step = 3\n"
    )
    with pytest.raises(ProjectError, match=r"train\.max_step: unknown key"):
        load_project(bad)
    bad.write_text(
        '[program]\nmodule = "nosuchmod:b"\nmetric = "m:x"\n[data]\n[engines]\ndefault = "x"\n'
    )
    with pytest.raises(ProjectError, match=r"program\.module = 'nosuchmod:b': cannot import"):
        load_project(bad).build_program(None)
    with pytest.raises(ProjectError, match=r"data\.test is not set"):
        load_project(bad).split("test")


def test_pyproject_table_and_optimizer_by_name(project_dir):
    text = (project_dir / "textgraph.toml").read_text()
    text = text.replace("[", "[tool.textgraph.").replace('name = "TGD"', 'name = "Nope"')
    (project_dir / "pyproject.toml").write_text(text)
    (project_dir / "textgraph.toml").unlink()
    project = load_project(project_dir / "pyproject.toml")
    assert project.train.gate == "significant" and len(project.split("test")) == 40
    engine = project.engine()
    with pytest.raises(ProjectError, match=r"optimizer.name = 'Nope'.*'TGD'"):
        project.build_optimizer(project.build_program(engine), engine, None)


def test_export_then_load_prompts_verifies_hashes_and_names(project_dir):
    project = load_project(project_dir / "textgraph.toml")
    optimize(project)
    artifact = export_run(project_dir / "runs/latest", project_dir / "c.json")
    assert artifact["scores"]["test"]["mean"] == 1.0 and artifact["scores"]["test"]["n"] == 40
    assert artifact["models"] == {"default": "review_program:make_engine"}
    assert artifact["run_id"] and artifact["textgraph_version"] == tg.__version__
    module = project.build_program(project.engine())
    load_prompts(module, project_dir / "c.json")
    assert "one word" in module.system.value

    class Other(tg.Module):
        def __init__(self):
            self.prompt = tg.Variable("x", role_description="a prompt", requires_grad=True)

    with pytest.raises(StateDictError, match=r"artifact has \['system'\].*has \['prompt'\]"):
        load_prompts(Other(), project_dir / "c.json")
    data = json.loads((project_dir / "c.json").read_text())
    data["parameters"]["system"]["value"] += " (edited)"
    (project_dir / "c.json").write_text(json.dumps(data))
    with pytest.raises(StateDictError, match="does not match its sha256"):
        read_artifact(project_dir / "c.json")


def test_demos_are_exported_parsed(tmp_path):
    class WithDemos(tg.Module):
        def __init__(self):
            self.demos = tg.Demos(
                [tg.Demo(inputs={"q": "1+1"}, output="2")], role_description="examples"
            )

    module = WithDemos()
    art = save_prompts(module, tmp_path / "demos.json")
    (entry,) = art["parameters"].values()
    assert entry["kind"] == "demos" and entry["demos"][0]["output"] == "2"


def test_repeats_use_distinct_salts_so_they_are_new_samples(project_dir, tmp_path):
    """A random model behind the real cache: one salt would replay repeat 0's answers."""
    rng = random.Random(0)
    salts = []

    def make_engine(cache_salt=None):
        salts.append(cache_salt)
        return tg.get_engine(
            "scripted",
            responder=lambda r: rng.choice(["positive", "negative"]),
            cache=tmp_path / "cache.sqlite",
            cache_salt=cache_salt,
        )

    (project_dir / "random_engine.py").write_text("make_engine = None\n")
    import sys

    sys.path.insert(0, str(project_dir))
    import random_engine

    random_engine.make_engine = make_engine
    toml = (project_dir / "textgraph.toml").read_text()
    toml = toml.replace("review_program:make_engine", "random_engine:make_engine")
    (project_dir / "textgraph.toml").write_text(toml)
    project = load_project(project_dir / "textgraph.toml")
    first = score(project, None, "test", repeats=3)
    again = score(project, None, "test", repeats=3)
    assert len(set(salts)) == 3  # one salt per repeat, the same salts the second time
    rows = first.matrix
    assert rows[0] != rows[1] and rows[1] != rows[2]  # each repeat is a new sample
    assert again.matrix == rows  # same salt: the cache answers, pairing by example holds
    assert all(len(r) == 40 for r in rows)


def test_eval_with_config_and_artifact(project_dir, monkeypatch, capsys):
    monkeypatch.chdir(project_dir)
    assert main(["eval", "--config", "textgraph.toml", "--split", "test", "-o", "e.json"]) == 0
    written = json.loads((project_dir / "e.json").read_text())
    test = load_project("textgraph.toml").split("test")
    # the scripted model answers bare labels for the weak prompt only on even-length texts
    expected = sum(len(e["text"]) % 2 == 0 for e in test) / len(test)
    assert written["n"] == 40 and written["mean"] == pytest.approx(expected)
    assert main(["compare", "prompts.json", "prompts.json", "--config", "textgraph.toml"]) == 1
    assert main(["compare", "missing.json", "prompts.json", "--config", "textgraph.toml"]) == 2
    assert "no prompt artifact at missing.json" in capsys.readouterr().err
