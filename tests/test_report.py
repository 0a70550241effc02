"""Inspection: terminal tree, notebook reprs, the HTML report (content, escaping, browser)."""

from __future__ import annotations

import io
import re
import shutil

import pytest
from rich.console import Console

import textgraph as tg
from tests.trainer_task import answer, make_trainer
from textgraph.engines import ScriptedEngine
from textgraph.report.html import build_report
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
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
            assert errors == [] and dialogs == []
        finally:
            browser.close()
    assert (tmp_path / "report.png").stat().st_size > 10_000
