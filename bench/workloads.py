"""The two workloads, for each framework. Each run happens in its own process.

    python bench/workloads.py textgraph-step --base-url URL --batch 8 --repeats 5
    python bench/workloads.py textgrad-step  --base-url URL --batch 8 --repeats 5
    python bench/workloads.py textgraph-overhead --ops 10000
    python bench/workloads.py textgrad-overhead  --ops 10000

Each prints one JSON object. `step` is one optimization step of a two-stage
pipeline (system prompt -> LLM call -> LLM call) over a batch: forward, a
TextLoss per example, the summed loss, backward, one TGD step. `overhead`
builds 100 chains of LLM calls (10,000 ops in all) sharing one system
prompt on an instant in-process engine, and runs forward and backward.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from typing import Any

SYSTEM = "You are a helpful assistant. Answer the question."
EVALUATION = "Evaluate the answer: is it correct, complete and concise? Criticize it."


def questions(batch: int) -> list[str]:
    return [f"Question {i}: I have {i + 2} apples and {i + 3} pears. How many fruits do I have?"
            for i in range(batch)]


# --- textgraph -------------------------------------------------------------------------


async def _textgraph_step_once(engine: Any, batch: int) -> tuple[float, int]:
    import textgraph as tg

    system = tg.Variable(SYSTEM, role_description="system prompt of the answering model",
                         requires_grad=True)
    stage1, stage2 = tg.LLMCall(engine, system), tg.LLMCall(engine)
    loss_fn = tg.TextLoss(EVALUATION, engine=engine)
    optimizer = tg.TGD([system], engine=engine)

    async def example(question: str) -> tg.Variable:
        first = await stage1.acall(tg.Variable(question, role_description="question"))
        return await loss_fn.acall(await stage2.acall(first))

    started = time.perf_counter()
    losses = await asyncio.gather(*(example(q) for q in questions(batch)))
    total = tg.sum(losses)
    await total.abackward()
    await optimizer.astep()
    wall = time.perf_counter() - started
    if system.value == SYSTEM:
        raise RuntimeError(f"the optimizer did not update the prompt: {system.warnings}")
    return wall, _critical_path(total)


def _critical_path(loss: Any) -> int:
    from textgraph.graph import critical_path_calls

    return critical_path_calls(loss)


def textgraph_step(base_url: str, batch: int, repeats: int, concurrency: int = 32) -> dict:
    import textgraph as tg

    async def run() -> dict:
        engine = tg.get_engine("openai/bench-model", base_url=base_url, cache=False,
                               max_concurrency=concurrency)
        walls, path = [], 0
        for _ in range(repeats + 1):  # the first run warms connections up and is not timed
            wall, path = await _textgraph_step_once(engine, batch)
            walls.append(wall)
        walls = walls[1:]
        await engine.aclose()
        return {"walls_s": walls, "wall_s": statistics.median(walls), "critical_path_calls": path}

    return asyncio.run(run())


def textgraph_overhead(ops: int) -> dict:
    import textgraph as tg
    from textgraph.engines import ChatResponse, Engine

    class Instant(Engine):
        """Answers at once, like TextGrad's Instant below; JSON when a schema is asked."""

        async def _generate(self, request: Any) -> ChatResponse:
            fmt = request.response_format
            if fmt is not None and fmt.type == "json_schema":
                keys = fmt.json_schema["properties"]
                return ChatResponse(text=json.dumps(dict.fromkeys(keys, "ok")))
            return ChatResponse(text="ok")

    engine = Instant()
    chains, depth = 100, ops // 100

    async def run() -> float:
        system = tg.Variable(SYSTEM, role_description="system prompt", requires_grad=True)
        call = tg.LLMCall(engine, system)
        started = time.perf_counter()

        async def chain(i: int) -> tg.Variable:
            v = tg.Variable(f"input {i}", role_description="input")
            for _ in range(depth):
                v = await call.acall(v)
            return v

        ends = await asyncio.gather(*(chain(i) for i in range(chains)))
        loss = await tg.TextLoss(EVALUATION, engine=engine).acall(tg.concat(list(ends)))
        await loss.abackward()
        return time.perf_counter() - started

    wall = asyncio.run(run())
    return {"wall_s": wall, "peak_rss_mb": _peak_rss_mb(), "ops": chains * depth}


# --- TextGrad ----------------------------------------------------------------------------


def _textgrad_engine(base_url: str) -> Any:
    from openai import OpenAI
    from textgrad.engine.local_model_openai_api import ChatExternalClient

    # A fresh cache directory per engine: TextGrad's disk cache must not answer.
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="textgrad-cache-")
    client = OpenAI(base_url=base_url, api_key="sk-local")
    return ChatExternalClient(client=client, model_string="bench-model")


def textgrad_step(base_url: str, batch: int, repeats: int) -> dict:
    import textgrad as tgd

    walls = []
    for _ in range(repeats + 1):  # the first run warms up and is not timed
        engine = _textgrad_engine(base_url)
        tgd.set_backward_engine(engine, override=True)
        system = tgd.Variable(SYSTEM, requires_grad=True,
                              role_description="system prompt of the answering model")
        stage1, stage2 = tgd.BlackboxLLM(engine, system_prompt=system), tgd.BlackboxLLM(engine)
        loss_fn = tgd.TextLoss(EVALUATION, engine=engine)
        optimizer = tgd.TGD([system], engine=engine)
        started = time.perf_counter()
        losses = []
        for question in questions(batch):
            x = tgd.Variable(question, requires_grad=False, role_description="question")
            losses.append(loss_fn(stage2(stage1(x))))
        total = tgd.sum(losses)
        total.backward()
        optimizer.step()
        walls.append(time.perf_counter() - started)
        if system.value == SYSTEM:
            raise RuntimeError("TextGrad's optimizer did not update the prompt")
    walls = walls[1:]
    return {"walls_s": walls, "wall_s": statistics.median(walls)}


def textgrad_overhead(ops: int) -> dict:
    import textgrad as tgd
    from textgrad.engine.base import EngineLM

    class Instant(EngineLM):
        model_string = "instant"
        system_prompt = "You are a helpful assistant."

        def generate(self, prompt: Any, system_prompt: str | None = None, **kwargs: Any) -> str:
            return "ok"

        def __call__(self, *args: Any, **kwargs: Any) -> str:
            return self.generate(*args, **kwargs)

    sys.setrecursionlimit(100_000)
    engine = Instant()
    tgd.set_backward_engine(engine, override=True)
    chains, depth = 100, ops // 100
    system = tgd.Variable(SYSTEM, requires_grad=True, role_description="system prompt")
    call = tgd.BlackboxLLM(engine, system_prompt=system)
    started = time.perf_counter()
    ends = []
    for i in range(chains):
        v = tgd.Variable(f"input {i}", requires_grad=False, role_description="input")
        for _ in range(depth):
            v = call(v)
        ends.append(v)
    loss = tgd.TextLoss(EVALUATION, engine=engine)(tgd.sum(ends))
    loss.backward()
    wall = time.perf_counter() - started
    return {"wall_s": wall, "peak_rss_mb": _peak_rss_mb(), "ops": chains * depth}


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workload", choices=["textgraph-step", "textgrad-step",
                                             "textgraph-overhead", "textgrad-overhead"])
    parser.add_argument("--base-url")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--ops", type=int, default=10_000)
    args = parser.parse_args()
    if args.workload == "textgraph-step":
        result = textgraph_step(args.base_url, args.batch, args.repeats, args.concurrency)
    elif args.workload == "textgrad-step":
        result = textgrad_step(args.base_url, args.batch, args.repeats)
    elif args.workload == "textgraph-overhead":
        result = textgraph_overhead(args.ops)
    else:
        result = textgrad_overhead(args.ops)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
