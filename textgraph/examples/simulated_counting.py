"""A scripted stand-in for an LLM on object counting (`--model simulated`).

It answers like a weak model whose counting improves when its system prompt
says how (multiply out quantities; keep only the asked category), explains
failures, blames the prompt for what it lacks, and rewrites it. With it the
whole optimization story of examples/object_counting.py plays out in
seconds, offline, with the same prompts, graph and trainer as a real run.
"""

from __future__ import annotations

import re

from textgraph.datasets.object_counting import CATEGORIES, NUMBER_WORDS
from textgraph.engines import ChatRequest, ScriptedEngine

QUANTITY_RULE = "Write down every item with its quantity (for example 'two pianos' counts as 2)"
CATEGORY_RULE = "keep only the items that belong to the category asked about"

_KIND = {}
for _cat, _names in CATEGORIES.items():
    for _single, _plural in _names.items():
        _KIND[_single], _KIND[_plural] = _cat, _cat


def _parse_items(question: str) -> tuple[list[tuple[int, str]], str]:
    found = re.match(r"I have (.*)\. How many (.*) do I have\?", question)
    if found is None:
        return [], "things"
    listing, asked = found.groups()
    items = []
    for phrase in re.split(r", and |, | and ", listing):
        amount, _, name = phrase.partition(" ")
        qty = NUMBER_WORDS.index(amount) if amount in NUMBER_WORDS else 1
        items.append((qty, _KIND.get(name, "unknown")))
    return items, asked


def _simulated_answer(system: str, question: str) -> str:
    items, asked = _parse_items(question)
    knows_quantities = "quantit" in system.lower()
    knows_category = "category" in system.lower()
    kept = [(q, c) for q, c in items if c == asked or not knows_category]
    total = sum(q if knows_quantities else 1 for q, _ in kept)
    return f"Counting the items, I get {total}.\nAnswer: {total}"


def _simulated_explanation(prompt: str) -> str:
    question = re.search(r"I have [^\n]*? do I have\?", prompt)
    if question is None:
        return "The answer is wrong."
    items, asked = _parse_items(question.group(0))
    if any(c != asked for _, c in items):
        return (
            f"The question asks only about {asked}, but the answer also counted items from "
            "other categories. Items outside the asked category must be left out."
        )
    return (
        "The answer counted each kind of item once and ignored quantities such as 'two' or "
        "'three'; each item's quantity must be added up."
    )


def _simulated_critic(prompt: str) -> str:
    notes = []
    if "quantit" in prompt and "quantit" not in _current_value(prompt).lower():
        notes.append("it never tells the model to multiply out quantities like 'two pianos'")
    if "other categories" in prompt and "category" not in _current_value(prompt).lower():
        notes.append("it never tells the model to ignore items outside the asked category")
    if not notes:
        return "The system prompt is not the cause of this error."
    return "The system prompt is too generic: " + "; ".join(notes) + "."


def _current_value(prompt: str) -> str:
    found = re.search(r"<SYSTEM_PROMPT[^>]*>\n(.*?)\n</SYSTEM_PROMPT>", prompt, re.S)
    return found.group(1) if found else ""


def _simulated_optimizer(request: ChatRequest) -> str:
    prompt = request.messages[-1].content
    value = re.search(r"<CURRENT_VALUE>\n(.*?)\n</CURRENT_VALUE>", prompt, re.S).group(1)
    rules = []
    if "quantities" in prompt and "quantit" not in value.lower():
        rules.append(QUANTITY_RULE)
    if "outside the asked category" in prompt and "category" not in value.lower():
        rules.append(CATEGORY_RULE)
    if not rules:
        return value
    return f"{value} {'; '.join(rules)}; then add the quantities and end with the total."


def _simulated_reduce(prompt: str) -> str:
    notes = [
        note
        for key, note in (
            ("quantit", "it never tells the model to multiply out quantities"),
            ("categor", "it never tells the model to ignore items outside the asked category"),
        )
        if key in prompt
    ]
    return "Across the examples the system prompt is too generic: " + "; ".join(notes) + "."


def simulated_engine(latency: float = 0.02) -> ScriptedEngine:
    def respond(request: ChatRequest) -> str:
        prompt = request.prompt_text()
        if request.purpose in ("forward", "validation"):
            return _simulated_answer(request.messages[0].content, request.messages[-1].content)
        if request.purpose == "loss":
            return _simulated_explanation(prompt)
        if request.purpose == "backward":
            return _simulated_critic(prompt)
        if request.purpose == "reduce":
            return _simulated_reduce(prompt)
        return _simulated_optimizer(request)

    return ScriptedEngine(respond, latency=latency, model_name="simulated-counting-model")
