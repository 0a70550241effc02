"""The lineage of candidates: a tree in the HTML report and in `textgraph show --lineage`."""

from __future__ import annotations

import io
from html import escape
from html.parser import HTMLParser

import pytest
from rich.console import Console

import textgraph as tg
from tests.test_search_loop import trainer
from textgraph.candidate import values_id
from textgraph.cli import main
from textgraph.report.html import build_report, lineage_html
from textgraph.report.lineage import build_lineage, lineage, walk
from textgraph.report.terminal import lineage_tree
from textgraph.runs import CandidateRecord, RunDir, StepRecord

A_VALUE = "NONE <script>alert(1)</script>"
A_ORIGIN = "try [bold]A[/bold] <script>x</script>"
A_CRITIQUE = "too <b>vague</b> [bold]"


class Branching(tg.optim.Optimizer):
    """Chooses its parents: a child of a rejected candidate, a two-parent merge, an orphan.

    step 1: A (scores 0: rejected) and a too long value (filtered)
    step 2: C, a child of the rejected A (ties the initial 0.5: accepted)
    step 3: M = merge of C and A (1.0: accepted), O with an unknown parent (not selected),
            and the incumbent again (unchanged)
    step 4: N twice (rejected, then duplicate)
    """

    def __init__(self):
        self.made: dict[str, tg.Candidate] = {}

    async def propose(self, ctx):
        made = self.made
        if ctx.step == 1:
            made["A"] = ctx.current.with_values(
                {"system": A_VALUE}, origin=A_ORIGIN, details={"critique": A_CRITIQUE}
            )
            made["L"] = ctx.current.with_values({"system": "y" * 50}, origin="too long")
            return [made["A"], made["L"]]
        if ctx.step == 2:
            made["C"] = made["A"].with_values({"system": "EVEN c"}, origin="child of A")
            return [made["C"]]
        if ctx.step == 3:
            made["M"] = tg.Candidate(
                {"system": "GOOD merge"},
                parents=(made["C"].id, made["A"].id),
                origin="merge of C and A",
            )
            made["O"] = tg.Candidate(
                {"system": "EVEN orphan"}, parents=("feedface0000",), origin="orphan"
            )
            return [made["M"], made["O"], ctx.current.with_values({}, origin="same again")]
        if ctx.step == 4:
            made["N"] = ctx.current.with_values({"system": "NONE again"}, origin="worse")
            return [made["N"], made["N"]]
        return []


@pytest.fixture(scope="module")
def branching(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("lineage") / "run"
    optimizer = Branching()
    # measured latency would make the Pareto front depend on the machine's load: leave it out
    objectives = ["score", "cost", "prompt_tokens"]
    trainer(optimizer, run_dir, max_chars=40, max_steps=4, objectives=objectives).fit()
    ids = {k: c.id for k, c in optimizer.made.items()}
    ids["I"] = RunDir(run_dir).read_steps()[0].candidates[0].parents[0]
    return run_dir, ids


def _shape(nodes) -> list[tuple[int, str]]:
    return [(depth, node.id) for depth, node in walk(nodes)]


def test_the_tree_follows_the_chosen_parents(branching):
    run_dir, ids = branching
    run = RunDir(run_dir)
    config = run.read_config()
    assert ids["I"] == values_id(config["initial_parameters"])  # the initial candidate
    roots = lineage(run_dir)
    assert _shape(roots) == [
        (0, ids["I"]),
        (1, ids["A"]),  # rejected, yet a parent
        (2, ids["C"]),  # its child, accepted
        (3, ids["M"]),  # the merge, under its first parent
        (4, ids["N"]),
        (1, ids["L"]),  # filtered: a leaf, after A (same step, proposed later)
        (0, ids["O"]),  # its parent is unknown: a root of its own
    ]
    nodes = {node.id: node for _, node in walk(roots)}
    status = {k: nodes[i].status for k, i in ids.items()}
    assert status == {
        "I": "initial",
        "A": "rejected",
        "L": "filtered",
        "C": "accepted",  # also proposed again at step 3 (unchanged): its best status
        "M": "accepted",
        "O": "not selected",
        "N": "rejected",  # and a duplicate in the same step
    }
    assert [(p.step, p.status) for p in nodes[ids["C"]].proposals] == [
        (2, "accepted"),
        (3, "unchanged"),
    ]
    assert [p.status for p in nodes[ids["N"]].proposals] == ["rejected", "duplicate"]
    merge = nodes[ids["M"]]
    assert merge.parents == [ids["C"], ids["A"]] and merge.is_merge
    assert merge.merge_label == f"merge of {ids['C']} + {ids['A']}"
    assert nodes[ids["L"]].dropped and not nodes[ids["A"]].dropped and not nodes[ids["L"]].children
    assert "feedface0000" in nodes[ids["O"]].note and not nodes[ids["I"]].note
    # scores, the front and the selection come from the records
    assert nodes[ids["I"]].val_score == config["initial_val_score"] == 0.5
    assert (nodes[ids["A"]].val_score, nodes[ids["M"]].val_score) == (0.0, 1.0)
    assert nodes[ids["L"]].val_score is None
    summary = run.read_summary()
    assert summary.selected == ids["M"]
    assert [i for i, n in nodes.items() if n.selected] == [ids["M"]]
    front = {e.candidate_id for e in summary.pareto}
    assert ids["M"] in front
    assert {i for i, n in nodes.items() if n.on_front} == front & set(nodes)
    # what it changed from its first parent, and why it was proposed
    assert merge.changed == ["system"] and merge.new_values == {"system": "GOOD merge"}
    assert nodes[ids["A"]].why == f"critique: {A_CRITIQUE}"
    assert nodes[ids["N"]].why.startswith("rejected: val 1.000 -> 0.000")
    assert nodes[ids["L"]].why == "system: rejected: 50 chars > max_chars 40"


class _Items(HTMLParser):
    """(depth, id) of every <li> of the lineage, as nested in the markup."""

    def __init__(self):
        super().__init__()
        self.depth = -1
        self.items: list[tuple[int, str]] = []
        self.titles: dict[str, str] = {}

    def handle_starttag(self, tag, attrs):
        if tag == "ul":
            self.depth += 1
        if tag == "li" and dict(attrs).get("id"):
            found = dict(attrs)
            cid = found["id"].removeprefix("lineage-")
            self.items.append((self.depth, cid))
            self.titles[cid] = found.get("title", "")

    def handle_endtag(self, tag):
        if tag == "ul":
            self.depth -= 1


def test_the_report_has_a_lineage_section_with_escaped_text(branching):
    run_dir, ids = branching
    html = build_report(run_dir)
    assert html.index('<section id="pareto">') < html.index('<section id="lineage">')
    start = html.index('<section id="lineage">')
    section = html[start : html.index("</section>", start)]
    parser = _Items()
    parser.feed(section)
    assert parser.items == _shape(lineage(run_dir))
    assert parser.depth == -1  # every list closed
    # model and optimizer text is escaped, in the markup and in the tooltips
    assert "<script>" not in section and "<b>" not in section
    assert escape(A_ORIGIN) in section
    assert escape(f"critique: {A_CRITIQUE}") in section
    assert escape(f"system: {A_VALUE}") in section
    assert parser.titles[ids["A"]] == f"critique: {A_CRITIQUE}\nsystem: {A_VALUE}"
    assert html.count("<script") == 2  # the report's own JSON block and script

    def item(cid: str) -> str:
        at = section.index(f"id='lineage-{cid}'")
        return section[section.rindex("<li", 0, at) : section.index("</span></span>", at)]

    merge = item(ids["M"])
    assert "<span class='badge accepted'>accepted</span>" in merge
    assert "★ front" in merge and "<span class='mark sel'>selected</span>" in merge
    assert f"merge of {ids['C']} + {ids['A']}" in merge and "val 1.000" in merge
    assert "<a href='#step-3'>step 3</a>" in merge and "changed system" in merge
    assert "<span class='badge rejected'>rejected</span>" in item(ids["A"])
    assert "selected" not in item(ids["A"]) and "★ front" not in item(ids["A"])
    assert "class='ln st-filtered dropped'" in item(ids["L"])
    assert "again at step 3 (unchanged)" in item(ids["C"])
    assert "feedface0000 is not in the run&#x27;s records" in item(ids["O"])
    assert "<span class='badge initial'>initial</span>" in item(ids["I"])


def test_show_lineage_prints_the_tree_in_order_without_markup(branching, capsys, monkeypatch):
    run_dir, ids = branching
    monkeypatch.setenv("COLUMNS", "250")
    assert main(["show", str(run_dir), "--lineage"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    order = ["I", "A", "C", "M", "N", "L", "O"]
    at = [next(i for i, line in enumerate(lines) if ids[k] + " " in line) for k in order]
    assert at == sorted(at) and len(set(at)) == len(at)  # one line each, in tree order
    line = {k: lines[i] for k, i in zip(order, at, strict=True)}
    assert "[bold]A[/bold]" in line["A"] and A_ORIGIN in line["A"]  # literal, not markup
    assert "rejected" in line["A"] and "val 0.000" in line["A"]
    assert "★ front" in line["M"] and "◆ selected" in line["M"] and "val 1.000" in line["M"]
    assert f"merge of {ids['C']} + {ids['A']}" in line["M"]
    assert "selected" not in line["C"] and "filtered" in line["L"]
    assert "feedface0000" in line["O"]
    # the tree's indentation: M is two levels deeper than A, O is a root like the initial
    indent = {k: len(v) - len(v.lstrip("│├└─ ")) for k, v in line.items()}
    assert indent["I"] == indent["O"] < indent["A"] < indent["C"] < indent["M"] < indent["N"]
    assert indent["L"] == indent["A"]
    assert "Steps" not in out  # the tree instead of the steps table


def _step(step: int, *candidates: CandidateRecord, current: str | None = None) -> StepRecord:
    return StepRecord(
        step=step,
        batch=[0],
        candidates=list(candidates),
        current=current,
        decision="rejected",
        reason="",
    )


def test_unknown_parents_loops_and_details_without_a_run():
    def record(cid, parents, status="rejected", **more):
        return CandidateRecord(id=cid, parents=parents, status=status, **more)

    steps = [
        _step(
            1,
            record("b", ["a"], "not selected", val_score=0.2),
            record("x", ["y"], details={"trajectory": [0.25, None, {"score": 0.75}]}),
            record("y", ["x"], "filtered", reason="too long"),
            record("c", ["a"], "accepted", val_score=0.9, reason="accepted: val 0.5 -> 0.9"),
        ),
        _step(2, record("b", ["c"], "rejected", val_score=0.3), record("", [], "proposed")),
    ]
    roots = build_lineage(steps, initial_id="a")
    assert _shape(roots) == [(0, "a"), (1, "b"), (1, "c"), (0, "x"), (1, "y")]
    nodes = {n.id: n for _, n in walk(roots)}
    # proposed twice: its best status, with that status's score; its first parent stays
    assert (nodes["b"].status, nodes["b"].val_score, nodes["b"].parents) == ("rejected", 0.3, ["a"])
    assert "loops back" in nodes["x"].note and not nodes["y"].note
    assert nodes["x"].why == "trajectory of 3 earlier values (scores 0.25-0.75)"
    assert nodes["c"].why == "accepted: val 0.5 -> 0.9" and nodes["y"].dropped
    # without the initial candidate's id, its children are roots that say so
    orphans = build_lineage(steps[:1])
    assert [n.id for n in orphans] == ["b", "x", "c"]
    assert orphans[0].note == "parent a is not in the run's records"


def test_big_subtrees_fold_and_long_chains_need_no_recursion():
    def record(cid, parent, status="not selected"):
        return CandidateRecord(id=cid, parents=[parent], status=status)

    wide = [_step(1, record("p", "a"), record("q", "a"))]
    wide += [_step(2, *(record(f"{p}{i}", p) for p in "pq" for i in range(7)))]
    html = lineage_html(build_lineage(wide, initial_id="a"))
    assert html.count("<details open>") == 1  # the root: 2 children, 16 descendants
    assert "<summary>16 descendants</summary>" in html
    parser = _Items()
    parser.feed(html)
    assert parser.items == _shape(build_lineage(wide, initial_id="a"))
    assert parser.depth == -1
    # a chain of accepted candidates as long as the run, deeper than Python's recursion limit
    chain = [
        _step(i, record(f"c{i}", f"c{i - 1}" if i > 1 else "a", "accepted"), current=f"c{i}")
        for i in range(1, 1500)
    ]
    roots = build_lineage(chain, initial_id="a")
    depths = [d for d, _ in walk(roots)]
    assert depths == list(range(1500))
    html = lineage_html(roots)  # 30 levels per list, then "continued from"
    assert html.count("<li class='ln") == 1500 and html.count("continued from") == 49
    assert "id='lineage-from-c29'>continued from <a href='#lineage-c29'>" in html
    assert "<a href='#lineage-from-c29'>… 1470 more: continued below</a>" in html
    parser = _Items()
    parser.feed(html)
    assert parser.depth == -1 and max(d for d, _ in parser.items) == 29
    buffer = io.StringIO()
    Console(file=buffer, width=100).print(lineage_tree(roots))  # 8 levels per tree
    text = buffer.getvalue()
    assert "c1499 accepted · step 1499 · val —" in text
    assert "… 1492 more: continued from c7 below" in text and "\ncontinued from c7\n" in text
