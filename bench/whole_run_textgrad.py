"""The whole-run workload against TextGrad 0.1.8's own loop, on the bench server.

    bench/.venv/bin/python bench/whole_run_textgrad.py [--latency 0.05]

TextGrad's evaluation/prompt_optimization.py shape, both frameworks on the same HTTP
server (bench/server.py: fixed latency per request, counts requests and whitespace
tokens): 12 steps at batch 3, a string-based exact-match loss, backward, one TGD rewrite,
then the new prompt scored on 50 validation examples and reverted when worse. TextGrad
runs its loop as its script does (examples of a batch one after another, validation on 8
threads); textgraph runs a Trainer with gate="not_worse". The script's per-step test-set
evaluation is left out of both. The server plants accuracies (bench/server.py
`planted_reply`): the starting prompt carries "PLANTED ACC=0.5", question i is answered
right when (37 i + 11) mod 100 < 100 x the prompt's accuracy, and each rewrite gets an
accuracy drawn from a fixed mix seeded by the rewrite request's text (so the two
frameworks, whose rewrite prompts differ, see different rewrites: their decisions are
reported, not forced equal). textgraph runs with full and with sequential validation.
Prints one JSON document (bench/results/whole_run_textgrad.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import BenchServer
from bench.workloads import _scratch_dirs, _textgrad_engine

STEPS, BATCH, N_VAL = 12, 3, 50
SYSTEM = "PLANTED ACC=0.5 You are a helpful assistant. Answer the question."


def rows(n: int, start: int) -> list[dict[str, str]]:
    return [{"question": f"Question {i}: what is {i} + {i}?", "answer": str(2 * i)}
            for i in range(start, start + n)]


def textgrad_run(base_url: str) -> dict:
    _scratch_dirs()
    import textgrad as tgd

    engine = _textgrad_engine(base_url)
    tgd.set_backward_engine(engine, override=True)
    system = tgd.Variable(SYSTEM, requires_grad=True,
                          role_description="system prompt to the language model")
    model = tgd.BlackboxLLM(engine, system_prompt=system)
    optimizer = tgd.TGD([system], engine=engine)
    loss_fn = tgd.autograd.StringBasedFunction(
        lambda prediction, ground_truth_answer: int(
            ground_truth_answer.value in prediction.value
        ),
        "The runtime of a string-based function that checks if the prediction is correct.",
    )

    def score(row: dict) -> int:
        x = tgd.Variable(row["question"], requires_grad=False, role_description="question")
        return int(row["answer"] in model(x).value)

    def evaluate(data: list[dict]) -> float:
        with ThreadPoolExecutor(max_workers=8) as pool:
            return sum(pool.map(score, data)) / len(data)

    train, val = rows(STEPS * BATCH, 0), rows(N_VAL, 1000)
    started = time.perf_counter()
    best = evaluate(val)
    decisions = []
    for step in range(STEPS):
        losses = []
        for row in train[step * BATCH:(step + 1) * BATCH]:
            x = tgd.Variable(row["question"], requires_grad=False, role_description="question")
            y = tgd.Variable(row["answer"], requires_grad=False, role_description="answer")
            losses.append(loss_fn(inputs={"prediction": model(x), "ground_truth_answer": y}))
        optimizer.zero_grad()
        tgd.sum(losses).backward()
        previous = system.value
        optimizer.step()
        new = evaluate(val)
        if new < best:
            system.set_value(previous)
            decisions.append("reverted")
        else:
            best = new
            decisions.append("kept")
    return {"wall_s": round(time.perf_counter() - started, 3), "decisions": decisions,
            "best_val": best}


def textgraph_run(base_url: str, validation: str) -> dict:
    import textgraph as tg

    async def run() -> tuple[float, Any]:
        engine = tg.get_engine("openai/bench-model", base_url=base_url, cache=False,
                               max_concurrency=32)

        class Program(tg.Module):
            def __init__(self) -> None:
                self.system = tg.Variable(SYSTEM, role_description="system prompt",
                                          requires_grad=True)
                self.call = tg.LLMCall(engine, self.system)

            async def aforward(self, example):
                return await self.call.acall(
                    tg.Variable(example["question"], role_description="question"))

        program = Program()
        loss = tg.MetricLoss(lambda p, target: float(target in p), engine=engine)
        started = time.perf_counter()
        result = await tg.Trainer(
            program,
            lambda out, ex: loss(out, ex["answer"]),
            optimizer=tg.TGD(program.parameters(), engine=engine),
            metric=lambda p, ex: float(ex["answer"] in p),
            train=rows(STEPS * BATCH, 0),
            val=rows(N_VAL, 1000),
            batch_size=BATCH,
            max_steps=STEPS,
            gate="not_worse",
            validation=validation,
            progress=False,
        ).afit()
        wall = time.perf_counter() - started
        await engine.aclose()
        return wall, result

    wall, result = asyncio.run(run())
    return {"wall_s": round(wall, 3), "decisions": [r.decision for r in result.history],
            "best_val": result.best_val_score}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()
    server = BenchServer(args.latency)
    out: dict = {"bench": "whole_run_textgrad", "latency_s": args.latency,
                 "shape": {"steps": STEPS, "batch": BATCH, "val_examples": N_VAL},
                 "load": os.getloadavg(), "runs": {}}
    try:
        for name, work in (("textgraph", lambda u: textgraph_run(u, "full")),
                           ("textgraph_sequential", lambda u: textgraph_run(u, "sequential")),
                           ("textgrad", textgrad_run)):
            server.reset()
            row = work(f"{server.url}/v1")
            stats = server.stats()
            row.update(requests=stats["requests"], prompt_tokens=stats["prompt_tokens"])
            out["runs"][name] = row
    finally:
        server.stop()
    tg_row, ref = out["runs"]["textgraph"], out["runs"]["textgrad"]
    out["speedup"] = round(ref["wall_s"] / tg_row["wall_s"], 2)
    out["prompt_tokens_ratio"] = round(tg_row["prompt_tokens"] / ref["prompt_tokens"], 3)
    text = json.dumps(out, indent=2)
    print(text)
    (Path(__file__).resolve().parent / "results" / "whole_run_textgrad.json").write_text(
        text + "\n")


if __name__ == "__main__":
    main()
