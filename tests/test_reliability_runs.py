"""A run never lies about what happened (issue 12): fatal errors, unscorable examples,
finished runs, locks, corrupt checkpoints, run-dir arguments, cumulative usage."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import textgraph as tg
from tests.test_search_loop import Scripted, trainer
from tests.trainer_task import make_engine, make_trainer
from textgraph.engines import ScriptedEngine
from textgraph.runs import RunDir


def breaking_engine(fail_at_optimizer_call: int, error: Exception):
    """The toy task's engine, until the n-th optimizer call: then `error` on every call
    until `fixed["yes"]` is set (the user fixed the key)."""
    inner, count, fixed = make_engine(), {"optimizer": 0}, {"yes": False}

    def respond(request):
        if request.purpose == "optimizer":
            count["optimizer"] += 1
        if count["optimizer"] >= fail_at_optimizer_call and not fixed["yes"]:
            raise error
        return inner._respond(request)

    return ScriptedEngine(respond), fixed


@pytest.mark.parametrize(
    "error",
    [
        tg.AuthenticationError("openai 401: invalid api key", status=401),
        tg.ProviderError("openai 404: model not found", status=404),
        tg.RateLimitError("openai 429: insufficient_quota (not retried)", status=429),
    ],
    ids=["401", "404", "quota"],
)
def test_a_fatal_provider_error_stops_the_run_and_resume_continues(tmp_path, error):
    engine, fixed = breaking_engine(2, error)
    with pytest.raises(type(error)):
        make_trainer(tmp_path / "run", engine=engine).fit()
    run = RunDir(tmp_path / "run")
    summary = run.read_summary()
    assert summary.stopped.startswith(f"error: {type(error).__name__}: ")
    assert summary.resumable and summary.steps == 1
    assert [r.step for r in run.read_steps()] == [1]  # step 1 kept, step 2 dropped whole
    fixed["yes"] = True
    result = make_trainer(tmp_path / "run", engine=engine).fit(resume=True)
    assert result.stopped == "max_steps" and [r.step for r in result.history] == [1, 2, 3, 4]
    assert not result.summary.resumable


def test_a_non_fatal_provider_error_is_one_failed_example():
    def respond(request):
        if "101" in request.messages[-1].content:
            raise tg.ProviderError("openai 400: bad request", status=400)
        return make_engine()._respond(request)

    result = make_trainer(engine=ScriptedEngine(respond), max_steps=1).fit()
    assert result.summary.failed_examples >= 1


def test_failed_validation_examples_are_errors_not_zeros(tmp_path):
    inner = make_engine()

    def respond(request):  # validation question 101 always fails (max_attempts=1 style)
        if request.purpose == "validation" and request.messages[-1].content == "What is 101?":
            raise tg.ProviderError("openai 500: upstream", status=500)
        return inner._respond(request)

    result = make_trainer(tmp_path / "run", engine=ScriptedEngine(respond), max_steps=2).fit()
    # "EVEN start" answers 100, 102, 104 of 100..105 right; 101 failed: 3 of 5 scored, not 3/6
    assert result.initial_val_score == pytest.approx(3 / 5)
    summary = RunDir(tmp_path / "run").read_summary()
    assert summary.failed_examples >= 1
    accepted = next(r for r in result.history if r.decision == "accepted")
    assert "compared on the 5 of 6 validation examples both scored" in accepted.reason
    assert any("validation example 1" in e for r in result.history for e in r.errors)


def test_an_initial_validation_that_cannot_be_scored_stops_with_a_clear_error(tmp_path):
    def respond(request):
        if request.purpose == "validation":
            raise tg.ProviderError("openai 500: outage", status=500)
        return make_engine()._respond(request)

    with pytest.raises(tg.EvaluationError, match="initial validation could not be scored"):
        make_trainer(tmp_path / "run", engine=ScriptedEngine(respond)).fit()
    run = RunDir(tmp_path / "run")
    assert not list(run.checkpoints.glob("step-*.json"))  # no fake score checkpointed
    assert run.read_summary().stopped.startswith("error: EvaluationError")


def test_resuming_a_finished_run_returns_its_result_without_calls(tmp_path):
    first = make_trainer(tmp_path / "run").fit()
    engine = make_engine()
    again = make_trainer(tmp_path / "run", engine=engine).fit(resume=True)
    assert engine.calls == []
    assert again.test_score == first.test_score and again.stopped == first.stopped
    assert again.best_state == first.best_state
    assert [r.step for r in again.history] == [r.step for r in first.history]
    assert RunDir(tmp_path / "run").read_summary().calls == first.summary.calls


def test_a_crash_during_the_test_drops_its_records_on_resume(tmp_path):
    full = make_trainer(tmp_path / "full").fit()
    crashing = make_trainer(tmp_path / "run")
    original = crashing._evaluate

    async def crash_after_test(candidate, split, **options):
        result = await original(candidate, split, **options)
        if split == "test":
            raise KeyboardInterrupt("killed while scoring the test set")
        return result

    crashing._evaluate = crash_after_test
    with pytest.raises(KeyboardInterrupt):
        crashing.fit()
    resumed = make_trainer(tmp_path / "run").fit(resume=True)
    run = RunDir(tmp_path / "run")
    tests = [r for r in run.read_trace() if r.phase == "test"]
    assert len(tests) == 4  # one test pass, not two
    assert resumed.summary.calls == len(run.read_trace()) == full.summary.calls
    assert resumed.test_score == full.test_score


@pytest.mark.parametrize("crash_at", [2, 3, 4, 5])
def test_val_subset_resume_is_exact_after_any_checkpoint(tmp_path, crash_at):
    proposals = ("NONE", "GOOD one", "EVEN x", "GOOD two", "x")
    options = dict(val_subset=2, max_steps=5)
    full = trainer(Scripted(*proposals), tmp_path / "full", **options).fit()
    with pytest.raises(KeyboardInterrupt):
        trainer(Scripted(*proposals, crash_at=crash_at), tmp_path / "run", **options).fit()
    resumed = trainer(Scripted(*proposals), tmp_path / "run", **options).fit(resume=True)

    def plain(records):
        return [
            [(c.id, c.status, c.reason, c.val_score) for c in r.candidates] + [r.decision]
            for r in records
        ]

    assert plain(resumed.history) == plain(full.history)
    assert resumed.best_state == full.best_state


def test_two_processes_cannot_share_a_run_dir(tmp_path):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from textgraph.runs import RunDir\n"
            "with RunDir(sys.argv[1]).lock():\n    print('held', flush=True); time.sleep(60)",
            str(run_dir),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(tg.RunError, match=rf"in use by another run \(pid {holder.pid} on"):
            make_trainer(run_dir).fit()
        assert not (run_dir / "config.json").exists()  # the second one wrote nothing
    finally:
        holder.kill()
        holder.wait(timeout=10)
    make_trainer(run_dir, max_steps=1).fit()  # released: the directory is usable again
    with RunDir(run_dir).lock(), pytest.raises(tg.RunError, match="in use"):
        make_trainer(run_dir, max_steps=1).fit(resume=True)


def test_corrupt_checkpoints_never_wipe_a_run(tmp_path):
    run_dir = tmp_path / "run"
    make_trainer(run_dir, max_steps=2).fit()
    run = RunDir(run_dir)
    steps_before = run.steps.read_text()
    for path in run.checkpoints.glob("step-*.json"):
        path.write_text('{"format": "trunc')
    with pytest.raises(tg.RunError, match="every checkpoint is corrupt") as caught:
        make_trainer(run_dir, max_steps=2).fit(resume=True)
    assert "force=True" in str(caught.value)
    assert run.steps.read_text() == steps_before and run.best.exists()
    make_trainer(run_dir, max_steps=2).fit(force=True)
    kept = list((run_dir / "previous").glob("*/steps.jsonl"))
    assert len(kept) == 1 and kept[0].read_text() == steps_before
    assert len(list((run_dir / "previous").glob("*/checkpoints/step-*.json"))) == 3


def test_run_dir_arguments_are_checked(tmp_path):
    with pytest.raises(tg.ArgumentError, match="empty path would write into the current"):
        make_trainer("")
    with pytest.raises(tg.RunError, match="nothing to resume at"):
        make_trainer(tmp_path / "missing").fit(resume=True)
    assert not (tmp_path / "missing" / "config.json").exists()


def test_checkpointed_usage_is_cumulative_across_sessions(tmp_path):
    full = make_trainer(tmp_path / "full").fit()
    with pytest.raises(KeyboardInterrupt):
        trainer(Scripted("GOOD", "x", crash_at=2), tmp_path / "run").fit()
    first = RunDir(tmp_path / "run").latest_checkpoint()[0].trainer
    trainer(Scripted("GOOD", "x"), tmp_path / "run").fit(resume=True)
    last = RunDir(tmp_path / "run").latest_checkpoint()[0].trainer
    untested = [r for r in RunDir(tmp_path / "run").read_trace() if r.phase != "test"]
    assert first.calls > 0 and last.calls == len(untested) > first.calls
    assert last.tokens > first.tokens and last.seconds >= first.seconds
    assert full.summary.calls > 0


@pytest.mark.parametrize(
    "option, value",
    [
        ("batch_size", "3"),
        ("batch_size", 1.5),
        ("patience", -1),
        ("patience", 0),
        ("max_concurrency", 0),
        ("max_steps", "2"),
        ("budget", {"max_calls": 3}),
    ],
)
def test_bad_trainer_settings_are_rejected_at_construction(option, value):
    with pytest.raises(tg.ArgumentError, match=option):
        make_trainer(**{option: value})


def test_a_budget_spent_in_the_initial_validation_returns_a_result(tmp_path):
    budget = tg.Budget(max_calls=2)
    result = make_trainer(tmp_path / "run", budget=budget).fit()
    assert result.stopped.startswith("budget") and "initial validation" in result.stopped
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stopped"] == result.stopped and summary["resumable"] is True


def test_an_evaluators_max_concurrency_holds_across_threads_and_loops():
    import asyncio
    import threading

    state = {"now": 0, "peak": 0}
    lock = threading.Lock()

    async def program(example):
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        await asyncio.sleep(0.01)
        with lock:
            state["now"] -= 1
        return "x"

    evaluator = tg.Evaluator(program, lambda p, e: 1.0, max_concurrency=2, progress=False)
    threads = [
        threading.Thread(target=evaluator.evaluate, args=(list(range(12)),)) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert state["peak"] == 2


def test_any_error_that_ends_a_run_is_written_to_its_summary(tmp_path):
    trainer = make_trainer(tmp_path / "run", max_steps=3, max_errors=0)

    class Broken(type(trainer.module)):
        async def aforward(self, example):
            if example["question"].endswith("3?"):
                raise ValueError("boom on 3")
            return await super().aforward(example)

    trainer.module.__class__ = Broken
    with pytest.raises(tg.RunError, match="max_errors=0"):
        trainer.fit()
    summary = RunDir(tmp_path / "run").read_summary()
    assert summary.stopped.startswith("error: RunError:") and summary.resumable
