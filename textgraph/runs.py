"""The run directory: what a training run leaves on disk, and how it is read back.

    run_dir/
      config.json       trainer settings, data sizes and fingerprints (no secrets)
      trace.jsonl       every LLM call: step, purpose, variables, request, response, usage
      steps.jsonl       one line per step: batch, gradients, candidates, scores, decision
      evaluations.jsonl one line per evaluation of a candidate: per-example outcomes
      checkpoints/      step-NNNN.json: parameters, optimizer and trainer state after a step
      best.json         the best parameters so far and their validation score
      summary.json      scores, calls, tokens, cost, time, why the run stopped
      .lock             held while a process runs it (.lock.owner: pid, host, start)
      previous/         earlier runs' files, moved here by force=True (never deleted)

Whole files are written atomically (temp file, fsync, rename). JSONL files
are appended a line at a time with fsync; a line cut short by a crash is
dropped when the run is read or resumed.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError, model_validator

from textgraph._io import atomic_write_json
from textgraph.errors import TextgraphError
from textgraph.eval.pareto import ParetoEntry
from textgraph.eval.result import ExampleOutcome

RUN_FORMAT = "textgraph.run"
RUN_VERSION = 2  # 2: candidates of any optimizer, evaluations.jsonl, Pareto pool


class RunError(TextgraphError):
    """A run directory cannot be used as asked (different config, corrupt files)."""


class TraceRecord(BaseModel):
    step: int
    phase: str
    purpose: str
    variable_ids: list[str] = Field(default_factory=list)
    operation: str | None = None
    model: str | None = None
    messages: list[dict[str, str]]
    response: str | None = None
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    cost_usd: float = 0.0
    latency_s: float = 0.0
    started_s: float = 0.0


class GradientRecord(BaseModel):
    text: str
    source_role: str
    operation: str
    example: int | None = None


class ParameterChange(BaseModel):
    parameter: str
    old_value: str
    new_value: str


class CandidateRecord(BaseModel):
    """One candidate a step considered, whichever optimizer proposed it.

    status: accepted | rejected | not selected | filtered | unchanged | duplicate
    (runs of format version 1 recorded one entry per parameter: read as one change).
    """

    id: str = ""
    parents: list[str] = Field(default_factory=list)
    origin: str = ""
    details: Any = None
    changes: list[ParameterChange] = Field(default_factory=list)
    status: str
    reason: str = ""
    val_score: float | None = None
    objectives: dict[str, float | None] = Field(default_factory=dict)
    n_failed: int = 0
    warning: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_version_1(cls, data: Any) -> Any:
        if isinstance(data, dict) and "parameter" in data and "changes" not in data:
            data = dict(data)
            change = {k: data.pop(k) for k in ("parameter", "old_value", "new_value")}
            data["changes"] = [change] if change["old_value"] != change["new_value"] else []
            data.setdefault("origin", "tgd")
        return data


class StepRecord(BaseModel):
    step: int
    batch: list[int]
    errors: list[str] = Field(default_factory=list)
    train_scores: list[float | None] = Field(default_factory=list)
    gradients: dict[str, list[GradientRecord]] = Field(default_factory=dict)
    reduced: dict[str, str] = Field(default_factory=dict)
    candidates: list[CandidateRecord] = Field(default_factory=list)
    optimizer: str = ""
    notes: list[str] = Field(default_factory=list)
    current: str | None = None  # the incumbent's candidate id after the step
    val_score: float | None = None
    best_score: float | None = None
    decision: str
    reason: str
    calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0


class TrainerState(BaseModel):
    step: int
    best_score: float | None
    current_score: float | None
    current_id: str | None = None
    best_id: str | None = None
    pool: list[ParetoEntry] = Field(default_factory=list)
    rejections_in_a_row: int = 0
    errors: int = 0
    calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0


class Checkpoint(BaseModel):
    format: str = "textgraph.checkpoint"
    version: int = 1
    parameters: dict[str, Any]
    best_parameters: dict[str, Any]
    optimizer: dict[str, Any]
    trainer: TrainerState


class EvaluationRecord(BaseModel):
    """One evaluation of a candidate (values id) on a split: the evaluation cache on disk."""

    step: int
    candidate_id: str
    split: str
    example_keys: list[str]
    outcomes: list[ExampleOutcome]
    phase: str = ""  # "test" for the final test: dropped on resume like other in-flight work


class Summary(BaseModel):
    steps: int
    stopped: str
    initial_val_score: float | None
    best_val_score: float | None
    test_score: float | None
    accepted_steps: int
    calls: int
    cached_calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    seconds: float
    by_purpose: dict[str, dict[str, Any]] = Field(default_factory=dict)
    final_parameters: dict[str, str] = Field(default_factory=dict)
    initial_test_score: float | None = None  # with Trainer(test_before=True)
    optimizer: str = ""
    selected: str | None = None  # the candidate id the module ended with
    pareto: list[ParetoEntry] = Field(default_factory=list)
    # True when the run stopped on an error or a budget: resume=True continues it. A run
    # that finished (max_steps, patience, optimizer finished) returns this summary instead.
    resumable: bool = False
    failed_examples: int = 0  # examples that could not be scored, over the whole run


def append_jsonl(path: Path, record: BaseModel) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(record.model_dump_json() + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_jsonl(path: Path, model: type[BaseModel]) -> list[Any]:
    """Parse every complete line; a final line cut short by a crash is ignored."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(model.model_validate_json(line))
        except ValidationError as exc:
            if number >= len(lines) - 1:  # the last line: an interrupted append
                break
            raise RunError(f"{path} line {number} is not a valid {model.__name__}: {exc}") from None
    return records


def rewrite_jsonl(path: Path, records: list[BaseModel]) -> None:
    """Replace a JSONL file atomically (used to drop lines past a checkpoint on resume)."""
    from textgraph._io import atomic_write_text

    atomic_write_text(path, "".join(r.model_dump_json() + "\n" for r in records))


class RunDir:
    """Paths and safe reads/writes for one run directory."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.config = self.path / "config.json"
        self.trace = self.path / "trace.jsonl"
        self.steps = self.path / "steps.jsonl"
        self.evaluations = self.path / "evaluations.jsonl"
        self.checkpoints = self.path / "checkpoints"
        self.best = self.path / "best.json"
        self.graphs = self.path / "graphs"
        self.summary = self.path / "summary.json"

    def exists(self) -> bool:
        return self.config.exists()

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> RunDir:
        """An existing run directory, or a RunError saying it is not one."""
        run = cls(path)
        if not run.exists():
            raise RunError(f"{path} is not a run directory (no config.json)")
        return run

    def create(self, config: dict[str, Any]) -> Path | None:
        """Start a fresh run here. Files of an earlier run are moved, never deleted, into
        previous/<time>/ (returned)."""
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        old = [
            p
            for p in (
                self.config,
                self.trace,
                self.steps,
                self.evaluations,
                self.best,
                self.summary,
            )
            if p.exists()
        ]
        old += [*self.checkpoints.glob("step-*.json"), *self.graphs.glob("step-*.json")]
        aside = None
        if old:
            aside = self.path / "previous" / time.strftime("%Y%m%d-%H%M%S")
            n = 1
            while aside.exists():
                n += 1
                aside = aside.with_name(f"{aside.name.split('.')[0]}.{n}")
            for path in old:
                target = aside / path.relative_to(self.path)
                target.parent.mkdir(parents=True, exist_ok=True)
                path.replace(target)
        atomic_write_json(self.config, config)
        return aside

    def set_aside(self, paths: list[Path], why: str) -> Path:
        """Move files out of the run's way (into previous/<why>-<time>/), keeping them."""
        aside = self.path / "previous" / f"{why}-{time.strftime('%Y%m%d-%H%M%S')}"
        for path in paths:
            target = aside / path.relative_to(self.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            path.replace(target)
        return aside

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run directory for this process: a second process (or a second
        Trainer here) fails at once with a RunError naming the holder."""
        from filelock import FileLock, Timeout

        self.path.mkdir(parents=True, exist_ok=True)
        owner = self.path / ".lock.owner"
        lock = FileLock(str(self.path / ".lock"), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            holder = "another process"
            try:
                info = json.loads(owner.read_text(encoding="utf-8"))
                holder = f"pid {info.get('pid')} on {info.get('host')}, since {info.get('started')}"
            except (OSError, ValueError):
                pass
            raise RunError(
                f"{self.path} is in use by another run ({holder}). Wait for it to finish, "
                "or use another run_dir."
            ) from None
        try:
            atomic_write_json(
                owner,
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                },
            )
            yield
        finally:
            owner.unlink(missing_ok=True)
            lock.release()

    def read_config(self) -> dict[str, Any]:
        try:
            return json.loads(self.config.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RunError(f"cannot read {self.config}: {exc}") from None

    def checkpoint_path(self, step: int) -> Path:
        return self.checkpoints / f"step-{step:04d}.json"

    def write_checkpoint(self, checkpoint: Checkpoint) -> None:
        atomic_write_json(
            self.checkpoint_path(checkpoint.trainer.step), checkpoint.model_dump(mode="json")
        )

    def latest_checkpoint(self) -> tuple[Checkpoint | None, list[tuple[Path, str]]]:
        """The newest readable checkpoint, and (path, what is wrong) for each corrupt one
        newer than it."""
        skipped: list[tuple[Path, str]] = []
        for path in sorted(self.checkpoints.glob("step-*.json"), reverse=True):
            try:
                return Checkpoint.model_validate_json(path.read_text(encoding="utf-8")), skipped
            except (OSError, ValueError) as exc:
                first = str(exc).splitlines()[0]
                skipped.append((path, f"{path.name} is corrupt: {first}"))
        return None, skipped

    def graph_path(self, step: int) -> Path:
        return self.graphs / f"step-{step:04d}.json"

    def read_graph(self, step: int) -> dict[str, Any] | None:
        """The computation graph of a step with its gradients, if it was recorded."""
        path = self.graph_path(step)
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise RunError(f"{path} is not valid JSON ({exc})") from None

    def read_steps(self) -> list[StepRecord]:
        return read_jsonl(self.steps, StepRecord)

    def read_evaluations(self) -> list[EvaluationRecord]:
        return read_jsonl(self.evaluations, EvaluationRecord)

    def version(self) -> int:
        """The run format version (1 for runs written before candidates were recorded)."""
        version = self.read_config().get("version", 1)
        return version if isinstance(version, int) else 1

    def read_trace(self) -> list[TraceRecord]:
        return read_jsonl(self.trace, TraceRecord)

    def read_summary(self) -> Summary | None:
        if not self.summary.exists():
            return None
        return Summary.model_validate_json(self.summary.read_text(encoding="utf-8"))
