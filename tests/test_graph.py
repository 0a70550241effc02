"""Graph view, cycle detection and exports."""

from __future__ import annotations

import json

import networkx as nx
import pytest

import textgraph as tg


def build(engine):
    system = tg.Variable(
        'Say "hi" <b>now</b>', role_description="system prompt", requires_grad=True
    )
    question = tg.Variable("q", role_description="question")
    answer = tg.LLMCall(engine, system)(question)
    loss = tg.TextLoss("Judge.", engine=engine)(answer)
    return system, question, answer, loss


def test_graph_has_ancestry_with_kinds_and_ops(engine):
    system, question, answer, loss = build(engine)
    g = tg.graph(loss)
    assert isinstance(g, nx.DiGraph)
    assert set(g.nodes) == {system.id, question.id, answer.id, loss.id, loss.predecessors[0].id}
    assert g.nodes[system.id]["kind"] == "parameter"
    assert g.nodes[question.id]["kind"] == "input"
    assert g.nodes[answer.id]["kind"] == "llm_output"
    assert g.nodes[loss.id]["kind"] == "loss"
    assert g.edges[system.id, answer.id]["op"] == "llm_call"
    assert tg.ancestry(loss)[-1] is loss


def test_cycle_raises_graph_error_naming_the_variables(engine):
    a = tg.Variable("a", role_description="first", requires_grad=True)
    b = tg.concat([a])
    a._predecessors = (b,)  # only reachable by reaching into internals
    with pytest.raises(tg.GraphError, match="cycle"):
        tg.graph(b)
    cyclic = nx.DiGraph([("x", "y"), ("y", "x")])
    with pytest.raises(tg.GraphError, match="cycle"):
        tg.to_mermaid(cyclic)


def test_deep_chain_has_no_recursion_limit():
    v = tg.Variable("start", role_description="text", requires_grad=True)
    for _ in range(5000):
        v = tg.concat([v])
    assert len(tg.ancestry(v)) == 5001


def test_exports_escape_text_and_can_include_gradients(engine):
    system, _, _, loss = build(engine)
    loss.backward()
    doc = json.loads(tg.to_json(loss, with_gradients=True))
    edge = next(e for e in doc["edges"] if e["source"] == system.id)
    assert edge["critiques"] == [system.gradients[0].text]
    assert "critiques" not in json.loads(tg.to_json(loss))["edges"][0]

    mermaid = tg.to_mermaid(loss, with_gradients=True)
    assert mermaid.startswith("flowchart TD")
    assert "#quot;hi#quot; #lt;b#gt;" in mermaid and '"hi"' not in mermaid
    assert "step-by-step" in mermaid  # the critique on the system-prompt edge

    dot = tg.to_dot(loss)
    assert 'Say \\"hi\\" <b>now</b>' in dot
    assert dot.count(" -> ") == 4  # instruction, system, question, answer
