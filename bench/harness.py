"""Run the frameworks on the same workloads and print one JSON document.

    python bench/harness.py [--name default] [--latency 0.1] [--batches 1,4,8,32] [--repeats 5]
                            [--frameworks textgraph,textgrad,dspy] [--no-fused]
                            [--workloads step,overhead,evaluate,evaluate-overhead]
                            [--eval-examples 1000] [--eval-concurrency 64] [--eval-repeats 3]
                            [--eval-overhead-examples 10000] [--no-eval-diagnostics]

The LLM server runs in its own process with a fixed latency per request and
counts requests and whitespace tokens; each framework's workload runs in a
fresh subprocess. `step` and `overhead` compare textgraph with TextGrad
(`step` also runs textgraph with fused backward, `textgraph_fused`, and with
the fused loss too, `textgraph_fused_loss`, unless --no-fused, and checks
both against FUSED_TARGETS);
`evaluate` compares tg.Evaluator with dspy.Evaluate (plus, unless
--no-eval-diagnostics, the bare HTTP clients and textgraph with its
connections split over 8 pools); `evaluate-overhead` times tg.Evaluator on
an instant in-process engine. Results go to stdout and
bench/results/<name>.json. TextGrad's logs and DSPy's disk cache go to a
temporary directory that is deleted at the end (never ./logs).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
EVAL_TARGET = 1.3  # evaluate: wall <= 1.3 x the bound
EVAL_OVERHEAD_TARGET_US = 300.0  # evaluate-overhead: 10,000 examples in under 3 s
FUSED_TARGETS = {8: (10.0, 1.15), 32: (30.0, 1.3)}  # batch -> (x TextGrad, wall / bound)
FUSED_VARIANTS = {"textgraph_fused": "--fused", "textgraph_fused_loss": "--fused-loss"}


class BenchServer:
    def __init__(self, latency: float) -> None:
        self.proc = subprocess.Popen([sys.executable, str(HERE / "server.py"),
                                      "--latency", str(latency)],
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the bench server did not start")
        self.url = f"http://127.0.0.1:{json.loads(line)['port']}"

    def reset(self) -> None:
        httpx.post(f"{self.url}/_reset", timeout=10).raise_for_status()

    def stats(self) -> dict:
        return httpx.get(f"{self.url}/_stats", timeout=10).json()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def run_workload(*args: str) -> dict:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, str(HERE / "workloads.py"), *args], env=env,
                          capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"workload {args[0]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def step(server: BenchServer, framework: str, batch: int, repeats: int, latency: float) -> dict:
    server.reset()
    variant = FUSED_VARIANTS.get(framework)
    result = run_workload("textgraph-step" if variant else f"{framework}-step",
                          "--base-url", f"{server.url}/v1",
                          "--batch", str(batch), "--repeats", str(repeats),
                          *((variant,) if variant else ()))
    stats = server.stats()
    runs = repeats + 1  # every run, the untimed warm-up included, does the same work
    row = {
        "wall_s": round(result["wall_s"], 3),
        "requests": stats["requests"] // runs,
        "prompt_tokens": stats["prompt_tokens"] // runs,
        "completion_tokens": stats["completion_tokens"] // runs,
        "max_in_flight": stats["max_in_flight"],
    }
    if "critical_path_calls" in result:
        bound = result["critical_path_calls"] * latency
        row.update(critical_path_calls=result["critical_path_calls"],
                   critical_path_s=round(bound, 3),
                   wall_over_bound=round(result["wall_s"] / bound, 3))
    return row


def fused_comparison(fused: dict, textgrad: dict, batch: int) -> dict:
    """Fused step against TextGrad's: speed-up, token ratio, and the issue's targets."""
    out = {"speedup": round(textgrad["wall_s"] / fused["wall_s"], 2),
           "prompt_token_ratio": round(fused["prompt_tokens"] / textgrad["prompt_tokens"], 3),
           "wall_over_bound": fused["wall_over_bound"]}
    if batch in FUSED_TARGETS:
        speedup, over_bound = FUSED_TARGETS[batch]
        out.update(target={"speedup": speedup, "wall_over_bound": over_bound},
                   met_speedup=out["speedup"] >= speedup,
                   met_bound=fused["wall_over_bound"] <= over_bound)
    return out


def eval_bound(examples: int, concurrency: int, latency: float) -> float:
    """The fastest any evaluation can be: ceil(examples / concurrency) rounds of one call."""
    return math.ceil(examples / concurrency) * latency


def evaluate_row(result: dict, examples: int, concurrency: int, latency: float) -> dict:
    """A workload's evaluate result checked (one request per example in every timed run, as
    the server counted) and put against the bound."""
    if any(n != examples for n in result["requests"]):
        raise RuntimeError(f"expected {examples} requests per run, the server counted "
                           f"{result['requests']}")
    bound = eval_bound(examples, concurrency, latency)
    return {**result, "bound_s": round(bound, 3),
            "wall_over_bound": round(result["wall_s"] / bound, 3)}


EVAL_RUNS = {  # name -> (workload, extra arguments)
    "textgraph": ("textgraph-evaluate", ()),
    "dspy": ("dspy-evaluate", ()),
}
EVAL_DIAGNOSTICS = {
    "textgraph_8_pools": ("textgraph-evaluate", ("--pool-shards", "8")),
    "httpx_client_only": ("httpx-evaluate", ()),
    "aiohttp_client_only": ("aiohttp-evaluate", ()),
}


def evaluate(server: BenchServer, args: argparse.Namespace, frameworks: list[str]) -> dict:
    n, concurrency, latency = args.eval_examples, args.eval_concurrency, args.latency
    runs = {name: EVAL_RUNS[name] for name in frameworks if name in EVAL_RUNS}
    if args.eval_diagnostics:
        runs.update(EVAL_DIAGNOSTICS)
    section: dict = {"examples": n, "concurrency": concurrency, "latency_s": latency,
                     "repeats": args.eval_repeats,
                     "bound_s": round(eval_bound(n, concurrency, latency), 3),
                     "target_wall_over_bound": EVAL_TARGET}
    for name, (workload, extra) in runs.items():
        server.reset()
        result = run_workload(workload, "--base-url", f"{server.url}/v1", "--examples", str(n),
                              "--concurrency", str(concurrency),
                              "--repeats", str(args.eval_repeats), *extra)
        row = evaluate_row(result, n, concurrency, latency)
        last = server.stats()["requests"]  # the counters the last timed run left
        if last != n:
            raise RuntimeError(f"{name}: the server counted {last} requests, expected {n}")
        section[name] = row
        print(f"evaluate {name}: {json.dumps(row)}", file=sys.stderr)
    if "textgraph" in section:
        section["textgraph_met_target"] = section["textgraph"]["wall_over_bound"] <= EVAL_TARGET
    if "textgraph" in section and "dspy" in section:
        section["textgraph_over_dspy_throughput"] = round(
            section["textgraph"]["examples_per_s"] / section["dspy"]["examples_per_s"], 3)
    return section


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", default="default")
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--batches", default="1,4,8,32")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ops", type=int, default=10_000)
    parser.add_argument("--frameworks", default="textgraph,textgrad,dspy")
    parser.add_argument("--workloads", default="step,overhead,evaluate,evaluate-overhead")
    parser.add_argument("--eval-examples", type=int, default=1000)
    parser.add_argument("--eval-concurrency", type=int, default=64)
    parser.add_argument("--eval-repeats", type=int, default=3)
    parser.add_argument("--eval-overhead-examples", type=int, default=10_000)
    parser.add_argument("--eval-diagnostics", action=argparse.BooleanOptionalAction,
                        default=True)
    parser.add_argument("--fused", action=argparse.BooleanOptionalAction, default=True,
                        help="step: also run textgraph with fused backward")
    args = parser.parse_args()
    frameworks = args.frameworks.split(",")
    workloads = args.workloads.split(",")
    unknown = set(workloads) - {"step", "overhead", "evaluate", "evaluate-overhead"}
    if unknown:
        parser.error(f"unknown workloads {sorted(unknown)}")
    step_frameworks = [fw for fw in frameworks if fw in ("textgraph", "textgrad")]
    step_runs = step_frameworks + (list(FUSED_VARIANTS) if args.fused and
                                   "textgraph" in frameworks else [])
    document: dict = {
        "latency_s": args.latency,
        "repeats": args.repeats,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform()},
    }
    started = time.perf_counter()
    # TextGrad logs every prompt into $TEXTGRAD_LOG_DIR (default ./logs, created on import);
    # DSPy caches in $DSPY_CACHEDIR. The workloads inherit both, pointing in here.
    scratch = tempfile.TemporaryDirectory(prefix="bench-")
    os.environ["TEXTGRAD_LOG_DIR"] = os.path.join(scratch.name, "textgrad-logs")
    os.environ["DSPY_CACHEDIR"] = os.path.join(scratch.name, "dspy-cache")
    try:
        server = BenchServer(args.latency)
        try:
            if "step" in workloads:
                document["step"] = {}
                for batch in (int(b) for b in args.batches.split(",")):
                    row = {fw: step(server, fw, batch, args.repeats, args.latency)
                           for fw in step_runs}
                    if "textgrad" in row and "textgraph" in row:
                        ours, theirs = row["textgraph"], row["textgrad"]
                        row["speedup"] = round(theirs["wall_s"] / ours["wall_s"], 2)
                        ratio = ours["prompt_tokens"] / theirs["prompt_tokens"]
                        row["prompt_token_ratio"] = round(ratio, 3)
                    for variant in FUSED_VARIANTS:
                        if "textgrad" in row and variant in row:
                            row[f"{variant}_vs_textgrad"] = fused_comparison(
                                row[variant], row["textgrad"], batch)
                    document["step"][f"B={batch}"] = row
                    print(f"B={batch}: {json.dumps(row)}", file=sys.stderr)
            if "evaluate" in workloads:
                document["evaluate"] = evaluate(server, args, frameworks)
        finally:
            server.stop()
        if "overhead" in workloads:
            document["overhead"] = {fw: run_workload(f"{fw}-overhead", "--ops", str(args.ops))
                                    for fw in step_frameworks}
        if "evaluate-overhead" in workloads:
            result = run_workload("textgraph-evaluate-overhead",
                                  "--examples", str(args.eval_overhead_examples),
                                  "--concurrency", str(args.eval_concurrency))
            document["evaluate_overhead"] = {
                "textgraph": result, "target_us_per_example": EVAL_OVERHEAD_TARGET_US,
                "met_target": result["us_per_example"] < EVAL_OVERHEAD_TARGET_US}
    finally:
        scratch.cleanup()
    document["seconds"] = round(time.perf_counter() - started, 1)
    out = HERE / "results" / f"{args.name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()


def child_json(command: list[str], label: str) -> dict:
    """Run one measured run in a fresh process (imports before its clock starts) and
    return the JSON document its last line of stdout holds."""
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "PYTHONWARNINGS": "ignore",
        "CI": "1",
    }
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"{label} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
