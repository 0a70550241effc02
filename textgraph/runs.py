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

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from textgraph._io import append_line, atomic_write_json
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
    val_examples: int | None = None  # validation examples it was scored on (None: none)
    val_stop: str | None = None  # why sequential validation stopped it early

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
    """One line, fsynced; a failed append (a full disk) leaves no partial line and names
    the file."""
    append_line(path, record.model_dump_json())


_DAMAGED_LINE = (
    "The file was damaged or edited after textgraph wrote it: restore it from a copy, "
    "or delete that line (keep a copy of the file first), or move the file aside."
)


def _problems(exc: ValidationError) -> str:
    """What a pydantic error found, on one line: "field 'a.b': missing; ..."."""
    out: list[str] = []
    for error in exc.errors():
        loc = ".".join(str(part) for part in error["loc"])
        if error["type"] == "json_invalid":
            text = f"not valid JSON ({str(error['msg']).removeprefix('Invalid JSON: ')})"
        elif error["type"] == "missing":
            text = f"field '{loc}': missing"
        elif loc:
            text = f"field '{loc}': {error['msg']} (got {error.get('input')!r:.60})"
        else:
            text = f"{error['msg']} (got {error.get('input')!r:.60})"
        if text not in out:
            out.append(text)
    shown = "; ".join(out[:3])
    return shown + (f"; and {len(out) - 3} more" if len(out) > 3 else "")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise RunError(
            f"cannot read {path}: {exc.strerror or exc}. Check that the run directory is "
            "complete and readable (a run's files are regular files)."
        ) from None


def _read_text(path: Path, what: str) -> str:
    """A whole run file as text, or a RunError naming it (and the line of a bad byte)."""
    raw = _read_bytes(path)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise RunError(
            f"{path} line {line} is not UTF-8 text (byte {exc.start}): it is damaged or not "
            f"a textgraph file. {what}"
        ) from None


class _ConfigFields(BaseModel):
    """The types of the config.json fields that readers use (other fields are kept as is)."""

    model_config = ConfigDict(strict=True, extra="allow")

    version: int = 1
    module: str | None = None
    parameters: list[str] = Field(default_factory=list)
    initial_parameters: dict[str, str] = Field(default_factory=dict)
    optimizer: dict[str, Any] | str | None = None
    batch_size: int | None = None
    gate: str | None = None
    objectives: list[str] = Field(default_factory=list)
    initial_val_score: float | None = None
    initial_test_score: float | None = None


def _graph_problem(data: Any) -> str | None:
    """What is wrong with a graph record (graphs/step-NNNN.json), or None."""
    if not isinstance(data, dict):
        return "it is not a JSON object"
    nodes, edges = data.get("nodes"), data.get("edges")
    if not isinstance(nodes, list) or not nodes:
        return "'nodes' is not a non-empty list"
    if not isinstance(edges, list):
        return "'edges' is not a list"
    position: dict[str, int] = {}
    for i, node in enumerate(nodes):
        if not isinstance(node, dict) or not isinstance(node.get("id"), str):
            return f"nodes[{i}] has no str 'id'"
        for key in ("role", "kind", "value"):
            if node.get(key) is not None and not isinstance(node[key], str):
                return f"nodes[{i}].{key} is not a str"
        gradients = node.get("gradients", [])
        if not isinstance(gradients, list) or not all(
            isinstance(g, dict) and isinstance(g.get("text"), str) for g in gradients
        ):
            return f"nodes[{i}].gradients is not a list of critiques (objects with a str 'text')"
        position[node["id"]] = i
    for i, edge in enumerate(edges):
        if not isinstance(edge, dict):
            return f"edges[{i}] is not an object"
        source, target = edge.get("source"), edge.get("target")
        if source not in position or target not in position:
            return f"edges[{i}] does not join two of the graph's nodes ({source!r} -> {target!r})"
        if position[source] >= position[target]:
            return f"edges[{i}] goes from a later node back to an earlier one"
    return None


def read_jsonl(path: Path, model: type[BaseModel]) -> list[Any]:
    """Parse every complete line; a final line cut short by a crash (even in the middle of a
    character) is ignored. Any other bad line is a RunError naming the file and the line."""
    if not path.exists():
        return []
    lines = _read_bytes(path).split(b"\n")
    records = []
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        last = number >= len(lines) - 1  # the last line: maybe an interrupted append
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            if last:
                break
            raise RunError(
                f"{path} line {number} is not UTF-8 text (byte {exc.start} of the line). "
                + _DAMAGED_LINE
            ) from None
        try:
            records.append(model.model_validate_json(line))
        except ValidationError as exc:
            if last:
                break
            raise RunError(
                f"{path} line {number} is not a valid {model.__name__}: {_problems(exc)}. "
                + _DAMAGED_LINE
            ) from None
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
        """config.json as written, or a RunError naming the file and what is wrong."""
        fix = (
            "A run directory needs its config.json: restore it from a copy, or start a new "
            "run (force=True / --force moves this run's files to previous/)."
        )
        text = _read_text(self.config, fix)
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise RunError(f"{self.config} is not valid JSON ({exc}). {fix}") from None
        if not isinstance(data, dict):
            raise RunError(
                f"{self.config} does not hold a run configuration (a JSON object), but a "
                f"{type(data).__name__}. {fix}"
            )
        try:
            _ConfigFields.model_validate(data)
        except ValidationError as exc:
            raise RunError(
                f"{self.config} is not a valid run configuration: {_problems(exc)}. {fix}"
            ) from None
        return data

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
                text = path.read_bytes().decode("utf-8")
                return Checkpoint.model_validate_json(text), skipped
            except ValidationError as exc:
                why = _problems(exc)
            except UnicodeDecodeError as exc:
                why = f"not UTF-8 text (byte {exc.start})"
            except OSError as exc:
                why = f"cannot be read ({exc.strerror or exc})"
            skipped.append((path, f"{path.name} is corrupt: {why}"))
        return None, skipped

    def graph_path(self, step: int) -> Path:
        return self.graphs / f"step-{step:04d}.json"

    def read_graph(self, step: int) -> dict[str, Any] | None:
        """The computation graph of a step with its gradients, if it was recorded."""
        path = self.graph_path(step)
        if not path.exists():
            return None
        fix = "Restore it from a copy, or move it aside: the step is then shown without its graph."
        text = _read_text(path, fix)
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise RunError(f"{path} is not valid JSON ({exc}). {fix}") from None
        problem = _graph_problem(data)
        if problem is not None:
            raise RunError(f"{path} is not a valid graph record: {problem}. {fix}")
        return data

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
        """summary.json (None before the run ends), or a RunError naming what is wrong."""
        if not self.summary.exists():
            return None
        fix = "Restore it from a copy, or move it aside: the run is then shown as interrupted."
        text = _read_text(self.summary, fix)
        try:
            summary = Summary.model_validate_json(text)
        except ValidationError as exc:
            raise RunError(
                f"{self.summary} is not a valid Summary: {_problems(exc)}. {fix}"
            ) from None
        for purpose, counts in summary.by_purpose.items():
            bad = [
                k
                for k, v in counts.items()
                if k in ("calls", "cached_calls", "prompt_tokens", "completion_tokens", "cost_usd")
                and (isinstance(v, bool) or not isinstance(v, (int, float)))
            ]
            if bad:
                raise RunError(
                    f"{self.summary} is not a valid Summary: field 'by_purpose.{purpose}."
                    f"{bad[0]}' is not a number. {fix}"
                )
        return summary
