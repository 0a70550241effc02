"""The release loop of a project: optimize, score artifacts with repeats, compare them.

What `textgraph optimize / eval / compare` run, as functions. Each repeat
builds a fresh engine with its own cache salt (`compare.repeat_salt`), so a
repeat is a new sample and not a cache hit; baseline and candidate share the
salt of a repeat and the examples, so their scores pair by example.
"""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textgraph._io import atomic_write_text
from textgraph.artifact import PROJECT_RECORD, artifact_values, check_names, read_artifact
from textgraph.candidate import apply_candidate, module_values
from textgraph.engines.context import use_engine
from textgraph.errors import ConfigurationError
from textgraph.eval.compare import Comparison, compare_scores, repeat_salt
from textgraph.eval.evaluator import Evaluator
from textgraph.eval.result import EvalResult
from textgraph.project import Project


def build_trainer(project: Project, *, callbacks: list[Any] | None = None) -> Any:
    """The tg.Trainer the project file describes."""
    from textgraph.engines.usage import Budget
    from textgraph.losses import example_metric_loss
    from textgraph.train import Trainer

    engine = project.engine("default")
    critic = project.engine("critic")
    module = project.build_program(engine)
    optimizer = project.build_optimizer(module, engine, critic)
    metric = project.metric()
    loss = project.loss()
    if loss is None and getattr(optimizer, "requires_gradients", False):
        loss = example_metric_loss(metric, critic or engine)
    t = project.train
    budget = (
        Budget(max_calls=t.max_calls, max_cost_usd=t.max_cost_usd)
        if t.max_calls or t.max_cost_usd
        else None
    )
    splits = {s: project.split(s) for s in ("train", "val", "test") if _has(project, s)}
    extra = {"callbacks": callbacks} if callbacks else {}
    return Trainer(
        module,
        loss,
        optimizer=optimizer,
        metric=metric,
        batch_size=t.batch_size,
        max_steps=t.max_steps,
        seed=t.seed,
        run_dir=project.path(t.run_dir),
        gate=t.gate,
        alpha=t.alpha,
        objectives=t.objectives,
        budget=budget,
        engine=engine,
        critic_engine=critic,
        progress=False,
        **splits,
        **extra,
    )


def _has(project: Project, split: str) -> bool:
    return getattr(project.data, split) is not None or project.data.loader is not None


def optimize(project: Project, *, resume: bool = True, callbacks: list[Any] | None = None) -> Any:
    """Run (or resume) the configured optimization; records the models in the run dir.
    resume=False starts over (an earlier run's files move to previous/, never deleted)."""
    trainer = build_trainer(project, callbacks=callbacks)
    run_dir = Path(trainer.run_dir)
    exists = (run_dir / "config.json").exists()
    result = trainer.fit(resume=resume and exists, force=not resume and exists)
    record = {"models": project.engines.model_dump(exclude_none=True)}
    atomic_write_text(run_dir / PROJECT_RECORD, json.dumps(record, indent=2) + "\n")
    return result


@dataclass
class ArtifactScores:
    """One artifact (or the program as written) scored on a split, `repeats` times."""

    label: str
    values: dict[str, Any]
    results: list[EvalResult]

    @property
    def matrix(self) -> list[list[float | None]]:
        return [r.scores for r in self.results]

    def objectives(self) -> dict[str, float | None]:
        """Cost (USD), latency (p50 s) and prompt tokens per example, mean over repeats."""
        out: dict[str, float | None] = {}
        for key in ("cost", "latency", "prompt_tokens"):
            seen = [v for r in self.results if (v := r.objectives()[key]) is not None]
            out[key] = sum(seen) / len(seen) if seen else None
        out["n_failed"] = sum(r.n_failed for r in self.results)
        return out


def score(
    project: Project,
    artifact: str | os.PathLike[str] | None,
    split: str,
    *,
    repeats: int = 1,
    examples: list[Any] | None = None,
) -> ArtifactScores:
    """Score the configured program with the artifact applied (None: as written)."""
    if repeats < 1:
        raise ConfigurationError(f"repeats must be >= 1, got {repeats}")
    data = examples if examples is not None else project.split(split)
    loaded = read_artifact(artifact) if artifact is not None else None
    metric = project.metric()
    results, values = [], {}
    for r in range(repeats):
        engine = project.engine("default", cache_salt=repeat_salt(r))
        module = project.build_program(engine)
        if loaded is not None:
            check_names(module, loaded, where=str(artifact))
            apply_candidate(module, artifact_values(loaded))
        values = module_values(module)
        with use_engine(engine):
            results.append(Evaluator(module, metric, progress=False).evaluate(data))
    return ArtifactScores(str(artifact or "program as written"), values, results)


def compare(
    project: Project,
    baseline: str | os.PathLike[str],
    candidate: str | os.PathLike[str],
    split: str,
    *,
    repeats: int = 1,
    alpha: float = 0.05,
    min_delta: float = 0.0,
    seed: int = 0,
) -> tuple[Comparison, ArtifactScores, ArtifactScores]:
    examples = project.split(split)
    base = score(project, baseline, split, repeats=repeats, examples=examples)
    cand = score(project, candidate, split, repeats=repeats, examples=examples)
    result = compare_scores(base.matrix, cand.matrix, alpha=alpha, min_delta=min_delta, seed=seed)
    return result, base, cand


def comparison_json(result: Comparison, base: ArtifactScores, cand: ArtifactScores) -> dict:
    return {
        **result.to_json(),
        "baseline": {"artifact": base.label, **base.objectives()},
        "candidate": {"artifact": cand.label, **cand.objectives()},
        "changed_parameters": sorted(
            n for n in cand.values if cand.values.get(n) != base.values.get(n)
        ),
    }


def _num(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def comparison_markdown(result: Comparison, base: ArtifactScores, cand: ArtifactScores) -> str:
    """A pull-request body: decision, scores with intervals, difference, costs, prompt diffs."""
    b, c = base.objectives(), cand.objectives()
    ci = lambda x: f"[{x[0]:.3f}, {x[1]:.3f}]"  # noqa: E731
    lines = [
        f"## Prompt comparison: **{result.decision}**",
        "",
        result.reason,
        "",
        f"{result.n} examples x {result.repeats} repeat(s); alpha {result.alpha:g}, "
        f"min_delta {result.min_delta:g}.",
        "",
        "| | score | interval | cost $/example | latency p50 s | prompt tokens | failed |",
        "|---|---|---|---|---|---|---|",
        f"| baseline `{base.label}` | {result.baseline_mean:.3f} | {ci(result.baseline_ci)} | "
        f"{_num(b['cost'], 5)} | {_num(b['latency'], 2)} | {_num(b['prompt_tokens'], 0)} | "
        f"{b['n_failed']:.0f} |",
        f"| candidate `{cand.label}` | {result.candidate_mean:.3f} | "
        f"{ci(result.candidate_ci)} | {_num(c['cost'], 5)} | {_num(c['latency'], 2)} | "
        f"{_num(c['prompt_tokens'], 0)} | {c['n_failed']:.0f} |",
        "",
        f"Difference (candidate - baseline): **{result.mean_difference:+.3f}**, "
        f"{1 - result.alpha:.0%} paired bootstrap interval {ci(result.difference_ci)}; "
        f"one-sided sign-flip permutation p = {result.p_value:.4g}"
        f" ({'exact' if result.exact else 'Monte Carlo'}).",
    ]
    if result.mcnemar is not None:
        m = result.mcnemar
        lines.append(
            f"McNemar (exact): candidate-only right {m['candidate_only']}, baseline-only right "
            f"{m['baseline_only']}, p = {m['p_value']:.4g}."
        )
    lines += ["", "### Prompt changes", ""]
    changed = [n for n in cand.values if cand.values.get(n) != base.values.get(n)]
    if not changed:
        lines.append("No parameter differs.")
    for name in changed:
        diff = difflib.unified_diff(
            str(base.values.get(name, "")).splitlines(),
            str(cand.values[name]).splitlines(),
            "baseline",
            "candidate",
            lineterm="",
        )
        lines += [f"`{name}`:", "", "```diff", *diff, "```", ""]
    return "\n".join(lines).rstrip() + "\n"
