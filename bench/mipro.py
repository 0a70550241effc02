"""MIPRO search side by side: textgraph's tg.optim.MIPRO vs DSPy 3.4's dspy.MIPROv2.

    bench/.venv/bin/python bench/mipro.py      # ~4 min; writes bench/results/mipro.json
    bench/.venv/bin/python bench/mipro.py --name quick --concurrency 64 --repeats 1

Options (defaults in brackets): --latency [0.1] s per request, --concurrency [16,32,64,128]
(one comparison per value: textgraph's engine and Trainer max_concurrency = DSPy's
num_threads), --trials [20],
--candidates [6] (instruction candidates and demo sets per predictor: DSPy's num_candidates,
textgraph's num_instructions and num_demo_sets), --minibatch [35], --full-eval-every [5],
--train [50], --val [100], --max-bootstrapped [4], --max-labeled [4], --seed [0],
--repeats [3], --frameworks [textgraph,dspy]. bench/.venv needs optuna (bench/requirements.txt).

The task: route a support ticket ("Ticket N: ...") to billing, account, technical or
shipping. One predictor (DSPy: dspy.Predict("text -> label") with an instruction; textgraph:
one tg.LLMCall with an instruction Variable and a tg.Demos), exact-match metric. The bench
server (bench/server.py, its own process, fixed latency) answers a ticket with the team of
its first keyword: right on plain tickets, wrong on the one in five "tricky" tickets whose
second keyword decides. So bootstrapping meets failing runs and minibatch scores vary.

Every run is a fresh process (imports before the clock starts); the server's counters are
reset before it and read after it. Both response caches are off (DSPy:
configure_cache(...=False) and LM(cache=False); textgraph: get_engine(cache=False)). The
Trainer's per-candidate score memory stays on: it is how MIPRO's full evaluation reuses the
examples a combination was already scored on, part of the algorithm, not a response cache.
Each run also reports its phases (bootstrap, instruction proposals, minibatch trials, full
evaluations): wall seconds and server requests of each occurrence, read from the server's
counter at the phase boundaries (about 1 ms each), and its schedule floor: the sum over
phase occurrences of ceil(requests / concurrency) latencies (DSPy's bootstrap and proposals
send one request at a time: one latency each), what its own schedule would take with no
CPU cost. Client and server CPU seconds are reported beside the wall. Prints one JSON
document; also writes bench/results/<name>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import resource
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import child_json  # noqa: E402  (bench/harness.py)
from server import TEAMS  # noqa: E402  (bench/server.py: the server's routing rule)

WALL_TARGET = 1 / 3  # textgraph wall <= 1/3 of DSPy's
START_INSTRUCTION = "Classify the support ticket."
KEYWORDS = list(TEAMS)  # invoice, refund, password, login, crash, error, parcel, delivery


def tickets(n: int, start: int = 0) -> list[dict[str, str]]:
    """Ticket i names one keyword (its team is the label), except every fifth ticket: it
    names a keyword of another team first and the deciding keyword second."""
    rows = []
    for i in range(start, start + n):
        key = KEYWORDS[i % len(KEYWORDS)]
        if i % 5 == 4:
            decoy = next(
                k for k in KEYWORDS[(i * 3 + 2) % 8 :] + KEYWORDS if TEAMS[k] != TEAMS[key]
            )
            text = f"Ticket {i}: the {decoy} went fine, but now my {key} is the problem."
        else:
            text = f"Ticket {i}: something is wrong with my {key}, please help."
        rows.append({"text": text, "label": TEAMS[key]})
    return rows


def datasets(args: argparse.Namespace) -> tuple[list[dict], list[dict]]:
    return tickets(args.train), tickets(args.val, start=10_000)


# --- counting and phases (in the run's process) --------------------------------------------


class Counters:
    """The server's request counter, read with urllib on its own connection: it opens no
    connection either framework reuses (its stdlib imports happen before the clock)."""

    def __init__(self, base_url: str) -> None:
        self.url = base_url.removesuffix("/v1") + "/_stats"

    def requests(self) -> int:
        with urllib.request.urlopen(self.url, timeout=10) as reply:
            return json.load(reply)["requests"]


class Phases:
    """Wall seconds and server requests of each occurrence of each phase. A phase whose
    name starts with two spaces runs inside (or beside) another and is not added up; its
    requests are not counted when it runs concurrently with others (`count=False`)."""

    def __init__(self, counters: Counters) -> None:
        self.counters, self.rows = counters, {}
        counters.requests()  # the first read (urllib's imports) happens before the clock

    @contextmanager
    def __call__(self, name: str, count: bool = True) -> Iterator[None]:
        row = self.rows.setdefault(name, {"seconds": [], "requests": [] if count else None})
        before, started = self.counters.requests(), time.perf_counter()
        try:
            yield
        finally:
            row["seconds"].append(round(time.perf_counter() - started, 3))
            if count:
                row["requests"].append(self.counters.requests() - before)

    def report(self, wall: float, requests: int) -> dict:
        out: dict = {}
        for name, row in self.rows.items():
            out[name] = {
                "count": len(row["seconds"]),
                "seconds": round(sum(row["seconds"]), 3),
                "requests": sum(row["requests"]) if row["requests"] is not None else None,
                "each_seconds": row["seconds"],
                "each_requests": row["requests"],
            }
        top = [v for k, v in out.items() if not k.startswith("  ")]
        out["other"] = {
            "seconds": round(wall - sum(v["seconds"] for v in top), 3),
            "requests": requests - sum(v["requests"] for v in top),
        }
        return out


SEQUENTIAL = {"dspy": ("bootstrap", "instruction proposals")}  # one request at a time


def schedule_floor(framework: str, phases: dict, concurrency: int, latency: float) -> dict:
    """The fastest the run's own schedule could go: every phase occurrence takes
    ceil(requests / width) latencies, width = concurrency, or 1 in a phase that sends one
    request at a time (DSPy's bootstrap and proposals). No CPU, no connection setup."""
    rounds = 0
    for name, row in phases.items():
        if name.startswith("  ") or name == "other":
            continue
        width = 1 if name in SEQUENTIAL.get(framework, ()) else concurrency
        rounds += sum(-(-n // width) for n in row["each_requests"])
    return {"rounds": rounds, "seconds": round(rounds * latency, 3)}


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system, every thread) of this process, or of process `pid`."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrap(owner: Any, attr: str, phase: Any, name: Any, count: bool = True) -> None:
    """Time owner.attr (sync or async) as the phase `name` (or name(*args) -> str)."""
    original = getattr(owner, attr)

    def label(args: tuple) -> str:
        return name(*args) if callable(name) else name

    if asyncio.iscoroutinefunction(original):

        @functools.wraps(original)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            with phase(label(args), count):
                return await original(*args, **kwargs)
    else:

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with phase(label(args), count):
                return original(*args, **kwargs)

    setattr(owner, attr, timed)


# --- textgraph ---------------------------------------------------------------------------


def run_textgraph(args: argparse.Namespace) -> dict:
    import optuna  # noqa: F401  (imported before the clock, like DSPy's)

    import textgraph as tg
    from textgraph.optim import mipro as mipro_module
    from textgraph.train.trainer import Trainer

    train, val = datasets(args)
    phases = Phases(Counters(args.base_url))
    wrap(mipro_module, "demo_sets", phases, "bootstrap")
    wrap(mipro_module.MIPRO, "_propose_instructions", phases, "instruction proposals")
    wrap(
        mipro_module.MIPRO,
        "_describe_dataset",
        phases,
        "  dataset summary (1 request, beside the bootstrap)",
        count=False,
    )
    wrap(mipro_module.MIPRO, "_run_trials", phases, "minibatch trials")
    wrap(
        Trainer,
        "_evaluate",
        phases,
        lambda trainer, *_: (
            "initial full evaluation" if trainer._step_no == 0 else "full evaluations"
        ),
    )

    class Router(tg.Module):
        def __init__(self, engine: Any) -> None:
            self.instruction = tg.Variable(
                START_INSTRUCTION,
                requires_grad=True,
                role_description="instruction for the ticket router",
            )
            self.demos = tg.Demos(role_description="tickets with the team that handles them")
            self.call = tg.LLMCall(engine, self.instruction, demos=self.demos)

        async def aforward(self, example: dict) -> Any:
            ticket = tg.Variable(example["text"], role_description="support ticket")
            return await self.call.acall(ticket)

    def metric(prediction: str, example: dict) -> float:
        return float(prediction.strip() == example["label"])

    async def run() -> dict:
        engine = tg.get_engine(
            "openai/bench-model",
            base_url=args.base_url,
            api_key="x",
            cache=False,
            max_concurrency=args.concurrency,
        )
        optimizer = tg.optim.MIPRO(
            auto=None,
            num_instructions=args.candidates,
            num_demo_sets=args.candidates,
            trials=args.trials,
            minibatch_size=args.minibatch,
            full_eval_every=args.full_eval_every,
            seed=args.seed,
            max_bootstrapped=args.max_bootstrapped,
            max_labeled=args.max_labeled,
            verbose=False,
        )
        trainer = tg.Trainer(
            Router(engine),
            optimizer=optimizer,
            metric=metric,
            train=train,
            val=val,
            max_steps=optimizer.steps_needed,
            seed=args.seed,
            critic_engine=engine,
            max_concurrency=args.concurrency,
            progress=False,
        )
        started, cpu = time.perf_counter(), cpu_seconds()
        result = await trainer.afit()
        wall, cpu = time.perf_counter() - started, cpu_seconds() - cpu
        await engine.aclose()
        state = optimizer.state_dict()
        space = {k: len(v) for k, v in state["space"].items()}
        return {
            "wall_s": wall,
            "client_cpu_s": round(cpu, 3),
            "trials": len(state["trials"]),
            "full_evaluations": 1 + len(state["sent"]),  # the initial one included
            "search_space": space,
            "initial_val_score": result.initial_val_score,
            "best_val_score": result.best_val_score,
            "stopped": result.stopped,
            "phases": phases,
        }

    return asyncio.run(run())


# --- DSPy --------------------------------------------------------------------------------


def run_dspy(args: argparse.Namespace) -> dict:
    import dspy
    import optuna  # noqa: F401
    from dspy.propose import grounded_proposer
    from dspy.teleprompt import mipro_optimizer_v2 as mipro_module

    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    lm = dspy.LM("openai/bench-model", api_base=args.base_url, api_key="x", cache=False)
    dspy.configure(lm=lm)
    train, val = datasets(args)
    trainset = [dspy.Example(**row).with_inputs("text") for row in train]
    valset = [dspy.Example(**row).with_inputs("text") for row in val]
    phases = Phases(Counters(args.base_url))
    wrap(mipro_module.MIPROv2, "_bootstrap_fewshot_examples", phases, "bootstrap")
    wrap(mipro_module.MIPROv2, "_propose_instructions", phases, "instruction proposals")
    wrap(grounded_proposer, "create_dataset_summary", phases, "  of which dataset summary")
    full_evals = {"n": 0}
    trials = {"n": 0}

    def kind(batch_size: int, data: list, *_: Any) -> str:
        if batch_size < len(data):
            trials["n"] += 1
            return "minibatch trials"
        full_evals["n"] += 1
        return "initial full evaluation" if full_evals["n"] == 1 else "full evaluations"

    wrap(mipro_module, "eval_candidate_program", phases, kind)

    def metric(example: Any, prediction: Any, trace: Any = None) -> float:
        return float(str(prediction.label).strip() == example.label)

    program = dspy.Predict(dspy.Signature("text -> label", START_INSTRUCTION))
    optimizer = dspy.MIPROv2(
        metric,
        auto=None,
        num_candidates=args.candidates,
        num_threads=args.concurrency,
        max_bootstrapped_demos=args.max_bootstrapped,
        max_labeled_demos=args.max_labeled,
        seed=args.seed,
        verbose=False,
    )
    started, cpu = time.perf_counter(), cpu_seconds()
    best = optimizer.compile(
        program,
        trainset=trainset,
        valset=valset,
        num_trials=args.trials,
        minibatch_size=args.minibatch,
        minibatch_full_eval_steps=args.full_eval_every,
    )
    wall, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    candidates = getattr(best, "candidate_programs", [])
    return {
        "wall_s": wall,
        "client_cpu_s": round(cpu, 3),
        "trials": trials["n"],
        "full_evaluations": full_evals["n"],
        "best_val_score": getattr(best, "score", None),
        "full_eval_scores": [c["score"] for c in candidates],
        "dspy": dspy.__version__,
        "phases": phases,
    }


# --- the driver ------------------------------------------------------------------------------


def child(args: argparse.Namespace) -> None:
    """One framework's run, in this process; prints its JSON."""
    runner = run_textgraph if args.framework == "textgraph" else run_dspy
    result = runner(args)
    phases = result.pop("phases")
    result["requests"] = phases.counters.requests()
    result["phases"] = phases.report(result["wall_s"], result["requests"])
    floor = schedule_floor(args.framework, result["phases"], args.concurrency, args.latency)
    result["schedule_floor"] = {
        **floor,
        "wall_over_floor": round(result["wall_s"] / floor["seconds"], 2),
    }
    result["wall_s"] = round(result["wall_s"], 3)
    print(json.dumps(result))


SETTINGS = (
    "latency",
    "trials",
    "candidates",
    "minibatch",
    "full_eval_every",
    "train",
    "val",
    "max_bootstrapped",
    "max_labeled",
    "seed",
)


def run_child(server: Any, framework: str, args: argparse.Namespace, concurrency: int) -> dict:
    server.reset()
    server_cpu = cpu_seconds(server.proc.pid)
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        framework,
        "--base-url",
        f"{server.url}/v1",
        "--concurrency",
        str(concurrency),
    ]
    for key in SETTINGS:
        command += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    result = child_json(command, framework)
    counted = server.stats()["requests"]
    # the server's CPU over the child's whole life (its requests all fall in the timed part)
    result["server_cpu_s"] = round(cpu_seconds(server.proc.pid) - server_cpu, 3)
    if counted != result["requests"]:
        raise RuntimeError(
            f"{framework}: the server counted {counted} requests, the run read {result['requests']}"
        )
    if result["trials"] != args.trials:
        raise RuntimeError(f"{framework} ran {result['trials']} trials, not {args.trials}")
    space = result.get("search_space")
    if space and any(n != args.candidates for n in space.values()):
        raise RuntimeError(
            f"{framework}'s search space is {space}, not {args.candidates} "
            "options each (did the server repeat a proposal?)"
        )
    return result


def summarize(runs: list[dict]) -> dict:
    """The run of median wall time, with every run's wall and requests beside it."""
    median = sorted(runs, key=lambda r: r["wall_s"])[(len(runs) - 1) // 2]
    return {
        **median,
        "walls_s": [r["wall_s"] for r in runs],
        "requests_per_run": [r["requests"] for r in runs],
    }


def compare(ours: dict, theirs: dict) -> dict:
    ratio = ours["wall_s"] / theirs["wall_s"]
    return {
        "wall_ratio_textgraph_over_dspy": round(ratio, 3),
        "speedup": round(1 / ratio, 2),
        "requests_textgraph": ours["requests"],
        "requests_dspy": theirs["requests"],
        "target_wall_ratio": round(WALL_TARGET, 3),
        "met_wall_target": ratio <= WALL_TARGET,
        "met_requests_target": ours["requests"] <= theirs["requests"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", default="mipro")
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument(
        "--concurrency",
        default="16,32,64,128",
        help="comma-separated; each value is one side-by-side comparison",
    )
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--candidates", type=int, default=6)
    parser.add_argument("--minibatch", type=int, default=35)
    parser.add_argument("--full-eval-every", type=int, default=5)
    parser.add_argument("--train", type=int, default=50)
    parser.add_argument("--val", type=int, default=100)
    parser.add_argument("--max-bootstrapped", type=int, default=4)
    parser.add_argument("--max-labeled", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frameworks", default="textgraph,dspy")
    parser.add_argument("--child", dest="framework", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.framework:
        args.concurrency = int(args.concurrency)
        child(args)
        return
    from harness import BenchServer

    frameworks = args.frameworks.split(",")
    levels = [int(c) for c in args.concurrency.split(",")]
    document: dict = {
        "settings": {key: getattr(args, key) for key in SETTINGS},
        "repeats": args.repeats,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "runs": {},
    }
    started = time.perf_counter()
    # DSPy's disk cache and any XDG cache go to a directory deleted at the end.
    scratch = tempfile.TemporaryDirectory(prefix="bench-mipro-")
    os.environ["DSPY_CACHEDIR"] = os.path.join(scratch.name, "dspy-cache")
    os.environ["XDG_CACHE_HOME"] = os.path.join(scratch.name, "xdg-cache")
    server = BenchServer(args.latency)
    try:
        for concurrency in levels:
            runs: dict[str, list[dict]] = {fw: [] for fw in frameworks}
            for _ in range(args.repeats):  # interleaved, so drift hits both alike
                for fw in frameworks:
                    result = run_child(server, fw, args, concurrency)
                    runs[fw].append(result)
                    print(
                        f"concurrency {concurrency} {fw}: wall {result['wall_s']} s, "
                        f"{result['requests']} requests, {result['trials']} trials",
                        file=sys.stderr,
                    )
            row: dict = {fw: summarize(runs[fw]) for fw in frameworks}
            if "textgraph" in row and "dspy" in row:
                row["comparison"] = compare(row["textgraph"], row["dspy"])
                print(
                    f"concurrency {concurrency}: {json.dumps(row['comparison'])}", file=sys.stderr
                )
            document["runs"][f"concurrency={concurrency}"] = row
    finally:
        server.stop()
        scratch.cleanup()
    document["seconds"] = round(time.perf_counter() - started, 1)
    out = HERE / "results" / f"{args.name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
