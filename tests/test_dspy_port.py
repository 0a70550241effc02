"""DSPy's RAG tutorial, ported as a DSPy user would port it (docs/coming-from-dspy.md).

configure + Predict, ChainOfThought, Examples and a metric, a retrieval
module, Evaluate, compile with BootstrapFewShot, save/load and the usage
record, each with the textgraph spelling the page gives. Engines are
scripted; retrieval is BM25 over a small corpus.
"""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field

import textgraph as tg

pytest.importorskip(
    "bm25s", reason="BM25 retrieval needs the rag extra: pip install 'textgraph[rag]'"
)

CORPUS = [
    "High memory on 32-bit Linux is the part of physical memory the kernel does not map "
    "permanently; low memory is mapped directly into the kernel's address space.",
    "Curly braces on their own line is the Allman style; K&R style keeps the opening brace "
    "on the same line as the statement.",
    "On macOS, cmd+tab does not restore minimized windows; hold the option key while "
    "releasing cmd to bring them back.",
    "The ext4 file system journals metadata and supports extents up to 128 MiB.",
]
DATA = [
    {"question": "what are high memory and low memory on linux?", "response": "kernel mapping"},
    {"question": "should curly braces appear on their own line?", "response": "Allman style"},
    {"question": "cmd+tab does not work on minimized windows", "response": "hold option"},
    {"question": "what does ext4 journal?", "response": "metadata"},
]
KEYWORDS = {
    "memory": "kernel mapping",
    "braces": "Allman style",
    "cmd+tab": "hold option",
    "ext4": "metadata",
}


pytestmark = pytest.mark.usefixtures("fresh_engine_defaults")


def knows_from_context(request) -> str:
    """A model that answers right only when the retrieved context is in its prompt."""
    text = request.messages[-1].content
    question = text.rsplit("Question:", 1)[-1]
    for word, answer in KEYWORDS.items():
        if word in question:
            passage = next(p for p in CORPUS if word.split("+")[0] in p)
            return answer if passage[:40] in text else "I do not know"
    return "I do not know"


def semantic_match(prediction: str, example: dict) -> float:
    """The tutorial's metric, in textgraph's argument order (prediction first)."""
    return float(example["response"].lower() in prediction.lower())


class RAG(tg.Module):
    """DSPy's `RAG(dspy.Module)`: search, then respond from the context."""

    def __init__(self, k: int = 1):
        self.search = tg.Retrieve(CORPUS, k=k)
        self.demos = tg.Demos(role_description="worked examples for the responder")
        self.respond = tg.FormattedLLMCall(
            None,  # the configured engine, as dspy.configure(lm=...) sets it
            "Context:\n{context}\n\nQuestion: {question}",
            ["context", "question"],
            "Answer from the context in a few words.",
            demos=self.demos,
            role_description="response",
        )

    def forward(self, example):
        question = tg.Variable(example["question"], role_description="question")
        context = self.search(question)
        return self.respond(context=context, question=question)


def test_configure_then_predict_uses_the_configured_engine():
    engine = tg.get_engine("scripted", responder=lambda r: "Low memory is mapped directly.")
    tg.configure(engine=engine)  # dspy.configure(lm=dspy.LM(...))
    qa = tg.LLMCall(system_prompt="Answer the question.")  # dspy.Predict("question -> response")
    response = qa(tg.Variable(DATA[0]["question"], role_description="question"))
    assert response.value == "Low memory is mapped directly."
    assert engine.usage.total.calls == 1  # what lm.history's cost sums, per engine


def test_chain_of_thought_is_a_structured_call_with_reasoning_first():
    class Response(BaseModel):
        response: str = Field(description="the answer")

    engine = tg.get_engine(
        "scripted",
        responder=lambda r: '{"reasoning": "Allman puts it alone.", "response": "yes"}',
        raw=True,
    )
    cot = tg.StructuredLLMCall(engine, output=Response, reasoning=True)
    pred = cot(tg.Variable(DATA[1]["question"], role_description="question"))
    assert list(cot.schema["properties"]) == ["reasoning", "response"]
    assert (pred.parsed.response, pred.reasoning) == ("yes", "Allman puts it alone.")


def test_a_dspy_metric_is_refused_with_the_order_textgraph_uses():
    def metric(example, pred, trace=None):
        return example["response"] in pred

    with pytest.raises(tg.ArgumentError, match=r"metric\(prediction_text, example\)"):
        tg.Evaluator(RAG(), metric)
    with pytest.raises(tg.ArgumentError, match="lambda prediction, example: gold_first"):

        def gold_first(gold, prediction):
            return gold["response"] in prediction

        tg.Evaluator(RAG(), gold_first)
    with pytest.raises(tg.ArgumentError, match="looks like DSPy's"):
        tg.Evaluator(RAG(), lambda x, y, trace=None: 1.0)

    def textgraph_order(prediction, example, trace=None):  # the right order: accepted
        return example["response"] in prediction

    tg.Evaluator(RAG(), textgraph_order)
    # the wrapper the error suggests scores the right way round
    tg.configure(engine=tg.get_engine("scripted", responder=knows_from_context))
    wrapped = tg.Evaluator(
        RAG(), lambda prediction, example: metric(example, prediction), progress=False
    )
    assert wrapped.evaluate(DATA).mean == 1.0


def test_rag_module_retrieves_and_evaluate_scores_it():
    engine = tg.get_engine("scripted", responder=knows_from_context)
    tg.configure(engine=engine)
    rag = RAG()
    pred = rag(DATA[2])
    assert pred.value == "hold option"
    sent = engine.inner.calls[-1].request.messages[-1].content
    assert "hold the option key" in sent and "ext4" not in sent  # k=1: the one passage
    # dspy.Evaluate(devset=..., metric=...)(rag)
    result = tg.Evaluator(rag, semantic_match, progress=False).evaluate(DATA)
    assert (result.mean, result.n, result.errors) == (1.0, 4, [])
    # a pipeline without retrieval (the tutorial's plain cot) scores lower on the same data
    plain = tg.LLMCall(system_prompt="Answer in a few words.")
    without = tg.Evaluator(
        lambda ex: plain(tg.Variable(ex["question"], role_description="question")),
        semantic_match,
        progress=False,
    ).evaluate(DATA)
    assert without.mean == 0.0


def test_compile_bootstraps_demos_and_save_load_restores_them(tmp_path):
    # tp.compile(RAG(), trainset=...) is tg.Trainer(...).fit(); demos come from passing runs
    tg.configure(engine=tg.get_engine("scripted", responder=knows_from_context))
    rag = RAG()
    result = tg.Trainer(
        rag,
        optimizer=tg.optim.BootstrapFewShot(max_bootstrapped=2, max_labeled=0),
        metric=semantic_match,
        train=DATA,
        val=DATA,
        max_steps=1,
        gate="always",
        progress=False,
    ).fit()
    assert result.stopped == "optimizer finished: demonstrations bootstrapped"
    assert len(rag.demos.items) == 2
    for demo in rag.demos.items:
        example = next(d for d in DATA if d["question"] in demo.inputs["question"])
        assert demo.output == example["response"]  # only runs the metric passed
    # optimized_rag.save(...); RAG().load(...)
    path = rag.save(tmp_path / "optimized_rag.json")
    loaded = RAG()
    assert loaded.demos.items == []
    loaded.load(path)
    assert loaded.demos.value == rag.demos.value
