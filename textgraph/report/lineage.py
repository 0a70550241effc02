"""Where every candidate of a run came from: its lineage, as a tree.

Each candidate a step recorded names its parents (candidate ids). Search
optimizers (ParetoTGD, APE, OPRO, ...) do not always build on the incumbent:
a child may come from a candidate the gate rejected but the optimizer kept,
and a merge has two parents. The lineage is therefore a DAG; it is shown as
a tree rooted at the initial candidate, where a candidate with several
parents sits under its first parent (a merge says "merge of <a> + <b>").

Ids are content hashes of the values, so one candidate proposed several
times (an unchanged re-proposal of the incumbent, a duplicate within a step,
a revert to earlier values) is one node: it keeps where it was first
proposed (step, origin, parents) and the best status it ever had, and lists
every proposal. A candidate whose parents never appear in the records (or
whose ancestry loops) becomes a root with a note.

Pure: `build_lineage` reads records only; `lineage` reads a run directory.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from textgraph._text import shorten
from textgraph.candidate import values_id
from textgraph.eval.pareto import ParetoEntry
from textgraph.runs import Checkpoint, RunDir, StepRecord, Summary

#: Best first: the status a candidate proposed several times is shown with.
STATUS_ORDER = (
    "accepted",
    "initial",
    "rejected",
    "not selected",
    "proposed",
    "filtered",
    "unchanged",
    "duplicate",
)
#: Proposed but never evaluated: leaves, drawn apart from evaluated candidates.
DROPPED = frozenset({"filtered", "unchanged", "duplicate"})
WHY_CHARS = 240


@dataclass
class Proposal:
    """One time a step recorded the candidate."""

    step: int
    status: str
    reason: str = ""
    origin: str = ""


@dataclass
class LineageNode:
    """One candidate in the lineage tree.

    status: the best it ever had (STATUS_ORDER); "initial" for the starting values.
    parents: as recorded when it was first proposed; the node sits under parents[0]
    (else the first known parent). note: why it is a root although it has parents.
    """

    id: str
    parents: list[str]
    origin: str
    step: int
    status: str
    val_score: float | None = None
    on_front: bool = False
    selected: bool = False
    changed: list[str] = field(default_factory=list)
    why: str = ""
    note: str = ""
    proposals: list[Proposal] = field(default_factory=list)
    new_values: dict[str, str] = field(default_factory=dict)  # the changed parameters' values
    children: list[LineageNode] = field(default_factory=list)

    @property
    def is_merge(self) -> bool:
        return len(self.parents) > 1

    @property
    def dropped(self) -> bool:
        """Filtered, unchanged or duplicate: never evaluated on validation data."""
        return self.status in DROPPED

    @property
    def merge_label(self) -> str:
        return "merge of " + " + ".join(self.parents) if self.is_merge else ""


def status_rank(status: str) -> int:
    if status.startswith("rejected"):
        status = "rejected"
    return STATUS_ORDER.index(status) if status in STATUS_ORDER else len(STATUS_ORDER)


def step_status(step: StepRecord, status: str) -> str:
    """A candidate's status; run format 1 wrote "proposed" and let the step decide."""
    if status == "proposed" and step.decision in ("accepted", "rejected"):
        return step.decision
    return "rejected" if status.startswith("rejected") else status


def _number(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x)


def _trajectory_summary(trajectory: Sequence[Any]) -> str:
    """'trajectory of 5 earlier values (scores 0.2-0.8)' from scores, dicts with a score,
    or (score, text) / (text, score) pairs; tolerant of any other shape."""
    scores: list[float] = []
    for item in trajectory:
        if isinstance(item, Mapping):
            value = next(
                (
                    _number(item[k])
                    for k in ("score", "val_score", "value")
                    if _number(item.get(k)) is not None
                ),
                None,
            )
        elif _number(item) is not None:  # OPRO: the scores shown
            value = _number(item)
        elif isinstance(item, (list, tuple)):
            value = next((_number(x) for x in item if _number(x) is not None), None)
        else:
            value = None
        if value is not None:
            scores.append(value)
    n = len(trajectory)
    text = f"trajectory of {n} earlier value{'s' if n != 1 else ''}"
    if scores:
        text += f" (scores {min(scores):.3g}-{max(scores):.3g})"
    return text


def why_of(details: Any, reason: str) -> str:
    """A short why: the critique or the trajectory the optimizer recorded in `details`,
    else the loop's reason."""
    if isinstance(details, Mapping):
        parts = []
        critique = details.get("critique")
        if isinstance(critique, str) and critique.strip():
            parts.append("critique: " + critique)
        trajectory = details.get("trajectory")
        if isinstance(trajectory, (list, tuple)) and trajectory:
            parts.append(_trajectory_summary(trajectory))
        if parts:
            return shorten(" · ".join(parts), WHY_CHARS)
    return shorten(reason, WHY_CHARS) if reason else ""


@dataclass
class _Seen:
    node: LineageNode
    order: int
    best_rank: int
    details: Any = None
    record_changes: dict[str, str] = field(default_factory=dict)


def build_lineage(
    steps: Sequence[StepRecord],
    *,
    initial_id: str | None = None,
    initial_values: Mapping[str, Any] | None = None,
    initial_val_score: float | None = None,
    summary: Summary | None = None,
    known_values: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[LineageNode]:
    """The lineage forest from step records: roots first (the initial candidate, then any
    candidate whose parents are not in the records), each node's children by the step they
    were first proposed in, then proposal order.

    initial_id: the starting candidate (the first checkpoint's current_id); without it,
    the id of `initial_values`. known_values: id -> values of candidates whose values are
    known (the checkpoint's pool), used with the values rebuilt from the steps to say which
    parameters a candidate changed from its first parent (else: from the incumbent, as the
    step recorded it)."""
    if initial_id is None and initial_values:
        initial_id = values_id(initial_values)
    values: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (known_values or {}).items()}
    if initial_id and initial_values:
        values.setdefault(initial_id, dict(initial_values))
    seen: dict[str, _Seen] = {}
    if initial_id:
        node = LineageNode(
            id=initial_id,
            parents=[],
            origin="initial",
            step=0,
            status="initial",
            val_score=initial_val_score,
        )
        seen[initial_id] = _Seen(node, 0, status_rank("initial"))
    incumbent = initial_id
    for s in steps:
        base = values.get(incumbent) if incumbent else None
        for c in s.candidates:
            if not c.id:  # run format 1: no ids, nothing to place
                continue
            status = step_status(s, c.status)
            rank = status_rank(status)
            new = {ch.parameter: ch.new_value for ch in c.changes}
            if base is not None and c.id not in values:
                rebuilt = {**base, **new}
                if values_id(rebuilt) == c.id:
                    values[c.id] = rebuilt
            entry = seen.get(c.id)
            if entry is None:
                node = LineageNode(
                    id=c.id,
                    parents=[p for p in dict.fromkeys(c.parents) if p != c.id],
                    origin=c.origin,
                    step=s.step,
                    status=status,
                    val_score=c.val_score,
                )
                entry = seen[c.id] = _Seen(node, len(seen), rank, c.details, new)
            elif rank < entry.best_rank:
                entry.best_rank = rank
                entry.node.status = status
                if c.val_score is not None:
                    entry.node.val_score = c.val_score
            elif entry.node.val_score is None and c.val_score is not None:
                entry.node.val_score = c.val_score
            if entry.details is None and c.details is not None:
                entry.details = c.details
            entry.node.proposals.append(Proposal(s.step, status, c.reason, c.origin))
        if s.current:
            incumbent = s.current

    front = {e.candidate_id for e in summary.pareto} if summary else set()
    selected = summary.selected if summary else (steps[-1].current if steps else None)
    for cid, entry in seen.items():
        node = entry.node
        node.on_front = cid in front
        node.selected = cid == selected
        best = min(node.proposals, key=lambda p: status_rank(p.status), default=None)
        node.why = why_of(entry.details, best.reason if best else "")
        mine = values.get(cid)
        parent = values.get(node.parents[0]) if node.parents else None
        if mine is not None and parent is not None:
            node.changed = [k for k, v in mine.items() if parent.get(k) != v]
            node.new_values = {k: str(mine[k]) for k in node.changed}
        else:
            node.changed = list(entry.record_changes)
            node.new_values = dict(entry.record_changes)

    return _forest(seen, initial_id)


def _forest(seen: dict[str, _Seen], initial_id: str | None) -> list[LineageNode]:
    """Hang each node under its first known parent; roots first, children in order."""
    under: dict[str, str] = {}
    for cid, entry in seen.items():
        node = entry.node
        if cid == initial_id:
            continue
        known = [p for p in node.parents if p in seen]
        missing = [p for p in node.parents if p not in seen]
        if known:
            under[cid] = known[0]
        if missing:
            listed = ", ".join(missing)
            node.note = (
                f"parent {listed} is not in the run's records"
                if len(missing) == 1
                else f"parents {listed} are not in the run's records"
            )
        elif not node.parents:
            node.note = "no parent recorded"
    order = {cid: e.order for cid, e in seen.items()}

    def key(cid: str) -> tuple[int, int]:
        return (seen[cid].node.step, order[cid])

    # A loop of parents (possible only in hand-edited or odd records): cut it at its
    # earliest node, which becomes a root.
    done: set[str] = set()  # nodes whose ancestry is known to end at a root
    for cid in sorted(seen, key=key):
        path: list[str] = []
        on_path: set[str] = set()
        at: str | None = cid
        while at is not None and at not in done and at not in on_path:
            path.append(at)
            on_path.add(at)
            at = under.get(at)
        if at is not None and at in on_path:  # back at a node of the path: a loop
            loop = path[path.index(at) :]
            cut = min(loop, key=key)
            del under[cut]
            note = "its ancestry loops back to itself"
            seen[cut].node.note = f"{seen[cut].node.note}; {note}" if seen[cut].node.note else note
        done.update(path)
    kids: dict[str, list[str]] = {}
    for cid, parent in under.items():
        kids.setdefault(parent, []).append(cid)
    for cid, children in kids.items():
        seen[cid].node.children = [seen[c].node for c in sorted(children, key=key)]
    roots = [cid for cid in seen if cid not in under]
    roots.sort(key=lambda cid: (cid != initial_id, *key(cid)))
    return [seen[cid].node for cid in roots]


def walk(nodes: Sequence[LineageNode], depth: int = 0) -> Iterator[tuple[int, LineageNode]]:
    """(depth, node) for every node, depth first, in tree order (no recursion: a chain of
    accepted candidates is as deep as the run is long)."""
    stack = [(depth, node) for node in reversed(nodes)]
    while stack:
        at, node = stack.pop()
        yield at, node
        stack.extend((at + 1, child) for child in reversed(node.children))


@dataclass
class Part:
    """A piece of the tree that fits a page or a terminal: (depth, node) in tree order.
    `continues` is the id of the node (in an earlier part) whose children this part lists;
    `cut` holds the nodes of this part whose children are listed in a later part."""

    continues: str | None
    rows: list[tuple[int, LineageNode]]
    cut: set[str] = field(default_factory=set)


def split(roots: Sequence[LineageNode], max_depth: int) -> list[Part]:
    """The tree in parts at most `max_depth` levels deep: a long chain of accepted
    candidates goes on in a new part ("continued from <id>") rather than off the side."""
    if max_depth < 1:
        raise ValueError("max_depth must be >= 1")
    parts: list[Part] = []
    todo: deque[tuple[str | None, Sequence[LineageNode]]] = deque([(None, roots)])
    while todo:
        continues, nodes = todo.popleft()
        part = Part(continues, [])
        stack = [(0, node) for node in reversed(nodes)]
        while stack:
            depth, node = stack.pop()
            part.rows.append((depth, node))
            if depth < max_depth - 1:
                stack.extend((depth + 1, child) for child in reversed(node.children))
            elif node.children:
                part.cut.add(node.id)
                todo.append((node.id, node.children))
        parts.append(part)
    return parts


def _initial_id(run: RunDir) -> str | None:
    """The starting candidate's id, from the first checkpoint."""
    path = run.checkpoint_path(0)
    try:
        return Checkpoint.model_validate_json(path.read_bytes()).trainer.current_id
    except (OSError, ValueError, ValidationError):
        return None


def _pool(run: RunDir) -> list[ParetoEntry]:
    checkpoint, _ = run.latest_checkpoint()
    return list(checkpoint.trainer.pool) if checkpoint is not None else []


def lineage(run: RunDir | str | os.PathLike[str]) -> list[LineageNode]:
    """The lineage of every candidate a run recorded (see `build_lineage`)."""
    run = run if isinstance(run, RunDir) else RunDir.open(run)
    config = run.read_config()
    steps = run.read_steps()
    summary = run.read_summary()
    pool = _pool(run)
    initial_values = config.get("initial_parameters") or None
    initial_id = _initial_id(run)
    if initial_id is None and initial_values is None:
        initial_id = next((e.candidate_id for e in pool if e.step == 0), None)
    return build_lineage(
        steps,
        initial_id=initial_id,
        initial_values=initial_values,
        initial_val_score=config.get("initial_val_score"),
        summary=summary,
        known_values={e.candidate_id: e.values for e in pool if e.values},
    )
