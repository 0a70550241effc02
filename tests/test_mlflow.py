"""Tracking: the callback protocol, and MLflowCallback against a real local MLflow store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import textgraph as tg
from tests.trainer_task import make_engine, make_trainer
from textgraph.engines.providers.openai import OpenAIEngine
from textgraph.runs import RunDir

ROOT = Path(__file__).resolve().parent.parent


class Recorder(tg.Callback):
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def on_start(self, trainer):
        self.events.append(("start", trainer.max_steps))

    def on_candidate(self, trainer, step, record):
        self.events.append(("candidate", step.step, record.id, record.status))

    def on_step(self, trainer, record):
        self.events.append(("step", record.step, record.val_score, record.calls))

    def on_end(self, trainer, result):
        self.events.append(("end", result.stopped, len(result.history)))

    def on_error(self, trainer, error):
        self.events.append(("error", type(error).__name__))


def test_callbacks_hear_each_candidate_then_its_step_then_the_end_once(tmp_path):
    recorder = Recorder()
    result = make_trainer(tmp_path / "run", callbacks=[recorder]).fit()
    steps = RunDir(tmp_path / "run").read_steps()
    expected: list[tuple] = [("start", 4)]
    for s in steps:
        expected += [("candidate", s.step, c.id, c.status) for c in s.candidates]
        expected.append(("step", s.step, s.val_score, s.calls))
    expected.append(("end", result.stopped, len(steps)))
    assert recorder.events == expected
    assert [e[0] for e in recorder.events].count("end") == 1
    # the toy task rejects step 1's candidate and accepts step 2's
    assert ("candidate", 1, steps[0].candidates[0].id, "rejected") in recorder.events
    assert ("candidate", 2, steps[1].candidates[0].id, "accepted") in recorder.events


def test_a_failing_callback_stops_the_run_with_its_name_and_the_run_resumes(tmp_path):
    class Broken(tg.Callback):
        def on_step(self, trainer, record):
            if record.step == 2:
                raise RuntimeError("tracker offline")

    recorder = Recorder()
    with pytest.raises(tg.CallbackError, match=r"Broken\.on_step raised RuntimeError: tracker"):
        make_trainer(tmp_path / "run", callbacks=[Broken(), recorder]).fit()
    # the others hear of the error; step 2 was checkpointed before the hooks ran
    assert recorder.events[-1] == ("error", "CallbackError")
    summary = RunDir(tmp_path / "run").read_summary()
    assert summary is not None and summary.stopped.startswith("error: CallbackError")
    resumed = make_trainer(tmp_path / "run").fit(resume=True)
    assert [r.step for r in resumed.history] == [1, 2, 3, 4]


def test_bad_callbacks_are_refused_clearly():
    with pytest.raises(tg.ArgumentError, match="the class Recorder, not an instance"):
        make_trainer(callbacks=[Recorder])
    with pytest.raises(tg.ArgumentError, match=r"callbacks\[0\] \(int\) has none of the hooks"):
        make_trainer(callbacks=[3])
    with pytest.raises(tg.ArgumentError, match="callbacks must be a list"):
        make_trainer(callbacks=Recorder())


def test_without_mlflow_the_callback_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    with pytest.raises(tg.ConfigurationError, match=r'pip install "textgraph\[mlflow\]"'):
        tg.integrations.MLflowCallback()


def test_import_textgraph_does_not_import_mlflow():
    code = (
        "import sys, textgraph as tg; tg.integrations.MLflowCallback; "
        "print('mlflow' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "False"


# Tests stay off the network: MLflow 3 sends usage telemetry unless told not to.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
mlflow = pytest.importorskip(
    "mlflow", reason='MLflow is not installed: pip install "textgraph[mlflow]"'
)
pytest.importorskip("sqlalchemy", reason="the sqlite MLflow store needs SQLAlchemy")


@pytest.fixture
def store(tmp_path, monkeypatch):
    # a sqlite store keeps artifacts in ./mlruns unless told otherwise: work in tmp_path
    monkeypatch.chdir(tmp_path)
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _only_run(client, experiment="textgraph"):
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id])
    assert len(runs) == 1
    return runs[0]


def test_mlflow_logs_params_step_metrics_artifact_and_report(tmp_path, store):
    artifacts = tmp_path / "artifacts"
    callback = tg.integrations.MLflowCallback(
        tracking_uri=store, experiment="toy", run_name="toy-tgd", artifact_location=str(artifacts)
    )
    result = make_trainer(tmp_path / "run", callbacks=[callback]).fit()
    client = mlflow.tracking.MlflowClient(tracking_uri=store)
    run = _only_run(client, "toy")
    assert run.info.run_name == "toy-tgd" and run.info.status == "FINISHED"
    params = run.data.params
    assert params["optimizer.name"] == "tgd" and params["optimizer.momentum"] == "2"
    assert params["max_steps"] == "4" and params["batch_size"] == "4"
    assert params["gate"] == "not_worse"
    assert params["data.val.size"] == "6" and params["parameters"] == "system"
    assert params["models"] == "scripted" and params["engine.optimizer"] == "scripted"
    steps = RunDir(tmp_path / "run").read_steps()
    history = {
        key: client.get_metric_history(run.info.run_id, key)
        for key in ("val_score", "calls", "tokens", "cost_usd", "accepted")
    }
    for key, points in history.items():
        assert [p.step for p in points] == [s.step for s in steps], key
    assert [p.value for p in history["val_score"]] == [s.val_score for s in steps]
    assert [p.value for p in history["calls"]] == [s.calls for s in steps]
    assert [p.value for p in history["tokens"]] == [s.tokens for s in steps]
    assert [p.value for p in history["accepted"]] == [
        float(s.decision == "accepted") for s in steps
    ]
    assert sum(p.value for p in history["calls"]) > 0
    assert run.data.metrics["test_score"] == result.test_score == 1.0
    assert run.data.metrics["initial_val_score"] == 0.5
    assert run.data.metrics["total_calls"] == result.summary.calls
    assert run.data.tags["textgraph.stopped"] == result.stopped
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"best_parameters.json", "candidates.json", "report.html", "run"} <= files
    local = client.download_artifacts(run.info.run_id, "best_parameters.json", str(tmp_path))
    values = json.loads(open(local).read())
    assert values["parameters"]["system"]["value"] == "GOOD prompt"
    assert values["best_val_score"] == result.best_val_score
    report = client.download_artifacts(run.info.run_id, "report.html", str(tmp_path))
    assert "GOOD prompt" in open(report).read()
    assert (artifacts / run.info.run_id / "artifacts" / "report.html").is_file()
    run_files = {a.path for a in client.list_artifacts(run.info.run_id, "run")}
    assert run_files == {"run/summary.json", "run/config.json"}


def test_mlflow_never_logs_an_engines_api_key(tmp_path, store):
    secret = "sk-test-DO-NOT-LOG-0123456789abcdef"
    critic = OpenAIEngine("gpt-4o-mini", base_url="http://127.0.0.1:9/v1", api_key=secret)
    callback = tg.integrations.MLflowCallback(tracking_uri=store)
    make_trainer(
        tmp_path / "run", callbacks=[callback], reduce_engine=critic, max_steps=1, test=None
    ).fit()
    run = _only_run(mlflow.tracking.MlflowClient(tracking_uri=store))
    assert run.data.params["engine.reduce"] == "gpt-4o-mini"
    logged = json.dumps([run.data.params, run.data.tags])
    assert secret not in logged and "sk-test" not in logged


def test_mlflow_marks_a_failed_fit_failed(tmp_path, store):
    def broken(request):
        raise tg.AuthenticationError("401: the key was rejected", status=401)

    callback = tg.integrations.MLflowCallback(tracking_uri=store)
    with pytest.raises(tg.AuthenticationError):
        make_trainer(
            tmp_path / "run", engine=tg.engines.ScriptedEngine(broken), callbacks=[callback]
        ).fit()
    run = _only_run(mlflow.tracking.MlflowClient(tracking_uri=store))
    assert run.info.status == "FAILED"
    assert run.data.params["optimizer.name"] == "tgd"  # logged at the start, before any step
    assert run.data.tags["textgraph.error"].startswith("AuthenticationError: 401")


def test_mlflow_callback_refuses_bad_settings():
    with pytest.raises(tg.ArgumentError, match="experiment"):
        tg.integrations.MLflowCallback(experiment="  ")


def test_the_engine_double_is_unchanged_by_tracking(tmp_path, store):
    # the callback adds no model call: same calls with and without it
    plain, tracked = make_engine(), make_engine()
    make_trainer(tmp_path / "a", engine=plain).fit()
    callback = tg.integrations.MLflowCallback(tracking_uri=store)
    make_trainer(tmp_path / "b", engine=tracked, callbacks=[callback]).fit()
    assert len(plain.calls) == len(tracked.calls)


def test_credential_like_settings_are_dropped_from_the_params():
    from textgraph.integrations.mlflow import run_params

    secret = "hunter2-DO-NOT-LOG"
    trainer = make_trainer()
    trainer.optimizer.config = lambda: {
        "name": "keyed",
        "api_key": secret,
        "auth": {"password": secret, "user": "me"},
        "max_tokens": 64,
    }
    params = run_params(trainer)
    assert secret not in json.dumps(params)
    assert params["optimizer.auth.user"] == "me" and params["optimizer.max_tokens"] == "64"
    assert "optimizer.api_key" not in params and "optimizer.auth.password" not in params


def test_one_callback_over_two_fits_makes_two_runs(tmp_path, store):
    callback = tg.integrations.MLflowCallback(tracking_uri=store)
    make_trainer(tmp_path / "a", callbacks=[callback], max_steps=1).fit()
    first = callback.run_id
    make_trainer(tmp_path / "b", callbacks=[callback], max_steps=2).fit()
    client = mlflow.tracking.MlflowClient(tracking_uri=store)
    assert callback.run_id != first
    lengths = {
        client.get_run(r).info.run_name: len(client.get_metric_history(r, "val_score"))
        for r in (first, callback.run_id)
    }
    assert lengths == {"a": 1, "b": 2}
    assert client.get_run(first).info.status == client.get_run(callback.run_id).info.status
    assert client.get_run(first).info.status == "FINISHED"


def test_without_a_uri_the_callback_follows_mlflow_tracking_uri(tmp_path, store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    make_trainer(callbacks=[tg.integrations.MLflowCallback()], max_steps=1, test=None).fit()
    client = mlflow.tracking.MlflowClient(tracking_uri=store)
    run = _only_run(client)
    assert run.info.run_name == "tgd"  # no run_dir: named after the optimizer
    assert "textgraph.run_dir" not in run.data.tags
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert files == {"best_parameters.json", "candidates.json"}  # no run dir, no report


def test_optimize_with_mlflow_logs_the_run_and_its_exported_artifact(tmp_path, monkeypatch):
    """`textgraph optimize --mlflow` on the CI example project, read back from sqlite."""
    import shutil

    pytest.importorskip("mlflow", reason='MLflow is not installed: pip install "textgraph[mlflow]"')
    from mlflow.tracking import MlflowClient

    from textgraph.cli import main

    example = ROOT / "examples" / "ci"
    shutil.copytree(example, tmp_path / "p", ignore=shutil.ignore_patterns("runs", "out"))
    monkeypatch.chdir(tmp_path / "p")
    monkeypatch.setenv("PROMPTS_MODEL", "scripted")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    assert main(["optimize", "--config", "textgraph.toml", "--mlflow"]) == 0
    client = MlflowClient(tracking_uri=uri)
    [experiment] = [e for e in client.search_experiments() if e.name != "Default"] or (
        client.search_experiments()
    )
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    steps = RunDir(tmp_path / "p" / "runs" / "latest").read_steps()
    history = client.get_metric_history(run.info.run_id, "calls")
    assert [m.value for m in history] == [s.calls for s in steps]
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"prompts.json", "report.html"} <= names
    local = client.download_artifacts(run.info.run_id, "prompts.json", str(tmp_path / "dl"))
    artifact = json.loads(Path(local).read_text())
    exported = tg.export_run(tmp_path / "p" / "runs" / "latest", tmp_path / "exported.json")
    assert artifact["parameters"] == exported["parameters"]
