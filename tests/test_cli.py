"""The `textgraph` command and the demo it runs."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from rich.console import Console

from textgraph.cli import main
from textgraph.datasets import generate_object_counting
from textgraph.demo import exact_number, run_demo


def test_demo_improves_the_prompt_and_reports_numbers_from_the_run():
    out = io.StringIO()
    result = asyncio.run(
        run_demo(steps=2, batch_size=4, val_size=8, console=Console(file=out, width=200))
    )
    history = result["history"]
    assert [row["step"] for row in history] == [0, 1, 2]
    assert history[0]["val_accuracy"] < history[-1]["val_accuracy"]
    assert history[-1]["prompt"] != history[0]["prompt"]
    # 8 val questions per evaluation (3 evaluations) + 4 per training step
    assert result["calls"]["forward"] == 3 * 8 + 2 * 4
    text = out.getvalue()
    assert f"{history[-1]['val_accuracy']:.0%}" in text
    assert f"{sum(result['calls'].values())} LLM calls" in text
    assert "Model: simulated" in text


def test_cli_demo_exit_codes(capsys, monkeypatch):
    monkeypatch.delenv("TEXTGRAPH_MODEL", raising=False)
    assert main(["demo", "--model", "simulated", "--steps", "1", "--batch-size", "2"]) == 0
    assert "Validation accuracy" in capsys.readouterr().out
    assert main(["demo", "--model", "gpt4"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown model string 'gpt4'" in err[0]
    assert main(["demo", "--steps", "0"]) == 1
    assert main([]) == 2


def test_object_counting_generator_is_seeded_and_consistent():
    first, again = generate_object_counting(20, seed=3), generate_object_counting(20, seed=3)
    assert first == again and first != generate_object_counting(20, seed=4)
    for example in first:
        asked = example.question.rsplit("How many ", 1)[1].removesuffix(" do I have?")
        assert example.answer == str(sum(q for _, q, cat in example.items if cat == asked))
        assert exact_number(f"So the total is {example.answer}.", example.answer) == 1.0


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
    assert "gradients of system" in detail and "candidate for system: proposed" in detail
    assert "should tell the model to repeat the number" in detail
    assert main(["show", str(run_dir), "--step", "9"]) == 1
    assert "has no step 9" in capsys.readouterr().err

    assert main(["run", f"{script}:not_a_trainer"]) == 1
    assert "must return a tg.Trainer" in capsys.readouterr().err
    assert main(["run", f"{script}:missing"]) == 1
    assert "no function 'missing'" in capsys.readouterr().err
    assert main(["show", str(tmp_path / "nowhere")]) == 1
    assert "not a run directory" in capsys.readouterr().err
