"""Pareto search side by side: textgraph's tg.optim.ParetoTGD vs GEPA 0.1.4's gepa.optimize.

    bench/.venv/bin/python bench/pareto.py      # ~2 min; writes bench/results/pareto.json
    bench/.venv/bin/python bench/pareto.py --name quick --budgets 150 --repeats 1

Options (defaults in brackets): --latency [0.1] s per request, --budgets [150,300] (one
comparison per metric-call budget: GEPA's max_metric_calls = ParetoTGD's max_metric_calls),
--concurrency [32] (textgraph's engine and Trainer max_concurrency = GEPA's
DefaultAdapter max_litellm_workers), --minibatch [3] (GEPA's reflection_minibatch_size =
ParetoTGD's minibatch_size), --train [30], --val [30], --gate [not_worse] (the Trainer's),
--seed [0] (repeat r runs both frameworks with seed + r), --repeats [3],
--frameworks [textgraph,gepa] (keys of RUNNERS; every other framework is compared with
--baseline [gepa]), --name [pareto], --out [bench/results/<name>.json]. bench/.venv needs
gepa==0.1.4 (measured with litellm 1.106.2); the run installs nothing.

The task: route a support ticket ("Ticket N: ...") to billing, account, technical or
shipping with one LLM call whose system prompt is the optimized instruction (textgraph: one
tg.LLMCall on an instruction Variable; GEPA: DefaultAdapter, the candidate's one component
as the system message). The bench server (bench/server.py, fixed latency) routes a ticket
by its first keyword, right on 7 tickets in 10. Two kinds of tricky tickets (one in 10
each) come out right only once the instruction carries their rule (server.PARETO_RULES);
one ticket in 10 names no keyword and no instruction fixes it, so the best reachable
validation score is 0.9 (0.7 at the start, 0.8 with one rule) and no run stops early for
a perfect score: both spend the budget. The metric is exact match, with the same feedback
text on both sides (textgraph: tg.Score(value, feedback=...); GEPA: the DefaultAdapter
evaluator's EvaluationResult): a wrong ticket that needs a rule gets the rule quoted. The
server answers every reflection-like request alike (GEPA's reflection; textgraph's
backward and rewrite): the starting instruction, every rule the prompt quotes and a
revision tag, so both searches learn a rule from the same feedback and a reflection that
learns nothing still yields a new text whose minibatch score decides its fate.

Every run is a fresh process (imports, litellm's included, before the clock starts). The
server runs in this driver's process (idle while a run's process works, so it shares no
GIL with the run) and is reset before each run; after it the driver reads every request it
recorded: the total, the count by kind (server.request_kind: task = the program's forward
calls, reflection = GEPA's proposals, backward and rewrite = textgraph's gradient and TGD
calls), the latency rounds (waves of overlapping requests: the critical path in requests)
and the idle time (wall seconds with no request in flight: client work on the critical
path). Caches are off on both sides: textgraph get_engine(cache=False) (the Trainer's
per-candidate score memory stays: ParetoTGD's pool takes the initial validation's scores
from it; no (candidate, example) pair is ever asked twice), GEPA cache_evaluation=False
and litellm with no cache. On both sides one scoring is one task request. GEPA
runs with a silent logger, no progress bar and no merge (ParetoTGD's merge is off too).
Each run reports its metric calls as the framework counts them, its best validation score
(the best pool candidate's mean), the final instruction, the time, requests and metric
calls when that best was first validated, and client and server CPU seconds. Prints one
JSON document; also writes bench/results/<name>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import child_json  # noqa: E402  (bench/harness.py)
from server import PARETO_RULES, PARETO_START, TEAMS  # noqa: E402  (bench/server.py)

WALL_TARGET = 1 / 3  # textgraph wall <= 1/3 of GEPA's
KEYWORDS = list(TEAMS)  # invoice, refund, password, login, crash, error, parcel, delivery
RULES = {trigger: rule for rule, (trigger, _) in PARETO_RULES.items()}  # "but now" -> rule
MODEL = "openai/bench-model"

COUNTING = {
    "textgraph": (
        "ParetoTGD.metric_calls: every (candidate, example) scoring - the initial validation, "
        "parent and child minibatches, full validations of proposed children. A step starts "
        "only if its worst case (2 x minibatch + val) still fits: never above the budget."
    ),
    "gepa": (
        "GEPAResult.total_metric_calls (state.total_num_evals): the same scorings - the seed's "
        "validation, parent and child minibatches, full validations. The budget is checked "
        "only before each iteration: the last one may overrun it by up to 2 x minibatch + val."
    ),
}
PARALLELISM = {
    "textgraph": (
        "one asyncio loop; the engine's and the Trainer's max_concurrency = --concurrency: "
        "a minibatch, its backward calls or a full validation goes out at once"
    ),
    "gepa": (
        "DefaultAdapter(max_litellm_workers=--concurrency): each adapter.evaluate call is one "
        "litellm.batch_completion over a thread pool of that width; the engine runs its "
        "stages (parent minibatch, reflection, child minibatch, full validation) one after "
        "another. GEPA 0.1.4 offers no wider setting for one search: sampling_strategy "
        "(IndependentSampling, PxNSampling) proposes several children per iteration, a "
        "different search, and is left at its default (one parent, one child)."
    ),
}


def tickets(n: int, start: int = 0) -> list[dict[str, Any]]:
    """Ticket i names one keyword (its team is the label), except: i % 10 == 4 names another
    team's keyword first, then "but now" and the deciding one; i % 10 == 8 says "not about"
    another team's keyword, then names the deciding one; i % 10 == 9 names no keyword (the
    server answers "other": no instruction fixes it). `rule` names the rule the ticket needs
    by its trigger words: an example holds no rule text, which ParetoTGD's reject_copies
    would take for a copied training example."""
    rows = []
    for i in range(start, start + n):
        key = KEYWORDS[i % len(KEYWORDS)]
        decoy = next(k for k in KEYWORDS[(i * 3 + 2) % 8 :] + KEYWORDS if TEAMS[k] != TEAMS[key])
        rule = None
        if i % 10 == 4:
            text = f"Ticket {i}: the {decoy} went fine, but now my {key} is the problem."
            rule = "but now"
        elif i % 10 == 8:
            text = f"Ticket {i}: this is not about my {decoy}; my {key} is broken."
            rule = "not about"
        elif i % 10 == 9:
            text = f"Ticket {i}: nothing works and nobody answers, please call me back."
        else:
            text = f"Ticket {i}: something is wrong with my {key}, please help."
        rows.append({"text": text, "label": TEAMS[key], "rule": rule})
    return rows


def datasets(args: argparse.Namespace) -> tuple[list[dict], list[dict]]:
    return tickets(args.train), tickets(args.val, start=10_000)


def judge(prediction: str, example: dict[str, Any]) -> tuple[float, str]:
    """The metric both frameworks use: exact match, and feedback that quotes the rule a
    wrong ticket needs (when some rule would fix it)."""
    answer = prediction.strip()
    if answer == example["label"]:
        return 1.0, "Correct."
    feedback = f"Wrong: answered {answer!r}; this ticket goes to {example['label']!r}."
    if example["rule"]:
        feedback += f" The instruction needs this rule: {RULES[example['rule']]}"
    return 0.0, feedback


# --- measuring (in the run's process) ----------------------------------------------------


class Counters:
    """The server's request counter, read with urllib on its own connection (opened by no
    framework; its imports happen before the clock)."""

    def __init__(self, base_url: str) -> None:
        self.url = base_url.removesuffix("/v1") + "/_stats"
        self.requests()

    def requests(self) -> int:
        with urllib.request.urlopen(self.url, timeout=10) as reply:
            return json.load(reply)["requests"]


class Discoveries:
    """Each fully validated candidate: seconds since the start, server requests and the
    framework's metric calls so far, its validation mean. The best's first arrival is the
    'to best' measure."""

    def __init__(self, counters: Counters) -> None:
        self.counters, self.started, self.rows = counters, 0.0, []

    def start(self) -> None:
        self.started = time.perf_counter()

    def add(self, metric_calls: int, score: float) -> None:
        self.rows.append(
            {
                "seconds": round(time.perf_counter() - self.started, 3),
                "requests": self.counters.requests(),
                "metric_calls": metric_calls,
                "val_score": round(score, 4),
            }
        )

    def to_best(self) -> dict[str, Any]:
        best = max(r["val_score"] for r in self.rows)
        return next(r for r in self.rows if r["val_score"] == best)


def cpu_seconds() -> float:
    """CPU time (user + system, every thread) of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- textgraph: tg.optim.ParetoTGD in a tg.Trainer ---------------------------------------


def run_textgraph(args: argparse.Namespace) -> dict:
    import textgraph as tg
    from textgraph.optim.pareto_tgd import ParetoTGD

    train, val = datasets(args)
    found = Discoveries(Counters(args.base_url))

    class Router(tg.Module):
        def __init__(self, engine: Any) -> None:
            self.instruction = tg.Variable(
                PARETO_START,
                requires_grad=True,
                role_description="instruction for the ticket router",
            )
            self.call = tg.LLMCall(engine, self.instruction)

        async def aforward(self, example: dict) -> Any:
            ticket = tg.Variable(example["text"], role_description="support ticket")
            return await self.call.acall(ticket)

    def metric(prediction: str, example: dict) -> Any:
        value, feedback = judge(prediction, example)
        return tg.Score(value, feedback=None if value else feedback)

    class Timed(ParetoTGD):
        """ParetoTGD noting each candidate that joins the pool (the initial one included)."""

        def _note_pool(self, before: int) -> None:
            for entry in self._pool[before:]:
                found.add(self.metric_calls, sum(entry["scores"]) / len(entry["scores"]))

        async def _start(self, ctx: Any, texts: list[str]) -> None:
            await super()._start(ctx, texts)
            self._note_pool(0)

        def observe(self, outcomes: list) -> None:
            before = len(self._pool)
            super().observe(outcomes)
            self._note_pool(before)

    async def run() -> dict:
        engine = tg.get_engine(
            MODEL,
            base_url=args.base_url,
            api_key="x",
            cache=False,
            max_concurrency=args.concurrency,
        )
        optimizer = Timed(
            minibatch_size=args.minibatch,
            max_metric_calls=args.budget,
            seed=args.seed,
            verbose=False,
        )
        trainer = tg.Trainer(
            Router(engine),
            optimizer=optimizer,
            metric=metric,
            train=train,
            val=val,
            max_steps=10 * args.budget,  # the metric-call budget ends the run
            seed=args.seed,
            gate=args.gate,
            critic_engine=engine,
            max_concurrency=args.concurrency,
            progress=False,
        )
        started, cpu = time.perf_counter(), cpu_seconds()
        found.start()
        result = await trainer.afit()
        wall, cpu = time.perf_counter() - started, cpu_seconds() - cpu
        await engine.aclose()
        pool = optimizer.pool
        means = [sum(e["scores"]) / len(e["scores"]) for e in pool]
        best = pool[max(range(len(pool)), key=lambda k: (means[k], -k))]
        return {
            "wall_s": wall,
            "client_cpu_s": round(cpu, 3),
            "metric_calls": optimizer.metric_calls,
            "steps": optimizer.state_dict()["iteration"],  # steps that got past the budget
            "candidates_validated": len(pool),
            "initial_val_score": round(means[0], 4),
            "best_val_score": round(max(means), 4),
            "best_instruction": best["values"]["instruction"],
            "final_instruction": trainer.module.instruction.value,
            "stopped": result.stopped,
            "discoveries": found,
        }

    return asyncio.run(run())


# --- GEPA 0.1.4: gepa.optimize with its DefaultAdapter over litellm --------------------------


def run_gepa(args: argparse.Namespace) -> dict:
    import gepa
    import litellm  # gepa.lm imports it at the first call: import it before the clock
    from gepa.adapters.default_adapter.default_adapter import DefaultAdapter, EvaluationResult

    litellm.cache = None  # no response cache (the default; said out loud)
    train, val = datasets(args)
    trainset = [
        {"input": r["text"], "additional_context": {}, "answer": r["label"], **r} for r in train
    ]
    valset = [
        {"input": r["text"], "additional_context": {}, "answer": r["label"], **r} for r in val
    ]
    found = Discoveries(Counters(args.base_url))
    endpoint = {"api_base": args.base_url, "api_key": "x"}

    def evaluator(data: dict, response: str) -> Any:
        value, feedback = judge(response, data)
        return EvaluationResult(score=value, feedback=feedback)

    class Silent:
        def log(self, message: str) -> None:
            pass

    class Timer:
        def __init__(self) -> None:
            self.calls, self.iterations = 0, 0

        def on_optimization_end(self, event: dict) -> None:
            self.iterations = event["total_iterations"]

        def on_budget_updated(self, event: dict) -> None:
            self.calls = event["metric_calls_used"]

        def on_valset_evaluated(self, event: dict) -> None:
            # the seed's evaluation comes before the budget hook exists: its calls = len(val)
            calls = self.calls if event["iteration"] > 0 else len(valset)
            found.add(calls, event["average_score"])

    adapter = DefaultAdapter(
        model=MODEL,
        evaluator=evaluator,
        max_litellm_workers=args.concurrency,
        litellm_batch_completion_kwargs=endpoint,
    )
    timer = Timer()
    started, cpu = time.perf_counter(), cpu_seconds()
    found.start()
    result = gepa.optimize(
        seed_candidate={"instruction": PARETO_START},
        trainset=trainset,
        valset=valset,
        adapter=adapter,
        reflection_lm=MODEL,
        reflection_lm_kwargs=endpoint,
        reflection_minibatch_size=args.minibatch,
        max_metric_calls=args.budget,
        seed=args.seed,
        logger=Silent(),
        callbacks=[timer],
        display_progress_bar=False,
        cache_evaluation=False,
        use_merge=False,
    )
    wall, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    scores = result.val_aggregate_scores
    return {
        "wall_s": wall,
        "client_cpu_s": round(cpu, 3),
        "metric_calls": result.total_metric_calls,
        "steps": timer.iterations,
        "candidates_validated": len(result.candidates),
        "initial_val_score": round(scores[0], 4),
        "best_val_score": round(max(scores), 4),
        "best_instruction": result.best_candidate["instruction"],
        "final_instruction": result.best_candidate["instruction"],
        "stopped": f"max_metric_calls {args.budget} reached",
        "discoveries": found,
        "gepa": importlib.metadata.version("gepa"),
    }


# Adding a framework or optimizer: a run_<name>(args) -> dict with the keys run_textgraph
# returns (wall_s, client_cpu_s, metric_calls, steps, best_val_score, ..., discoveries),
# registered here and in COUNTING / PARALLELISM; `--frameworks` picks the ones to run.
RUNNERS: dict[str, Callable[[argparse.Namespace], dict]] = {
    "textgraph": run_textgraph,
    "gepa": run_gepa,
}


# --- the driver ------------------------------------------------------------------------------


def child(args: argparse.Namespace) -> None:
    """One framework's run, in this process; prints its JSON."""
    result = RUNNERS[args.framework](args)
    found: Discoveries = result.pop("discoveries")
    result["requests"] = found.counters.requests()
    best = found.to_best()
    result["to_best"] = best
    result["discoveries"] = found.rows
    result["wall_s"] = round(result["wall_s"], 3)
    print(json.dumps(result))


def schedule(records: list, latency: float) -> dict:
    """Latency rounds (waves of overlapping requests, in start order: the critical path in
    requests) and the busy seconds (some request in flight) of the server's records."""
    spans = sorted((r.start, r.end) for r in records)
    rounds, busy, end = 0, 0.0, float("-inf")
    for start, stop in spans:
        if start >= end:
            rounds += 1
            busy += stop - start
            end = stop
        elif stop > end:
            busy += stop - end
            end = stop
    return {"latency_rounds": rounds, "rounds_s": round(rounds * latency, 3), "busy_s": busy}


def request_kinds(records: list) -> dict[str, int]:
    from server import request_kind

    from textgraph.engines.base import ChatRequest, Message

    kinds: Counter[str] = Counter()
    for r in records:
        messages = [
            Message(role=m["role"], content=m["content"])
            for m in r.body.get("messages", [])
            if isinstance(m.get("content"), str)
        ]
        kinds[request_kind(ChatRequest(messages=messages)) if messages else "other"] += 1
    return dict(sorted(kinds.items()))


SETTINGS = ("latency", "concurrency", "minibatch", "train", "val", "gate")


def run_child(
    server: Any, framework: str, args: argparse.Namespace, budget: int, seed: int
) -> dict:
    post = urllib.request.Request(f"{server.url}/_reset", data=b"", method="POST")
    urllib.request.urlopen(post, timeout=10).read()
    server_cpu = cpu_seconds()
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        framework,
        "--base-url",
        server.openai_base_url,
        "--budget",
        str(budget),
        "--seed",
        str(seed),
    ]
    for key in SETTINGS:
        command += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    result = child_json(command, framework)
    result["server_cpu_s"] = round(cpu_seconds() - server_cpu, 3)  # the driver is idle
    records = list(server.stats.requests)
    if len(records) != result["requests"]:
        raise RuntimeError(
            f"{framework}: the server recorded {len(records)} requests, the run read "
            f"{result['requests']}"
        )
    failed = [r.status for r in records if r.status != 200]
    if failed:
        raise RuntimeError(f"{framework}: {len(failed)} requests failed ({failed[:5]})")
    result["requests_by_kind"] = request_kinds(records)
    # no response cache and no re-scoring: every metric call was one task request
    result["one_task_request_per_metric_call"] = (
        result["requests_by_kind"].get("task", 0) == result["metric_calls"]
    )
    shape = schedule(records, args.latency)
    result["latency_rounds"] = shape["latency_rounds"]
    result["rounds_s"] = shape["rounds_s"]
    result["idle_s"] = round(max(0.0, result["wall_s"] - shape["busy_s"]), 3)
    result["seed"] = seed
    result["requests_per_step"] = (
        round(result["requests"] / result["steps"], 2) if result["steps"] else None
    )
    result["requests_per_metric_call"] = round(result["requests"] / result["metric_calls"], 3)
    result["first_validation_s"] = result["discoveries"][0]["seconds"]
    return result


MEDIAN_KEYS = (
    "wall_s",
    "requests",
    "metric_calls",
    "best_val_score",
    "client_cpu_s",
    "server_cpu_s",
    "latency_rounds",
    "rounds_s",
    "idle_s",
    "first_validation_s",
    "steps",
    "requests_per_step",
    "requests_per_metric_call",
)


def summarize(runs: list[dict]) -> dict:
    """Medians of the runs' numbers, requests by kind and the 'to best' measures included."""

    def median(values: list) -> Any:
        values = [v for v in values if v is not None]
        return round(statistics.median(values), 4) if values else None

    out = {key: median([r.get(key) for r in runs]) for key in MEDIAN_KEYS}
    kinds = sorted({k for r in runs for k in r["requests_by_kind"]})
    out["requests_by_kind"] = {
        k: median([r["requests_by_kind"].get(k, 0) for r in runs]) for k in kinds
    }
    out["to_best"] = {
        k: median([r["to_best"][k] for r in runs]) for k in ("seconds", "requests", "metric_calls")
    }
    out["best_instructions"] = [r["best_instruction"] for r in runs]
    return out


def compare(ours: dict, theirs: dict) -> dict:
    ratio = ours["wall_s"] / theirs["wall_s"]
    return {
        "wall_ratio": round(ratio, 3),
        "speedup": round(1 / ratio, 2),
        "requests_ratio": round(ours["requests"] / theirs["requests"], 3),
        "metric_calls": [ours["metric_calls"], theirs["metric_calls"]],
        "best_val_score": [ours["best_val_score"], theirs["best_val_score"]],
        "to_best_seconds_ratio": round(
            ours["to_best"]["seconds"] / theirs["to_best"]["seconds"], 3
        ),
        # the ratio with no client work at all on our side: our latency rounds x latency
        "floor_wall_ratio": round(ours["rounds_s"] / theirs["wall_s"], 3),
        # the budgets end differently (ParetoTGD stops short of it, GEPA may pass it): the
        # wall per metric call, and the wall after each side's first validation (GEPA's
        # includes litellm's first-call setup)
        "wall_per_metric_call_ratio": round(
            (ours["wall_s"] / ours["metric_calls"]) / (theirs["wall_s"] / theirs["metric_calls"]),
            3,
        ),
        "wall_ratio_after_first_validation": round(
            (ours["wall_s"] - ours["first_validation_s"])
            / (theirs["wall_s"] - theirs["first_validation_s"]),
            3,
        ),
        "requests_per_metric_call": [
            ours["requests_per_metric_call"],
            theirs["requests_per_metric_call"],
        ],
        "latency_rounds": [ours["latency_rounds"], theirs["latency_rounds"]],
        "target_wall_ratio": round(WALL_TARGET, 3),
        "met_wall_target": ratio <= WALL_TARGET,
        "met_requests_target": ours["requests"] <= theirs["requests"],
    }


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", default="pareto")
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--budgets", default="150,300", help="comma-separated metric-call budgets")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--minibatch", type=int, default=3)
    parser.add_argument("--train", type=int, default=30)
    parser.add_argument("--val", type=int, default=30)
    parser.add_argument("--gate", default="not_worse")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frameworks", default="textgraph,gepa")
    parser.add_argument("--baseline", default="gepa")
    parser.add_argument("--out", help="the JSON file (default bench/results/<name>.json)")
    parser.add_argument("--child", dest="framework", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.framework:
        child(args)
        return None
    from server import start_server

    frameworks = args.frameworks.split(",")
    unknown = [fw for fw in frameworks if fw not in RUNNERS]
    if unknown:
        parser.error(f"unknown framework(s) {unknown}; known: {sorted(RUNNERS)}")
    budgets = [int(b) for b in args.budgets.split(",")]
    document: dict = {
        "settings": {key: getattr(args, key) for key in SETTINGS},
        "budgets": budgets,
        "repeats": args.repeats,
        "seeds": [args.seed + r for r in range(args.repeats)],
        "metric_calls_counting": {fw: COUNTING.get(fw) for fw in frameworks},
        "parallelism": {fw: PARALLELISM.get(fw) for fw in frameworks},
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "runs": {},
    }
    started = time.perf_counter()
    scratch = tempfile.TemporaryDirectory(prefix="bench-pareto-")
    os.environ["XDG_CACHE_HOME"] = os.path.join(scratch.name, "xdg-cache")
    server = start_server(args.latency)  # in this process: idle while a run's process works
    try:
        for budget in budgets:
            runs: dict[str, list[dict]] = {fw: [] for fw in frameworks}
            for r in range(args.repeats):  # interleaved, so drift hits both alike
                for fw in frameworks:
                    result = run_child(server, fw, args, budget, args.seed + r)
                    runs[fw].append(result)
                    print(
                        f"budget {budget} seed {args.seed + r} {fw}: wall {result['wall_s']} s, "
                        f"{result['requests']} requests {result['requests_by_kind']}, "
                        f"{result['metric_calls']} metric calls, best {result['best_val_score']}",
                        file=sys.stderr,
                    )
            row: dict = {"runs": runs, "median": {fw: summarize(runs[fw]) for fw in frameworks}}
            if args.baseline in frameworks:
                row["comparison"] = {
                    fw: compare(row["median"][fw], row["median"][args.baseline])
                    for fw in frameworks
                    if fw != args.baseline
                }
                print(f"budget {budget}: {json.dumps(row['comparison'])}", file=sys.stderr)
            document["runs"][f"budget={budget}"] = row
    finally:
        server.stop()
        scratch.cleanup()
    document["seconds"] = round(time.perf_counter() - started, 1)
    out = Path(args.out) if args.out else HERE / "results" / f"{args.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(document, indent=2))
    return document


if __name__ == "__main__":
    main()
