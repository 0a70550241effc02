"""Terminal views of a run directory (`textgraph show`)."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from textgraph.runs import RunDir, RunError, StepRecord


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
            r.reason,
        )
    return table


def step_detail(r: StepRecord) -> Group:
    parts: list[object] = [
        Text(f"Step {r.step}: {r.reason}", style="bold"),
        Text(f"batch (training example indices): {r.batch}"),
    ]
    if r.errors:
        parts.append(Panel("\n".join(r.errors), title="errors", border_style="red"))
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
        parts.append(Panel(lines, title=f"gradients of {name}"))
        if name in r.reduced:
            parts.append(Panel(r.reduced[name], title=f"reduced gradient of {name}"))
    for c in r.candidates:
        body = (
            word_diff(c.old_value, c.new_value)
            if c.old_value != c.new_value
            else Text("(no change)")
        )
        if c.warning:
            body.append(f"\n{c.warning}", style="red")
        parts.append(Panel(body, title=f"candidate for {c.parameter}: {c.status}"))
    return Group(*parts)


def show_run(path: str, step: int | None = None, console: Console | None = None) -> None:
    console = console or Console()
    run = RunDir(path)
    if not run.exists():
        raise RunError(f"{path} is not a run directory (no config.json)")
    steps = run.read_steps()
    summary = run.read_summary()
    config = run.read_config()
    console.print(
        f"[bold]{path}[/bold]: {config.get('module')} · batch {config.get('batch_size')} · "
        f"gate {config.get('gate')} · initial val {_score(config.get('initial_val_score'))}"
    )
    if summary is not None:
        console.print(
            f"stopped: {summary.stopped} · best val {_score(summary.best_val_score)} · test "
            f"{_score(summary.test_score)} · {summary.calls} calls · "
            f"{summary.prompt_tokens + summary.completion_tokens} tokens · "
            f"${summary.cost_usd:.4f} · {summary.seconds:.1f} s"
        )
    else:
        console.print(
            "[yellow]no summary.json: the run is in progress or was interrupted "
            "(textgraph run ... --resume continues it)[/yellow]"
        )
    if step is not None:
        match = [r for r in steps if r.step == step]
        if not match:
            raise RunError(
                f"{path} has no step {step}; it has steps {[r.step for r in steps] or 'none yet'}"
            )
        console.print(step_detail(match[0]))
        return
    console.print(steps_table(steps))
    for r in steps:
        for c in r.candidates:
            if r.decision == "accepted" and c.old_value != c.new_value:
                console.print(
                    Panel(
                        word_diff(c.old_value, c.new_value),
                        title=f"step {r.step}: {c.parameter} rewritten",
                    )
                )
    console.print("details of one step: textgraph show RUN_DIR --step N")
