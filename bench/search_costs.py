"""Wall and LLM calls per step of APE and OPRO, with 100 ms per call (in process).

    .venv/bin/python bench/search_costs.py        # ~1 min; writes bench/results/search_costs.json

A ScriptedEngine with a fixed latency stands in for the model (no HTTP: this measures the
optimizers' schedules, not a client). The task is the keyword world of
docs/instruction-search.md: question n is right when the instruction names more than n % 4
of four keywords; 16 train and 40 validation examples. The Trainer's per-step records give
each step's wall seconds and calls; the engine's call log gives the dependent rounds
(waves of overlapping calls). Prints one JSON document.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import textgraph as tg
from textgraph.engines import ScriptedEngine

KEYWORDS = ("alpha", "beta", "gamma", "delta")
LATENCY = 0.1


def world(request):
    text = request.messages[-1].content
    if request.purpose == "ape" and "Generate a variation" in text:
        parent = re.search(r"<INSTRUCTION>\n(.*?)\n</INSTRUCTION>", text, re.S).group(1)
        return parent + " " + next((w for w in KEYWORDS if w not in parent), "again")
    if request.purpose == "ape":
        shown = sorted(int(n) for n in re.findall(r"question (\d+)", text))
        return "Answer using " + " ".join(KEYWORDS[: 1 + shown[0] % 3]) + f" ({shown[0]})"
    if request.purpose == "opro":
        best = re.findall(r'<PAST_VALUE score="\d+">\n(.*?)\n</PAST_VALUE>', text, re.S)[-1]
        missing = [w for w in KEYWORDS if w not in best]
        return f"{best} Use {missing[request.seed % len(missing)]}." if missing else best
    n = int(re.search(r"\d+", text).group())
    has = sum(w in request.messages[0].content for w in KEYWORDS)
    return f"a{n}" if has > n % 4 else "no"


class Program(tg.Module):
    def __init__(self, engine):
        self.instruction = tg.Variable(
            "Answer the question.", role_description="instruction", requires_grad=True
        )
        self.call = tg.LLMCall(engine, self.instruction)

    async def aforward(self, example):
        return await self.call.acall(tg.Variable(example["question"], role_description="q"))


def qa(numbers):
    return [{"question": f"question {n}", "answer": f"a{n}"} for n in numbers]


def rounds(calls) -> int:
    """Waves of overlapping calls: a new wave starts when a call starts after every call
    of the current wave has ended."""
    spans = sorted((c.start, c.end) for c in calls)
    waves, end = 0, float("-inf")
    for start, finish in spans:
        if start >= end:
            waves += 1
            end = finish
        else:
            end = max(end, finish)
    return waves


def run(name: str) -> dict:
    engine = ScriptedEngine(world, latency=LATENCY)
    program = Program(engine)
    if name == "ape":
        opt = tg.optim.APE(
            num_proposals=16, top_k=4, resample_rounds=1, eval_subset=20, verbose=False
        )
        steps = opt.steps_for(program)
    else:
        opt = tg.optim.OPRO(candidates_per_step=8, history=20, exemplars=3, verbose=False)
        steps = 4
    t0 = time.perf_counter()
    result = tg.Trainer(
        program,
        optimizer=opt,
        metric=lambda p, e: float(p == e["answer"]),
        train=qa(range(16)),
        val=qa(range(100, 140)),
        max_steps=steps,
        critic_engine=engine,
        progress=False,
    ).fit()
    wall = time.perf_counter() - t0
    per_step = [
        {
            "step": r.step,
            "seconds": r.seconds,
            "calls": r.calls,
            "decision": r.decision,
            "val": r.val_score,
        }
        for r in result.history
    ]
    n = len(per_step)
    proposals = len(engine.calls_for(name))
    return {
        "optimizer": name,
        "settings": opt.config(),
        "wall_s": round(wall, 3),
        "steps": n,
        "calls": len(engine.calls),
        "proposal_calls": proposals,
        "task_calls": len(engine.calls) - proposals,
        "seconds_per_step": round(sum(s["seconds"] for s in per_step) / n, 3),
        "calls_per_step": round(sum(s["calls"] for s in per_step) / n, 1),
        "rounds": rounds(engine.calls),
        "initial_val": result.initial_val_score,
        "best_val": result.best_val_score,
        "per_step": per_step,
    }


def main() -> None:
    out = {
        "bench": "search_costs",
        "latency_s": LATENCY,
        "python": sys.version.split()[0],
        "load": os.getloadavg(),
        "runs": [run("ape"), run("opro")],
    }
    text = json.dumps(out, indent=2)
    print(text)
    path = Path(__file__).resolve().parent / "results" / "search_costs.json"
    path.write_text(text + "\n")


if __name__ == "__main__":
    main()
