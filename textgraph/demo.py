"""`textgraph demo`: optimize an object-counting system prompt end to end.

The loop is the real one — Module, LLMCall, MetricLoss, tg.sum, concurrent
backward, TGD — on generated BBH-style questions, with any model string.
Without one it runs on the embedded SmolLM2 model (tiny: it shows the loop,
not good results). `--model simulated` uses a ScriptedEngine that behaves
like a weak model whose counting improves when the prompt says how, so the
whole story plays out in a second. It says which model it runs on.
"""

from __future__ import annotations

import asyncio
import re
import time

from rich.console import Console
from rich.table import Table

import textgraph as tg
from textgraph.datasets.object_counting import (
    CATEGORIES,
    NUMBER_WORDS,
    CountingExample,
    generate_object_counting,
)
from textgraph.engines import ChatRequest, ManagedEngine, ScriptedEngine

START_PROMPT = "You are a helpful assistant. Answer the question."
QUANTITY_RULE = "Write down every item with its quantity (for example 'two pianos' counts as 2)"
CATEGORY_RULE = "keep only the items that belong to the category asked about"


class CountingPipeline(tg.Module):
    """One LLM call whose system prompt is the parameter."""

    def __init__(self, engine: tg.engines.Engine) -> None:
        self.system_prompt = tg.Variable(
            START_PROMPT,
            role_description="system prompt of a model that answers counting questions",
            requires_grad=True,
        )
        self.answer = tg.LLMCall(engine, self.system_prompt)

    async def aforward(self, question: str) -> tg.Variable:
        q = tg.Variable(question, role_description="counting question")
        return await self.answer.acall(q)


def last_number(text: str) -> str | None:
    numbers = re.findall(r"-?\d+", text)
    return numbers[-1] if numbers else None


def exact_number(prediction: str, target: str) -> float:
    """1.0 when the last number in the prediction equals the target."""
    return float(last_number(prediction) == target)


# --- the simulated model ---------------------------------------------------

_KIND = {}
for _cat, _names in CATEGORIES.items():
    for _single, _plural in _names.items():
        _KIND[_single], _KIND[_plural] = _cat, _cat


def _parse_items(question: str) -> tuple[list[tuple[int, str]], str]:
    listing, asked = re.match(r"I have (.*)\. How many (.*) do I have\?", question).groups()
    items = []
    for phrase in re.split(r", and |, | and ", listing):
        amount, name = phrase.split(" ", 1)
        qty = 1 if amount in ("a", "an") else NUMBER_WORDS.index(amount)
        items.append((qty, _KIND[name]))
    return items, asked


def _simulated_answer(system: str, question: str) -> str:
    items, asked = _parse_items(question)
    knows_quantities = "quantit" in system.lower()
    knows_category = "category" in system.lower()
    kept = [(q, c) for q, c in items if c == asked or not knows_category]
    total = sum(q if knows_quantities else 1 for q, _ in kept)
    return f"Counting the items, I get {total}."


def _simulated_explanation(prompt: str) -> str:
    question = re.search(r"<INPUT role=\"counting question\">\n(.*?)\n</INPUT>", prompt, re.S)
    items, asked = _parse_items(question.group(1))
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


def simulated_engine(latency: float = 0.02) -> ScriptedEngine:
    def respond(request: ChatRequest) -> str:
        prompt = request.prompt_text()
        if request.purpose == "forward":
            return _simulated_answer(request.messages[0].content, request.messages[-1].content)
        if request.purpose == "loss":
            return _simulated_explanation(prompt)
        if request.purpose == "backward":
            return _simulated_critic(prompt)
        return _simulated_optimizer(request)

    return ScriptedEngine(respond, latency=latency, model_name="simulated-counting-model")


# --- the loop ----------------------------------------------------------------


async def _accuracy(pipeline: CountingPipeline, examples: list[CountingExample]) -> float:
    answers = await asyncio.gather(*(pipeline.aforward(e.question) for e in examples))
    scores = [exact_number(a.value, e.answer) for a, e in zip(answers, examples, strict=True)]
    return sum(scores) / len(scores)


SIMULATED = "simulated"


def _engine_for(model: str | None, console: Console) -> ManagedEngine:
    if model == SIMULATED:
        console.print(
            "[yellow]Model: simulated (a scripted engine that answers like a weak LLM whose "
            "counting improves when the prompt explains how).[/yellow]"
        )
        return ManagedEngine(simulated_engine())
    from textgraph.engines.registry import DEFAULT_MODEL, default_model

    chosen = model or default_model()
    note = ""
    if chosen == DEFAULT_MODEL and not model:
        note = (
            " — the embedded default: a 135M-parameter model that shows the loop, not good "
            "results; pass --model openai/gpt-4o (or set TEXTGRAPH_MODEL) for a real one"
        )
    console.print(f"[yellow]Model: {chosen}{note}.[/yellow]")
    return tg.get_engine(chosen)


async def run_demo(
    *,
    model: str | None = SIMULATED,
    steps: int = 2,
    batch_size: int = 4,
    val_size: int = 12,
    seed: int = 0,
    console: Console | None = None,
) -> dict:
    console = console or Console()
    console.print(
        "[bold]textgraph demo[/bold]: optimizing a system prompt for BBH-style object counting."
    )
    engine = _engine_for(model, console)
    train = generate_object_counting(steps * batch_size, seed=seed)
    val = generate_object_counting(val_size, seed=seed + 1000)
    pipeline = CountingPipeline(engine)
    loss_fn = tg.MetricLoss(exact_number, engine=engine)
    optimizer = tg.TGD(
        pipeline.parameters(), engine=engine, constraints=["Keep the prompt under 80 words."]
    )
    started = time.perf_counter()
    history = [
        {
            "step": 0,
            "val_accuracy": await _accuracy(pipeline, val),
            "prompt": pipeline.system_prompt.value,
        }
    ]
    example_critique = ""
    for step in range(1, steps + 1):
        batch = train[(step - 1) * batch_size : step * batch_size]
        answers = await asyncio.gather(*(pipeline.aforward(e.question) for e in batch))
        losses = await asyncio.gather(
            *(loss_fn.acall(a, e.answer) for a, e in zip(answers, batch, strict=True))
        )
        await tg.sum(list(losses)).abackward()
        if pipeline.system_prompt.gradients and not example_critique:
            example_critique = pipeline.system_prompt.gradients[0].text
        if pipeline.system_prompt.gradients:
            for update in await optimizer.astep():
                if update.warning:
                    console.print(f"[red]{update.warning}[/red]")
        else:
            console.print(f"step {step}: every answer in the batch was right; nothing to change")
        optimizer.zero_grad()
        history.append(
            {
                "step": step,
                "val_accuracy": await _accuracy(pipeline, val),
                "prompt": pipeline.system_prompt.value,
            }
        )
    elapsed = time.perf_counter() - started

    table = Table(title="Validation accuracy per step")
    table.add_column("step", justify="right")
    table.add_column("val accuracy", justify="right")
    table.add_column("system prompt")
    for row in history:
        table.add_row(str(row["step"]), f"{row['val_accuracy']:.0%}", row["prompt"])
    console.print(table)
    if example_critique:
        console.print(f"[bold]A critique the system prompt received:[/bold] {example_critique}")
    usage = engine.usage
    calls = {purpose: counts.calls for purpose, counts in sorted(usage.by_purpose.items())}
    console.print(
        f"{usage.total.calls} LLM calls ({', '.join(f'{k} {v}' for k, v in calls.items())}), "
        f"{usage.total.total_tokens} tokens, ${usage.total.cost_usd:.4f}, in {elapsed:.1f} s"
    )
    await engine.aclose()
    return {
        "history": history,
        "calls": calls,
        "seconds": elapsed,
        "tokens": usage.total.total_tokens,
        "cost_usd": usage.total.cost_usd,
    }
