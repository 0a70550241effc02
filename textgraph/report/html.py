"""`textgraph report RUN_DIR -o report.html`: one self-contained, offline HTML file.

Everything is inline: CSS, a little vanilla JavaScript, SVG drawn in Python.
User and model text is either HTML-escaped into the markup or carried in a
JSON block (with <, > and & escaped) and put on the page with textContent,
so a critique containing <script> shows as text.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from html import escape
from pathlib import Path
from typing import Any

from textgraph._io import atomic_write_text
from textgraph._text import shorten
from textgraph.demos import readable_value
from textgraph.eval.pareto import BUILTIN, ParetoEntry, pareto_front
from textgraph.report.lineage import LineageNode, Part, lineage, split, walk
from textgraph.report.svg import (
    KIND_COLOURS,
    ScatterPoint,
    bar_chart,
    graph_svg,
    line_chart,
    scatter_plot,
)
from textgraph.report.terminal import accepted_changes
from textgraph.runs import RunDir, StepRecord, Summary

CSS = """
body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#263238;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:20px} header p{margin:4px 0 0;font-size:13px;opacity:.85}
main{padding:16px 24px} section{background:#fff;border:1px solid #ddd;border-radius:8px;
padding:12px 16px;margin-bottom:16px} h2{font-size:16px;margin:4px 0 10px}
.charts{display:flex;flex-wrap:wrap;gap:12px} .badge{display:inline-block;padding:1px 8px;
border-radius:10px;font-size:12px;color:#fff} .accepted{background:#2e7d32}
.rejected{background:#c62828} .unchanged{background:#9e9e9e} .not-selected{background:#ef6c00}
.filtered{background:#6a1b9a} .proposed{background:#1565c0} .other{background:#546e7a}
.step{border-top:1px solid #eee;padding:8px 0} del{background:#ffd6d6;text-decoration:line-through}
ins{background:#d6f5d6;text-decoration:none} pre{white-space:pre-wrap;background:#f4f4f4;
padding:8px;border-radius:4px;font-size:12px;max-height:320px;overflow:auto}
.graph-area{display:flex;gap:16px;align-items:flex-start} .graph-scroll{overflow:auto;
max-width:62%;border:1px solid #eee} #details{flex:1;min-width:280px;font-size:13px}
.node{cursor:pointer} .node.selected rect{stroke:#000;stroke-width:3}
.legend span{display:inline-block;padding:2px 8px;margin-right:6px;border-radius:4px;
font-size:12px} table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ddd;
padding:4px 8px;text-align:left;vertical-align:top}
.candidate{border-left:4px solid #ddd;margin:8px 0 8px 4px;padding:2px 0 2px 10px}
.candidate.st-accepted{border-color:#2e7d32} .candidate.st-rejected{border-color:#c62828}
.candidate.st-not-selected{border-color:#ef6c00} .candidate.st-filtered{border-color:#6a1b9a}
.candidate p{margin:3px 0} .head .origin{color:#555;font-size:13px} .why{font-size:13px}
.meta{font-size:12px;color:#555} .muted{color:#888;font-size:13px} .warning{color:#b71c1c}
code{background:#eef;padding:0 4px;border-radius:3px;font-size:12px}
.change{display:grid;grid-template-columns:minmax(0,1fr);gap:12px;margin:6px 0}
.change.with-critiques{grid-template-columns:minmax(0,1fr) minmax(0,1fr)}
@media (max-width:900px){.change.with-critiques{grid-template-columns:minmax(0,1fr)}}
.param{font-weight:bold;font-size:13px;margin:2px 0}
.diff-text{white-space:pre-wrap;font-size:13px;background:#f9f9f9;padding:6px;border-radius:4px}
.critiques{background:#f3f0fa;border-radius:4px;padding:4px 8px;font-size:13px}
.critiques summary{cursor:pointer;font-weight:bold} .critiques ol{margin:4px 0;padding-left:20px}
.critiques pre{max-height:200px;margin:2px 0 6px} .notes{background:#fffde7;padding:2px 8px;
border-radius:4px;font-size:13px} .notes ul{margin:2px 0}
.pool tr.front td{background:#e8f0fe} .pool tr.selected td{background:#fff3e0}
.pool td pre{max-height:160px;max-width:520px}
.initial{background:#37474f} .lineage-tree{overflow-x:auto}
ul.lineage{list-style:none;margin:2px 0;padding-left:14px;border-left:1px dotted #bbb}
.lineage-tree>ul.lineage{padding-left:0;border-left:none}
ul.lineage li{margin:3px 0;font-size:13px} ul.lineage li.dropped>.ln-head{opacity:.6;
font-style:italic} ul.lineage li.dropped>.ln-head code{border:1px dashed #999;background:none}
.ln-head .origin{color:#555} .mark{font-size:12px;padding:0 5px;border-radius:3px}
.mark.front{background:#e8f0fe;color:#1a237e} .mark.sel{background:#fff3e0;color:#e65100;
font-weight:bold} .merge{color:#4a148c;font-size:12px} .ln-note{color:#b71c1c;font-size:12px}
ul.lineage details>summary{cursor:pointer;font-size:12px;color:#555}
"""

SCRIPT = """
(function(){
  const data = JSON.parse(document.getElementById('report-data').textContent);
  const select = document.getElementById('step-select');
  const details = document.getElementById('details');
  function el(tag, text, cls){const e=document.createElement(tag);
    if(text!==undefined&&text!==null){e.textContent=String(text);} if(cls){e.className=cls;} return e;}
  function showStep(step){
    document.querySelectorAll('.graph-view').forEach(function(v){
      v.hidden = v.getAttribute('data-step') !== String(step);});
    details.replaceChildren(el('p','Click a node to see its value and the critiques it received.'));
  }
  function showNode(step, id){
    const node = (data.graphs[String(step)]||{})[id]; if(!node){return;}
    document.querySelectorAll('.node.selected').forEach(function(n){n.classList.remove('selected');});
    document.querySelectorAll('.graph-view[data-step="'+step+'"] .node[data-id="'+id+'"]')
      .forEach(function(n){n.classList.add('selected');});
    const box = [el('h3', node.role), el('p', 'kind: '+node.kind+(node.example!==null&&node.example!==undefined?' · example '+node.example:''))];
    box.push(el('h4','Value')); box.push(el('pre', node.value));
    const grads = node.gradients||[];
    box.push(el('h4', grads.length ? 'Critiques received ('+grads.length+')' : 'No critiques received'));
    grads.forEach(function(g, i){
      const div = el('div', null, 'critique');
      div.appendChild(el('p', '['+(i+1)+'] from "'+g.source_role+'" via '+g.operation+
        (g.example!==null&&g.example!==undefined?' · example '+g.example:'')));
      div.appendChild(el('pre', g.text));
      if(g.context){const d=el('details'); d.appendChild(el('summary','the call it concerns'));
        d.appendChild(el('pre', g.context)); div.appendChild(d);}
      if(g.conversation&&g.conversation.length){const d=el('details');
        d.appendChild(el('summary','the backward conversation'));
        g.conversation.forEach(function(m){d.appendChild(el('p', m.role+':')); d.appendChild(el('pre', m.content));});
        div.appendChild(d);}
      box.push(div);
    });
    details.replaceChildren.apply(details, box);
  }
  if(select){select.addEventListener('change', function(){showStep(select.value);});
    showStep(select.value);}
  document.querySelectorAll('.graph-view').forEach(function(view){
    const step = view.getAttribute('data-step');
    view.querySelectorAll('.node').forEach(function(n){
      n.addEventListener('click', function(){showNode(step, n.getAttribute('data-id'));});
      n.addEventListener('keydown', function(ev){if(ev.key==='Enter'){showNode(step, n.getAttribute('data-id'));}});
    });
  });
})();
"""


def _json_for_script(data: Any) -> str:
    """JSON that cannot end the <script> element it sits in."""
    text = json.dumps(data, ensure_ascii=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _diff_html(old: str, new: str) -> str:
    a, b = old.split(" "), new.split(" ")
    out = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag == "equal":
            out.append(escape(" ".join(a[i1:i2])))
        if tag in ("replace", "delete"):
            out.append(f"<del>{escape(' '.join(a[i1:i2]))}</del>")
        if tag in ("replace", "insert"):
            out.append(f"<ins>{escape(' '.join(b[j1:j2]))}</ins>")
    return " ".join(out)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _charts(
    steps: list[StepRecord],
    initial: float | None,
    test: float | None,
    by_purpose: dict[str, dict[str, Any]],
) -> str:
    labels = ["0", *(str(s.step) for s in steps)]
    val = [initial, *(s.val_score for s in steps)]
    best = [initial, *(s.best_score for s in steps)]
    series: dict[str, list[float | None]] = {"validation": val, "best": best}
    if test is not None:
        series["test (final)"] = [None] * (len(labels) - 1) + [test]
    charts = [
        line_chart("Score per step", series, labels),
        line_chart("LLM calls per step", {"calls": [None, *(s.calls for s in steps)]}, labels),
        line_chart("Tokens per step", {"tokens": [None, *(s.tokens for s in steps)]}, labels),
        line_chart("Cost per step (USD)", {"cost": [None, *(s.cost_usd for s in steps)]}, labels),
    ]
    if by_purpose:
        charts.append(
            bar_chart(
                "Calls by purpose", {k: float(v.get("calls", 0)) for k, v in by_purpose.items()}
            )
        )
        charts.append(
            bar_chart(
                "Tokens by purpose",
                {
                    k: float(v.get("prompt_tokens", 0) + v.get("completion_tokens", 0))
                    for k, v in by_purpose.items()
                },
            )
        )
        charts.append(
            bar_chart(
                "Cost by purpose (USD)",
                {k: float(v.get("cost_usd", 0)) for k, v in by_purpose.items()},
            )
        )
    return '<div class="charts">' + "".join(charts) + "</div>"


def _versions(config: dict[str, Any], steps: list[StepRecord]) -> str:
    rows = []
    current = dict(config.get("initial_parameters", {}))
    for name, value in current.items():
        rows.append(
            f"<tr><td>{escape(name)}</td><td>initial</td><td><pre>{escape(value)}</pre></td></tr>"
        )
    for s in steps:
        if s.decision != "accepted":
            continue
        for name, _old, new in accepted_changes(s):
            rows.append(
                f"<tr><td>{escape(name)}</td><td>step {s.step}</td><td><pre>"
                f"{escape(new)}</pre></td></tr>"
            )
    return (
        "<table class='versions'><tr><th>parameter</th><th>version</th><th>value</th></tr>"
        + "".join(rows)
        + "</table>"
    )


_STATUS_CLASS = {
    "accepted": "accepted",
    "rejected": "rejected",
    "not selected": "not-selected",
    "filtered": "filtered",
    "unchanged": "unchanged",
    "duplicate": "unchanged",
    "proposed": "proposed",
    "initial": "initial",
}


def _status_of(step: StepRecord, status: str) -> str:
    """A candidate's status; run format 1 wrote "proposed" and let the step decide."""
    if status == "proposed" and step.decision in ("accepted", "rejected"):
        return step.decision
    return status


def _status_class(status: str) -> str:
    return _STATUS_CLASS.get(status, "rejected" if status.startswith("rejected") else "other")


def _badge(status: str) -> str:
    return f"<span class='badge {_status_class(status)}'>{escape(status)}</span>"


def _objective(name: str, value: float | None) -> str:
    if value is None:
        return "—"
    if name == "score":
        return f"{value:.3f}"
    if name == "cost":
        return f"${value:.3g}"
    if name == "latency":
        return f"{value * 1000:.3g} ms"
    return f"{value:.4g}"


def _objectives_text(objectives: dict[str, float | None]) -> str:
    return " · ".join(
        f"{name} {_objective(name, v)}" for name, v in objectives.items() if v is not None
    )


def _critiques_html(step: StepRecord, name: str, *, open_: bool, shown_with: str = "") -> str:
    """The critiques a parameter received in a step (and their merge, if it was reduced)."""
    grads = step.gradients.get(name, [])
    reduced = step.reduced.get(name)
    if not grads and not reduced:
        return ""
    scores = dict(zip(step.batch, step.train_scores, strict=False))
    items = []
    for g in grads:
        where = "example ?" if g.example is None else f"example {g.example}"
        score = scores.get(g.example) if g.example is not None else None
        if score is not None:
            where += f" (score {score:.3g})"
        items.append(
            f"<li><p class='meta'>{escape(where)} · from “{escape(g.source_role)}” via "
            f"{escape(g.operation)}</p><pre class='critique'>{escape(g.text)}</pre></li>"
        )
    listed = f"<ol>{''.join(items)}</ol>" if items else ""
    count = f"{len(grads)} critique{'s' if len(grads) != 1 else ''}"
    if reduced:
        body = (
            "<p class='meta'>merged into one (what the optimizer read):</p>"
            f"<pre class='critique reduced'>{escape(reduced)}</pre>"
            + (
                f"<details><summary>the {count} it merged</summary>{listed}</details>"
                if items
                else ""
            )
        )
        summary = f"critiques of {escape(name)}: {count}, merged"
    else:
        body = listed
        summary = f"critiques of {escape(name)}: {count}"
    if not open_:
        summary += f" (as beside {escape(shown_with)})" if shown_with else " (as above)"
    return (
        f"<details class='critiques'{' open' if open_ else ''}><summary>{summary}</summary>"
        f"{body}</details>"
    )


def _open_critiques(step: StepRecord) -> dict[str, int]:
    """Parameter -> the candidate (index) beside which its critiques are shown open: the
    rewrite that was taken, else the first candidate that changed the parameter."""
    out: dict[str, int] = {}
    order = sorted(
        range(len(step.candidates)),
        key=lambda i: _status_of(step, step.candidates[i].status) != "accepted",
    )
    for i in order:
        for ch in step.candidates[i].changes:
            out.setdefault(ch.parameter, i)
    return out


def _candidate_html(step: StepRecord, index: int, opened: dict[str, int]) -> str:
    c = step.candidates[index]
    status = _status_of(step, c.status)
    head = [
        f"<code class='cid'>{escape(c.id)}</code>" if c.id else "<b>candidate</b>",
        _badge(status),
    ]
    if c.origin:
        head.append(f"<span class='origin'>{escape(c.origin)}</span>")
    if c.reason:
        head.append(f"<span class='why'>{escape(c.reason)}</span>")
    meta = []
    shown = _objectives_text(c.objectives)
    if shown:
        meta.append(f"<span class='objectives'>{escape(shown)}</span>")
    if c.n_failed:
        meta.append(f"<span class='failed'>{c.n_failed} failed on val</span>")
    if c.parents:
        meta.append(f"parent {escape(', '.join(c.parents))}")
    changes = []
    for ch in c.changes:
        at = opened.get(ch.parameter, index)
        critiques = _critiques_html(
            step, ch.parameter, open_=at == index, shown_with=step.candidates[at].id
        )
        changes.append(
            f"<div class='change{' with-critiques' if critiques else ''}'><div class='diff'>"
            f"<p class='param'>{escape(ch.parameter)}</p>"
            f"<div class='diff-text'>{_diff_html(readable_value(ch.old_value), readable_value(ch.new_value))}</div></div>"
            f"{critiques}</div>"
        )
    if not c.changes:
        changes.append("<p class='muted'>(no change)</p>")
    warning = f"<p class='warning'>{escape(c.warning)}</p>" if c.warning else ""
    return (
        f"<div class='candidate st-{_status_class(status)}'>"
        f"<p class='head'>{' '.join(head)}</p>"
        + (f"<p class='meta'>{' · '.join(meta)}</p>" if meta else "")
        + warning
        + "".join(changes)
        + "</div>"
    )


def _timeline(steps: list[StepRecord]) -> str:
    parts = []
    for s in steps:
        opened = _open_critiques(s)
        candidates = [_candidate_html(s, i, opened) for i in range(len(s.candidates))]
        notes = "".join(f"<li>{escape(n)}</li>" for n in s.notes)
        errors = "".join(f"<li>{escape(e)}</li>" for e in s.errors)
        facts = [
            f"val {_fmt(s.val_score)}",
            f"best {_fmt(s.best_score)}",
            f"{s.calls} calls",
            f"{s.tokens} tokens",
            f"${s.cost_usd:.4f}",
            f"batch {s.batch}",
        ]
        if s.optimizer:
            facts.append(f"optimizer {s.optimizer}")
        if s.current:
            facts.append(f"incumbent {s.current}")
        parts.append(
            f"<div class='step' id='step-{s.step}'><p><b>Step {s.step}</b> "
            f"{_badge(s.decision)} {escape(s.reason)} · {escape(' · '.join(facts))}</p>"
            + (
                f"<div class='notes'><p class='meta'>notes from "
                f"{escape(s.optimizer or 'the optimizer')}:</p><ul>{notes}</ul></div>"
                if notes
                else ""
            )
            + (f"<ul class='errors'>{errors}</ul>" if errors else "")
            + "".join(candidates)
            + "</div>"
        )
    return "".join(parts) or "<p>No steps yet.</p>"


AXES = {
    "score": "score (validation, higher is better)",
    "cost": "cost (USD per example, lower is better)",
    "latency": "latency (ms, p50 per example, lower is better)",
    "prompt_tokens": "prompt tokens per example (lower is better)",
}


def _pool(
    run: RunDir, steps: list[StepRecord], summary: Summary | None
) -> tuple[list[ParetoEntry], list[str]]:
    """Every fully evaluated candidate: the latest checkpoint's pool, else what the steps and
    summary.json recorded. Also notes on where it came from."""
    checkpoint, skipped = run.latest_checkpoint()
    notes = [f"{why}; the pool comes from an earlier checkpoint" for _, why in skipped]
    if checkpoint is not None and checkpoint.trainer.pool:
        return list(checkpoint.trainer.pool), notes
    entries: dict[str, ParetoEntry] = {}
    for e in summary.pareto if summary else []:
        entries.setdefault(e.candidate_id, e)
    for s in steps:
        for c in s.candidates:
            if c.id and c.objectives and c.id not in entries:
                entries[c.id] = ParetoEntry(
                    candidate_id=c.id, step=s.step, origin=c.origin, objectives=c.objectives
                )
    if entries:
        notes.append(
            "no checkpoint with a candidate pool: the points are the candidates the "
            "steps and summary.json recorded"
        )
    return sorted(entries.values(), key=lambda e: e.step), notes


def _front_ids(
    pool: list[ParetoEntry], summary: Summary | None, names: list[str]
) -> tuple[set[str], str]:
    """Ids on the Pareto front: summary.json's, or (a run in progress) computed here over the
    built-in objectives, whose directions are known."""
    if summary is not None and summary.pareto:
        front, note = summary.pareto, ""
    else:
        known = [BUILTIN[n] for n in names if n in BUILTIN]
        unknown = [n for n in names if n not in BUILTIN]
        front = pareto_front(pool, known)
        note = (
            "the run has not finished: the front is computed here over "
            + ", ".join(o.name for o in known)
            + (f" (not {', '.join(unknown)}, whose direction is not recorded)" if unknown else "")
        )
    # the front keeps one of several candidates with equal values; the others are not dominated
    vectors = [e.objectives for e in front]
    ids = {e.candidate_id for e in front}
    return {e.candidate_id for e in pool if e.candidate_id in ids or e.objectives in vectors}, note


def _tooltip(e: ParetoEntry, front: bool, selected: bool) -> str:
    lines = [f"{e.candidate_id} · step {e.step}" + (f" · {e.origin}" if e.origin else "")]
    lines += [f"{name}: {_objective(name, v)}" for name, v in e.objectives.items()]
    lines.append(
        ("selected · " if selected else "") + ("on the Pareto front" if front else "dominated")
    )
    return "\n".join(lines)


def _pareto_section(
    run: RunDir, config: dict[str, Any], steps: list[StepRecord], summary: Summary | None
) -> str:
    pool, notes = _pool(run, steps, summary)
    selected = (summary.selected if summary else None) or (steps[-1].current if steps else None)
    if not pool:
        return (
            "<p>No candidate was fully evaluated on validation data, so there is nothing to "
            "plot (runs without validation data, and runs written before format version 2, "
            "have no candidate pool).</p>"
        )
    names: list[str] = []
    for n in [*config.get("objectives", []), *(k for e in pool for k in e.objectives)]:
        if isinstance(n, str) and n not in names:
            names.append(n)
    front, front_note = _front_ids(pool, summary, names)
    if front_note:
        notes.append(front_note)
    plots = []
    for name in names:
        if name == "score":
            continue
        scale = 1000.0 if name == "latency" else 1.0
        points = []
        for e in pool:
            x, y = e.objectives.get(name), e.objectives.get("score")
            if x is None or y is None or not math.isfinite(x) or not math.isfinite(y):
                continue  # not measured for this candidate: not in this plot
            points.append(
                ScatterPoint(
                    id=e.candidate_id,
                    x=x * scale,
                    y=y,
                    tooltip=_tooltip(e, e.candidate_id in front, e.candidate_id == selected),
                    front=e.candidate_id in front,
                    selected=e.candidate_id == selected,
                )
            )
        if points:
            plots.append(
                scatter_plot(
                    f"score against {name}",
                    points,
                    x_label=AXES.get(name, name),
                    y_label=AXES["score"],
                )
            )
    if not plots:
        plots.append("<p>No objective besides score has values to plot against.</p>")
    header = ["candidate", "step", "origin", *names, ""]
    rows = []
    for e in pool:
        marks = []
        if e.candidate_id == selected:
            marks.append("selected")
        if e.candidate_id in front:
            marks.append("front")
        values = "".join(
            f"<p class='param'>{escape(k)}</p><pre>{escape(str(v))}</pre>"
            for k, v in e.values.items()
        )
        cells = [
            f"<code>{escape(e.candidate_id)}</code>",
            f"<a href='#step-{e.step}'>{e.step}</a>" if e.step else "0",
            escape(e.origin),
            *(escape(_objective(n, e.objectives.get(n))) for n in names),
            escape(" · ".join(marks))
            + (f"<details><summary>values</summary>{values}</details>" if values else ""),
        ]
        cls = " ".join(marks)
        rows.append(f"<tr class='{cls}'>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    chosen = (
        f"Selected: <code>{escape(selected)}</code>"
        + ("" if any(e.candidate_id == selected for e in pool) else " (not in the pool)")
        if selected
        else "No candidate was selected yet."
    )
    return (
        f"<p>{len(pool)} fully evaluated candidate{'s' if len(pool) != 1 else ''}, "
        f"{len(front)} on the Pareto front (filled; the front is over all objectives, so a "
        f"front point can look dominated in one plot). {chosen}</p>"
        + "".join(f"<p class='meta'>{escape(n)}</p>" for n in notes)
        + f"<div class='charts pareto'>{''.join(plots)}</div>"
        + "<table class='pool'><tr>"
        + "".join(f"<th>{escape(h)}</th>" for h in header)
        + "</tr>"
        + "".join(rows)
        + "</table>"
    )


LINEAGE_FOLD = 12  # a node with several children and more descendants than this folds
LINEAGE_DEPTH = 30  # levels per list; a longer chain goes on below ("continued from <id>")


def _lineage_tooltip(node: LineageNode) -> str:
    lines = [node.why] if node.why else []
    lines += [f"{name}: {shorten(value, 160)}" for name, value in node.new_values.items()]
    if len(node.proposals) > 1:
        lines.append(
            "proposed " + ", ".join(f"at step {p.step} ({p.status})" for p in node.proposals)
        )
    return "\n".join(lines)


def _lineage_head(node: LineageNode) -> str:
    parts = [f"<code class='cid'>{escape(node.id)}</code>", _badge(node.status)]
    if node.origin and node.origin != node.status:
        parts.append(f"<span class='origin'>{escape(node.origin)}</span>")
    facts = [f"<a href='#step-{node.step}'>step {node.step}</a>" if node.step else "step 0"]
    facts.append(f"val {_fmt(node.val_score)}")
    if node.changed:
        facts.append("changed " + escape(", ".join(node.changed)))
    again = node.proposals[1:]
    if again:
        facts.append("again at " + escape(", ".join(f"step {p.step} ({p.status})" for p in again)))
    parts.append(f"<span class='meta'>{' · '.join(facts)}</span>")
    if node.on_front:
        parts.append("<span class='mark front'>★ front</span>")
    if node.selected:
        parts.append("<span class='mark sel'>selected</span>")
    if node.is_merge:
        parts.append(f"<span class='merge'>{escape(node.merge_label)}</span>")
    if node.note:
        parts.append(f"<span class='ln-note'>{escape(node.note)}</span>")
    return f"<span class='ln-head'>{' '.join(parts)}</span>"


def _lineage_section(run: RunDir, steps: list[StepRecord]) -> str:
    unplaced = sum(1 for s in steps for c in s.candidates if not c.id)
    old = (
        f"<p class='meta'>{unplaced} candidate{'s' if unplaced != 1 else ''} of steps written "
        "before run format 2 have no id and are not in the tree.</p>"
        if unplaced
        else ""
    )
    roots = lineage(run)
    if not roots:
        return "<p>The run records no candidate ids (no initial values, no checkpoint).</p>" + old
    order = list(walk(roots))
    n = len(order)
    dropped = sum(1 for _, node in order if node.dropped)
    others = len(roots) - 1
    said = [
        f"{n} candidate{'s' if n != 1 else ''}, from the initial values down: each under the "
        "candidate it was made from (a merge of two, under the first)."
    ]
    if dropped:
        said.append(f"{dropped} never evaluated (filtered, unchanged or duplicate; faded).")
    if others:
        said.append(
            f"{others} other root{'s' if others > 1 else ''}: "
            + ("candidates whose parents are" if others > 1 else "a candidate whose parents are")
            + " not in the records."
        )
    said.append("Hover over a candidate for why it was proposed and the values it changed.")
    intro = f"<p>{' '.join(said)}</p>"
    return intro + old + lineage_html(roots)


def lineage_html(roots: list[LineageNode]) -> str:
    """The lineage as nested lists; a node with several children and more than
    LINEAGE_FOLD descendants puts them in a <details> (open) that folds. A branch deeper
    than LINEAGE_DEPTH goes on in a list below, linked both ways."""
    # descendants of each node, without recursion (a run may have thousands of steps)
    size: dict[int, int] = {}
    for _, node in reversed(list(walk(roots))):
        size[id(node)] = sum(1 + size[id(c)] for c in node.children)
    return "".join(_lineage_part(part, size) for part in split(roots, LINEAGE_DEPTH))


def _lineage_part(part: Part, size: dict[int, int]) -> str:
    out = []
    if part.continues is not None:
        cid = escape(part.continues)
        out.append(
            f"<p class='meta' id='lineage-from-{cid}'>continued from "
            f"<a href='#lineage-{cid}'><code>{cid}</code></a></p>"
        )
    out.append("<div class='lineage-tree'><ul class='lineage'>")
    open_: list[tuple[int, LineageNode]] = []  # nodes whose children's list is open

    def folds(node: LineageNode) -> bool:
        return len(node.children) > 1 and size[id(node)] > LINEAGE_FOLD

    def close(node: LineageNode) -> None:
        out.append("</ul>" + ("</details>" if folds(node) else "") + "</li>")

    for depth, node in part.rows:
        while open_ and open_[-1][0] >= depth:
            close(open_.pop()[1])
        classes = ["ln", f"st-{_status_class(node.status)}"]
        classes += [c for c, on in (("dropped", node.dropped), ("front", node.on_front)) if on]
        if node.selected:
            classes.append("selected")
        tooltip = _lineage_tooltip(node)
        title = f" title='{escape(tooltip)}'" if tooltip else ""
        out.append(
            f"<li class='{' '.join(classes)}' id='lineage-{escape(node.id)}'{title}>"
            f"{_lineage_head(node)}"
        )
        if node.id in part.cut:
            cid = escape(node.id)
            out.append(
                f"<ul class='lineage'><li class='more'><a href='#lineage-from-{cid}'>"
                f"… {size[id(node)]} more: continued below</a></li></ul></li>"
            )
            continue
        if not node.children:
            out.append("</li>")
            continue
        if folds(node):
            out.append(f"<details open><summary>{size[id(node)]} descendants</summary>")
        out.append("<ul class='lineage'>")
        open_.append((depth, node))
    while open_:
        close(open_.pop()[1])
    out.append("</ul></div>")
    return "".join(out)


def build_report(run_dir: str | os.PathLike[str]) -> str:
    run = RunDir.open(run_dir)
    config = run.read_config()
    steps = run.read_steps()
    summary = run.read_summary()
    graphs: dict[str, dict[str, Any]] = {}
    views = []
    for s in steps:
        record = run.read_graph(s.step)
        if record is None:
            continue
        graphs[str(s.step)] = {
            n["id"]: {k: n.get(k) for k in ("role", "kind", "value", "gradients", "example")}
            for n in record["nodes"]
        }
        views.append(
            f'<div class="graph-view" data-step="{s.step}" hidden>'
            f"{graph_svg(record, element_id=f'graph-{s.step}')}</div>"
        )
    options = "".join(f'<option value="{k}">step {k}</option>' for k in graphs)
    legend = "".join(
        f'<span style="background:{c}">{escape(k)}</span>' for k, c in KIND_COLOURS.items()
    )
    headline = (
        f"stopped: {escape(summary.stopped)} · initial val {_fmt(summary.initial_val_score)} · "
        f"best val {_fmt(summary.best_val_score)} · test "
        + (
            f"{_fmt(summary.initial_test_score)} → "
            if summary.initial_test_score is not None
            else ""
        )
        + f"{_fmt(summary.test_score)} · "
        f"{summary.calls} calls · {summary.prompt_tokens + summary.completion_tokens} tokens · "
        f"${summary.cost_usd:.4f} · {summary.seconds:.1f} s"
        if summary
        else "no summary yet: the run is in progress or was interrupted"
    )
    graph_section = (
        f'<label>Step <select id="step-select">{options}</select></label> '
        f'<span class="legend">{legend}</span><div class="graph-area"><div class="graph-scroll">'
        + "".join(views)
        + '</div><div id="details"></div></div>'
        if graphs
        else "<p>No computation graphs were recorded for this run.</p>"
    )
    data = {"graphs": graphs}
    recorded = config.get("optimizer")
    name = (summary.optimizer if summary else "") or (
        recorded.get("name") if isinstance(recorded, dict) else recorded
    )
    optimizer = f"optimizer {name} · " if isinstance(name, str) and name else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<title>textgraph report · {escape(str(run_dir))}</title><style>{CSS}</style></head>
<body><header><h1>textgraph run: {escape(str(run_dir))}</h1>
<p>{escape(str(config.get("module")))} · batch {escape(str(config.get("batch_size")))} ·
gate {escape(str(config.get("gate")))} · {escape(optimizer)}{len(steps)} steps</p><p>{
        headline
    }</p></header>
<main>
<section><h2>Scores, calls, tokens and cost</h2>
{
        _charts(
            steps,
            config.get("initial_val_score"),
            summary.test_score if summary else None,
            summary.by_purpose if summary else {},
        )
    }</section>
<section><h2>Computation graph</h2>{graph_section}</section>
<section id="pareto"><h2>Candidates and the Pareto front</h2>
{_pareto_section(run, config, steps, summary)}</section>
<section id="lineage"><h2>Lineage</h2>{_lineage_section(run, steps)}</section>
<section><h2>Steps</h2>{_timeline(steps)}</section>
<section><h2>Parameter versions</h2>{_versions(config, steps)}</section>
</main>
<script type="application/json" id="report-data">{_json_for_script(data)}</script>
<script>{SCRIPT}</script>
</body></html>
"""


def write_report(run_dir: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    return atomic_write_text(out, build_report(run_dir))
