"""The CI example's program: classify a product review as positive or negative.

`make_engine()` builds the model named by PROMPTS_MODEL (the workflow's input,
e.g. openai/gpt-4o-mini). PROMPTS_MODEL=scripted gives an offline scripted
model instead, which is how tests/test_ci_workflow.py runs the workflow: it
answers with the bare label only when the system prompt asks for one word, and
its optimizer replies propose exactly that prompt.
"""

from __future__ import annotations

import os

import textgraph as tg
from textgraph.engines import ScriptedEngine

POSITIVE = ("great", "excellent", "perfect", "lovely", "wonderful")
IMPROVED_PROMPT = "Classify the review's sentiment. Answer with one word: positive or negative."


def build(engine) -> tg.Module:
    return ReviewClassifier(engine)


class ReviewClassifier(tg.Module):
    def __init__(self, engine):
        self.system = tg.Variable(
            "What is the sentiment of this review?",
            role_description="system prompt of a review sentiment classifier",
            requires_grad=True,
        )
        self.call = tg.LLMCall(engine, self.system)

    async def aforward(self, example):
        review = tg.Variable(f"Review: {example['text']}", role_description="a product review")
        return await self.call.acall(review)


def exact(prediction: str, example) -> float:
    return float(prediction.strip().lower() == example["label"])


def make_engine():
    model = os.environ.get("PROMPTS_MODEL", "openai/gpt-4o-mini")
    if model == "scripted":
        return ScriptedEngine(_scripted_reply)
    return tg.get_engine(model)


def _scripted_reply(request) -> str:
    last = request.messages[-1].content
    if last.startswith("Review: "):
        text = last.removeprefix("Review: ")
        label = "positive" if any(w in text for w in POSITIVE) else "negative"
        if "one word" in request.messages[0].content or len(text) % 2 == 0:
            return label
        return f"The review sounds {label} to me."
    if request.purpose == "optimizer":
        return IMPROVED_PROMPT
    return "The answer must be the bare label; the prompt should ask for one word."
