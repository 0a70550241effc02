"""Trainer: gating, reduction bounds, budgets, run files, resume after kill -9, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import textgraph as tg
from tests.trainer_task import data, make_engine, make_trainer
from textgraph.runs import Checkpoint, RunDir, Summary

ROOT = Path(__file__).resolve().parent.parent


def test_gate_rejects_worse_accepts_better_and_the_history_says_why(tmp_path):
    result = make_trainer(tmp_path / "run").fit()
    decisions = [(r.step, r.decision) for r in result.history]
    assert decisions[0] == (1, "rejected") and decisions[1] == (2, "accepted")
    assert result.history[0].reason == "rejected: val 0.500 -> 0.000"
    assert result.history[1].reason == "accepted: val 0.500 -> 1.000"
    assert result.initial_val_score == 0.5 and result.best_val_score == 1.0
    assert result.best_state["parameters"]["system"]["value"] == "GOOD prompt"
    assert result.test_score == 1.0
    # once every answer is right, MetricLoss sends no gradient: nothing to propose
    assert result.history[2].decision == "unchanged"
    assert result.summary.accepted_steps == 1


def test_test_before_scores_the_starting_prompt_and_reuses_it_when_nothing_was_accepted(
    tmp_path,
):
    engine = make_engine()
    result = make_trainer(tmp_path / "run", engine=engine, test_before=True).fit()
    # the starting prompt answers only even questions: 200 and 202 of 200..203
    assert result.initial_test_score == 0.5 and result.test_score == 1.0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["initial_test_score"] == 0.5 and summary["test_score"] == 1.0
    test_questions = {f"What is {i}?" for i in range(200, 204)}
    scored = [
        c.request.messages[-1].content
        for c in engine.calls
        if c.request.messages[-1].content in test_questions
    ]
    assert len(scored) == 8  # before and after training

    engine = make_engine(candidates=["NONE"] * 4)  # every candidate is rejected
    result = make_trainer(engine=engine, test_before=True, max_steps=2).fit()
    assert result.initial_test_score == result.test_score == 0.5
    scored = [c for c in engine.calls if c.request.messages[-1].content in test_questions]
    assert len(scored) == 4  # the unchanged prompt is not scored twice
    with pytest.raises(tg.ArgumentError, match="test_before=True needs a test split"):
        make_trainer(test_before=True, test=None)


def test_gate_better_refuses_an_equal_score(tmp_path):
    engine = make_engine(candidates=["EVEN rephrased"] * 4)
    result = make_trainer(engine=engine, gate="better", max_steps=1).fit()
    assert result.history[0].decision == "rejected"
    assert result.history[0].reason == "rejected: val 0.500 -> 0.500"
    result = make_trainer(
        engine=make_engine(candidates=["EVEN rephrased"] * 4), gate="not_worse", max_steps=1
    ).fit()
    assert result.history[0].decision == "accepted"


def test_val_subset_rejects_early_without_scoring_the_rest():
    engine = make_engine()
    result = make_trainer(engine=engine, val_subset=2, max_steps=1, test=None).fit()
    assert result.history[0].reason.startswith("rejected on the first 2 val examples")
    validation = [c for c in engine.calls if c.request.purpose == "validation"]
    assert len(validation) == 6 + 2  # initial full pass, then only the subset


def test_patience_stops_after_rejections(tmp_path):
    engine = make_engine(candidates=["NONE"] * 10)
    result = make_trainer(engine=engine, patience=2, max_steps=10).fit()
    assert len(result.history) == 2 and result.stopped.startswith("patience")


def test_reduction_bounds_the_optimizer_prompt_as_the_batch_grows():
    sizes = {}
    for batch in (2, 8, 12):
        engine = make_engine()
        make_trainer(
            engine=engine, batch_size=batch, max_steps=1, max_gradient_chars=800, train=data(12)
        ).fit()
        optimizer = [c for c in engine.calls if c.request.purpose == "optimizer"]
        reduce_calls = [c for c in engine.calls if c.request.purpose == "reduce"]
        sizes[batch] = len(optimizer[0].request.prompt_text())
        for call in reduce_calls:
            assert len(call.request.prompt_text()) < 3 * 800 + 2500  # chunked, bounded
        if batch > 2:
            assert reduce_calls, "large batches must be reduced"
    assert sizes[12] <= sizes[8] * 1.05  # flat once reduction kicks in
    assert max(sizes.values()) < 6000


def test_budget_stops_at_the_right_call_and_keeps_state_consistent(tmp_path):
    engine = make_engine()
    budget = tg.Budget(max_calls=20)
    result = make_trainer(tmp_path / "run", engine=engine, budget=budget).fit()
    assert result.stopped.startswith("budget")
    assert len(engine.calls) == 20 and budget.calls == 20
    trace = RunDir(tmp_path / "run").read_trace()
    assert len(trace) == 20
    # the step in flight was dropped: parameters are those of the last completed step
    done = [r.step for r in result.history]
    checkpoint = Checkpoint.model_validate_json(
        (tmp_path / "run" / "checkpoints" / f"step-{max(done, default=0):04d}.json").read_text()
    )
    assert (
        checkpoint.parameters["parameters"]["system"]["value"]
        == result.summary.final_parameters["system"]
    )


def test_run_files_validate_against_their_models(tmp_path):
    make_trainer(tmp_path / "run").fit()
    run = RunDir(tmp_path / "run")
    steps, trace = run.read_steps(), run.read_trace()
    assert [s.step for s in steps] == [1, 2, 3, 4]
    assert {t.purpose for t in trace} >= {"validation", "forward", "loss", "backward", "optimizer"}
    assert all(t.step in range(0, 5) for t in trace)
    summary = Summary.model_validate_json(run.summary.read_text())
    assert summary.calls == len(trace) and summary.best_val_score == 1.0
    assert summary.by_purpose["validation"]["calls"] == sum(
        t.purpose == "validation" for t in trace
    )
    config = json.loads(run.config.read_text())
    assert config["batch_size"] == 4 and config["initial_val_score"] == 0.5
    best = json.loads(run.best.read_text())
    assert best["parameters"]["system"] == "GOOD prompt"
    assert len(list(run.checkpoints.glob("step-*.json"))) == 5


def test_forward_errors_are_recorded_not_fatal_until_max_errors():
    engine = make_engine()

    class Flaky(type(make_trainer().module)):
        async def aforward(self, example):
            if example["question"].endswith("3?"):
                raise ValueError("boom on 3")
            return await super().aforward(example)

    trainer = make_trainer(engine=engine, max_steps=3)
    trainer.module.__class__ = Flaky
    result = trainer.fit()
    errors = [e for r in result.history for e in r.errors]
    assert any("example 3: forward failed: ValueError: boom on 3" in e for e in errors)
    trainer = make_trainer(engine=make_engine(), max_steps=3, max_errors=0)
    trainer.module.__class__ = Flaky
    with pytest.raises(tg.RunError, match="max_errors=0"):
        trainer.fit()


def test_bad_input_is_explained(tmp_path):
    with pytest.raises(tg.ArgumentError, match="train split is empty"):
        make_trainer(train=[])
    with pytest.raises(tg.ArgumentError, match="val split is missing"):
        make_trainer(val=None)
    trainer = make_trainer(max_steps=1)
    trainer.metric = lambda p, e: "yes"
    with pytest.raises(tg.ArgumentError, match="must return a number"):
        trainer.fit()
    make_trainer(tmp_path / "run", max_steps=1).fit()
    with pytest.raises(tg.RunError, match="already holds a run"):
        make_trainer(tmp_path / "run", max_steps=1).fit()
    with pytest.raises(tg.RunError, match="batch_size"):
        make_trainer(tmp_path / "run", max_steps=1, batch_size=3).fit(resume=True)
    make_trainer(tmp_path / "run", max_steps=1, batch_size=3).fit(resume=True, force=True)


def test_corrupt_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    make_trainer(tmp_path / "run", max_steps=2).fit()
    (tmp_path / "run" / "checkpoints" / "step-0002.json").write_text('{"format": "trunc')
    result = make_trainer(tmp_path / "run", max_steps=2).fit(resume=True)
    assert "step-0002.json is corrupt" in capsys.readouterr().err
    assert [r.step for r in result.history] == [1, 2]  # step 2 was redone


def comparable(records):
    """Step records minus what is measured time (seconds, the latency objective)."""
    rows = []
    for r in records:
        row = {k: v for k, v in r.model_dump().items() if k != "seconds"}
        for c in row["candidates"]:
            c["objectives"].pop("latency", None)
        rows.append(row)
    return rows


def test_kill_9_then_resume_matches_an_uninterrupted_run(tmp_path):
    full = make_trainer(tmp_path / "full").fit()

    run_dir = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.trainer_task", str(run_dir)],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
    )
    target = run_dir / "checkpoints" / "step-0002.json"
    deadline = time.monotonic() + 60
    while not target.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "the run never reached step 2"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert not (run_dir / "summary.json").exists()  # it really died mid-run

    resumed = make_trainer(run_dir).fit(resume=True)
    assert resumed.best_state == full.best_state
    assert resumed.test_score == full.test_score
    steps = RunDir(run_dir).read_steps()
    assert comparable(steps) == comparable(full.history)
    assert [r.step for r in steps] == [1, 2, 3, 4]
    # it really resumed: steps 0-2 were done by the killed process (50 ms per call),
    # the rest by this one (instant engine), and the trace holds both without duplicates
    trace = RunDir(run_dir).read_trace()
    assert all(t.latency_s >= 0.05 for t in trace if t.step <= 2)
    assert all(t.latency_s < 0.05 for t in trace if t.step > 2)
    assert resumed.summary.calls == full.summary.calls == len(trace)


def test_failures_only_critiques_failing_examples_plus_a_few_passing():
    seen: list[str] = []
    trainer = make_trainer(max_steps=1, failures_only=True, keep_passing=1)
    inner = trainer.loss_fn

    def counting(output, example):
        seen.append(example["question"])
        return inner(output, example)

    trainer.loss_fn = counting
    result = trainer.fit()
    scores = result.history[0].train_scores
    assert scores.count(0.0) == 2 and scores.count(1.0) == 2  # batch [5, 0, 3, 2]
    assert len(seen) == 3  # two failing + one passing


def test_show_and_report_give_test_scores_before_and_after(tmp_path, capsys):
    from textgraph.report.html import build_report
    from textgraph.report.terminal import show_run

    make_trainer(tmp_path / "run", test_before=True).fit()
    show_run(str(tmp_path / "run"))
    assert "test 0.500 -> 1.000" in capsys.readouterr().out
    assert "test 0.500 → 1.000" in build_report(str(tmp_path / "run"))
