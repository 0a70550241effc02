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
    print(out)

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
