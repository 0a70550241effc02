"""Code written for TextGrad runs (or fails saying what to write instead)."""

from __future__ import annotations

import pytest

import textgraph as tg
from tests.conftest import by_purpose
from textgraph.engines import ChatRequest, ScriptedEngine, context
from textgraph.engines.registry import textgraph_spelling

pytestmark = pytest.mark.usefixtures("fresh_engine_defaults")


def test_textgrad_names_are_the_textgraph_classes():
    assert tg.BlackboxLLM is tg.LLMCall
    assert tg.TextualGradientDescent is tg.TGD


@pytest.mark.parametrize(
    ("bare", "spelled"),
    [
        ("gpt-4o", "openai/gpt-4o"),
        ("gpt-3.5-turbo", "openai/gpt-3.5-turbo"),
        ("o1-mini", "openai/o1-mini"),
        ("o1", "openai/o1"),
        ("o3-2025-04-16", "openai/o3-2025-04-16"),
        ("o4-mini", "openai/o4-mini"),
        ("claude-3-5-sonnet-20240620", "anthropic/claude-3-5-sonnet-20240620"),
        ("ollama-llama3", "ollama/llama3"),
    ],
)
def test_textgrad_bare_model_names_map_to_textgraph_spelling(bare, spelled, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0000")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-0000")
    assert textgraph_spelling(bare) == spelled
    with pytest.warns(UserWarning, match=f"textgraph's is '{spelled}'"):
        engine = tg.get_engine(bare)
    assert engine.model_name == spelled.partition("/")[2]


def test_unknown_bare_names_and_textgraph_strings_are_not_rewritten():
    assert textgraph_spelling("openai/gpt-4o") is None
    assert textgraph_spelling("local/smollm2") is None
    assert textgraph_spelling("scripted") is None
    assert textgraph_spelling("ollama-") is None
    # o1/o3/o4 only as a whole first word: these are not OpenAI reasoning models
    for name in ("o10", "o3d-local", "o4all", "o1mini", "o2-mini", "foo1", "xgpt-4o"):
        assert textgraph_spelling(name) is None, name
    with pytest.raises(tg.ConfigurationError, match="unknown model string 'mistral-7b'"):
        tg.get_engine("mistral-7b")


def test_generate_sync_accepts_plain_text_and_a_system_prompt():
    engine = ScriptedEngine(lambda r: f"{len(r.messages)} messages: {r.messages[-1].content}")
    assert engine.generate_sync("Hello").text == "1 messages: Hello"
    reply = engine.generate_sync("Hello", system_prompt="Be brief.")
    assert reply.text == "2 messages: Hello"
    assert engine.calls[-1].request.messages[0].content == "Be brief."
    with pytest.raises(tg.ArgumentError, match="ChatRequest or a str"):
        engine.generate_sync(42)


def test_textgrads_engine_calls_read_as_text_or_fail_at_the_call():
    engine = ScriptedEngine(lambda r: f"{len(r.messages)} messages: {r.messages[-1].content}")
    assert engine("Hello") == "1 messages: Hello"  # TextGrad's engine(prompt) returns a str
    assert engine("Hello", system_prompt="Be brief.") == "2 messages: Hello"
    managed = tg.get_engine("scripted", responder=lambda r: "ok")
    assert managed("Hi") == "ok"
    # TextGrad's engine.generate("text") returns a str; here it fails at the call, not as an
    # un-awaited coroutine that does nothing
    with pytest.raises(tg.ArgumentError, match=r"generate_sync\(text\)\.text"):
        engine.generate("Hello")
    with pytest.raises(tg.ArgumentError, match="takes a str"):
        engine(ChatRequest.from_prompts(None, "Hello"))
    assert len(engine.calls) == 2


def test_textgrad_solution_optimization_flow_runs_unchanged():
    """TextGrad's README: improve one answer in place with a TextLoss and TGD."""
    engine = ScriptedEngine(
        by_purpose(
            forward="The answer is 4 legs.",
            loss="Wrong: spiders have 8 legs.",
            optimizer="A spider has 8 legs.",
        )
    )
    tg.set_backward_engine(engine, override=True)
    question = tg.Variable(
        "How many legs has a spider?", role_description="question to the LLM", requires_grad=False
    )
    model = tg.BlackboxLLM(engine)
    answer = model(question)
    answer.set_role_description("concise and accurate answer to the question")
    assert not answer.requires_grad
    optimizer = tg.TextualGradientDescent(parameters=[answer])
    assert answer.requires_grad  # handed to an optimizer: a parameter
    loss = tg.TextLoss("Evaluate the answer; be concise and critical.")(answer)
    loss.backward()
    optimizer.step()
    assert answer.get_value() == "A spider has 8 legs."
    assert "concise and accurate answer" in engine.calls_for("optimizer")[0].request.prompt_text()
    assert [g.text for g in answer.gradients] == ["Wrong: spiders have 8 legs."]


def test_assigning_a_set_to_gradients_says_to_use_zero_grad():
    v = tg.Variable("x", role_description="r", requires_grad=True)
    with pytest.raises(tg.ArgumentError, match=r"x.zero_grad\(\)"):
        v.gradients = set()
    v.gradients = []  # a list is still fine


def test_format_string_and_gradient_memory_say_what_to_write_instead():
    engine = ScriptedEngine(lambda r: "x")
    with pytest.raises(tg.ArgumentError, match=r"no format_string=.*template="):
        tg.FormattedLLMCall(engine, format_string="Q: {q}", fields={"q": None})
    p = tg.Variable("x", role_description="p", requires_grad=True)
    with pytest.raises(tg.ArgumentError, match=r"no gradient_memory=.*momentum=N"):
        tg.TGD([p], engine=engine, gradient_memory=3)
    with pytest.raises(tg.ArgumentError, match=r"unexpected keyword argument\(s\) \['colour'\]"):
        tg.TGD([p], engine=engine, colour="red")
    with pytest.raises(tg.ArgumentError, match="fields="):
        tg.FormattedLLMCall(engine, "Q: {q}")
    ok = tg.FormattedLLMCall(engine, "Q: {q}", ["q"])
    assert ok(q=tg.Variable("1+1", role_description="question")).value == "x"


def test_formatted_llm_call_takes_textgrads_fields_dict_and_call_form():
    # TextGrad: FormattedLLMCall(engine, format_string, fields={name: None}, system_prompt) and
    # call(inputs={...}, response_role_description=...); only format_string= is spelled template=
    engine = ScriptedEngine(lambda r: "correct")
    system = tg.Variable("Judge the answer.", role_description="judge prompt", requires_grad=True)
    judge = tg.FormattedLLMCall(
        engine,
        template="Question: {question}\nAnswer: {answer}",
        fields={"question": None, "answer": {}},
        system_prompt=system,
    )
    question = tg.Variable("What is 2+2?", role_description="question")
    answer = tg.Variable("4", role_description="answer", requires_grad=True)
    verdict = judge(
        inputs={"question": question, "answer": answer},
        response_role_description="evaluation of the answer",
    )
    assert verdict.value == "correct" and verdict.role_description == "evaluation of the answer"
    assert engine.calls[-1].request.messages[-1].content == "Question: What is 2+2?\nAnswer: 4"
    assert verdict.predecessors == (system, question, answer)
    again = judge(question=question, answer=answer)  # the textgraph form, unchanged
    assert again.role_description == "response from the language model"
    with pytest.raises(tg.ArgumentError, match=r"missing \['answer'\]"):
        judge(inputs={"question": question})
    with pytest.raises(tg.ArgumentError, match=r"\['question'\] both in inputs= and as keywords"):
        judge(inputs={"question": question, "answer": answer}, question=question)
    with pytest.raises(tg.ArgumentError, match=r"inputs= .* must be a dict"):
        judge(inputs=[question, answer])
    with pytest.raises(tg.ArgumentError, match="response_role_description= must be a non-empty"):
        judge(question=question, answer=answer, response_role_description="")
    # a template whose own field is called {inputs} keeps it as a field
    own = tg.FormattedLLMCall(engine, "Use {inputs}", ["inputs"])
    assert own(inputs=question).predecessors == (question,)
    # TextGrad's LLMCall takes response_role_description= too
    answered = tg.BlackboxLLM(engine)(question, response_role_description="answer to the question")
    assert answered.role_description == "answer to the question"
    assert tg.LLMCall(engine)(question).role_description == "response from the language model"
    with pytest.raises(tg.ArgumentError, match="LLMCall response_role_description= must be"):
        tg.LLMCall(engine)(question, response_role_description=3)


def test_set_backward_engine_accepts_a_model_string(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0000")
    with pytest.warns(UserWarning, match="openai/gpt-4o"):
        tg.set_backward_engine("gpt-4o", override=True)
    assert context.configured("backward_engine") is context.check_engine("openai/gpt-4o", "x")
    with pytest.raises(tg.ArgumentError, match="engine or a model string"):
        tg.set_backward_engine(None)


def test_textgrad_accessors_read_and_write_the_variable():
    v = tg.Variable("old", role_description="r")
    v.set_value("new")
    assert v.get_value() == v.value == "new"
    v.set_role_description("a better role")
    assert v.get_role_description() == "a better role"
    with pytest.raises(tg.ArgumentError, match="non-empty"):
        v.set_role_description("  ")
    with pytest.raises(tg.ArgumentError, match="must be a str"):
        v.set_value(3)
