"""Multi-hop RAG: optimize the three prompts of a two-hop retrieval pipeline.

    question -> [hop-1 query writer] -> retrieve -> [hop-2 query writer, sees hop-1 passages]
             -> retrieve -> [answer writer, sees both] -> answer

The query writers' and the answer writer's instructions are parameters.
Token F1 of the answer decides; the critic explains each miss (it is shown
the titles of the paragraphs that support the gold answer); backward
carries the explanation through both retrievals to both query writers
("the passage about the founder's birthplace was never retrieved: search for
her name"); TGD rewrites the prompts; validation gating keeps only rewrites
that do not lower F1. Test exact match, F1 and supporting-paragraph recall
are measured before and after.

    python -m textgraph.examples.multihop_rag                 # shipped corpus, embedded model
    python -m textgraph.examples.multihop_rag --model openai/gpt-4o-mini --critic openai/gpt-4o \\
        --data hotpotqa_dev_distractor_ircot500.jsonl --train 50 --val 50 --test 100 --steps 8

Adapt it: swap BM25Index for your own index (any object with
search(query, k) and len()), and the prompts and metric for yours.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import string
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import textgraph as tg
from textgraph._io import atomic_write_json
from textgraph._text import shorten
from textgraph.datasets import HotpotExample, corpus_of, load_hotpotqa, load_valley_qa
from textgraph.engines.observe import forward_purpose
from textgraph.examples._common import (
    add_engine_arguments,
    default_run_dir,
    example_main,
    make_engines,
    print_usage,
)
from textgraph.graph import critique_paths

HOP1_PROMPT = (
    "Write a search query for a keyword search engine that finds the first piece of "
    "information needed to answer the question. Reply with the query only."
)
HOP2_PROMPT = (
    "You see a question that needs two pieces of information, and the passages found by a "
    "first search. Write a search query for the information that is still missing. Reply "
    "with the query only."
)
ANSWER_PROMPT = (
    "Answer the question using only the passages. Reply with the short answer only: a name, "
    "a number, a date, a place, or yes/no."
)


class MultiHopRAG(tg.Module):
    """Two retrieval hops, then an answer; the three instructions are the parameters."""

    def __init__(
        self,
        engine: tg.engines.Engine,
        index: tg.Index,
        *,
        k: int = 2,
        max_tokens: int | None = None,
    ) -> None:
        self.hop1_prompt = tg.Variable(
            HOP1_PROMPT,
            role_description="instructions for writing the first search query",
            requires_grad=True,
        )
        self.hop2_prompt = tg.Variable(
            HOP2_PROMPT,
            role_description="instructions for writing the second search query",
            requires_grad=True,
        )
        self.answer_prompt = tg.Variable(
            ANSWER_PROMPT,
            role_description="instructions for answering from the retrieved passages",
            requires_grad=True,
        )
        self.write_first_query = tg.LLMCall(
            engine,
            self.hop1_prompt,
            role_description="first search query",
            max_tokens=max_tokens,
        )
        self.retrieve = tg.Retrieve(index, k)
        self.write_second_query = tg.FormattedLLMCall(
            engine,
            "Question: {question}\n\nPassages from the first search:\n{passages}",
            ["question", "passages"],
            self.hop2_prompt,
            role_description="second search query",
            max_tokens=max_tokens,
        )
        self.write_answer = tg.FormattedLLMCall(
            engine,
            "Passages from the first search:\n{first}\n\nPassages from the second search:\n"
            "{second}\n\nQuestion: {question}",
            ["first", "second", "question"],
            self.answer_prompt,
            role_description="short answer to the question",
            max_tokens=max_tokens,
        )

    async def aforward(self, example: HotpotExample) -> tg.Variable:
        question = tg.Variable(example.question, role_description="multi-hop question")
        first_query = await self.write_first_query.acall(question)
        first = await self.retrieve.acall(first_query)
        second_query = await self.write_second_query.acall(question=question, passages=first)
        second = await self.retrieve.acall(second_query)
        return await self.write_answer.acall(first=first, second=second, question=question)


# --- metrics (HotpotQA's official normalization) ---------------------------------


def normalize(text: str) -> str:
    """Lowercase; drop punctuation, articles and extra whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize(prediction) == normalize(gold))


def token_f1(prediction: str, gold: str) -> float:
    pred, ref = normalize(prediction).split(), normalize(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def answer_f1(prediction: str, example: HotpotExample) -> float:
    """The trainer's metric."""
    return token_f1(prediction, example.answer)


def supporting_recall(answer: tg.Variable, example: HotpotExample) -> float:
    """Share of the gold supporting paragraphs that either hop retrieved."""
    gold = set(example.supporting_titles)
    if not gold:
        return 1.0
    found = {h.passage.title for v in tg.ancestry(answer) for h in tg.retrieved(v)}
    return len(gold & found) / len(gold)


def gold_for_critic(example: HotpotExample) -> tg.Variable:
    """What the critic compares the answer with: the gold answer and its supporting titles."""
    titles = "; ".join(example.supporting_titles) or "(not given)"
    return tg.Variable(
        f"{example.answer}\n(supporting paragraphs: {titles})",
        role_description="gold answer, with the titles of the paragraphs that support it",
    )


def f1_against_gold(prediction: str, gold_text: str) -> float:
    return token_f1(prediction, gold_text.split("\n(supporting paragraphs:", 1)[0])


async def evaluate(module: MultiHopRAG, examples: list[HotpotExample]) -> dict[str, Any]:
    """EM, F1 and supporting recall per example and on average (labelled 'validation')."""
    with forward_purpose("validation"):
        answers = await asyncio.gather(*(module.aforward(e) for e in examples))
    rows = [
        {
            "id": e.id,
            "question": e.question,
            "gold": e.answer,
            "prediction": a.value,
            "em": exact_match(a.value, e.answer),
            "f1": token_f1(a.value, e.answer),
            "recall": supporting_recall(a, e),
        }
        for a, e in zip(answers, examples, strict=True)
    ]
    means = {m: sum(r[m] for r in rows) / len(rows) for m in ("em", "f1", "recall")}
    return {**means, "examples": rows}


# --- the program -------------------------------------------------------------------


def load_splits(
    data: Path | None, sizes: tuple[int, int, int], seed: int
) -> tuple[list[HotpotExample], list[HotpotExample], list[HotpotExample], list[HotpotExample]]:
    """(train, val, test, every loaded example); the corpus is built from all of them."""
    examples = load_hotpotqa(data) if data is not None else load_valley_qa()
    need = sum(sizes)
    if len(examples) < need:
        where = data or "the shipped corpus"
        raise tg.ArgumentError(
            f"{where} has {len(examples)} questions; the splits need {need}: choose smaller sizes"
        )
    order = list(examples)
    random.Random(seed).shuffle(order)
    a, b = sizes[0], sizes[0] + sizes[1]
    return order[:a], order[a:b], order[b:need], examples


def build_trainer(
    module: MultiHopRAG,
    critic: tg.engines.Engine,
    train: list[HotpotExample],
    val: list[HotpotExample],
    *,
    steps: int,
    batch_size: int,
    seed: int,
    run_dir: Path | None,
    budget: tg.Budget | None = None,
) -> tg.Trainer:
    loss = tg.MetricLoss(f1_against_gold, critic)
    optimizer = tg.TGD(
        module.parameters(),
        engine=critic,
        constraints=[
            "Keep each instruction under 120 words.",
            "State general strategies; never mention a specific question, entity or answer.",
            "The query writers must keep replying with the query only; the answer writer with "
            "the short answer only.",
        ],
    )
    return tg.Trainer(
        module,
        lambda output, example: loss.acall(output, gold_for_critic(example)),
        optimizer=optimizer,
        metric=answer_f1,
        train=train,
        val=val,
        batch_size=batch_size,
        max_steps=steps,
        seed=seed,
        run_dir=run_dir,
        budget=budget,
        backward_engine=critic,
        failures_only=True,
        reject_copies=True,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_engine_arguments(parser)
    parser.add_argument(
        "--data",
        type=Path,
        help="HotpotQA file (original JSON, Hugging Face JSON or IRCoT JSONL); the corpus is "
        "the union of its paragraphs. Default: the 18-question corpus shipped with textgraph",
    )
    parser.add_argument("--train", type=int, default=6, help="training questions (6)")
    parser.add_argument("--val", type=int, default=6, help="validation questions (6)")
    parser.add_argument("--test", type=int, default=6, help="held-out test questions (6)")
    parser.add_argument("--steps", type=int, default=2, help="optimization steps (2)")
    parser.add_argument("--batch-size", type=int, default=3, help="questions per step (3)")
    parser.add_argument("--k", type=int, default=2, help="passages per retrieval hop (2)")
    parser.add_argument(
        "--retriever",
        choices=["bm25", "dense"],
        default="bm25",
        help="bm25 (keywords; default) or dense (MiniLM embeddings: textgraph[dense])",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of splits and batches")
    parser.add_argument(
        "--max-tokens", type=int, help="cap per LLM reply (default: 48 on a local model)"
    )
    parser.add_argument("--max-cost", type=float, help="stop before spending more dollars")
    parser.add_argument("--run-dir", type=Path, help="default: runs/multihop-rag-<time>")


def run(args: argparse.Namespace, console: Console | None = None) -> dict[str, Any]:
    return asyncio.run(arun(args, console or Console()))


async def arun(
    args: argparse.Namespace,
    console: Console,
    engines: tuple[tg.engines.Engine, tg.engines.Engine] | None = None,
) -> dict[str, Any]:
    """The whole program; `engines` = (pipeline, critic) overrides --model/--critic."""
    started = time.perf_counter()
    if min(args.train, args.val, args.test, args.steps, args.batch_size, args.k) < 1:
        raise tg.ArgumentError("--train, --val, --test, --steps, --batch-size and --k must be >= 1")
    train, val, test, everything = load_splits(
        args.data, (args.train, args.val, args.test), args.seed
    )
    corpus = corpus_of(everything)
    console.print(
        f"[bold]Multi-hop RAG[/bold]: {len(corpus)} paragraphs indexed ({args.retriever}); "
        f"{args.train} train / {args.val} val / {args.test} test questions, {args.steps} steps."
    )
    engine, critic = engines or make_engines(args, console)
    max_tokens = args.max_tokens
    if max_tokens is None and getattr(engine, "model_name", "").startswith("local/"):
        max_tokens = 48  # queries and short answers; the tiny model rambles otherwise
    index = tg.DenseIndex(corpus) if args.retriever == "dense" else tg.BM25Index(corpus)
    module = MultiHopRAG(engine, index, k=args.k, max_tokens=max_tokens)
    run_dir = args.run_dir or default_run_dir("multihop-rag")
    trainer = build_trainer(
        module,
        critic,
        train,
        val,
        steps=args.steps,
        batch_size=args.batch_size,
        seed=args.seed,
        run_dir=run_dir,
        budget=tg.Budget(max_cost_usd=args.max_cost) if args.max_cost else None,
    )
    with tg.engines.track_usage() as usage:
        before = await evaluate(module, test)
        result = await trainer.afit()  # ends with the best prompts loaded
        after = await evaluate(module, test)
    atomic_write_json(Path(run_dir) / "evaluation.json", {"before": before, "after": after})

    for record in result.history:
        console.print(f"step {record.step}: {record.reason}")
    print_chain(console, Path(run_dir), module)
    table = Table(title="Test set, before and after optimization", title_justify="left")
    table.add_column("")
    table.add_column("start", justify="right")
    table.add_column("end", justify="right")
    for key, label in (("em", "exact match"), ("f1", "token F1"), ("recall", "supporting recall")):
        table.add_row(label, f"{before[key]:.0%}", f"{after[key]:.0%}")
    table.add_row(
        "validation F1 (gate)",
        f"{result.initial_val_score or 0:.0%}",
        f"{result.best_val_score or 0:.0%}",
    )
    console.print(table)
    print_usage(console, usage, time.perf_counter() - started)
    console.print(f"{result.summary.accepted_steps} accepted step(s); stopped: {result.stopped}")
    for name, value in result.summary.final_parameters.items():
        console.print(f"\n[bold]final {name}:[/bold]")
        console.print(value, markup=False, highlight=False)
    console.print(f"\nrun directory: {run_dir} (evaluation.json has every test answer)")
    return {"before": before, "after": after, "summary": result.summary, "run_dir": run_dir}


def print_chain(console: Console, run_dir: Path, module: MultiHopRAG) -> None:
    """For one training question of the first step, the critiques from its loss to each prompt."""
    graphs = sorted((run_dir / "graphs").glob("step-*.json"))
    if not graphs:
        console.print("(no step produced critiques: every answer was right, or every call failed)")
        return
    record = json.loads(graphs[0].read_text(encoding="utf-8"))
    losses = [n for n in record["nodes"] if n["kind"] == "loss" and n.get("example") is not None]
    if not losses:
        return
    example = losses[0]["example"]
    console.print(
        f"\n[bold]How the critique of training question {example} travelled back "
        f"({graphs[0].stem}):[/bold]"
    )
    for name, parameter in module.named_parameters():
        paths = critique_paths(record, parameter.id, example)
        if not paths:
            console.print(f"  {name}: no critique from this question")
            continue
        longest = max(paths, key=len)
        console.print(f"  [bold]to {name}[/bold] ({len(paths)} route(s); the longest):")
        for entry in longest:
            text = entry["critique"] if entry["critique"] is not None else entry["value"]
            console.print(f"    {entry['role']}: ", end="")
            console.print(shorten(text, 240), markup=False, highlight=False)


def main(argv: list[str] | None = None) -> int:
    return example_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
