"""Frozen prompt artifacts: `export_run(run_dir)` writes prompts.json, `load_prompts` applies it.

The runtime ships the artifact, never the optimizer: every parameter value
(text, and demos parsed out), a sha256 per value and over all of them, the
models it was optimized for, the scores it earned (mean, bootstrap CI and the
per-example scores, so a drift check can compare against them), the textgraph
version, the run id and the date. Loading verifies every hash and refuses an
artifact whose parameter names differ from the module's.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from textgraph._io import atomic_write_text
from textgraph.demos import is_demos_text, parse_demos
from textgraph.errors import StateDictError
from textgraph.eval.stats import mean_ci
from textgraph.runs import RunDir, RunError

ARTIFACT_FORMAT = "textgraph.prompts"
ARTIFACT_VERSION = 1
PROJECT_RECORD = "project.json"  # written into the run dir by `textgraph optimize`


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def parameters_hash(values: dict[str, str]) -> str:
    blob = json.dumps(values, sort_keys=True, ensure_ascii=False)
    return sha256_text(blob)


def _scores(run: RunDir, candidate_id: str | None) -> dict[str, Any]:
    """Mean, 95% CI and per-example scores of the selected candidate on each split, one
    score per distinct example (the evaluation records store each example once per
    candidate: later records add the examples earlier ones did not run)."""
    by_split: dict[str, dict[str, Any]] = {}
    for record in run.read_evaluations():
        if record.candidate_id == candidate_id:
            pairs = zip(record.example_keys, record.outcomes, strict=True)
            by_split.setdefault(record.split, {}).update(pairs)
    out: dict[str, Any] = {}
    for split, outcomes in by_split.items():
        scores = [0.0 if o.error or o.score is None else o.score for o in outcomes.values()]
        ci = mean_ci(scores)
        out[split] = {
            "n": len(scores),
            "mean": sum(scores) / len(scores),
            "ci": list(ci) if ci else None,
            "n_failed": sum(o.error is not None for o in outcomes.values()),
            "scores": scores,
        }
    return out


def build_artifact(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The artifact of a finished run, as a dict (export_run writes it)."""
    run = RunDir.open(run_dir)
    summary = run.read_summary()
    if summary is None or not summary.final_parameters:
        raise RunError(
            f"{run_dir} has no summary.json with final parameters: the run has not finished; "
            "finish it (textgraph optimize resumes it) before exporting"
        )
    config = run.read_config()
    values = dict(sorted(summary.final_parameters.items()))
    project_file = run.path / PROJECT_RECORD
    project = json.loads(project_file.read_text(encoding="utf-8")) if project_file.exists() else {}
    return {
        **_header(),
        "run_id": sha256_text(run.config.read_text(encoding="utf-8"))[:12],
        "module": config.get("module"),
        "models": project.get("models", {}),
        "optimizer": config.get("optimizer", {}).get("name"),
        "candidate_id": summary.selected,
        "parameters": _entries(values),
        "sha256": parameters_hash(values),
        "scores": _scores(run, summary.selected),
    }


def _entries(values: dict[str, str]) -> dict[str, Any]:
    parameters = {}
    for name, value in sorted(values.items()):
        entry: dict[str, Any] = {"value": value, "sha256": sha256_text(value), "kind": "text"}
        if is_demos_text(value):
            entry["kind"] = "demos"
            entry["demos"] = [d.model_dump(mode="json") for d in parse_demos(value)]
        parameters[name] = entry
    return parameters


def _header() -> dict[str, Any]:
    from textgraph import __version__

    return {
        "format": ARTIFACT_FORMAT,
        "version": ARTIFACT_VERSION,
        "textgraph_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat(),
    }


def save_prompts(
    module: Any, path: str | os.PathLike[str], *, models: dict[str, str] | None = None
) -> dict[str, Any]:
    """Freeze a module's current values (no run: the first deployment, a hand edit)."""
    from textgraph.candidate import module_values

    values = {k: str(v) for k, v in sorted(module_values(module).items())}
    artifact = {
        **_header(),
        "run_id": None,
        "module": type(module).__qualname__,
        "models": models or {},
        "optimizer": None,
        "candidate_id": None,
        "parameters": _entries(values),
        "sha256": parameters_hash(values),
        "scores": {},
    }
    atomic_write_text(Path(path), json.dumps(artifact, indent=2, ensure_ascii=False) + "\n")
    return artifact


def export_run(
    run_dir: str | os.PathLike[str], output: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """Write RUN_DIR's artifact to `output` (default RUN_DIR/prompts.json); returns it."""
    artifact = build_artifact(run_dir)
    path = Path(output) if output is not None else Path(run_dir) / "prompts.json"
    atomic_write_text(path, json.dumps(artifact, indent=2, ensure_ascii=False) + "\n")
    return artifact


def read_artifact(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and verify an artifact: format, per-value and overall hashes."""
    file = Path(path)
    try:
        artifact = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StateDictError(f"no prompt artifact at {file}") from None
    except json.JSONDecodeError as exc:
        raise StateDictError(f"{file} is not JSON ({exc.msg}); export it again") from None
    if not isinstance(artifact, dict) or artifact.get("format") != ARTIFACT_FORMAT:
        raise StateDictError(
            f"{file} is not a textgraph prompt artifact (format {ARTIFACT_FORMAT!r})"
        )
    if artifact.get("version") != ARTIFACT_VERSION:
        raise StateDictError(
            f"{file} has artifact version {artifact.get('version')!r}; this textgraph reads "
            f"version {ARTIFACT_VERSION}"
        )
    parameters = artifact.get("parameters")
    if not isinstance(parameters, dict) or not parameters:
        raise StateDictError(f"{file} holds no parameters")
    values = {}
    for name, entry in parameters.items():
        value = entry.get("value") if isinstance(entry, dict) else None
        if not isinstance(value, str):
            raise StateDictError(f"{file}: parameter {name!r} has no text value")
        if sha256_text(value) != entry.get("sha256"):
            raise StateDictError(
                f"{file}: parameter {name!r} does not match its sha256: the value was edited "
                "after export; export the run again instead of editing the artifact"
            )
        values[name] = value
    if parameters_hash(values) != artifact.get("sha256"):
        raise StateDictError(f"{file}: the artifact's overall sha256 does not match its values")
    return artifact


def artifact_values(artifact: dict[str, Any]) -> dict[str, str]:
    return {name: entry["value"] for name, entry in artifact["parameters"].items()}


def check_names(module: Any, artifact: dict[str, Any], where: str = "the artifact") -> None:
    theirs = sorted(artifact["parameters"])
    ours = sorted(name for name, _ in module.named_parameters())
    if theirs != ours:
        raise StateDictError(
            f"{where} does not match the module's parameters: the artifact has {theirs}, "
            f"{type(module).__name__} has {ours} (missing in the module: "
            f"{sorted(set(theirs) - set(ours))}; missing in the artifact: "
            f"{sorted(set(ours) - set(theirs))})"
        )


def load_prompts(module: Any, path: str | os.PathLike[str]) -> dict[str, Any]:
    """`tg.load_prompts(module, "prompts.json")`: verify the artifact and set the module's
    parameters to its values (all or nothing). Returns the artifact."""
    from textgraph.candidate import apply_candidate

    artifact = read_artifact(path)
    check_names(module, artifact, where=str(path))
    apply_candidate(module, artifact_values(artifact))
    return artifact
