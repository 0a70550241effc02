"""`textgraph report RUN_DIR -o report.html`: one self-contained, offline HTML file.

Everything is inline: CSS, a little vanilla JavaScript, SVG drawn in Python.
User and model text is either HTML-escaped into the markup or carried in a
JSON block (with <, > and & escaped) and put on the page with textContent,
so a critique containing <script> shows as text.
"""

from __future__ import annotations

import difflib
import json
import os
from html import escape
from pathlib import Path
from typing import Any

from textgraph._io import atomic_write_text
from textgraph.report.svg import KIND_COLOURS, bar_chart, graph_svg, line_chart
from textgraph.report.terminal import accepted_changes
from textgraph.runs import RunDir, StepRecord

CSS = """
body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#263238;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:20px} header p{margin:4px 0 0;font-size:13px;opacity:.85}
main{padding:16px 24px} section{background:#fff;border:1px solid #ddd;border-radius:8px;
padding:12px 16px;margin-bottom:16px} h2{font-size:16px;margin:4px 0 10px}
.charts{display:flex;flex-wrap:wrap;gap:12px} .badge{display:inline-block;padding:1px 8px;
border-radius:10px;font-size:12px;color:#fff} .accepted{background:#2e7d32}
.rejected{background:#c62828} .unchanged{background:#9e9e9e}
.step{border-top:1px solid #eee;padding:8px 0} del{background:#ffd6d6;text-decoration:line-through}
ins{background:#d6f5d6;text-decoration:none} pre{white-space:pre-wrap;background:#f4f4f4;
padding:8px;border-radius:4px;font-size:12px;max-height:320px;overflow:auto}
.graph-area{display:flex;gap:16px;align-items:flex-start} .graph-scroll{overflow:auto;
max-width:62%;border:1px solid #eee} #details{flex:1;min-width:280px;font-size:13px}
.node{cursor:pointer} .node.selected rect{stroke:#000;stroke-width:3}
.legend span{display:inline-block;padding:2px 8px;margin-right:6px;border-radius:4px;
font-size:12px} table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ddd;
padding:4px 8px;text-align:left;vertical-align:top}
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


def _timeline(steps: list[StepRecord]) -> str:
    parts = []
    for s in steps:
        candidates = "".join(
            f"<div class='candidate'><p><b>{escape(c.id or 'candidate')}</b> "
            f"{escape(c.origin)}: {escape(c.status)}"
            + (f" — {escape(c.reason)}" if c.reason else "")
            + (f" — {escape(c.warning)}" if c.warning else "")
            + "</p>"
            + "".join(
                f"<p><b>{escape(ch.parameter)}</b>: {_diff_html(ch.old_value, ch.new_value)}</p>"
                for ch in c.changes
            )
            + "</div>"
            for c in s.candidates
        )
        errors = "".join(f"<li>{escape(e)}</li>" for e in s.errors)
        parts.append(
            f"<div class='step' id='step-{s.step}'><p><b>Step {s.step}</b> "
            f"<span class='badge {escape(s.decision)}'>{escape(s.decision)}</span> "
            f"{escape(s.reason)} · val {_fmt(s.val_score)} · best {_fmt(s.best_score)} · "
            f"{s.calls} calls · {s.tokens} tokens · ${s.cost_usd:.4f} · batch "
            f"{escape(str(s.batch))}</p>{candidates}"
            + (f"<ul class='errors'>{errors}</ul>" if errors else "")
            + "</div>"
        )
    return "".join(parts) or "<p>No steps yet.</p>"


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
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<title>textgraph report · {escape(str(run_dir))}</title><style>{CSS}</style></head>
<body><header><h1>textgraph run: {escape(str(run_dir))}</h1>
<p>{escape(str(config.get("module")))} · batch {escape(str(config.get("batch_size")))} ·
gate {escape(str(config.get("gate")))} · {len(steps)} steps</p><p>{headline}</p></header>
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
<section><h2>Steps</h2>{_timeline(steps)}</section>
<section><h2>Parameter versions</h2>{_versions(config, steps)}</section>
</main>
<script type="application/json" id="report-data">{_json_for_script(data)}</script>
<script>{SCRIPT}</script>
</body></html>
"""


def write_report(run_dir: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    return atomic_write_text(out, build_report(run_dir))
