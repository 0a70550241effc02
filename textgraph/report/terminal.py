"""Terminal views of a run directory (`textgraph show`).

Every user or model string (prompts, critiques, reasons, names, paths) goes
to Rich as a `Text`, never as a markup string: "[/]" or "[bold]" in a
critique is printed as written, not interpreted (or crashed on).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from textgraph._text import shorten
from textgraph.demos import readable_value
from textgraph.report.lineage import LineageNode, split, walk
from textgraph.report.lineage import lineage as run_lineage
from textgraph.runs import RunDir, RunError, StepRecord, Summary


def word_diff(old: str, new: str) -> Text:
    """Deleted words struck through in red, inserted words in green."""
    a, b = old.split(" "), new.split(" ")
    out = Text()
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag == "equal":
            out.append(" ".join(a[i1:i2]) + " ")
            continue
        if tag in ("replace", "delete"):
            out.append(" ".join(a[i1:i2]) + " ", style="red strike")
        if tag in ("replace", "insert"):
            out.append(" ".join(b[j1:j2]) + " ", style="green")
    return out


def _test_scores(summary: Summary) -> str:
    """'0.400 -> 0.550' when the test set was also scored before training, else the score."""
    if summary.initial_test_score is None:
        return _score(summary.test_score)
    return f"{_score(summary.initial_test_score)} -> {_score(summary.test_score)}"


def _score(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def steps_table(steps: Sequence[StepRecord]) -> Table:
    table = Table(title="Steps", show_lines=False)
    for column in ("step", "decision", "val", "best", "calls", "tokens", "cost $", "why"):
        table.add_column(
            column, justify="right" if column in ("step", "calls", "tokens") else "left"
        )
    colours = {"accepted": "green", "rejected": "red", "unchanged": "yellow"}
    for r in steps:
        table.add_row(
            str(r.step),
            Text(r.decision, style=colours.get(r.decision, "")),
            _score(r.val_score),
            _score(r.best_score),
            str(r.calls),
            str(r.tokens),
            f"{r.cost_usd:.4f}",
            Text(r.reason),
        )
    return table


def step_detail(r: StepRecord) -> Group:
    parts: list[object] = [
        Text(f"Step {r.step}: {r.reason}", style="bold"),
        Text(f"batch (training example indices): {r.batch}"),
    ]
    if r.errors:
        parts.append(Panel(Text("\n".join(r.errors)), title="errors", border_style="red"))
    for name, grads in r.gradients.items():
        lines = Text()
        for i, g in enumerate(grads, 1):
            origin = f"example {g.example}" if g.example is not None else "?"
            lines.append(
                f'[{i}] {origin}, via {g.operation} from "{g.source_role}":\n', style="cyan"
            )
            lines.append(g.text.strip() + "\n\n")
        if not grads:
            lines.append("no critique (every chosen example passed)")
        parts.append(Panel(lines, title=Text(f"gradients of {name}")))
        if name in r.reduced:
            parts.append(Panel(Text(r.reduced[name]), title=Text(f"reduced gradient of {name}")))
    if r.notes:
        parts.append(
            Panel(
                Text("\n".join(r.notes)),
                title=Text(f"notes from {r.optimizer or 'the optimizer'}"),
            )
        )
    for c in r.candidates:
        body = Text()
        if c.reason:
            body.append(c.reason + "\n", style="bold")
        shown = {k: v for k, v in c.objectives.items() if v is not None}
        if shown:
            body.append(
                "objectives: " + ", ".join(f"{k} {v:.4g}" for k, v in shown.items()) + "\n",
                style="dim",
            )
        for change in c.changes:
            body.append(f"{change.parameter}:\n", style="cyan")
            body.append_text(
                word_diff(readable_value(change.old_value), readable_value(change.new_value))
            )
            body.append("\n")
        if not c.changes:
            body.append("(no change)")
        if c.warning:
            body.append(f"\n{c.warning}", style="red")
        label = f"candidate {c.id}" if c.id else "candidate"
        origin = f" from {c.origin}" if c.origin else ""
        parts.append(Panel(body, title=Text(f"{label}{origin}: {c.status}")))
    return Group(*parts)


def accepted_changes(r: StepRecord) -> list[tuple[str, str, str]]:
    """(parameter, old, new) for what a step committed (run format 1 and 2)."""
    out = []
    for c in r.candidates:
        taken = c.status == "accepted" or (r.decision == "accepted" and c.status == "proposed")
        if taken:
            out.extend((ch.parameter, ch.old_value, ch.new_value) for ch in c.changes)
    return out


KIND_STYLES = {
    "parameter": "bold yellow",
    "loss": "bold red",
    "llm_output": "cyan",
    "intermediate": "green",
    "input": "dim",
}


def graph_tree(record: dict[str, Any]) -> Tree:
    """From the loss back to each parameter; each edge shows the critique that flowed on it."""
    nodes = {n["id"]: n for n in record["nodes"]}
    preds: dict[str, list[tuple[str, str | None]]] = {i: [] for i in nodes}
    for e in record["edges"]:
        preds[e["target"]].append((e["source"], e.get("op")))
    root = record["nodes"][-1]["id"]

    def label(n: dict[str, Any]) -> Text:
        text = Text(f"{n['role']}", style=KIND_STYLES.get(n.get("kind", ""), ""))
        text.append(f" [{n.get('kind')}]", style="dim")
        if n.get("example") is not None:
            text.append(f" (example {n['example']})", style="dim")
        text.append(f": {shorten(n.get('value', ''), 70)}")
        return text

    tree = Tree(label(nodes[root]))
    seen = {root}

    def grow(branch: Tree, node_id: str) -> None:
        for pred_id, op in preds[node_id]:
            pred = nodes[pred_id]
            if not pred.get("requires_grad"):
                continue  # constants get no critique; they are not shown
            flowed = [g for g in pred.get("gradients", []) if g.get("source") == node_id]
            child = branch.add(label(pred))
            for g in flowed:
                origin = f" (example {g['example']})" if g.get("example") is not None else ""
                child.add(
                    Text(f"↑ critique via {op}{origin}: ", style="magenta").append(
                        shorten(g["text"], 160), style=""
                    )
                )
            if pred.get("kind") == "parameter":
                total = len(pred.get("gradients", []))
                child.add(Text(f"= {total} critique(s) in all for this parameter", style="bold"))
            if pred_id in seen:
                child.add(Text("(its inputs are shown above)", style="dim"))
                continue
            seen.add(pred_id)
            grow(child, pred_id)

    grow(tree, root)
    return tree


STATUS_STYLES = {
    "accepted": "bold green",
    "initial": "bold cyan",
    "rejected": "red",
    "not selected": "yellow",
    "proposed": "blue",
    "filtered": "magenta",
    "unchanged": "dim",
    "duplicate": "dim",
}


def lineage_label(node: LineageNode) -> Text:
    """One line: id, status, origin, step, val score, markers; never markup."""
    text = Text(node.id, style="dim" if node.dropped else "bold")
    text.append(" ")
    text.append(node.status, style=STATUS_STYLES.get(node.status, ""))
    if node.origin and node.origin != node.status:
        text.append(" · ", style="dim")
        text.append(shorten(node.origin, 60), style="dim italic" if node.dropped else "")
    text.append(f" · step {node.step} · val {_score(node.val_score)}", style="dim")
    if node.on_front:
        text.append(" ★ front", style="bold yellow")
    if node.selected:
        text.append(" ◆ selected", style="bold magenta")
    if node.is_merge:
        text.append(f" · {node.merge_label}", style="magenta")
    if node.changed:
        text.append(" · changed " + ", ".join(node.changed), style="cyan")
    again = node.proposals[1:]
    if again:
        text.append(
            " · again at " + ", ".join(f"step {p.step} ({p.status})" for p in again), style="dim"
        )
    if node.note:
        text.append(f" ({node.note})", style="red")
    if node.why:
        text.append(" — " + shorten(node.why, 60), style="dim")
    return text


LINEAGE_DEPTH = 8  # levels per tree; a longer chain goes on in a tree of its own


def lineage_tree(
    roots: Sequence[LineageNode], title: str = "lineage", max_depth: int = LINEAGE_DEPTH
) -> Group:
    """Every candidate under the one it was made from (a merge under its first parent).
    A branch deeper than max_depth goes on in a further tree, "continued from <id>"."""
    trees = []
    for part in split(roots, max_depth):
        label = (
            Text(title, style="bold")
            if part.continues is None
            else Text(f"continued from {part.continues}", style="bold")
        )
        tree = Tree(label)
        branches: list[Tree] = [tree]
        for depth, node in part.rows:
            del branches[depth + 1 :]
            branch = branches[depth].add(lineage_label(node))
            branches.append(branch)
            if node.id in part.cut:
                n = sum(1 for _ in walk(node.children))
                branch.add(Text(f"… {n} more: continued from {node.id} below", style="dim italic"))
        trees.append(tree)
    return Group(*trees)


def show(variable: Any, console: Console | None = None) -> None:
    """Print the tree of critiques from `variable` (usually a loss) back to the parameters."""
    from textgraph.graph import graph_record

    (console or Console()).print(graph_tree(graph_record(variable)))


def show_run(
    path: str,
    step: int | None = None,
    console: Console | None = None,
    *,
    lineage: bool = False,
) -> None:
    """The run's header, then its steps (or one step with `step`); with `lineage`, the
    tree of every candidate instead of the steps table."""
    console = console or Console()
    run = RunDir.open(path)
    steps = run.read_steps()
    summary = run.read_summary()
    config = run.read_config()
    console.print(
        Text.assemble(
            (str(path), "bold"),
            f": {config.get('module')} · batch {config.get('batch_size')} · "
            f"gate {config.get('gate')} · initial val {_score(config.get('initial_val_score'))}",
        )
    )
    if summary is not None:
        console.print(
            Text(
                f"stopped: {summary.stopped} · best val {_score(summary.best_val_score)} · "
                f"test {_test_scores(summary)} · {summary.calls} calls · "
                f"{summary.prompt_tokens + summary.completion_tokens} tokens · "
                f"${summary.cost_usd:.4f} · {summary.seconds:.1f} s"
            )
        )
    else:
        console.print(
            "[yellow]no summary.json: the run is in progress or was interrupted "
            "(textgraph run ... --resume continues it)[/yellow]"
        )
    if lineage:
        roots = run_lineage(run)
        n = sum(1 for _ in walk(roots))
        console.print(
            lineage_tree(
                roots,
                f"lineage: {n} candidate{'s' if n != 1 else ''} "
                "(each under the one it was made from; a merge under its first parent)",
            )
        )
        if step is None:
            return
    if step is not None:
        match = [r for r in steps if r.step == step]
        if not match:
            raise RunError(
                f"{path} has no step {step}; it has steps {[r.step for r in steps] or 'none yet'}"
            )
        record = run.read_graph(step)
        if record is not None:
            console.print(
                Panel(
                    graph_tree(record),
                    title=Text(f"step {step}: critiques from the loss back to each parameter"),
                )
            )
        console.print(step_detail(match[0]))
        return
    console.print(steps_table(steps))
    for r in steps:
        for name, old, new in accepted_changes(r):
            console.print(
                Panel(word_diff(old, new), title=Text(f"step {r.step}: {name} rewritten"))
            )
    console.print("details of one step: textgraph show RUN_DIR --step N")
