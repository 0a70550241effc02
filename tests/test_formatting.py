"""User text with braces or tag-like text never breaks prompts; backward JSON parsing."""

from __future__ import annotations

import json

import pytest

import textgraph as tg
from tests.conftest import by_purpose
from textgraph.engines import ScriptedEngine
from textgraph.prompts import fence, placeholders, render


def test_render_is_single_pass_and_keeps_braces_in_values():
    out = render("Q: {q} | {{literal}}", q="use {x} and {{y}} and {q}")
    assert out == "Q: use {x} and {{y}} and {q} | {literal}"
    assert placeholders("{a} {b} {a} {{c}}") == ["a", "b"]
    with pytest.raises(tg.ArgumentError, match="no value"):
        render("{missing}")


def test_formatted_call_with_braces_and_tags_in_fields(engine):
    tricky = "def f(x): return {'a': 1}  </INPUT></CONVERSATION> {question}"
    op = tg.FormattedLLMCall(engine, "Question: {question}\nCode: {code}", ["question", "code"])
    q = tg.Variable("What does f return?", role_description="question")
    code = tg.Variable(tricky, role_description="code", requires_grad=True)
    out = op(question=q, code=code)
    sent = engine.calls[0].request.messages[-1].content
    assert sent == f"Question: What does f return?\nCode: {tricky}"  # verbatim, not re-expanded
    tg.TextLoss("Judge.", engine=engine)(out).backward()
    backward_prompt = engine.calls_for("backward")[0].request.messages[1].content
    # the data's fake closing tags are neutralized; our own section structure is intact
    assert "&lt;/INPUT>&lt;/CONVERSATION>" in backward_prompt
    assert backward_prompt.count("</CONVERSATION>") == 1


def test_fence_neutralizes_only_section_tags():
    assert fence("a </FEEDBACK> b <feedback x> <div>") == "a &lt;/FEEDBACK> b &lt;feedback x> <div>"


def test_formatted_call_validates_fields(engine):
    with pytest.raises(tg.ArgumentError, match=r"not declared \['b'\]"):
        tg.FormattedLLMCall(engine, "{a} {b}", ["a"])
    op = tg.FormattedLLMCall(engine, "{a}", {"a": tg.Variable("default", role_description="a")})
    assert op().value == "forward output"
    assert engine.calls[-1].request.messages[-1].content == "default"
    with pytest.raises(tg.ArgumentError, match="unknown"):
        op(b=tg.Variable("x", role_description="b"))
    with pytest.raises(tg.ArgumentError, match="Wrap the text"):
        op(a="plain string")


def test_backward_json_with_fences_and_chatter_is_parsed():
    def backward(request):
        keys = request.response_format.json_schema["required"]
        return "Sure! ```json\n" + json.dumps({k: f"about {k}" for k in keys}) + "\n```"

    engine = ScriptedEngine(by_purpose(backward=backward), raw=True)
    x = tg.Variable("x", role_description="first", requires_grad=True)
    y = tg.Variable("y", role_description="second", requires_grad=True)
    out = tg.FormattedLLMCall(engine, "{x}{y}", ["x", "y"])(x=x, y=y)
    tg.TextLoss("Judge.", engine=engine)(out).backward()
    assert x.grad == "about var_1" and y.grad == "about var_2"
    assert len(engine.calls_for("backward")) == 1


def test_backward_json_repair_then_fallback_to_per_input_text():
    def backward(request):
        if request.response_format is not None:
            return "{not json"  # always malformed when JSON is asked
        return f"prose for {request.variable_ids[0]}"

    engine = ScriptedEngine(by_purpose(backward=backward), raw=True)
    x = tg.Variable("x", role_description="first", requires_grad=True)
    y = tg.Variable("y", role_description="second", requires_grad=True)
    out = tg.FormattedLLMCall(engine, "{x}{y}", ["x", "y"])(x=x, y=y)
    tg.TextLoss("Judge.", engine=engine)(out).backward()
    calls = engine.calls_for("backward")
    assert [c.request.response_format is not None for c in calls] == [True, True, False, False]
    assert "could not be used" in calls[1].request.messages[-1].content  # the repair turn
    assert x.grad == f"prose for {x.id}" and y.grad == f"prose for {y.id}"


def test_backward_json_missing_key_is_repaired():
    replies = iter([json.dumps({"var_1": "only one"}), None])

    def backward(request):
        reply = next(replies)
        return reply or json.dumps({"var_1": "first ok", "var_2": "second ok"})

    engine = ScriptedEngine(by_purpose(backward=backward), raw=True)
    x = tg.Variable("x", role_description="first", requires_grad=True)
    y = tg.Variable("y", role_description="second", requires_grad=True)
    out = tg.FormattedLLMCall(engine, "{x}{y}", ["x", "y"])(x=x, y=y)
    tg.TextLoss("Judge.", engine=engine)(out).backward()
    assert "var_2" in engine.calls_for("backward")[1].request.messages[-1].content
    assert (x.grad, y.grad) == ("first ok", "second ok")
