"""The workloads, for each framework. Each run happens in its own process.

    python bench/workloads.py textgraph-step --base-url URL --batch 8 --repeats 5
                              [--fused | --fused-loss]
    python bench/workloads.py textgrad-step  --base-url URL --batch 8 --repeats 5
    python bench/workloads.py textgraph-overhead --ops 10000
    python bench/workloads.py textgrad-overhead  --ops 10000
    python bench/workloads.py textgraph-evaluate --base-url URL --examples 1000 --concurrency 64
    python bench/workloads.py dspy-evaluate      --base-url URL --examples 1000 --concurrency 64
    python bench/workloads.py httpx-evaluate     --base-url URL --examples 1000 --concurrency 64
    python bench/workloads.py aiohttp-evaluate   --base-url URL --examples 1000 --concurrency 64
    python bench/workloads.py textgraph-evaluate-overhead --examples 10000 --concurrency 64

Each prints one JSON object. `step` is one optimization step of a two-stage
pipeline (system prompt -> LLM call -> LLM call) over a batch: forward, a
TextLoss per example, the summed loss, backward, one TGD step (`--fused`: fused
backward, one critic call per example instead of one per op; `--fused-loss`:
also tg.losses.FusedTextLoss, which evaluates and writes the parameter critiques
in the same call, so backward needs no call of its own). `overhead`
builds 100 chains of LLM calls (10,000 ops in all) sharing one system
prompt on an instant in-process engine, and runs forward and backward.
`evaluate` scores a one-call QA program on N examples with at most
`concurrency` in flight (tg.Evaluator; dspy.Evaluate with dspy.Predict);
each timed run resets the server's counters first and reports the requests
it counted, after an untimed warm-up on other questions. `httpx-evaluate`
and `aiohttp-evaluate` send the same requests with no framework (what the
HTTP client alone costs); `textgraph-evaluate --pool-shards 8` gives the
engine eight connection pools instead of one. `evaluate-overhead`
runs tg.Evaluator on an instant in-process engine and reports microseconds
per example, with the same program run without the Evaluator beside it.
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


def _scratch_dirs() -> None:
    """Call before importing TextGrad or DSPy. TextGrad 0.1.8 creates $TEXTGRAD_LOG_DIR
    (default ./logs/) when imported and logs every prompt into it (a 255 MB folder was
    committed once); DSPy keeps its disk cache in $DSPY_CACHEDIR (default ~/.dspy_cache).
    Both go to throwaway directories (bench/harness.py passes one it deletes afterwards)."""
    for name, prefix in (("TEXTGRAD_LOG_DIR", "bench-textgrad-logs-"),
                         ("DSPY_CACHEDIR", "bench-dspy-cache-")):
        if not os.environ.get(name):
            os.environ[name] = tempfile.mkdtemp(prefix=prefix)

SYSTEM = "You are a helpful assistant. Answer the question."
EVALUATION = "Evaluate the answer: is it correct, complete and concise? Criticize it."


def questions(batch: int) -> list[str]:
    return [f"Question {i}: I have {i + 2} apples and {i + 3} pears. How many fruits do I have?"
            for i in range(batch)]


# --- textgraph -------------------------------------------------------------------------


async def _textgraph_step_once(engine: Any, batch: int, fused: bool = False,
                               fused_loss: bool = False) -> tuple[float, int]:
    import textgraph as tg
    from textgraph.losses import FusedTextLoss

    system = tg.Variable(SYSTEM, role_description="system prompt of the answering model",
                         requires_grad=True)
    stage1, stage2 = tg.LLMCall(engine, system), tg.LLMCall(engine)
    loss_fn = (FusedTextLoss if fused_loss else tg.TextLoss)(EVALUATION, engine=engine)
    optimizer = tg.TGD([system], engine=engine)

    async def example(question: str) -> tg.Variable:
        first = await stage1.acall(tg.Variable(question, role_description="question"))
        return await loss_fn.acall(await stage2.acall(first))

    started = time.perf_counter()
    losses = await asyncio.gather(*(example(q) for q in questions(batch)))
    total = tg.sum(losses)
    await total.abackward(fused=fused)
    critiques = len(system.gradients)
    await optimizer.astep()
    wall = time.perf_counter() - started
    if system.value == SYSTEM:
        raise RuntimeError(f"the optimizer did not update the prompt: {system.warnings}")
    fallbacks = total.warnings + [w for loss in losses for w in loss.warnings]
    if fused and (fallbacks or critiques != batch):  # no silent per-op fallback
        raise RuntimeError(f"fused backward did not give one critique per example: "
                           f"{critiques} of {batch}, {fallbacks}")
    return wall, _critical_path(total, fused)


def _critical_path(loss: Any, fused: bool = False) -> int:
    from textgraph.graph import critical_path_calls

    return critical_path_calls(loss, fused=fused)


def textgraph_step(base_url: str, batch: int, repeats: int, concurrency: int = 32,
                   fused: bool = False, fused_loss: bool = False) -> dict:
    import textgraph as tg

    async def run() -> dict:
        engine = tg.get_engine("openai/bench-model", base_url=base_url, cache=False,
                               max_concurrency=concurrency)
        walls, path = [], 0
        for _ in range(repeats + 1):  # the first run warms connections up and is not timed
            wall, path = await _textgraph_step_once(engine, batch, fused or fused_loss,
                                                    fused_loss)
            walls.append(wall)
        walls = walls[1:]
        await engine.aclose()
        return {"walls_s": walls, "wall_s": statistics.median(walls), "critical_path_calls": path}

    return asyncio.run(run())


def _instant_engine() -> Any:
    from textgraph.engines import ChatResponse, Engine

    class Instant(Engine):
        """Answers at once, like TextGrad's Instant below; JSON when a schema is asked."""

        async def _generate(self, request: Any) -> ChatResponse:
            fmt = request.response_format
            if fmt is not None and fmt.type == "json_schema":
                keys = fmt.json_schema["properties"]
                return ChatResponse(text=json.dumps(dict.fromkeys(keys, "ok")))
            return ChatResponse(text="ok")

    return Instant()


def textgraph_overhead(ops: int) -> dict:
    import textgraph as tg

    engine = _instant_engine()
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
    _scratch_dirs()
    from openai import OpenAI
    from textgrad.engine.local_model_openai_api import ChatExternalClient

    # A fresh cache directory per engine: TextGrad's disk cache must not answer.
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="textgrad-cache-")
    client = OpenAI(base_url=base_url, api_key="sk-local")
    return ChatExternalClient(client=client, model_string="bench-model")


def textgrad_step(base_url: str, batch: int, repeats: int) -> dict:
    _scratch_dirs()
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
    _scratch_dirs()
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


# --- evaluate: score a one-call QA program on N examples ----------------------------------


def eval_examples(n: int, start: int = 0) -> list[dict[str, str]]:
    return [{"question": f"Question {i}: I have {i + 2} apples and {i + 3} pears. "
                         "How many fruits do I have?",
             "answer": str(2 * i + 5)} for i in range(start, start + n)]


WARMUP_START = 1_000_000  # warm-up questions never repeat a timed one


def answered(prediction: str, example: Any) -> bool:
    """The metric: the program produced a non-empty answer (the bench server's replies are
    deterministic filler, so correctness is not what is measured; scoring every example is)."""
    return bool(prediction.strip())


def _qa_program(engine: Any) -> Any:
    import textgraph as tg

    class QA(tg.Module):
        def __init__(self) -> None:
            self.call = tg.LLMCall(engine, tg.Variable("Answer.", role_description="system prompt",
                                                       requires_grad=True))

        async def aforward(self, example: dict) -> tg.Variable:
            question = tg.Variable(example["question"], role_description="question")
            return await self.call.acall(question)

    return QA()


class _Counters:
    """The bench server's request counters (bench/server.py, or an in-process LLMTestServer)."""

    def __init__(self, base_url: str) -> None:
        self.root = base_url.rstrip("/").removesuffix("/v1")

    def reset(self) -> None:
        import httpx

        httpx.post(f"{self.root}/_reset", timeout=10).raise_for_status()

    def stats(self) -> dict:
        import httpx

        return httpx.get(f"{self.root}/_stats", timeout=10).json()


def _timed_runs(counters: _Counters, examples: int, repeats: int, run_once: Any) -> dict:
    """Reset the server's counters, time one evaluation, read the counters; `repeats` times.
    Every timed run must make exactly one request per example."""
    runs = []
    for _ in range(repeats):
        counters.reset()
        started = time.perf_counter()
        scored = run_once()
        wall = time.perf_counter() - started
        stats = counters.stats()
        if stats["requests"] != examples or scored != examples:
            raise RuntimeError(f"{examples} examples made {stats['requests']} requests and "
                               f"{scored} were scored; expected one request per example")
        runs.append({"wall_s": wall, **stats})
    walls = [r["wall_s"] for r in runs]
    wall = statistics.median(walls)
    return {
        "examples": examples,
        "walls_s": [round(w, 4) for w in walls],
        "wall_s": round(wall, 4),
        "examples_per_s": round(examples / wall, 1),
        "requests": [r["requests"] for r in runs],
        "max_in_flight": max(r["max_in_flight"] for r in runs),
        "prompt_tokens": runs[-1]["prompt_tokens"],
        "completion_tokens": runs[-1]["completion_tokens"],
    }


def _sharded_transport(connections: int, shards: int) -> Any:
    """An httpx transport of `shards` connection pools of connections/shards each, each
    request sent on the least busy pool. A diagnostic: httpcore 1.0.9 walks every
    connection of a pool (and polls its socket) on every request and release, so one pool
    of 64 connections costs far more per request than eight pools of eight."""
    import httpx

    class Sharded(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            per = max(1, connections // shards)
            limits = httpx.Limits(max_connections=per)
            self.pools = [httpx.AsyncHTTPTransport(limits=limits) for _ in range(shards)]
            self.busy = [0] * shards

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            i = min(range(len(self.pools)), key=self.busy.__getitem__)
            self.busy[i] += 1
            try:
                response = await self.pools[i].handle_async_request(request)
                await response.aread()  # replies are small: release the connection here
            finally:
                self.busy[i] -= 1
            return response

        async def aclose(self) -> None:
            for pool in self.pools:
                await pool.aclose()

    return Sharded()


def textgraph_evaluate(base_url: str, examples: int, concurrency: int, repeats: int = 3,
                       warmup: int | None = None, pool_shards: int = 0) -> dict:
    """tg.Evaluator over `examples` questions, `concurrency` in flight (engine and Evaluator).
    pool_shards > 0 passes the engine a transport of that many connection pools (a
    diagnostic, through get_engine's public transport= option); 0 is the default client."""
    import textgraph as tg

    counters = _Counters(base_url)
    data = eval_examples(examples)
    warm = eval_examples(concurrency if warmup is None else warmup, start=WARMUP_START)

    async def build() -> tuple[Any, Any]:
        options = {"transport": _sharded_transport(concurrency, pool_shards)} if pool_shards \
            else {}
        engine = tg.get_engine("openai/bench-model", base_url=base_url, api_key="x",
                               cache=False, max_concurrency=concurrency, **options)
        evaluator = tg.Evaluator(_qa_program(engine), answered, max_concurrency=concurrency,
                                 progress=False)
        return engine, evaluator

    loop = asyncio.new_event_loop()  # one loop for every run; the timing and counters are sync
    engine, evaluator = loop.run_until_complete(build())
    last: list[Any] = []

    def run_once() -> int:
        result = loop.run_until_complete(evaluator.aevaluate(data))
        last[:] = [result]
        return result.n_scored if result.n_failed == 0 and result.usage.calls == examples else -1

    try:
        if warm:
            loop.run_until_complete(evaluator.aevaluate(warm))
        attempts = engine.inner.attempts
        summary = _timed_runs(counters, examples, repeats, run_once)
        attempts = engine.inner.attempts - attempts
    finally:
        loop.run_until_complete(engine.aclose())
        loop.close()
    result = last[0]
    summary.update(
        http_attempts_per_run=attempts / repeats,  # > examples would mean retries
        pool_shards=pool_shards,
        mean=result.mean, n_scored=result.n_scored, n_failed=result.n_failed,
        usage=result.usage.model_dump(), latency_p50_s=round(result.latency_p50, 4),
        latency_p95_s=round(result.latency_p95, 4), evaluator_seconds=round(result.seconds, 4),
    )
    return summary


def client_floor(client: str, base_url: str, examples: int, concurrency: int,
                 repeats: int = 3, warmup: int | None = None) -> dict:
    """No framework: the same chat request per example straight from one httpx.AsyncClient
    (max_connections=concurrency, as textgraph's engine makes it) or one aiohttp session,
    under a semaphore. What the HTTP client alone costs on this machine and server."""
    counters = _Counters(base_url)
    url = f"{base_url.rstrip('/')}/chat/completions"
    data = eval_examples(examples)
    warm = eval_examples(concurrency if warmup is None else warmup, start=WARMUP_START)

    def body(example: dict) -> dict:
        return {"model": "bench-model", "messages": [
            {"role": "system", "content": "Answer."},
            {"role": "user", "content": example["question"]}]}

    async def session() -> tuple[Any, Any]:
        if client == "httpx":
            import httpx

            http = httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency))

            async def post(example: dict) -> str:
                reply = await http.post(url, json=body(example))
                return reply.json()["choices"][0]["message"]["content"]

            return http, post
        import aiohttp

        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))

        async def post(example: dict) -> str:
            async with http.post(url, json=body(example)) as reply:
                return (await reply.json())["choices"][0]["message"]["content"]

        return http, post

    loop = asyncio.new_event_loop()
    http, post = loop.run_until_complete(session())

    async def run(rows: list[dict]) -> int:
        semaphore = asyncio.Semaphore(concurrency)

        async def one(example: dict) -> bool:
            async with semaphore:
                return answered(await post(example), example)

        return sum(await asyncio.gather(*(one(e) for e in rows)))

    try:
        if warm:
            loop.run_until_complete(run(warm))
        summary = _timed_runs(counters, examples, repeats,
                              lambda: loop.run_until_complete(run(data)))
    finally:
        close = http.aclose() if client == "httpx" else http.close()
        loop.run_until_complete(close)
        loop.close()
    summary["client"] = client
    return summary


def dspy_evaluate(base_url: str, examples: int, concurrency: int, repeats: int = 3,
                  warmup: int | None = None) -> dict:
    """dspy.Evaluate(num_threads=concurrency) of dspy.Predict("question -> answer"), both
    DSPy caches off so every example is a request."""
    _scratch_dirs()
    import dspy

    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    lm = dspy.LM("openai/bench-model", api_base=base_url, api_key="x", cache=False)
    dspy.configure(lm=lm)
    program = dspy.Predict("question -> answer")

    def metric(example: Any, prediction: Any, trace: Any = None) -> bool:
        return answered(prediction.answer, example)

    def devset(rows: list[dict]) -> list[Any]:
        return [dspy.Example(**row).with_inputs("question") for row in rows]

    def evaluator(rows: list[dict]) -> Any:
        return dspy.Evaluate(devset=devset(rows), metric=metric, num_threads=concurrency,
                             display_progress=False, max_errors=len(rows))

    counters = _Counters(base_url)
    evaluate = evaluator(eval_examples(examples))
    warm = eval_examples(concurrency if warmup is None else warmup, start=WARMUP_START)
    if warm:
        evaluator(warm)(program)
    last: list[Any] = []

    def run_once() -> int:
        result = evaluate(program)
        last[:] = [result]
        return sum(1 for _, _, score in result.results if score)

    summary = _timed_runs(counters, examples, repeats, run_once)
    used = sorted({type(e).__name__ for e in getattr(lm, "_engine_store", {}).values()})
    summary.update(score=last[0].score, dspy=dspy.__version__, engine=lm.engine,
                   engines_used=used)
    return summary


def textgraph_evaluate_overhead(examples: int, concurrency: int, repeats: int = 3,
                                profile: str | None = None) -> dict:
    """tg.Evaluator on an instant in-process engine: framework time per example. The same
    program and metric run without the Evaluator (gather under a semaphore) beside it."""
    import textgraph as tg

    program = _qa_program(_instant_engine())
    evaluator = tg.Evaluator(program, answered, max_concurrency=concurrency, progress=False)
    data = eval_examples(examples)

    async def bare() -> None:
        semaphore = asyncio.Semaphore(concurrency)

        async def one(example: dict) -> None:
            async with semaphore:
                answered((await program.aforward(example)).value, example)

        await asyncio.gather(*(one(e) for e in data))

    async def run() -> tuple[list[float], list[float]]:
        await evaluator.aevaluate(eval_examples(100, start=WARMUP_START))  # imports, first use
        walls, bares = [], []
        for _ in range(repeats):
            started = time.perf_counter()
            result = await evaluator.aevaluate(data)
            walls.append(time.perf_counter() - started)
            if result.n_scored != examples or result.usage.calls != examples:
                raise RuntimeError(f"scored {result.n_scored} of {examples}, "
                                   f"{result.usage.calls} calls")
            del result
            started = time.perf_counter()
            await bare()
            bares.append(time.perf_counter() - started)
        if profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
            await evaluator.aevaluate(data)
            profiler.disable()
            profiler.dump_stats(profile)
        return walls, bares

    walls, bares = asyncio.run(run())
    wall, bare_wall = statistics.median(walls), statistics.median(bares)
    return {
        "examples": examples,
        "concurrency": concurrency,
        "walls_s": [round(w, 4) for w in walls],
        "wall_s": round(wall, 4),
        "us_per_example": round(wall / examples * 1e6, 1),
        "program_only_wall_s": round(bare_wall, 4),
        "program_only_us_per_example": round(bare_wall / examples * 1e6, 1),
        "evaluator_us_per_example": round((wall - bare_wall) / examples * 1e6, 1),
        "peak_rss_mb": _peak_rss_mb(),
    }


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workload", choices=["textgraph-step", "textgrad-step",
                                             "textgraph-overhead", "textgrad-overhead",
                                             "textgraph-evaluate", "dspy-evaluate",
                                             "httpx-evaluate", "aiohttp-evaluate",
                                             "textgraph-evaluate-overhead"])
    parser.add_argument("--base-url")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--ops", type=int, default=10_000)
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--warmup", type=int, help="warm-up examples (default: concurrency)")
    parser.add_argument("--pool-shards", type=int, default=0,
                        help="textgraph-evaluate: split the connections over this many pools")
    parser.add_argument("--profile", help="evaluate-overhead: write a cProfile of one run here")
    parser.add_argument("--fused", action="store_true", help="textgraph-step: fused backward")
    parser.add_argument("--fused-loss", action="store_true",
                        help="textgraph-step: FusedTextLoss and fused backward")
    args = parser.parse_args()
    if args.workload == "textgraph-step":
        result = textgraph_step(args.base_url, args.batch, args.repeats, args.concurrency,
                                args.fused, args.fused_loss)
    elif args.workload == "textgrad-step":
        result = textgrad_step(args.base_url, args.batch, args.repeats)
    elif args.workload == "textgraph-overhead":
        result = textgraph_overhead(args.ops)
    elif args.workload == "textgrad-overhead":
        result = textgrad_overhead(args.ops)
    elif args.workload == "textgraph-evaluate":
        result = textgraph_evaluate(args.base_url, args.examples, args.concurrency,
                                    args.repeats, args.warmup, args.pool_shards)
    elif args.workload in ("httpx-evaluate", "aiohttp-evaluate"):
        result = client_floor(args.workload.split("-")[0], args.base_url, args.examples,
                              args.concurrency, args.repeats, args.warmup)
    elif args.workload == "dspy-evaluate":
        result = dspy_evaluate(args.base_url, args.examples, args.concurrency, args.repeats,
                               args.warmup)
    else:
        result = textgraph_evaluate_overhead(args.examples, args.concurrency, args.repeats,
                                             args.profile)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
