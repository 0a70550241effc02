"""A whole training run in the shape of TextGrad's evaluation/prompt_optimization.py:
12 steps of TGD at batch 3, validation revert (a worse prompt is rolled back), 50
validation examples. Full vs sequential validation (and sequential + speculative) on the
same scripted world, at the same decisions.

    .venv/bin/python bench/whole_run.py      # ~1 min; writes bench/results/whole_run.json

A ScriptedEngine with a fixed latency per call stands in for the model (in process, no
HTTP). The world: question i is answered right when its planted difficulty
((37 i + 11) mod 100) is below 100 x the prompt's planted accuracy ("ACC=a" in the
prompt). The optimizer's k-th rewrite carries the k-th accuracy of REWRITES, a seeded
mix in which most rewrites are worse than the incumbent, a few better, a few level (as a
rewrite on a capable model tends to be). The gate is not_worse (TextGrad's revert: roll
back when the new validation score is below the previous one). Every mode must reach the
same per-step decisions; the JSON says whether it did, and counts validation calls
(ScriptedEngine's call log), all calls, prompt tokens and wall seconds.

TextGrad 0.1.8's own loop on this shape: bench/whole_run_textgrad.py (HTTP, bench server).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import sys
import time
from pathlib import Path

import textgraph as tg
from textgraph.engines import ScriptedEngine

LATENCY = 0.05
STEPS, BATCH, N_TRAIN, N_VAL = 12, 3, 36, 50
#: planted accuracies a rewrite is drawn from (the start is 0.5): "near misses" are mostly
#: a little worse; "format breaks" adds rewrites that break the answer format (0.0-0.1),
#: a common failure of rewrites on real tasks
WORLDS = {
    "near misses": [0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7],
    "format breaks": [0.0, 0.05, 0.1, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7],
}


def planted(system: str, question: str) -> str:
    found = re.search(r"ACC=([0-9.]+)", system)
    acc = float(found.group(1)) if found else 0.5
    i = int(re.search(r"\d+", question).group())
    return str(i) if (i * 37 + 11) % 100 < 100 * acc else "no idea"


def make_engine(world: str) -> ScriptedEngine:
    choices = WORLDS[world]

    def respond(request):
        if request.purpose in ("forward", "validation"):
            return planted(request.messages[0].content, request.messages[-1].content)
        if request.purpose == "loss":
            return "The answer should be the number in the question. " + "Detail. " * 20
        if request.purpose == "backward":
            return "The system prompt should make the model repeat the number. " + "x " * 30
        if request.purpose == "reduce":
            return "Merged: the prompt must make the model repeat the number."
        if request.purpose == "optimizer":
            # drawn from the request's text: a speculative proposal recomputed from the same
            # incumbent and state gets the same rewrite, as from a seeded model
            digest = hashlib.sha256(request.prompt_text().encode()).hexdigest()
            pick = random.Random(digest).choice(choices)
            return f"ACC={pick} Answer with the number alone (v{digest[:6]})."
        raise AssertionError(request.purpose)

    return ScriptedEngine(respond, latency=LATENCY)


class Program(tg.Module):
    def __init__(self, engine):
        self.system = tg.Variable(
            "ACC=0.5 Answer the question.", role_description="system prompt", requires_grad=True
        )
        self.call = tg.LLMCall(engine, self.system)

    async def aforward(self, example):
        return await self.call.acall(tg.Variable(example["question"], role_description="q"))


def qa(numbers) -> list[dict[str, str]]:
    return [{"question": f"What is {i}?", "answer": str(i)} for i in numbers]


def exact(prediction: str, example) -> float:
    return float(prediction.strip() == example["answer"])


def run(world: str, mode: str, chunk: int = 10) -> dict:
    engine = make_engine(world)
    program = Program(engine)
    loss = tg.MetricLoss(lambda p, target: float(p.strip() == target), engine=engine)
    options: dict = {}
    if mode != "full":
        options.update(validation="sequential", val_chunk=chunk)
    if mode == "sequential+speculative":
        options["speculative"] = True
    t0 = time.perf_counter()
    result = tg.Trainer(
        program,
        lambda out, ex: loss(out, ex["answer"]),
        optimizer=tg.TGD(program.parameters(), engine=engine),
        metric=exact,
        train=qa(range(N_TRAIN)),
        val=qa(range(100, 100 + N_VAL)),
        batch_size=BATCH,
        max_steps=STEPS,
        gate="not_worse",
        seed=0,
        progress=False,
        **options,
    ).fit()
    wall = time.perf_counter() - t0
    calls = engine.calls
    return {
        "mode": mode if mode == "full" else f"{mode} (chunk {chunk})",
        "wall_s": round(wall, 3),
        "calls": len(calls),
        "validation_calls": len(engine.calls_for("validation")),
        "prompt_tokens": sum(c.response.usage.prompt_tokens for c in calls if c.response),
        "decisions": [r.decision for r in result.history],
        "val_examples_per_candidate": [
            c.val_examples for r in result.history for c in r.candidates
        ],
        "initial_val": result.initial_val_score,
        "best_val": result.best_val_score,
    }


def compare(world: str) -> dict:
    runs = [
        run(world, "full"),
        run(world, "sequential", 10),
        run(world, "sequential", 5),
        run(world, "sequential+speculative", 10),
    ]
    full = runs[0]
    return {
        "world": world,
        "same_decisions": all(r["decisions"] == full["decisions"] for r in runs),
        "validation_calls_saved": {
            r["mode"]: round(1 - r["validation_calls"] / full["validation_calls"], 3)
            for r in runs[1:]
        },
        "runs": runs,
    }


def main() -> None:
    out = {
        "bench": "whole_run",
        "shape": {"steps": STEPS, "batch": BATCH, "val_examples": N_VAL, "gate": "not_worse"},
        "latency_s": LATENCY,
        "python": sys.version.split()[0],
        "load": os.getloadavg(),
        "target_validation_calls_saved": 0.30,
        "worlds": [compare(w) for w in WORLDS],
    }
    text = json.dumps(out, indent=2)
    print(text)
    path = Path(__file__).resolve().parent / "results" / "whole_run.json"
    path.write_text(text + "\n")


if __name__ == "__main__":
    main()
