"""Prompt compression measured on this machine with the embedded SmolLM2 (llama.cpp).

    .venv/bin/python bench/compression.py                 # ~25 min on 2 cores
    .venv/bin/python bench/compression.py --questions 20 --ratio-texts 20 --name quick

Options: --name [compression] (writes bench/results/<name>.json), --questions [100] (HotpotQA
questions), --ratio-texts [60] (texts for the ratio error with the real model),
--scripted-texts [1000], --seed [0], --no-wait (do not wait for bench/pareto.py).

Three measurements, one JSON document (stdout and the results file):

1. throughput: `LlamaCppScorer.score` on fresh text (the evaluated prefixes are forgotten
   first) of about 500 and 2,000 tokens, twice each: tokens per second of wall time, and the
   share of the wall spent outside `Llama.eval` (tokenizing, mapping tokens to characters,
   the vectorized log-softmax and gather); then a whole `compress(rate=0.5)` of the 2,000-token
   text, with the same split (its evaluation includes the iterative token level's re-scoring).
2. ratio: achieved vs requested ratio (compressed_tokens / original_tokens, the output
   tokenized again) for rates 0.33, 0.5 and 0.8: mean and max absolute error, and the share
   of texts within 5% of the rate (relative). With the real model on HotpotQA paragraphs of
   50 tokens or more, and with ScriptedScorer on random texts (the controller alone).
3. HotpotQA (../shared/data/multihop/hotpotqa_dev_distractor_first100_hf.json; skipped with
   a message when ../shared is absent): each question's supporting paragraphs ("title: text",
   blank lines between) compressed at rates 0.5 and 0.33 by question-aware compression, plain
   perplexity, and random token dropping at the same number of tokens (seeded; `random`
   drops any token, `random_protected` keeps the protected spans as the compressor does).
   Reported: how often the gold answer survives (case-insensitive substring of the output),
   over the questions whose answer is in the original text and is not yes/no, split into
   answers with and without a digit (numbers are protected), and the mean achieved ratio.

Before the real-model parts it waits (30 s polls, at most 20 min) while `bench/pareto.py`
runs, and records the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path
from statistics import mean
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from textgraph.compression import (  # noqa: E402
    LlamaCppScorer,
    PerplexityCompressor,
    ScriptedScorer,
)
from textgraph.compression.protect import (  # noqa: E402
    DEFAULT_PATTERNS,
    protected_spans,
    protected_units,
)

HOTPOT = ROOT.parent / "shared" / "data" / "multihop" / "hotpotqa_dev_distractor_first100_hf.json"
RATES = (0.33, 0.5, 0.8)
HOTPOT_RATES = (0.5, 0.33)


def wait_for_other_bench(limit_s: float = 1200, poll_s: float = 30) -> dict[str, Any]:
    started = time.monotonic()
    polls = 0
    while True:
        found = subprocess.run(
            ["pgrep", "-f", "bench/pareto.py"], capture_output=True, text=True, check=False
        ).stdout.split()
        found = [p for p in found if int(p) != os.getpid()]
        if not found or time.monotonic() - started > limit_s:
            return {
                "waited_s": round(time.monotonic() - started, 1),
                "polls": polls,
                "pareto_running_at_start": bool(found),
            }
        polls += 1
        print(f"bench/pareto.py is running (pids {found}); waiting {poll_s:.0f} s", file=sys.stderr)
        time.sleep(poll_s)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --- 1. throughput ---------------------------------------------------------------------------


def corpus_text(tokens: int, scorer: LlamaCppScorer) -> str:
    """Plain English prose of about `tokens` tokens (HotpotQA paragraphs, else the docs)."""
    if HOTPOT.exists():
        from textgraph.datasets import load_hotpotqa

        paragraphs = [p.text for ex in load_hotpotqa(HOTPOT) for p in ex.paragraphs]
    else:
        paragraphs = [
            p for f in sorted((ROOT / "docs").glob("*.md")) for p in f.read_text().split("\n\n")
        ]
    out: list[str] = []
    count = 0
    for p in paragraphs:
        out.append(p)
        count += len(scorer.tokenize(p)) + 1
        if count >= tokens:
            break
    text = "\n\n".join(out)
    spans = scorer.tokenize(text)
    return text[: spans[min(tokens, len(spans)) - 1][1]]


def throughput(scorer: LlamaCppScorer) -> dict[str, Any]:
    rows = []
    for size in (500, 2000):
        text = corpus_text(size, scorer)
        for _ in range(2):
            scorer.reset()
            eval_before, tokens_before = scorer.eval_seconds, scorer.evaluated_tokens
            started = time.perf_counter()
            scores = scorer.score(text)
            wall = time.perf_counter() - started
            inside = scorer.eval_seconds - eval_before
            rows.append(
                {
                    "units": len(scores),
                    "evaluated_tokens": scorer.evaluated_tokens - tokens_before,
                    "wall_s": round(wall, 3),
                    "eval_s": round(inside, 3),
                    "tokens_per_s": round(len(scores) / wall, 1),
                    "outside_eval_share": round((wall - inside) / wall, 4),
                }
            )
    text = corpus_text(2000, scorer)
    scorer.reset()
    compressor = PerplexityCompressor(scorer, cache_size=0)
    eval_before, tokens_before = scorer.eval_seconds, scorer.evaluated_tokens
    started = time.perf_counter()
    result = compressor.compress(text, rate=0.5)
    wall = time.perf_counter() - started
    inside = scorer.eval_seconds - eval_before
    return {
        "score": rows,
        "compress_2000_tokens_rate_0.5": {
            "original_tokens": result.original_tokens,
            "evaluated_tokens": scorer.evaluated_tokens - tokens_before,
            "wall_s": round(wall, 3),
            "eval_s": round(inside, 3),
            "outside_eval_share": round((wall - inside) / wall, 4),
            "ratio": round(result.ratio, 4),
        },
    }


# --- 2. ratio --------------------------------------------------------------------------------


def ratio_errors(compressor: PerplexityCompressor, texts: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for rate in RATES:
        errors, kept_gap = [], []
        for text in texts:
            result = compressor.compress(text, rate=rate)
            errors.append(abs(result.ratio - rate))
            kept_gap.append(abs(result.compressed_tokens - result.kept_tokens))
        out[str(rate)] = {
            "texts": len(texts),
            "mean_abs_error": round(mean(errors), 5),
            "max_abs_error": round(max(errors), 5),
            "within_5_percent": round(mean(e <= 0.05 * rate for e in errors), 4),
            "mean_retokenization_gap_tokens": round(mean(kept_gap), 3),
        }
    return out


def random_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    words = (
        "the a of and to in is was for on with as by at from that this it an be are were "
        "river mountain castle engine protocol harvest quantum ledger violin glacier senate "
        "orbit canyon lantern archive falcon meadow reactor prism beacon tundra 1987 {slot}"
    ).split()
    out = []
    for _ in range(n):
        size = rng.randint(50, 600)
        ws = [rng.choice(words) + ("." if rng.random() < 0.07 else "") for _ in range(size)]
        out.append(" ".join(ws))
    return out


# --- 3. HotpotQA -------------------------------------------------------------------------------


def random_drop(
    text: str,
    units: list[tuple[int, int]],
    keep_n: int,
    rng: random.Random,
    protected: list[bool] | None,
) -> str:
    index = list(range(len(units)))
    forced = [i for i in index if protected and protected[i]]
    free = [i for i in index if not (protected and protected[i])]
    chosen = set(forced)
    chosen.update(rng.sample(free, max(0, min(len(free), keep_n - len(forced)))))
    return "".join(text[a:b] for i, (a, b) in enumerate(units) if i in chosen)


def share(flags: Any) -> float | None:
    values = list(flags)
    return round(mean(values), 4) if values else None


def hotpot(scorer: LlamaCppScorer, questions: int, seed: int) -> dict[str, Any]:
    from textgraph.datasets import load_hotpotqa

    examples = load_hotpotqa(HOTPOT)[:questions]
    compressor = PerplexityCompressor(scorer, cache_size=512)
    modes = ("question_aware", "perplexity", "random", "random_protected")
    rows: list[dict[str, Any]] = []
    seconds = dict.fromkeys(modes, 0.0)
    for k, ex in enumerate(examples):
        text = "\n\n".join(f"{p.title}: {p.text}" for p in ex.paragraphs if p.supporting)
        answer = ex.answer.strip()
        eligible = answer.lower() not in ("yes", "no") and answer.lower() in text.lower()
        units = scorer.tokenize(text)
        protected = list(protected_units(units, protected_spans(text, DEFAULT_PATTERNS)))
        row: dict[str, Any] = {
            "id": ex.id,
            "eligible": eligible,
            "digit": any(c.isdigit() for c in answer),
            "tokens": len(units),
        }
        for rate in HOTPOT_RATES:
            for mode in modes:
                started = time.perf_counter()
                if mode in ("question_aware", "perplexity"):
                    result = compressor.compress(
                        text, rate=rate, question=ex.question if mode == "question_aware" else None
                    )
                    out, ratio = result.text, result.ratio
                else:
                    rng = random.Random(f"{seed}|{ex.id}|{rate}|{mode}")
                    keep_n = max(1, round(rate * len(units)))
                    out = random_drop(
                        text, units, keep_n, rng, protected if mode == "random_protected" else None
                    )
                    ratio = len(scorer.tokenize(out)) / len(units)
                seconds[mode] += time.perf_counter() - started
                row[f"{mode}@{rate}"] = {
                    "survived": answer.lower() in out.lower(),
                    "ratio": round(ratio, 4),
                }
        rows.append(row)
        print(f"hotpotqa {k + 1}/{len(examples)}", file=sys.stderr)
    summary: dict[str, Any] = {}
    eligible = [r for r in rows if r["eligible"]]
    for rate in HOTPOT_RATES:
        for mode in modes:
            key = f"{mode}@{rate}"
            summary[key] = {
                "answer_survival": share(r[key]["survived"] for r in eligible),
                "answer_survival_no_digit": share(
                    r[key]["survived"] for r in eligible if not r["digit"]
                ),
                "answer_survival_digit": share(r[key]["survived"] for r in eligible if r["digit"]),
                "mean_ratio": round(mean(r[key]["ratio"] for r in rows), 4),
            }
    return {
        "file": str(HOTPOT.relative_to(ROOT.parent)),
        "questions": len(rows),
        "eligible_questions": len(eligible),
        "eligible_with_digit_in_answer": sum(r["digit"] for r in eligible),
        "mean_tokens": round(mean(r["tokens"] for r in rows), 1),
        "seconds_per_mode": {m: round(s, 1) for m, s in seconds.items()},
        "summary": summary,
        "per_question": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", default="compression")
    parser.add_argument("--questions", type=int, default=100)
    parser.add_argument("--ratio-texts", type=int, default=60)
    parser.add_argument("--scripted-texts", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-wait", action="store_true")
    args = parser.parse_args()

    report: dict[str, Any] = {
        "bench": "compression",
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
    }
    started = time.perf_counter()
    scripted = PerplexityCompressor(ScriptedScorer.seeded(args.seed))
    report["ratio_scripted"] = ratio_errors(scripted, random_texts(args.scripted_texts, args.seed))

    report["wait"] = {"skipped": True} if args.no_wait else wait_for_other_bench()
    report["load_before"] = load()
    scorer = LlamaCppScorer()
    import llama_cpp

    report["model"] = {
        "path": scorer.model_path.name,
        "llama_cpp_python": llama_cpp.__version__,
        "n_ctx": scorer.n_ctx,
        "n_batch": scorer.n_batch,
        "n_threads": scorer.n_threads,
    }
    report["throughput"] = throughput(scorer)
    print(json.dumps(report["throughput"]), file=sys.stderr)

    if HOTPOT.exists():
        from textgraph.datasets import load_hotpotqa

        paragraphs = [f"{p.title}: {p.text}" for ex in load_hotpotqa(HOTPOT) for p in ex.paragraphs]
        paragraphs = [p for p in paragraphs if len(scorer.tokenize(p)) >= 50]
        random.Random(args.seed).shuffle(paragraphs)
        texts = paragraphs[: args.ratio_texts]
        report["ratio_real_model"] = ratio_errors(PerplexityCompressor(scorer), texts)
        report["ratio_real_model"]["texts_from"] = "HotpotQA paragraphs of >= 50 tokens"
        print(json.dumps(report["ratio_real_model"]), file=sys.stderr)
        report["hotpotqa"] = hotpot(scorer, args.questions, args.seed)
    else:
        message = f"skipped: {HOTPOT} is absent (../shared is not here)"
        print(message, file=sys.stderr)
        report["ratio_real_model"] = {"skipped": message}
        report["hotpotqa"] = {"skipped": message}
    report["load_after"] = load()
    report["total_s"] = round(time.perf_counter() - started, 1)
    text = json.dumps(report, indent=2)
    print(text)
    out = HERE / "results" / f"{args.name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
