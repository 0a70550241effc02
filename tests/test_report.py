"""Inspection: terminal tree, notebook reprs, the HTML report (content, escaping, browser)."""

from __future__ import annotations

import io
import json
import re
import shutil
from html import escape

import pytest
from rich.console import Console

import textgraph as tg
from tests.trainer_task import answer, make_trainer
from textgraph.engines import ScriptedEngine
from textgraph.report.html import build_report
from textgraph.report.svg import ScatterPoint, scatter_plot
from textgraph.runs import RunDir

EVIL_VALUE = 'GOOD <script>alert("value")</script> </textarea> " onmouseover="x'
EVIL_CRITIQUE = 'Prompt is weak <script>alert("critique")</script> </textarea> \' " &amp;'


def evil_engine() -> ScriptedEngine:
    def respond(request):
        if request.purpose in ("forward", "validation"):
            return answer(request.messages[0].content, request.messages[-1].content)
        if request.purpose == "loss":
            return "Wrong <b>answer</b>."
        if request.purpose == "backward":
            return EVIL_CRITIQUE
        return EVIL_VALUE

    return ScriptedEngine(respond)


@pytest.fixture
def evil_run(tmp_path):
    run_dir = tmp_path / "run"
    make_trainer(run_dir, engine=evil_engine(), max_steps=2).fit()
    return run_dir


def test_report_has_every_version_and_decision(evil_run):
    html = build_report(evil_run)
    steps = RunDir(evil_run).read_steps()
    assert [s.decision for s in steps] == ["accepted", "unchanged"]
    for s in steps:
        assert f"id='step-{s.step}'" in html and s.reason.replace(">", "&gt;") in html
    assert html.count("<svg") >= 5  # charts and the step graph
    assert "EVEN start" in html  # the initial version
    assert "GOOD &lt;script&gt;alert(&quot;value&quot;)&lt;/script&gt;" in html  # step 1's
    offline = html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # a namespace, not a fetch
    assert "http://" not in offline and "https://" not in offline and " src=" not in offline


def test_user_and_model_text_stay_inert(evil_run):
    html = build_report(evil_run)
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts == ['<script type="application/json" id="report-data">', "<script>"]
    assert "</textarea>" not in html
    assert 'onmouseover="x' not in html
    data = re.search(r'id="report-data">(.*?)</script>', html, re.S).group(1)
    assert "<" not in data and ">" not in data  # JSON cannot close its element


def test_terminal_tree_and_notebook_reprs(capsys):
    engine = evil_engine()
    system = tg.Variable("EVEN start", role_description="system prompt", requires_grad=True)
    out = tg.LLMCall(engine, system)(tg.Variable("What is 3?", role_description="question"))
    loss = tg.TextLoss("Judge.", engine=engine)(out)
    loss.backward()
    buffer = io.StringIO()
    tg.show(loss, console=Console(file=buffer, width=200))
    text = buffer.getvalue()
    assert "system prompt [parameter]" in text and "Prompt is weak" in text
    assert "critique via llm_call" in text and "= 1 critique(s)" in text
    html = system._repr_html_()
    assert "&lt;script&gt;" in html and "<script>" not in html
    svg = tg.graph(loss)._repr_html_()
    assert svg.startswith("<svg") and svg.count('class="node') == 5


def _chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return None
    return path


@pytest.mark.browser
@pytest.mark.skipif(_chromium() is None, reason="needs Debian's chromium and playwright")
def test_report_in_a_real_browser(evil_run, tmp_path):
    from playwright.sync_api import sync_playwright

    report = tmp_path / "report.html"
    tg.report.html.write_report(evil_run, report)
    graph = RunDir(evil_run).read_graph(1)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=_chromium(),
            # headless, with a fresh temporary profile (Playwright's default per launch)
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors, dialogs = [], []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(report.as_uri())
            page.select_option("#step-select", "1")
            visible = page.locator(".graph-view:not([hidden]) .node")
            assert visible.count() == len(graph["nodes"])
            page.click(".graph-view:not([hidden]) .node.kind-parameter")
            details = page.text_content("#details")
            param = next(n for n in graph["nodes"] if n["kind"] == "parameter")
            assert param["gradients"]  # the failing examples of the batch sent critiques
            assert f"Critiques received ({len(param['gradients'])})" in details
            assert EVIL_CRITIQUE in details  # shown as text, not run
            page.click(".graph-view:not([hidden]) .node.kind-loss >> nth=0")
            assert "Wrong <b>answer</b>." in page.text_content("#details")
            selected = RunDir(evil_run).read_summary().selected
            marked = page.locator(f'#pareto .point.selected[data-id="{selected}"]')
            assert marked.count() == 3 and marked.first.is_visible()  # one per plot
            inline = page.locator("#step-1 details.critiques[open] pre.critique").first
            assert inline.is_visible() and inline.text_content() == EVIL_CRITIQUE
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
            assert errors == [] and dialogs == []
        finally:
            browser.close()
    assert (tmp_path / "report.png").stat().st_size > 10_000


# --- candidates, inline critiques and the Pareto front -------------------------------------


def _section(html: str, start: str, end: str) -> str:
    """The markup from `start` up to (not including) the next `end`."""
    at = html.index(start)
    stop = html.find(end, at + len(start))
    return html[at : stop if stop != -1 else len(html)]


def _scatter_plots(html: str) -> dict[str, str]:
    pareto = _section(html, '<section id="pareto">', "</section>")
    plots = re.findall(r'<svg[^>]*class="chart scatter".*?</svg>', pareto, re.S)
    return {re.search(r'aria-label="score against ([^"]+)"', p).group(1): p for p in plots}


def _points(svg: str) -> list[tuple[str, str]]:
    """(classes, candidate id) of every point in a scatter plot."""
    return re.findall(r'<g class="point ([a-z ]+)" data-id="([^"]+)">', svg)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("toy") / "run"
    make_trainer(run_dir).fit()
    return run_dir


def test_pareto_plots_mark_the_selected_candidate(toy_run):
    html = build_report(toy_run)
    run = RunDir(toy_run)
    summary = run.read_summary()
    pool = run.latest_checkpoint()[0].trainer.pool
    assert summary.selected and summary.pareto and len(pool) == 3  # initial, steps 1 and 2
    plots = _scatter_plots(html)
    assert set(plots) == {"cost", "latency", "prompt_tokens"}  # one per non-score objective
    front = {e.candidate_id for e in summary.pareto}
    for name, svg in plots.items():
        points = _points(svg)
        assert sorted(i for _, i in points) == sorted(e.candidate_id for e in pool), name
        assert [i for cls, i in points if "selected" in cls.split()] == [summary.selected]
        for cls, i in points:
            assert ("front" in cls.split()) == (i in front), (name, i)
            assert ("dominated" in cls.split()) == (i not in front), (name, i)
        assert f"selected {summary.selected}</text>" in svg  # the label beside its mark
        assert 'class="tick"' in svg and 'class="axis-label"' in svg
        assert "nan" not in svg and "inf" not in svg
        entry = next(e for e in pool if e.candidate_id == summary.selected)
        tooltip = re.search(
            rf'data-id="{summary.selected}">.*?<title>(.*?)</title>', svg, re.S
        ).group(1)
        assert f"{entry.candidate_id} · step {entry.step} · {entry.origin}" in tooltip
        assert f"score: {entry.objectives['score']:.3f}" in tooltip
    assert "cost (USD per example, lower is better)" in plots["cost"]
    # every cost is 0 here: one tick at the value, points in the middle, no division by zero
    assert re.findall(r'class="tick"[^>]*>([^<]*)<', plots["cost"])[0] == "0"


def test_timeline_shows_the_critiques_beside_the_accepted_rewrite(toy_run):
    html = build_report(toy_run)
    steps = RunDir(toy_run).read_steps()
    accepted = next(s for s in steps if s.decision == "accepted")
    block = _section(html, f"<div class='step' id='step-{accepted.step}'>", "<div class='step'")
    candidate = next(c for c in accepted.candidates if c.status == "accepted")
    card = _section(block, f"<code class='cid'>{candidate.id}</code>", "<div class='candidate")
    assert "<span class='badge accepted'>accepted</span>" in card
    assert "<del>EVEN start</del> <ins>GOOD prompt</ins>" in card  # the word diff ...
    change = _section(card, "<div class='change with-critiques'>", "</details>")
    assert "<details class='critiques' open>" in change  # ... and, beside it, open:
    grads = accepted.gradients["system"]
    assert grads and f"critiques of system: {len(grads)} critique" in change
    for g in grads:
        assert f"example {g.example} (score 0)" in change
        assert escape(g.text) in change and escape(g.source_role) in change
    assert "score 1.000" in card and "prompt_tokens" in card  # objectives, compactly
    rejected = next(s for s in steps if s.decision == "rejected")
    block = _section(html, f"<div class='step' id='step-{rejected.step}'>", "<div class='step'")
    assert "<span class='badge rejected'>rejected</span>" in block
    assert escape(rejected.gradients["system"][0].text) in block


def test_inline_critiques_and_notes_stay_escaped(evil_run):
    html = build_report(evil_run)
    block = _section(html, "<div class='step' id='step-1'>", "<div class='step'")
    assert "<details class='critiques' open>" in block
    assert escape(EVIL_CRITIQUE) in block  # the critique beside the rewrite, as text
    assert "<ins>GOOD &lt;script&gt;" in block


def test_pareto_edge_cases(toy_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(toy_run, run_dir)
    run = RunDir(run_dir)
    summary = run.read_summary()
    # a candidate without a latency is left out of that plot only
    path = sorted(run.checkpoints.glob("step-*.json"))[-1]
    checkpoint = json.loads(path.read_text())
    missing = checkpoint["trainer"]["pool"][0]
    missing["objectives"]["latency"] = None
    path.write_text(json.dumps(checkpoint))
    plots = _scatter_plots(build_report(run_dir))
    assert missing["candidate_id"] not in [i for _, i in _points(plots["latency"])]
    assert missing["candidate_id"] in [i for _, i in _points(plots["cost"])]
    # a run in progress: no summary; the incumbent of the last step is marked
    run.summary.unlink()
    html = build_report(run_dir)
    current = run.read_steps()[-1].current
    for svg in _scatter_plots(html).values():
        assert [i for cls, i in _points(svg) if "selected" in cls.split()] == [current]
    assert "the run has not finished" in html
    # no checkpoint: the candidates the steps recorded are plotted
    shutil.rmtree(run.checkpoints)
    run.summary.write_text(summary.model_dump_json())
    plots = _scatter_plots(build_report(run_dir))
    ids = {i for _, i in _points(plots["prompt_tokens"])}
    recorded = {c.id for s in run.read_steps() for c in s.candidates if c.objectives}
    assert recorded <= ids and summary.selected in ids


def test_scatter_plot_of_one_point_and_of_equal_values():
    one = scatter_plot(
        "score against cost",
        [ScatterPoint("a<b", 0.5, 0.5, "a <tooltip>", front=True, selected=True)],
        x_label="cost <usd>",
        y_label="score",
    )
    equal = scatter_plot(
        "t",
        [ScatterPoint(str(i), 2.0, 1.0, str(i)) for i in range(3)],
        x_label="x",
        y_label="y",
    )
    for svg in (one, equal):
        numbers = [float(v) for v in re.findall(r'(?:cx|cy|x|y)="(-?[\d.]+)"', svg)]
        assert numbers and all(0 <= v <= 400 for v in numbers)  # inside the drawing
    assert "a&lt;b" in one and "a &lt;tooltip&gt;" in one and "cost &lt;usd&gt;" in one
    assert "<tooltip>" not in one and "selected a&lt;b</text>" in one
    assert "no candidate has both values" in scatter_plot("t", [], x_label="x", y_label="y")


def test_runs_of_format_version_1_still_render(tmp_path):
    run_dir = tmp_path / "old"
    (run_dir / "checkpoints").mkdir(parents=True)
    config = {
        "format": "textgraph.run",
        "version": 1,
        "module": "Pipeline",
        "parameters": ["system"],
        "initial_parameters": {"system": "EVEN start"},
        "batch_size": 2,
        "gate": "not_worse",
        "initial_val_score": 0.5,
    }
    (run_dir / "config.json").write_text(json.dumps(config))
    critique = "Say <b>GOOD</b> so every number is repeated."
    old_step = {
        "step": 1,
        "batch": [3, 4],
        "errors": [],
        "train_scores": [0.0, 1.0],
        "gradients": {
            "system": [
                {"text": critique, "source_role": "answer", "operation": "llm_call", "example": 3}
            ]
        },
        "reduced": {},
        "candidates": [
            {
                "parameter": "system",
                "old_value": "EVEN start",
                "new_value": "GOOD prompt",
                "status": "proposed",
                "warning": None,
            }
        ],
        "val_score": 1.0,
        "best_score": 1.0,
        "decision": "accepted",
        "reason": "accepted: val 0.500 -> 1.000",
        "calls": 9,
        "tokens": 900,
        "cost_usd": 0.0,
        "seconds": 0.1,
    }
    (run_dir / "steps.jsonl").write_text(json.dumps(old_step) + "\n")
    old_trainer = {"step": 1, "best_score": 1.0, "current_score": 1.0}
    (run_dir / "checkpoints" / "step-0001.json").write_text(
        json.dumps(
            {
                "parameters": {"system": "GOOD prompt"},
                "best_parameters": {"system": "GOOD prompt"},
                "optimizer": {},
                "trainer": old_trainer,
            }
        )
    )
    assert RunDir(run_dir).version() == 1
    html = build_report(run_dir)
    block = _section(html, "<div class='step' id='step-1'>", "</section>")
    assert "<span class='badge accepted'>accepted</span>" in block  # "proposed", and taken
    assert "<del>EVEN start</del> <ins>GOOD prompt</ins>" in block
    assert "<details class='critiques' open>" in block and escape(critique) in block
    assert "example 3 (score 0)" in block
    assert "<td>step 1</td><td><pre>GOOD prompt</pre>" in html  # parameter versions
    assert "nothing to plot" in _section(html, '<section id="pareto">', "</section>")
    assert not _scatter_plots(html)
