"""MLflowCallback: a Trainer run as an MLflow run.

Parameters (the optimizer and its settings, the trainer's settings, data sizes and
fingerprints, model names), one metric point per step (val/best/train scores, calls,
tokens, cost, seconds), the totals at the end, the best parameter values as a JSON
artifact, the run's summary and its HTML report. MLflow is imported when the callback
is made, so `import textgraph` never needs it (`pip install "textgraph[mlflow]"`).

Secrets: engines keep keys private and are described only by their model names; any
setting whose name looks like a credential (api_key, token, secret, password...) is
dropped before logging.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textgraph.engines.base import Engine
from textgraph.errors import ArgumentError, ConfigurationError
from textgraph.module import Module
from textgraph.ops.base import Operation
from textgraph.optim.base import optimizer_name
from textgraph.train.callbacks import Callback

if TYPE_CHECKING:
    from textgraph.runs import CandidateRecord, StepRecord
    from textgraph.train.trainer import FitResult, Trainer

VALUES_FORMAT = "textgraph.values"
MAX_PARAM_CHARS = 500  # MLflow accepts 6000; long prompts belong in the artifact
_SECRET = re.compile(
    r"api[_-]?key|secret|password|passwd|credential|authorization|bearer|access[_-]?token",
    re.IGNORECASE,
)


def _import_mlflow() -> Any:
    try:
        import mlflow
    except ImportError as exc:
        raise ConfigurationError(
            f'MLflowCallback needs MLflow: pip install "textgraph[mlflow]" (import failed: {exc})'
        ) from None
    return mlflow


class MLflowCallback(Callback):
    """Log a Trainer run to MLflow; see docs/tracking.md.

    tracking_uri: where to log (None: MLflow's own default, e.g. MLFLOW_TRACKING_URI);
    experiment: the experiment name (created if missing; None: "textgraph");
    run_name: the MLflow run's name (None: the run directory's name, or the optimizer's);
    run_id: log into this existing MLflow run instead of creating one (left open);
    artifact_location: where a new experiment keeps its artifacts (None: MLflow's
    default, ./mlruns beside a sqlite store);
    tags: extra tags; log_report: also log the HTML report (needs a run_dir).
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment: str | None = None,
        run_name: str | None = None,
        *,
        run_id: str | None = None,
        artifact_location: str | None = None,
        tags: dict[str, str] | None = None,
        log_report: bool = True,
    ) -> None:
        for name, value in (
            ("tracking_uri", tracking_uri),
            ("experiment", experiment),
            ("run_name", run_name),
            ("run_id", run_id),
            ("artifact_location", artifact_location),
        ):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ArgumentError(f"MLflowCallback({name}=...) must be a non-empty string")
        if tags is not None and not (
            isinstance(tags, dict) and all(isinstance(k, str) for k in tags)
        ):
            raise ArgumentError("MLflowCallback(tags=...) must be a dict of str to str")
        mlflow = _import_mlflow()
        self.client = mlflow.tracking.MlflowClient(tracking_uri=tracking_uri)
        self.experiment = experiment or "textgraph"
        self.artifact_location = artifact_location
        self.run_name, self.tags, self.log_report = run_name, dict(tags or {}), log_report
        self.run_id: str | None = run_id  # the current (or last) fit's MLflow run
        self._own_run = run_id is None
        self._started = False
        self._candidates: list[dict[str, Any]] = []

    # --- hooks -------------------------------------------------------------

    def on_start(self, trainer: Trainer) -> None:
        self._start(trainer)

    def on_candidate(self, trainer: Trainer, step: StepRecord, record: CandidateRecord) -> None:
        self._start(trainer)
        self._candidates.append(
            {
                "step": step.step,
                "id": record.id,
                "origin": record.origin,
                "status": record.status,
                "val_score": record.val_score,
                "objectives": record.objectives,
                "reason": record.reason,
            }
        )

    def on_step(self, trainer: Trainer, record: StepRecord) -> None:
        run_id = self._start(trainer)
        scored = [s for s in record.train_scores if s is not None]
        metrics: dict[str, float | None] = {
            "val_score": record.val_score,
            "best_val_score": record.best_score,
            "train_score": sum(scored) / len(scored) if scored else None,
            "accepted": float(record.decision == "accepted"),
            "candidates": float(len(record.candidates)),
            "failed_examples": float(len(record.errors)),
            "calls": float(record.calls),
            "tokens": float(record.tokens),
            "cost_usd": record.cost_usd,
            "seconds": record.seconds,
        }
        self._log_metrics(run_id, metrics, step=record.step)

    def on_end(self, trainer: Trainer, result: FitResult) -> None:
        run_id = self._start(trainer)
        summary = result.summary
        self._log_metrics(
            run_id,
            {
                "initial_val_score": result.initial_val_score,
                "final_best_val_score": result.best_val_score,
                "test_score": result.test_score,
                "initial_test_score": result.initial_test_score,
                "accepted_steps": float(summary.accepted_steps),
                "total_calls": float(summary.calls),
                "total_cached_calls": float(summary.cached_calls),
                "total_tokens": float(summary.prompt_tokens + summary.completion_tokens),
                "total_cost_usd": summary.cost_usd,
                "total_seconds": summary.seconds,
            },
            step=summary.steps,
        )
        self.client.set_tag(run_id, "textgraph.stopped", _clip(result.stopped))
        with tempfile.TemporaryDirectory(prefix="textgraph-mlflow-") as tmp:
            values = Path(tmp) / "best_parameters.json"
            values.write_text(json.dumps(_values_artifact(trainer, result), indent=2, default=str))
            self.client.log_artifact(run_id, str(values))
            candidates = Path(tmp) / "candidates.json"
            candidates.write_text(json.dumps(self._candidates, indent=2, default=str))
            self.client.log_artifact(run_id, str(candidates))
            if trainer.run_dir is not None:
                run_dir = Path(trainer.run_dir)
                for name in ("summary.json", "config.json"):
                    if (run_dir / name).exists():
                        self.client.log_artifact(run_id, str(run_dir / name), "run")
                from textgraph.artifact import export_run  # what `textgraph export` writes

                export_run(run_dir, Path(tmp) / "prompts.json")
                self.client.log_artifact(run_id, str(Path(tmp) / "prompts.json"))
                if self.log_report:
                    from textgraph.report.html import write_report

                    report = write_report(run_dir, Path(tmp) / "report.html")
                    self.client.log_artifact(run_id, str(report))
        self._finish(run_id, "FINISHED")

    def on_error(self, trainer: Trainer, error: BaseException) -> None:
        run_id = self._start(trainer)
        self.client.set_tag(run_id, "textgraph.error", _clip(f"{type(error).__name__}: {error}"))
        killed = isinstance(error, (KeyboardInterrupt, SystemExit))
        self._finish(run_id, "KILLED" if killed else "FAILED")

    # --- pieces ------------------------------------------------------------

    def _finish(self, run_id: str, status: str) -> None:
        """End this fit's MLflow run (one we created); the next fit starts a new one."""
        if self._own_run:
            self.client.set_terminated(run_id, status=status)
        self._started = False
        self._candidates = []

    def _start(self, trainer: Trainer) -> str:
        """The MLflow run, created with the parameters when a fit starts (or, for a
        callback called by hand, on its first hook)."""
        if self._started:
            assert self.run_id is not None
            return self.run_id
        if self._own_run:
            found = self.client.get_experiment_by_name(self.experiment)
            experiment_id = (
                found.experiment_id
                if found is not None
                else self.client.create_experiment(
                    self.experiment, artifact_location=self.artifact_location
                )
            )
            name = self.run_name or (
                Path(trainer.run_dir).name if trainer.run_dir else optimizer_name(trainer.optimizer)
            )
            self.run_id = self.client.create_run(experiment_id, run_name=name).info.run_id
        from textgraph import __version__

        tags = {"textgraph.version": __version__, **self.tags}
        if trainer.run_dir is not None:
            tags["textgraph.run_dir"] = str(Path(trainer.run_dir).resolve())
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, _clip(str(value)))
        params = run_params(trainer)
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow's batch limit is 100 params
            self.client.log_batch(self.run_id, params=items[i : i + 100])
        self._started = True
        return self.run_id

    def _log_metrics(self, run_id: str, metrics: dict[str, float | None], *, step: int) -> None:
        from mlflow.entities import Metric

        at = int(time.time() * 1000)
        batch = [
            Metric(key, float(value), at, step)
            for key, value in metrics.items()
            if value is not None
        ]
        self.client.log_batch(run_id, metrics=batch)


def run_params(trainer: Trainer) -> dict[str, str]:
    """The trainer's settings, the optimizer's config and the model names, flattened to
    MLflow parameters (strings); credential-like names are dropped."""
    config = trainer._config()
    config.pop("initial_parameters", None)  # prompt text: in the artifact, not a param
    config.pop("format", None)
    config["parameters"] = ", ".join(config.get("parameters", []))
    config["optimizer"] = {"name": optimizer_name(trainer.optimizer), **config["optimizer"]}
    models = _model_names(trainer)
    config["models"] = ", ".join(sorted(set(models.values()))) or None
    config["engine"] = models
    flat: dict[str, str] = {}
    _flatten(config, "", flat)
    return flat


def _flatten(value: Any, prefix: str, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if _SECRET.search(str(key)):
                continue
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
        return
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    out[prefix] = _clip(text, MAX_PARAM_CHARS)


def _model_names(trainer: Trainer) -> dict[str, str]:
    """role -> model name for the trainer's engines, the optimizer's and the module's."""
    roles: dict[str, Any] = {
        "engine": trainer.engine,
        "critic": trainer.critic_engine,
        "backward": trainer.backward_engine,
        "reduce": trainer.reduce_engine,
        "optimizer": getattr(trainer.optimizer, "engine", None),
    }
    names = {r: str(e.model_name) for r, e in roles.items() if isinstance(e, Engine)}
    for path, engine in _module_engines(trainer.module, "module", set()):
        names.setdefault(path, str(engine.model_name))
    return names


def _module_engines(obj: Any, prefix: str, seen: set[int]) -> list[tuple[str, Engine]]:
    if isinstance(obj, Engine):
        return [(prefix, obj)]
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    children: list[tuple[str, Any]] = []
    if isinstance(obj, (Module, Operation)):
        children = [(k, v) for k, v in vars(obj).items() if not k.startswith("_")]
    elif isinstance(obj, (list, tuple)):
        children = [(str(i), v) for i, v in enumerate(obj)]
    elif isinstance(obj, dict):
        children = [(str(k), v) for k, v in obj.items()]
    found: list[tuple[str, Engine]] = []
    for name, child in children:
        found.extend(_module_engines(child, f"{prefix}.{name}", seen))
    return found


def _values_artifact(trainer: Trainer, result: FitResult) -> dict[str, Any]:
    """The final parameter values with their scores: what `load_state_dict` needs."""
    return {
        "format": VALUES_FORMAT,
        "optimizer": optimizer_name(trainer.optimizer),
        "selected": result.summary.selected,
        "best_val_score": result.best_val_score,
        "test_score": result.test_score,
        "parameters": result.best_state["parameters"],
    }


def _clip(text: str, limit: int = 5000) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
