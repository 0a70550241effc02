"""The one search loop: a toy optimizer on the contract, gates, Pareto and select, resume."""

from __future__ import annotations

import json
import random

import pytest

import textgraph as tg
from tests.trainer_task import Pipeline, data, exact, make_engine
from textgraph.eval.gate import decide
from textgraph.eval.pareto import ParetoEntry, pareto_front, resolve_objectives, select_entry
from textgraph.runs import RunDir


class Scripted(tg.optim.Optimizer):
    """Written against the contract only: proposes the next values from a list."""

    def __init__(self, *proposals, crash_at=None):
        self.proposals = list(proposals)
        self.taken = 0
        self.seen: list[tuple[str, str]] = []
        self.crash_at = crash_at

    async def propose(self, ctx):
        if ctx.step == self.crash_at:
            raise KeyboardInterrupt("simulated crash")
        if self.taken >= len(self.proposals):
            return []
        batch = self.proposals[self.taken]
        self.taken += 1
        batch = batch if isinstance(batch, list) else [batch]
        ctx.note(f"drew {ctx.rng.random():.6f}")
        return [ctx.current.with_values({"system": v}, origin="scripted") for v in batch]

    def observe(self, outcomes):
        self.seen += [(o.candidate.values["system"], o.status) for o in outcomes]

    def state_dict(self):
        return {"taken": self.taken}

    def load_state_dict(self, state):
        self.taken = state["taken"]


def trainer(optimizer, run_dir=None, engine=None, **options):
    engine = engine or make_engine()
    settings = dict(train=data(8), val=data(6, 100), test=data(4, 200), max_steps=4, progress=False)
    settings.update(options)
    return tg.Trainer(
        Pipeline(engine), optimizer=optimizer, metric=exact, run_dir=run_dir, **settings
    )


def test_a_toy_optimizer_runs_with_gating_and_records(tmp_path):
    opt = Scripted(["NONE", "EVEN 2"], "GOOD one", "GOOD one", "x" * 50)
    result = trainer(opt, tmp_path / "run", max_chars=40).fit()
    decisions = [r.decision for r in result.history]
    assert decisions == ["accepted", "accepted", "unchanged", "unchanged"]
    first = result.history[0]
    statuses = {c.changes[0].new_value: (c.status, c.reason) for c in first.candidates}
    # NONE scores 0 and EVEN 2 ties the incumbent (0.5): both evaluated, the best is gated
    assert statuses["EVEN 2"] == ("accepted", "accepted: val 0.500 -> 0.500")
    assert statuses["NONE"][0] == "not selected" and "scored higher" in statuses["NONE"][1]
    assert result.history[2].candidates[0].status == "unchanged"  # same values as now
    assert "max_chars 40" in result.history[3].candidates[0].reason
    assert result.history[3].candidates[0].status == "filtered"
    assert result.summary.final_parameters == {"system": "GOOD one"}
    assert result.test_score == 1.0 and result.summary.optimizer == "Scripted"
    assert ("GOOD one", "accepted") in opt.seen
    steps = RunDir(tmp_path / "run").read_steps()
    assert steps[1].candidates[0].origin == "scripted" and steps[0].notes[0].startswith("drew")
    # the loop never names the optimizer: no gradient calls were made for it
    trace = RunDir(tmp_path / "run").read_trace()
    assert {t.purpose for t in trace} == {"validation"}


def test_same_values_are_never_scored_twice_in_a_run():
    engine = make_engine()
    trainer(Scripted("GOOD a", "EVEN start", "GOOD a"), engine=engine, test=None).fit()
    # initial (6) + GOOD a (6); EVEN start and GOOD a again come from the evaluation cache
    assert len(engine.calls_for("validation")) == 12


def test_resume_after_a_crash_continues_exactly(tmp_path):
    proposals = ("NONE", "GOOD one", "EVEN x", "GOOD two")
    full = trainer(Scripted(*proposals), tmp_path / "full").fit()
    with pytest.raises(KeyboardInterrupt):
        trainer(Scripted(*proposals, crash_at=3), tmp_path / "crashed").fit()
    engine = make_engine()
    resumed = trainer(Scripted(*proposals), tmp_path / "crashed", engine=engine).fit(resume=True)

    def plain(records):
        rows = [r.model_dump(exclude={"seconds"}) for r in records]
        for row in rows:
            for c in row["candidates"]:
                c["objectives"].pop("latency", None)
        return rows

    assert plain(RunDir(tmp_path / "crashed").read_steps()) == plain(full.history)
    assert resumed.best_state == full.best_state and resumed.test_score == full.test_score
    # the optimizer's state came back: it went on with its third proposal, not its first
    assert [r.candidates[0].changes[0].new_value for r in resumed.history[2:]] == [
        "EVEN x",
        "GOOD two",
    ]
    # the incumbent's validation scores came back too: no call re-scored it
    prompts = {c.request.messages[0].content for c in engine.calls_for("validation")}
    assert "GOOD one" not in prompts


def test_optimizer_mistakes_are_explained():
    class Wrong(tg.optim.Optimizer):
        async def propose(self, ctx):
            return ["a new prompt"]

    with pytest.raises(tg.ArgumentError, match=r"must return a list of tg\.Candidate"):
        trainer(Wrong(), max_steps=1).fit()

    class Unknown(tg.optim.Optimizer):
        async def propose(self, ctx):
            return [tg.Candidate({"nope": "x"})]

    with pytest.raises(tg.ArgumentError, match="unknown parameter"):
        trainer(Unknown(), max_steps=1).fit()
    with pytest.raises(tg.ArgumentError, match="async propose"):
        trainer(object())
    with pytest.raises(tg.ArgumentError, match="textual gradients: pass loss_fn"):
        engine = make_engine()
        module = Pipeline(engine)
        tg.Trainer(
            module,
            optimizer=tg.TGD(module.parameters(), engine=engine),
            metric=exact,
            train=data(4),
            val=data(2),
        )
    with pytest.raises(tg.ArgumentError, match="gate must be one of"):
        trainer(Scripted(), gate="maybe")


def test_an_optimizer_can_score_candidates_itself_through_the_context():
    class Greedy(tg.optim.Optimizer):
        async def propose(self, ctx):
            options = [ctx.current.with_values({"system": s}) for s in ("NONE", "GOOD x", "EVEN")]
            results = [await ctx.evaluate(c) for c in options]  # on this step's batch
            best = max(range(3), key=lambda i: results[i].gate_mean())
            ctx.note(f"batch scores {[r.gate_mean() for r in results]}")
            return [options[best]]

    result = trainer(Greedy(), max_steps=1, test=None).fit()
    assert result.history[0].decision == "accepted"
    assert result.summary.final_parameters["system"] == "GOOD x"


def test_significant_gate_needs_evidence_and_says_which_test_decided():
    # 6 validation examples, 3 improved: an exact sign-flip test gives p = 1/8
    small = trainer(Scripted("GOOD"), gate="significant", max_steps=1, test=None).fit()
    reason = small.history[0].reason
    assert small.history[0].decision == "rejected"
    assert "sign-flip permutation test (exact, n=6)" in reason and "p=0.1250" in reason
    # 20 examples, 10 improved: p = 1/1024 < 0.05
    big = trainer(
        Scripted("GOOD"), gate="significant", max_steps=1, test=None, val=data(20, 100)
    ).fit()
    assert (
        big.history[0].decision == "accepted" and "p=0.0010 < alpha 0.05" in big.history[0].reason
    )


def test_significance_gate_rates_on_seeded_simulations():
    rng = random.Random(7)

    def simulate(effect: float, n: int = 60) -> bool:
        base = [float(rng.random() < 0.5) for _ in range(n)]
        cand = [float(rng.random() < 0.5 + effect) for _ in range(n)]
        return decide(
            "significant", cand, base, best_score=sum(base) / n, seed=rng.randrange(10**6)
        ).accepted

    null = [simulate(0.0) for _ in range(300)]
    planted = [simulate(0.35) for _ in range(100)]
    assert sum(null) / len(null) <= 0.08  # alpha 0.05 plus simulation noise
    assert sum(planted) / len(planted) >= 0.9


def test_pareto_front_and_selection_rules():
    objectives = resolve_objectives(["score", "cost", "prompt_tokens"])

    def entry(i, score, cost, tokens):
        return ParetoEntry(
            candidate_id=f"c{i}",
            step=i,
            objectives={"score": score, "cost": cost, "prompt_tokens": tokens},
        )

    pool = [
        entry(0, 0.50, 1.0, 100),  # dominated by c2
        entry(1, 0.90, 3.0, 300),
        entry(2, 0.80, 1.0, 100),
        entry(3, 0.90, 3.0, 300),  # same as c1: the first is kept
        entry(4, 0.89, 2.0, 200),
        entry(5, 0.20, 0.5, 500),  # cheapest, but the most tokens
    ]
    assert [e.candidate_id for e in pareto_front(pool, objectives)] == ["c1", "c2", "c4", "c5"]
    assert select_entry(pool, "best", objectives).candidate_id == "c1"
    assert select_entry(pool, ("cheapest_within", 0.01), objectives).candidate_id == "c4"
    assert select_entry(pool, ("cheapest_within", 0.2), objectives).candidate_id == "c2"
    fewest = select_entry(
        pool, lambda front: min(front, key=lambda e: e.objectives["prompt_tokens"]), objectives
    )
    assert fewest.candidate_id == "c2"
    with pytest.raises(tg.ArgumentError, match="select must be"):
        select_entry(pool, "cheapest", objectives)
    with pytest.raises(tg.ArgumentError, match="unknown objective"):
        resolve_objectives(["accuracy"])


def test_select_cheapest_within_ends_on_the_cheaper_prompt(tmp_path):
    def engine():
        priced = make_engine()
        priced.model_name = "gpt-4o-mini"  # so prompts have a cost
        return priced

    long = "GOOD " + "please be careful " * 20
    opts = dict(max_steps=2, test=None, objectives=["score", "cost", "prompt_tokens"])
    best = trainer(Scripted("GOOD", long), engine=engine(), **opts).fit()
    assert best.summary.final_parameters["system"] == long  # not_worse takes the tie
    cheap = trainer(
        Scripted("GOOD", long), engine=engine(), select=("cheapest_within", 0.01), **opts
    ).fit()
    assert cheap.summary.final_parameters["system"] == "GOOD"
    assert cheap.selected.values["system"] == "GOOD"
    tokens = {e.values["system"]: e.objectives["prompt_tokens"] for e in cheap.pool}
    assert tokens["GOOD"] < tokens[long]
    assert {e.candidate_id for e in cheap.pareto} == {cheap.selected.candidate_id}


def test_custom_objectives_are_measured_and_recorded(tmp_path):
    words = tg.Objective(
        "words", lambda result, cand: len(cand.values["system"].split()), maximize=False
    )
    result = trainer(
        Scripted("GOOD a b c"),
        tmp_path / "run",
        objectives=["score", words],
        max_steps=1,
        test=None,
    ).fit()
    assert result.history[0].candidates[0].objectives == {"score": 1.0, "words": 4.0}
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    # the start (0.5, 2 words) and the candidate (1.0, 4 words): neither dominates
    assert [e["objectives"] for e in summary["pareto"]] == [
        {"score": 0.5, "words": 2.0},
        {"score": 1.0, "words": 4.0},
    ]


def test_runs_written_before_candidates_were_recorded_still_open(tmp_path, capsys):
    from textgraph.report.html import build_report
    from textgraph.report.terminal import show_run

    run = tmp_path / "old"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(
        json.dumps(
            {
                "format": "textgraph.run",
                "version": 1,
                "module": "Pipeline",
                "parameters": ["system"],
                "initial_parameters": {"system": "EVEN start"},
                "batch_size": 4,
                "gate": "not_worse",
                "initial_val_score": 0.5,
            }
        )
    )
    old_step = {
        "step": 1,
        "batch": [0, 1],
        "candidates": [
            {
                "parameter": "system",
                "old_value": "EVEN start",
                "new_value": "GOOD prompt",
                "status": "proposed",
                "warning": None,
            }
        ],
        "val_score": 1.0,
        "best_score": 1.0,
        "decision": "accepted",
        "reason": "accepted: val 0.500 -> 1.000",
    }
    (run / "steps.jsonl").write_text(json.dumps(old_step) + "\n")
    show_run(str(run))
    assert "step 1: system rewritten" in capsys.readouterr().out
    assert "GOOD prompt" in build_report(str(run))
    with pytest.raises(tg.RunError, match="run format version 1"):
        trainer(Scripted("x"), run).fit(resume=True)


def test_a_trainer_budget_prices_calls_by_the_engines_model():
    engine = make_engine(latency=0.01)
    engine.model_name = "gpt-4o"  # requests name no model: the engine's prices them
    budget = tg.Budget(max_cost_usd=0.0005)
    result = trainer(Scripted("GOOD"), engine=engine, budget=budget, val=data(64, 100)).fit()
    assert result.stopped.startswith("budget")
    # each call is estimated at (prompt chars / 4) * $10 per million before it is sent, so the
    # concurrent validation pass is cut off instead of spending 64 calls
    assert len(engine.calls) < 64
    assert budget.cost_usd <= 0.0005
