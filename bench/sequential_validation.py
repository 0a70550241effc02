"""Validation calls with full and sequential validation, at the same decisions.

    python bench/sequential_validation.py [--worlds 20] [--steps 12] [--val 50] [--seed 0]

The workload has the shape of TextGrad's evaluation/prompt_optimization.py
(12 steps, a batch of 3, one candidate per step, validation with revert, 50
validation examples) on a scripted world: a prompt "ACC=a" answers a
validation example right when the example's planted difficulty is below a,
and each step's candidate has an accuracy drawn from a seeded distribution
(most candidates are worse than the incumbent, as in real runs). Each world
runs twice per gate, `validation="full"` and `validation="sequential"`; the
script checks that both make the same decisions and reach the same final
prompt, and counts the validation calls each made. Prints one JSON document
and writes bench/results/sequential_validation.json.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from pathlib import Path

import textgraph as tg
from textgraph.engines import ScriptedEngine

HERE = Path(__file__).resolve().parent
TARGET_SAVED = 0.30  # the target: >= 30% fewer validation calls


def planted(system: str, question: str) -> str:
    acc = float(re.search(r"ACC=([0-9.]+)", system).group(1))
    i = int(re.search(r"\d+", question).group())
    return str(i) if (i * 37 + 11) % 100 < 100 * acc else "wrong"


def respond(request) -> str:
    return planted(request.messages[0].content, request.messages[-1].content)


def exact(prediction: str, example) -> float:
    return float(prediction.strip() == example["answer"])


class Program(tg.Module):
    def __init__(self, engine) -> None:
        self.system = tg.Variable("ACC=0.5 start", role_description="system prompt",
                                  requires_grad=True)
        self.call = tg.LLMCall(engine, self.system)

    async def aforward(self, example):
        question = tg.Variable(example["question"], role_description="question")
        return await self.call.acall(question)


class Scripted(tg.optim.Optimizer):
    """Proposes the world's next candidate prompt each step (one per step, as TGD does)."""

    def __init__(self, prompts: list[str]) -> None:
        self.prompts, self.taken = prompts, 0

    async def propose(self, ctx):
        prompt = self.prompts[self.taken]
        self.taken += 1
        return [ctx.current.with_values({"system": prompt}, origin="scripted")]

    def state_dict(self):
        return {"taken": self.taken}

    def load_state_dict(self, state):
        self.taken = state["taken"]


def world(seed: int, steps: int) -> list[str]:
    rng = random.Random(seed)
    return [f"ACC={rng.choice([0.2, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8]):.2f} "
            f"w{seed}.{s}" for s in range(steps)]


def run(
    prompts: list[str], gate: str, validation: str, val: int, chunk: int | None, latency: float
) -> tuple[list, str, int, float]:
    engine = ScriptedEngine(respond, latency=latency)
    trainer = tg.Trainer(
        Program(engine),
        optimizer=Scripted(prompts),
        metric=exact,
        train=[{"question": f"Q {i}?", "answer": str(i)} for i in range(30)],
        val=[{"question": f"Q {i}?", "answer": str(i)} for i in range(100, 100 + val)],
        batch_size=3,
        max_steps=len(prompts),
        gate=gate,
        validation=validation,
        val_chunk=chunk if validation == "sequential" else None,
        progress=False,
    )
    started = time.perf_counter()
    result = trainer.fit()
    wall = time.perf_counter() - started
    decisions = [(r.decision, r.current) for r in result.history]
    final = json.dumps(result.best_state, sort_keys=True)
    return decisions, final, len(engine.calls_for("validation")), wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worlds", type=int, default=20)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--val", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-chunk", type=int, default=None,
                        help="examples per look (default: the Trainer's, a fifth of val)")
    parser.add_argument("--latency", type=float, default=0.0,
                        help="seconds per call of the scripted engine (walls are then "
                        "meaningful: every look is one more wave of concurrent calls)")
    args = parser.parse_args()
    started = time.perf_counter()
    document: dict = {"worlds": args.worlds, "steps": args.steps, "batch": 3,
                      "val_examples": args.val, "val_chunk": args.val_chunk,
                      "latency_s": args.latency,
                      "target_saved": TARGET_SAVED, "gates": {}}
    for gate in ("better", "not_worse", "significant"):
        full_calls = seq_calls = accepted = 0
        full_wall = seq_wall = 0.0
        same = True
        for w in range(args.worlds):
            prompts = world(args.seed + w, args.steps)
            full = run(prompts, gate, "full", args.val, None, args.latency)
            seq = run(prompts, gate, "sequential", args.val, args.val_chunk, args.latency)
            same = same and full[:2] == seq[:2]
            full_calls, seq_calls = full_calls + full[2], seq_calls + seq[2]
            full_wall, seq_wall = full_wall + full[3], seq_wall + seq[3]
            accepted += sum(d == "accepted" for d, _ in full[0])
        saved = 1 - seq_calls / full_calls
        document["gates"][gate] = {
            "same_decisions": same,
            "accepted_steps": accepted,
            "validation_calls_full": full_calls,
            "validation_calls_sequential": seq_calls,
            "saved": round(saved, 3),
            "wall_s_full": round(full_wall, 2),
            "wall_s_sequential": round(seq_wall, 2),
            "met_target": same and saved >= TARGET_SAVED,
        }
    document["seconds"] = round(time.perf_counter() - started, 1)
    name = "sequential_validation" + (f"_chunk{args.val_chunk}" if args.val_chunk else "")
    out = HERE / "results" / f"{name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
