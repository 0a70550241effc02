"""Run both frameworks on the same workloads and print one JSON document.

    python bench/harness.py [--name default] [--latency 0.1] [--batches 1,4,8,32] [--repeats 5]
                            [--frameworks textgraph,textgrad]

The LLM server runs in its own process with a fixed latency per request and
counts requests and whitespace tokens; each framework's workload runs in a
fresh subprocess. Results go to stdout and bench/results/<name>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent


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
    result = run_workload(f"{framework}-step", "--base-url", f"{server.url}/v1",
                          "--batch", str(batch), "--repeats", str(repeats))
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", default="default")
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--batches", default="1,4,8,32")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ops", type=int, default=10_000)
    parser.add_argument("--frameworks", default="textgraph,textgrad")
    args = parser.parse_args()
    frameworks = args.frameworks.split(",")
    document: dict = {
        "latency_s": args.latency,
        "repeats": args.repeats,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform()},
        "step": {},
        "overhead": {},
    }
    started = time.perf_counter()
    server = BenchServer(args.latency)
    try:
        for batch in (int(b) for b in args.batches.split(",")):
            row = {fw: step(server, fw, batch, args.repeats, args.latency) for fw in frameworks}
            if "textgrad" in row and "textgraph" in row:
                ours, theirs = row["textgraph"], row["textgrad"]
                row["speedup"] = round(theirs["wall_s"] / ours["wall_s"], 2)
                ratio = ours["prompt_tokens"] / theirs["prompt_tokens"]
                row["prompt_token_ratio"] = round(ratio, 3)
            document["step"][f"B={batch}"] = row
            print(f"B={batch}: {json.dumps(row)}", file=sys.stderr)
    finally:
        server.stop()
    for fw in frameworks:
        document["overhead"][fw] = run_workload(f"{fw}-overhead", "--ops", str(args.ops))
    document["seconds"] = round(time.perf_counter() - started, 1)
    out = HERE / "results" / f"{args.name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
