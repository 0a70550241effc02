"""TextGrad's own tests and tutorials, ported as a migrating user would port them.

Each test follows one TextGrad test (tests/test_basics.py, test_api.py,
test_engines.py) or tutorial (Primitives, Solution/Prompt/Code optimization
and the evaluation/ scripts), written with the names and idioms
docs/coming-from-textgrad.md gives, and asserts what the original asserts
or what that page documents where textgraph differs. Engines are the
scripted test double or the local OpenAI-compatible test server.
"""

from __future__ import annotations

import re
from collections import Counter

import pytest

import textgraph as tg
from tests.conftest import by_purpose
from textgraph.engines import ScriptedEngine, context
from textgraph.testing import LLMTestServer

pytestmark = pytest.mark.usefixtures("fresh_engine_defaults")


def hello_engine() -> ScriptedEngine:
    """TextGrad's DummyEngine: every call answers the same text."""
    return ScriptedEngine(lambda request: "Hello World")


def echo_engine() -> ScriptedEngine:
    """TextGrad's IdempotentEngine: the reply is the prompt."""
    return ScriptedEngine(lambda request: request.messages[-1].content)


def user_text(call) -> str:
    return call.request.messages[-1].content


# --- tests/test_basics.py ---------------------------------------------------------------


def test_variable_creation_and_role_description_is_required():
    text = tg.Variable("Hello", role_description="A variable")
    assert (text.value, text.role_description, text.requires_grad) == (
        "Hello",
        "A variable",
        False,
    )
    text = tg.Variable("Hello", role_description="A variable", requires_grad=True)
    assert text.requires_grad is True
    # TextGrad raises TypeError; textgraph's ArgumentError is one, and says what to pass
    with pytest.raises(TypeError, match="role_description="):
        tg.Variable("Hello")


def test_optimizer_parameters_are_the_variables_passed_and_gradients_read_back():
    engine = ScriptedEngine(by_purpose(loss="grad"))
    v = tg.Variable("Hello", role_description="A variable")
    optimizer = tg.TextualGradientDescent(parameters=[v], engine=engine)
    assert optimizer.parameters[0] is v and v.requires_grad
    # TextGrad adds a gradient by hand (gradients.add); here backward writes it
    tg.TextLoss("Criticize the text.", engine=engine)(v).backward()
    optimizer.parameters[0].set_value("World")
    assert optimizer.parameters[0].get_value() == "World" == v.value
    assert optimizer.parameters[0].get_gradient_text() == "grad" == v.grad


def test_openai_engine_needs_a_key_then_builds(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(tg.ConfigurationError, match="OPENAI_API_KEY"):
        tg.get_engine("openai/gpt-4o-mini")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fake-0000")
    assert tg.get_engine("openai/gpt-4o-mini").model_name == "gpt-4o-mini"


def test_set_backward_engine_sets_and_overrides_the_backward_engine():
    first, second = hello_engine(), echo_engine()
    tg.set_backward_engine(first, override=False)
    assert context.configured("backward_engine") is first
    tg.set_backward_engine(second, True)
    assert context.configured("backward_engine") is second
    # documented difference: override=False does not raise on a second call, it replaces
    tg.set_backward_engine(first, override=False)
    assert context.configured("backward_engine") is first
    # the configured backward engine is what TextLoss uses when given none, as in TextGrad
    answer = tg.Variable("x", role_description="answer", requires_grad=True)
    assert tg.TextLoss("Judge it.")(answer).value == "Hello World"


def test_get_engine_by_name_with_cache_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fake-0000")
    with pytest.warns(UserWarning, match="'openai/gpt-3.5-turbo-0613'"):
        assert tg.get_engine("gpt-3.5-turbo-0613").model_name == "gpt-3.5-turbo-0613"
    for cache in (True, False, tmp_path / "cache.sqlite"):
        assert tg.get_engine("openai/gpt-4o", cache=cache).model_name == "gpt-4o"
    assert tg.get_engine("openai/gpt-4o", cache=False).cache is None
    with pytest.raises(ValueError, match="unknown model string 'invalid-engine'"):
        tg.get_engine("invalid-engine")  # a ValueError, as TextGrad's test expects
    with pytest.warns(UserWarning, match="engine_name= is TextGrad's keyword"):
        assert tg.get_engine(engine_name="gpt-4o").model_name == "gpt-4o"  # its scripts' form
    with pytest.raises(tg.ArgumentError, match="both a model"):
        tg.get_engine("openai/gpt-4o", engine_name="gpt-4o")
    with pytest.warns(UserWarning, match="'experimental:' prefix"):
        assert tg.get_engine("experimental:openai/gpt-4o").model_name == "gpt-4o"
    with pytest.raises(ValueError, match="cache must be True, False, a path"):
        tg.get_engine("openai/gpt-4o", cache=[1, 2, 3])


def test_main_components_import_and_textgrad_only_names_say_what_to_write():
    from textgraph import BlackboxLLM, TextualGradientDescent, Variable, autograd

    assert BlackboxLLM is tg.LLMCall and TextualGradientDescent is tg.TGD and Variable
    assert autograd.LLMCall is tg.LLMCall and autograd.FormattedLLMCall is tg.FormattedLLMCall
    assert autograd.sum is tg.sum and autograd.StringBasedFunction is tg.StringBasedFunction
    with pytest.raises(AttributeError, match=r"'EngineLM' \(a TextGrad name\).*ScriptedEngine"):
        tg.EngineLM  # noqa: B018
    with pytest.raises(AttributeError, match=r"aggregate.*tg\.sum"):
        tg.aggregate  # noqa: B018
    with pytest.raises(AttributeError, match=r"MultimodalLLMCall.*\[image, question\]"):
        tg.autograd.MultimodalLLMCall  # noqa: B018
    with pytest.raises(AttributeError, match=r"textgraph.datasets"):
        tg.tasks  # noqa: B018
    with pytest.raises(AttributeError, match=r"has no attribute 'no_such_name'$"):
        tg.no_such_name  # noqa: B018


def test_simple_forward_pass_through_blackbox_llm():
    response = tg.BlackboxLLM(engine=hello_engine())(
        tg.Variable("Hello", role_description="A variable")
    )
    assert response.value == "Hello World"


def test_sum_joins_values_in_order_and_names_every_role():
    var1 = tg.Variable("Line1", role_description="role1")
    var2 = tg.Variable("Line2", role_description="role2")
    total = tg.sum(variables=[var1, var2])
    # documented difference: values are joined by a blank line (TextGrad: one newline)
    assert total.get_value() == "Line1\n\nLine2"
    assert "role1" in total.get_role_description() and "role2" in total.get_role_description()
    assert total.predecessors == (var1, var2)


def test_llmcall_output_is_a_variable_with_its_input_as_predecessor():
    engine = hello_engine()
    input_variable = tg.Variable("Input", role_description="Input")
    output = tg.autograd.LLMCall(engine)(input_variable)
    assert isinstance(output, tg.Variable) and output.get_value() == "Hello World"
    assert input_variable in output.predecessors
    assert user_text(engine.calls[-1]) == "Input"


def test_formattedllmcall_fills_the_template_and_names_the_response():
    template = "Question: {question}\nPrediction: {prediction}"
    call = tg.autograd.FormattedLLMCall(
        engine=echo_engine(),
        template=template,
        fields=["prediction", "question"],
        role_description="test response",
    )
    inputs = {
        "question": tg.Variable("q", role_description="Question"),
        "prediction": tg.Variable("p", role_description="Prediction"),
    }
    output = call(inputs)
    assert output.get_value() == "Question: q\nPrediction: p"
    assert inputs["question"] in output.predecessors
    assert inputs["prediction"] in output.predecessors
    assert output.get_role_description() == "test response"


# --- tests/test_engines.py ----------------------------------------------------------------


def test_ollama_bare_name_builds_an_ollama_engine_on_the_default_host(monkeypatch):
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    with pytest.warns(UserWarning, match="'ollama/test-model-string'"):
        engine = tg.get_engine("ollama-test-model-string")
    assert engine.model_name == "test-model-string"
    # documented difference: Ollama's native API at the host root, not its /v1 shim
    assert engine.inner.base_url == "http://localhost:11434"


def test_engine_cache_answers_a_repeated_request_without_a_second_call(tmp_path):
    # TextGrad's get_engine(..., cache=True / a diskcache.Cache): here cache=True or a path
    with LLMTestServer(ScriptedEngine(lambda r: "cached reply")) as server:
        cached = tg.get_engine(
            "openai/test-model",
            base_url=server.openai_base_url,
            api_key="sk-test-0000",
            cache=tmp_path / "cache.sqlite",
        )
        first = cached.generate_sync("Hello how are you?", system_prompt="Be brief.")
        second = cached.generate_sync("Hello how are you?", system_prompt="Be brief.")
        assert (first.text, second.text) == ("cached reply", "cached reply")
        assert (first.cached, second.cached) == (False, True)
        assert server.request_count == 1
        cached.generate_sync("Hello how are you?")  # another request (no system prompt)
        assert server.request_count == 2
        uncached = tg.get_engine(
            "openai/test-model", base_url=server.openai_base_url, api_key="sk-t", cache=False
        )
        uncached.generate_sync("Hello how are you?")
        uncached.generate_sync("Hello how are you?")
        assert server.request_count == 4


# --- Tutorial-Primitives ------------------------------------------------------------------


def test_primitives_variable_engine_loss_optimizer():
    replies = {
        "forward": "I am fine.",
        "loss": "The word 'sntence' is misspelled; it should be 'sentence'.",
        "optimizer": "A sentence with a typo",
    }
    engine = ScriptedEngine(lambda request: replies[request.purpose])
    x = tg.Variable(
        "A sntence with a typo", role_description="The input sentence", requires_grad=True
    )
    assert x.gradients == []
    # TextGrad's engine.generate(prompt) returns the text; here generate_sync(...).text
    assert engine.generate_sync("Hello how are you?").text == "I am fine."
    system_prompt = tg.Variable(
        "Evaluate the correctness of this sentence", role_description="The system prompt"
    )
    loss = tg.TextLoss(system_prompt, engine=engine)
    optimizer = tg.TextualGradientDescent(parameters=[x], engine=engine)
    l = loss(x)  # noqa: E741 (the tutorial's name)
    l.backward(engine)
    assert [g.text for g in x.gradients] == [replies["loss"]]
    assert "Evaluate the correctness of this sentence" in (
        engine.calls_for("loss")[0].request.messages[0].content
    )
    optimizer.step()
    assert x.value == "A sentence with a typo"
    assert replies["loss"] in engine.calls_for("optimizer")[0].request.prompt_text()
    optimizer.zero_grad()
    assert x.gradients == []


# --- Tutorial-Solution-Optimization and evaluation/solution_optimization.py -------------


def test_solution_optimization_improves_the_solution_from_the_loss_critique():
    critique = "The discriminant is wrong: b^2 - 4ac = 49 - 24 = 25, not 73."
    fixed = "x = (7 ± 5) / 6, so x1 = 2 and x2 = 1/3"
    engine = ScriptedEngine(by_purpose(loss=critique, optimizer=fixed))
    tg.set_backward_engine(engine)
    solution = tg.Variable(
        "x = (7 ± √73) / 6", requires_grad=True, role_description="solution to the math question"
    )
    loss_system_prompt = tg.Variable(
        "You will evaluate a solution to a math question. Only identify errors.",
        requires_grad=False,
        role_description="system prompt",
    )
    loss_fn = tg.TextLoss(loss_system_prompt)
    optimizer = tg.TGD([solution])
    loss = loss_fn(solution)
    assert loss.value == critique
    loss.backward()
    optimizer.step()
    assert solution.value == fixed
    prompt = engine.calls_for("optimizer")[0].request.prompt_text()
    assert "solution to the math question" in prompt and critique in prompt
    assert loss_system_prompt.gradients == []  # requires_grad=False: no critique


def test_test_time_training_loop_with_constraints_and_majority_vote():
    """evaluation/solution_optimization.py: a few TGD steps on one answer under a format
    constraint, zero_grad each iteration, then a majority vote over the predictions."""
    constraint = "The last line of your response should be 'Answer: $LETTER'."
    rewrites = iter(["Reasoning...\nAnswer: B", "Reasoning...\nAnswer: C", "More...\nAnswer: B"])
    critiques = iter(["critique one", "critique two", "critique three"])
    engine = ScriptedEngine(
        by_purpose(loss=lambda r: next(critiques), optimizer=lambda r: next(rewrites))
    )
    tg.set_backward_engine(engine, override=True)
    instance = tg.Variable(
        "Reasoning...\nAnswer: A",
        requires_grad=True,
        role_description="solution and prediction for the question",
    )
    optimizer = tg.TextualGradientDescent(
        engine=engine, parameters=[instance], constraints=[constraint]
    )
    objective = tg.TextLoss("Investigate the reasoning and answer; be critical.")
    predictions = [instance.value]
    for _ in range(3):
        optimizer.zero_grad()
        objective(instance).backward()
        optimizer.step()
        predictions.append(instance.value)
    prompts = [c.request.prompt_text() for c in engine.calls_for("optimizer")]
    assert all(constraint in p for p in prompts)
    # zero_grad each iteration: each step sees only its own critique
    assert "critique one" in prompts[0] and "critique one" not in prompts[1]
    assert "critique two" in prompts[1] and "critique three" in prompts[2]
    letters = [re.search(r"Answer: ([A-D])", p).group(1) for p in predictions]
    assert letters == ["A", "B", "C", "B"]
    assert Counter(letters).most_common(1)[0][0] == "B"


# --- Tutorial-Prompt-Optimization and evaluation/prompt_optimization.py -----------------


def parse_integer_answer(answer: str) -> int:
    """The last number in the text (TextGrad's BBH parser, in short)."""
    numbers = re.findall(r"\d+", answer)
    return int(numbers[-1]) if numbers else 0


def string_based_equality_fn(prediction: tg.Variable, ground_truth_answer: tg.Variable) -> int:
    """A TextGrad judge: it reads `.value` of the Variables it is given and returns 0 or 1."""
    return int(
        parse_integer_answer(prediction.value) == parse_integer_answer(ground_truth_answer.value)
    )


EXAMPLES = [
    ("I have a apple and two pears. How many fruits?", "3"),
    ("I have a cat and a dog. How many animals?", "2"),
    ("I have four chairs and a table. How many objects?", "5"),
]
MODEL_ANSWERS = {"fruits": "Answer: 3", "animals": "Answer: 3", "objects": "Answer: 4"}


def prompt_optimization_reply(request) -> str:
    text = request.prompt_text()
    if request.purpose == "forward":
        return next(a for key, a in MODEL_ANSWERS.items() if key in text)
    if request.purpose == "backward":
        return "Count every object, one by one."
    return "Count each item one by one. End with 'Answer: N'."


def prompt_optimization_engine() -> ScriptedEngine:
    return ScriptedEngine(prompt_optimization_reply)


def test_prompt_optimization_with_a_string_based_judge_and_tg_sum():
    engine = prompt_optimization_engine()
    tg.set_backward_engine(engine, override=True)
    eval_fn = tg.StringBasedFunction(
        string_based_equality_fn,
        function_purpose="The runtime of string-based function that checks if the prediction "
        "is correct.",
    )
    system_prompt = tg.Variable(
        "You will answer a reasoning question.",
        requires_grad=True,
        role_description="system prompt to the language model",
    )
    model = tg.BlackboxLLM(engine, system_prompt)
    optimizer = tg.TextualGradientDescent(engine=engine, parameters=[system_prompt])

    def eval_sample(x, y) -> int:  # the tutorial's accuracy check
        x = tg.Variable(x, requires_grad=False, role_description="query to the language model")
        y = tg.Variable(y, requires_grad=False, role_description="correct answer for the query")
        return int(eval_fn(inputs=dict(prediction=model(x), ground_truth_answer=y)).value)

    assert [eval_sample(x, y) for x, y in EXAMPLES] == [1, 0, 0]

    optimizer.zero_grad()
    losses = []
    for x, y in EXAMPLES:
        x = tg.Variable(x, requires_grad=False, role_description="query to the language model")
        y = tg.Variable(y, requires_grad=False, role_description="correct answer for the query")
        losses.append(eval_fn(inputs=dict(prediction=model(x), ground_truth_answer=y)))
    assert [loss.value for loss in losses] == ["1", "0", "0"]
    engine.calls.clear()
    tg.sum(losses).backward()

    # Backward through each judge: it mentions only its own example's answer and verdict.
    through_judge = [
        c.request.prompt_text()
        for c in engine.calls_for("backward")
        if c.request.metadata["operation"] == "string_based_equality_fn"
    ]
    assert len(through_judge) == 3
    # Each judge's feedback is its own verdict, with its own ground truth beside it.
    truth_block = '<INPUT name="argument ground_truth_answer" role="correct answer for the query">'
    seen = []
    for prompt in through_judge:
        truths = [t for _, t in EXAMPLES if f"{truth_block}\n{t}\n</INPUT>" in prompt]
        assert len(truths) == 1
        verdict = "1" if truths[0] == "3" else "0"
        assert f"<FEEDBACK>\n{verdict}\n</FEEDBACK>" in prompt
        seen.append(truths[0])
    assert sorted(seen) == sorted(t for _, t in EXAMPLES)
    # ... and backward through the model call mentions only its own question.
    through_model = [
        c.request.prompt_text()
        for c in engine.calls_for("backward")
        if c.request.metadata["operation"] == "llm_call"
    ]
    mentioned = [[q for q, _ in EXAMPLES if q in prompt] for prompt in through_model]
    assert sorted(mentioned) == sorted([q] for q, _ in EXAMPLES)
    assert len(system_prompt.gradients) == 3
    optimizer.step()
    assert system_prompt.value == "Count each item one by one. End with 'Answer: N'."

    # the tutorial's validation revert: a worse prompt is set back
    previous = "You will answer a reasoning question."
    system_prompt.set_value(previous)
    assert system_prompt.get_value() == previous


def test_eval_dataset_in_a_thread_pool_as_the_tutorial_runs_it():
    """The tutorial's eval_dataset: eval_sample in a ThreadPoolExecutor, sync calls in each
    thread, one engine (with its cache and usage) shared by all of them."""
    import concurrent.futures

    engine = tg.get_engine("scripted", responder=prompt_optimization_reply)
    eval_fn = tg.StringBasedFunction(string_based_equality_fn, function_purpose="checks")
    model = tg.BlackboxLLM(engine, tg.Variable("Answer.", role_description="system prompt"))

    def eval_sample(item) -> int:
        x, y = item
        x = tg.Variable(x, requires_grad=False, role_description="query to the language model")
        y = tg.Variable(y, requires_grad=False, role_description="correct answer for the query")
        return int(eval_fn(inputs=dict(prediction=model(x), ground_truth_answer=y)).value)

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as executor:
        futures = [executor.submit(eval_sample, item) for item in EXAMPLES * 3]
        accuracy = [f.result() for f in futures]
    assert accuracy == [1, 0, 0] * 3
    assert engine.usage.total.calls == 9


def test_prompt_optimization_with_a_multi_field_evaluation_judge():
    """load_task's LLM judge for the other BBH tasks: MultiFieldEvaluation over
    [question, ground truth, prediction]; its critique goes to the prediction as is."""

    def respond(request):
        text = request.prompt_text()
        if request.purpose == "forward":
            return next(a for key, a in MODEL_ANSWERS.items() if key in text)
        if request.purpose == "loss":
            ok = "Answer: 3" in text and "fruits" in text
            return "<ACCURACY> 1 </ACCURACY>" if ok else "<ACCURACY> 0 </ACCURACY> miscounted"
        if request.purpose == "backward":
            return "feedback for the system prompt"
        return "new prompt"

    engine = ScriptedEngine(respond)
    instruction = tg.Variable(
        "Is the final prediction the same as the ground truth? Reply within <ACCURACY> tags.",
        requires_grad=False,
        role_description="evaluation instruction for the task",
    )
    eval_fn = tg.MultiFieldEvaluation(
        instruction,
        role_descriptions=[
            "Question for the task",
            "Ground truth answer",
            "Reasoning and prediction from the language model",
        ],
        engine=engine,
    )
    system_prompt = tg.Variable(
        "Answer the question.",
        requires_grad=True,
        role_description="system prompt to the language model",
    )
    model = tg.BlackboxLLM(engine, system_prompt)
    losses, responses = [], []
    for x, y in EXAMPLES:
        x = tg.Variable(x, role_description="query to the language model")
        y = tg.Variable(y, role_description="correct answer for the query")
        responses.append(model(x))
        losses.append(eval_fn([x, y, responses[-1]]))
    parsed = [int(loss.value.split("<ACCURACY>")[1].split("</ACCURACY>")[0]) for loss in losses]
    assert parsed == [1, 0, 0]
    tg.sum(losses).backward()
    # each response's critique is its own judge's text, never the others'
    for response, loss in zip(responses, losses, strict=True):
        assert [g.text for g in response.gradients] == [loss.value]
    assert len(system_prompt.gradients) == 3


def test_string_based_function_says_how_it_is_called_and_what_it_returns():
    eval_fn = tg.StringBasedFunction(string_based_equality_fn, function_purpose="checks it")
    p = tg.Variable("Answer: 3", role_description="prediction")
    y = tg.Variable("3", role_description="answer")
    with pytest.raises(tg.ArgumentError, match=r"inputs=\{name: tg.Variable\}.*tg.function"):
        eval_fn([p, y])
    with pytest.raises(tg.ArgumentError, match=r"inputs\['prediction'\] must be a tg.Variable"):
        eval_fn(inputs={"prediction": "Answer: 3", "ground_truth_answer": y})
    out = eval_fn(
        inputs={"prediction": p, "ground_truth_answer": y},
        response_role_description="verdict of the equality check",
    )
    assert (out.value, out.role_description) == ("1", "verdict of the equality check")
    assert out.predecessors == (p, y)
    flag = tg.StringBasedFunction(lambda prediction: True, function_purpose="always true")
    with pytest.raises(tg.ArgumentError, match=r"return int\(ok\)"):
        flag(inputs={"prediction": p})


# --- Tutorial-Test-Time-Loss-for-Code and tests/test_api.py -------------------------------

PROBLEM = (
    "Longest Increasing Subsequence: return the length of the longest strictly "
    "increasing subsequence of a list of integers."
)
SLOW_OR_BUGGED = """
def longest_increasing_subsequence(nums):
    n = len(nums)
    dp = [1] * n
    for i in range(1, n):
        for j in range(i):
            if nums[i] > nums[j]:
                dp[i] = max(dp[i], dp[j] + 1)
    return max(dp) + 1
"""
FIXED = """
import bisect

def longest_increasing_subsequence(nums):
    tails = []
    for x in nums:
        i = bisect.bisect_left(tails, x)
        tails[i:i + 1] = [x]
    return len(tails)
"""
CASES = [
    ([10, 22, 9, 33, 21, 50, 41, 60], 5),
    ([5, 4, 3, 2, 1], 1),
    ([7, 7, 7], 1),
    ([0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15], 6),
]


def passes(code: str) -> bool:
    namespace: dict = {}
    exec(code, namespace)  # the test's own fixed strings, as the tutorial's interpreter
    fn = namespace["longest_increasing_subsequence"]
    return all(fn(nums) == expected for nums, expected in CASES)


def test_code_optimization_with_a_formatted_llm_call_loss():
    evaluation = "The code returns max(dp) + 1, one more than the length; it is O(n^2)."
    feedback = "Return max(dp) itself, and use patience sorting for O(n log n)."

    def respond(request):
        return {"forward": evaluation, "backward": feedback, "optimizer": FIXED}[request.purpose]

    llm_engine = ScriptedEngine(respond)
    tg.set_backward_engine(llm_engine)
    assert not passes(SLOW_OR_BUGGED)
    code = tg.Variable(
        value=SLOW_OR_BUGGED, requires_grad=True, role_description="code instance to optimize"
    )
    problem = tg.Variable(PROBLEM, requires_grad=False, role_description="the coding problem")
    optimizer = tg.TGD(parameters=[code])
    loss_system_prompt = tg.Variable(
        "You evaluate code snippets critically and give very concise feedback.",
        requires_grad=False,
        role_description="system prompt to the loss function",
    )
    instruction = "Does the code solve the problem? What is the runtime complexity?"
    template = f"{instruction}\nProblem: {{problem}}\nCurrent Code: {{code}}"
    formatted_llm_call = tg.autograd.FormattedLLMCall(
        engine=llm_engine,
        template=template,
        fields=["problem", "code"],
        system_prompt=loss_system_prompt,
        role_description=f"evaluation of the {code.get_role_description()}",
    )

    def loss_fn(problem: tg.Variable, code: tg.Variable) -> tg.Variable:
        return formatted_llm_call(problem=problem, code=code)

    loss = loss_fn(problem, code)
    sent = llm_engine.calls_for("forward")[0].request.messages
    assert sent[0].content == loss_system_prompt.value
    assert sent[1].content == f"{instruction}\nProblem: {PROBLEM}\nCurrent Code: {SLOW_OR_BUGGED}"
    loss.backward()
    assert [g.text for g in code.gradients] == [feedback]
    assert evaluation in code.gradients[0].context  # the forward call it critiques
    backward_prompt = llm_engine.calls_for("backward")[0].request.prompt_text()
    assert evaluation in backward_prompt and "the field 'code'" in backward_prompt
    assert problem.gradients == []
    optimizer.step()
    assert passes(code.value)
    # one more iteration: zero_grad, loss, backward, step, as the tutorial does
    optimizer.zero_grad()
    loss_fn(problem, code).backward()
    assert len(code.gradients) == 1


def test_code_optimization_with_unit_tests_as_the_loss():
    """evaluation/code_optimization: local tests decide; their failures are the critique."""
    engine = ScriptedEngine(by_purpose(optimizer=FIXED))
    tests = "\n".join(
        f"def test_case_{i}():\n    assert longest_increasing_subsequence({nums}) == {want}\n"
        for i, (nums, want) in enumerate(CASES)
    )
    code = tg.Variable(
        SLOW_OR_BUGGED, requires_grad=True, role_description="code instance to optimize"
    )
    optimizer = tg.TextualGradientDescent(
        engine=engine,
        parameters=[code],
        constraints=["Do not add asserts to the code", "Code must contain imports"],
    )
    loss = tg.CodeTestLoss(tests)(code)
    assert loss.score == 0.0 and "4 of 4 tests failed" in loss.value
    loss.backward()
    assert "test_case_0 failed" in code.grad
    optimizer.step()
    prompt = engine.calls_for("optimizer")[0].request.prompt_text()
    assert "Do not add asserts to the code" in prompt and "Code must contain imports" in prompt
    after = tg.CodeTestLoss(tests)(code)
    assert after.score == 1.0 and after.value == "All 4 tests passed."


# --- TGD options the tutorials and scripts use ---------------------------------------------


def test_tgd_in_context_examples_and_momentum_reach_the_optimizer_prompt():
    rewrites = iter(["second value", "third value"])
    engine = ScriptedEngine(by_purpose(loss="too vague", optimizer=lambda r: next(rewrites)))
    prompt = tg.Variable("first value", requires_grad=True, role_description="prompt")
    example = "Before: 'Answer.' After: 'Answer with the number only.'"
    # TextGrad's gradient_memory=1 is momentum=1 here
    optimizer = tg.TGD([prompt], engine=engine, in_context_examples=[example], momentum=1)
    loss_fn = tg.TextLoss("Criticize the prompt.", engine=engine)
    for _ in range(2):
        optimizer.zero_grad()
        loss_fn(prompt).backward()
        optimizer.step()
    first, second = (c.request.prompt_text() for c in engine.calls_for("optimizer"))
    assert example in first and example in second
    assert "first value" in second  # the earlier value, with the feedback it got
    assert prompt.value == "third value"


def test_gradients_on_a_variable_say_what_they_criticize_and_where_from():
    engine = ScriptedEngine(
        by_purpose(
            forward="Paris is in Germany.",
            loss="Wrong country: France.",
            backward="Ask the model to check the country.",
        )
    )
    system = tg.Variable("Answer briefly.", requires_grad=True, role_description="system prompt")
    answer = tg.BlackboxLLM(engine, system)(
        tg.Variable("Where is Paris?", role_description="question")
    )
    loss = tg.TextLoss("Check the facts.", engine=engine)(answer)
    loss.backward()
    (to_answer,) = answer.gradients
    assert (to_answer.text, to_answer.source, to_answer.operation) == (
        "Wrong country: France.",
        loss,
        "text_loss",
    )
    (to_system,) = system.gradients
    assert to_system.text == "Ask the model to check the country."
    assert to_system.source is answer and to_system.operation == "llm_call"
    assert "Where is Paris?" in to_system.context and "Paris is in Germany." in to_system.context
    assert system.get_gradient_text() == "Ask the model to check the country."


# --- writing your own pieces, as TextGrad users do ---------------------------------------


def test_a_custom_engine_subclass_serves_ops_and_generate_sync():
    """TextGrad's DummyEngine(EngineLM) with generate(prompt, system_prompt)."""
    from textgraph.engines import ChatResponse, Engine

    class DummyEngine(Engine):
        model_name = "dummy"

        async def _generate(self, request):
            system = request.messages[0].content if len(request.messages) > 1 else ""
            return ChatResponse(text=f"Hello World ({system or 'no system prompt'})")

    engine = DummyEngine()
    assert engine.generate_sync("Hi", system_prompt="Be kind.").text == "Hello World (Be kind.)"
    out = tg.BlackboxLLM(engine, "You are terse.")(tg.Variable("Hi", role_description="greeting"))
    assert out.value == "Hello World (You are terse.)"


def test_a_module_subclass_with_forward_composes_ops_and_lists_its_parameters():
    """TextGrad's custom losses subclass autograd.Module and define forward."""
    engine = ScriptedEngine(by_purpose(forward="It lacks a base case."))

    class CodeCritic(tg.autograd.Module):
        def __init__(self):
            self.instruction = tg.Variable(
                "Criticize the code.", requires_grad=True, role_description="critic instruction"
            )
            self.call = tg.FormattedLLMCall(
                engine, "{instruction}\nCode: {code}", ["instruction", "code"]
            )

        def forward(self, code):
            return self.call(instruction=self.instruction, code=code)

    critic = CodeCritic()
    code = tg.Variable("def f(n): return f(n - 1)", role_description="code")
    assert critic(code).value == "It lacks a base case."
    assert user_text(engine.calls[-1]) == "Criticize the code.\nCode: def f(n): return f(n - 1)"
    assert [p for _, p in critic.named_parameters()] == [critic.instruction]


# --- Local-Model-With-LMStudio ------------------------------------------------------------


def test_solution_optimization_on_a_local_openai_compatible_server():
    """ChatExternalClient(client=OpenAI(base_url=...), model_string=m) is
    tg.get_engine("openai/m", base_url=..., api_key=...): the same flow over real HTTP."""
    critique = "The discriminant is 25, not 73."
    fixed = "x1 = 2 and x2 = 1/3"

    def server_model(request):  # the server sees only the wire request (no purpose)
        text = request.prompt_text()
        marker = re.search(r"<(NEW_VALUE_\w+)>", text)  # the rewrite; a model follows its format
        if marker and critique in text:
            return f"<{marker.group(1)}>{fixed}</{marker.group(1)}>"
        if "only identify errors" in text:
            return critique
        return "unexpected request"

    with LLMTestServer(ScriptedEngine(server_model)) as server:
        engine = tg.get_engine(
            "openai/NeuralBeagle14-7B-GGUF",
            base_url=server.openai_base_url,
            api_key="lm-studio",
            cache=False,
        )
        tg.set_backward_engine(engine, override=True)
        solution = tg.Variable(
            "x = (7 ± √73) / 6",
            requires_grad=True,
            role_description="solution to the math question",
        )
        loss_system_prompt = tg.Variable(
            "You will evaluate a solution to a math question. Do not solve it, only identify "
            "errors. Be super concise.",
            requires_grad=False,
            role_description="system prompt",
        )
        loss = tg.TextLoss(loss_system_prompt)(solution)
        assert loss.value == critique
        optimizer = tg.TGD([solution])
        loss.backward()
        optimizer.step()
        assert solution.value == fixed
        assert server.request_count == 2  # the loss and the rewrite: no call for backward
        assert {r.body["model"] for r in server.stats.requests} == {"NeuralBeagle14-7B-GGUF"}
