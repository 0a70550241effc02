"""Sequential validation and speculative proposals (textgraph/train/validation.py,
textgraph/train/speculation.py): same decisions as full validation with fewer calls, the
significant gate's error rate, discarded speculation, resume, overlap from timestamps."""

from __future__ import annotations

import random
import re

import pytest

import textgraph as tg
from tests.trainer_task import Pipeline, make_trainer
from textgraph.candidate import Candidate
from textgraph.engines import ScriptedEngine
from textgraph.eval.gate import decide
from textgraph.eval.result import EvalResult, Usage
from textgraph.runs import RunDir
from textgraph.train.validation import (
    SequentialSettings,
    conditional_power,
    looks,
    screen,
    spending,
)


def planted(system: str, question: str) -> str:
    """A prompt "ACC=a" answers question i right when the example's planted difficulty
    (spread over 0..99 by a fixed permutation) is below 100 * a."""
    acc = float(re.search(r"ACC=([0-9.]+)", system).group(1)) if "ACC=" in system else 0.5
    i = int(re.search(r"\d+", question).group())
    return str(i) if (i * 37 + 11) % 100 < 100 * acc else "wrong"


def respond(request) -> str:
    if request.purpose in ("forward", "validation"):
        return planted(request.messages[0].content, request.messages[-1].content)
    raise AssertionError(request.purpose)


def world_engine(**options) -> ScriptedEngine:
    return ScriptedEngine(respond, **options)


def exact(prediction: str, example) -> float:
    return float(prediction.strip() == example["answer"])


def data(n: int, offset: int = 0) -> list[dict[str, str]]:
    return [{"question": f"Q {i}?", "answer": str(i)} for i in range(offset, offset + n)]


class Listed(tg.optim.Optimizer):
    """Proposes the next prompts from a list (one or several per step)."""

    allows_speculation = True

    def __init__(self, *steps, crash_at=None):
        self.steps, self.taken, self.crash_at = list(steps), 0, crash_at

    async def propose(self, ctx):
        if ctx.step == self.crash_at:
            raise RuntimeError("simulated crash")
        if self.taken >= len(self.steps):
            return []
        batch = self.steps[self.taken]
        self.taken += 1
        batch = batch if isinstance(batch, list) else [batch]
        return [ctx.current.with_values({"system": v}, origin="listed") for v in batch]

    def finished(self):
        return "list exhausted" if self.taken >= len(self.steps) else None

    def state_dict(self):
        return {"taken": self.taken}

    def load_state_dict(self, state):
        self.taken = state["taken"]


class Probing(Listed):
    """Listed, but it scores the incumbent on the batch first: a proposal that makes calls."""

    async def propose(self, ctx):
        await ctx.evaluate(ctx.current, ctx.batch)
        return await super().propose(ctx)


def run(steps, run_dir=None, engine=None, **options):
    engine = engine or world_engine()
    module = Pipeline(engine)
    module.system.value = "ACC=0.5 start"
    settings = dict(train=data(6), val=data(50, 100), max_steps=len(steps), progress=False)
    settings.update(options)
    optimizer = settings.pop("optimizer", None) or Listed(*steps)
    settings.setdefault("metric", exact)
    trainer = tg.Trainer(module, optimizer=optimizer, run_dir=run_dir, **settings)
    return trainer.fit(), engine


def decisions(result):
    return [(r.decision, r.current, r.best_score) for r in result.history]


@pytest.mark.parametrize("gate", ["better", "not_worse"])
def test_sequential_reaches_the_full_decisions_with_fewer_calls(gate):
    rng = random.Random(7)
    full_calls = seq_calls = 0
    for world in range(12):
        steps = []
        for _ in range(6):
            k = rng.choice([1, 1, 2, 3])
            steps.append(
                [
                    f"ACC={rng.choice([0.2, 0.4, 0.5, 0.55, 0.6, 0.8])} w{world}.{len(steps)}.{j}"
                    for j in range(k)
                ]
            )
        full, full_engine = run(steps, gate=gate)
        seq, seq_engine = run(steps, gate=gate, validation="sequential", val_chunk=10)
        assert decisions(seq) == decisions(full), (world, steps)
        assert seq.best_state == full.best_state
        f = len(full_engine.calls_for("validation"))
        s = len(seq_engine.calls_for("validation"))
        assert s <= f, (world, s, f)  # never more calls
        full_calls, seq_calls = full_calls + f, seq_calls + s
    # several candidates a step: only the last live one may be dropped by the gate rule
    assert seq_calls < 0.9 * full_calls, (seq_calls, full_calls)


def test_records_say_how_many_examples_and_why(tmp_path):
    steps = ["ACC=0.1 bad", "ACC=0.9 good", ["ACC=0.95 best", "ACC=0.2 worse"]]
    result, _ = run(steps, tmp_path / "run", validation="sequential", val_chunk=10)
    rows = {c.id: c for r in RunDir(tmp_path / "run").read_steps() for c in r.candidates}
    by_value = {c.changes[0].new_value: c for c in rows.values()}
    bad = by_value["ACC=0.1 bad"]
    # exact bounds: at 0.1 per example, 30 examples are needed before even perfect scores
    # on the other 20 could not reach the incumbent's 0.5
    assert bad.status == "rejected" and bad.val_examples == 30
    assert bad.val_stop and bad.val_stop.startswith("stopped after 30 of 50")
    assert by_value["ACC=0.9 good"].val_examples == 50 and by_value["ACC=0.9 good"].val_stop is None
    worse = by_value["ACC=0.2 worse"]
    assert worse.val_examples < 50 and worse.status == "rejected"
    assert by_value["ACC=0.95 best"].status == "accepted"
    # early-stopped candidates never enter the pool as if fully scored
    assert {e.candidate_id for e in result.pool} == {
        result.history[0].candidates[0].parents[0],
        by_value["ACC=0.9 good"].id,
        by_value["ACC=0.95 best"].id,
    }
    config = RunDir(tmp_path / "run").read_config()
    assert config["validation"] == "sequential" and config["val_chunk"] == 10


def test_an_optimizer_that_needs_full_scores_gets_them():
    class NeedsAll(Listed):
        full_validation = True

    steps = ["ACC=0.1 bad", "ACC=0.2 bad too"]
    full, full_engine = run(steps)
    seq, seq_engine = run(steps, optimizer=NeedsAll(*steps), validation="sequential")
    assert len(seq_engine.calls_for("validation")) == len(full_engine.calls_for("validation"))
    assert len(seq.pool) == len(full.pool) == 3


def test_bad_settings_are_explained():
    with pytest.raises(tg.ArgumentError, match="always"):
        run(["ACC=0.1"], validation="sequential", gate="always")
    with pytest.raises(tg.ArgumentError, match="val_subset"):
        run(["ACC=0.1"], validation="sequential", val_subset=5)
    with pytest.raises(tg.ArgumentError, match="pool"):
        run(["ACC=0.1"], validation="sequential", select=("cheapest_within", 0.0))
    with pytest.raises(tg.ArgumentError, match="validation must be"):
        run(["ACC=0.1"], validation="early")
    with pytest.raises(tg.ArgumentError, match="metric_range"):
        run(["ACC=0.1"], validation="sequential", metric_range=(1, 0))

    def tenfold(prediction, example):
        return 10.0 * exact(prediction, example)

    with pytest.raises(tg.ArgumentError, match="outside the metric range"):
        run(["ACC=0.1"], validation="sequential", metric=tenfold)
    result, _ = run(["ACC=0.1"], validation="sequential", metric=tenfold, metric_range=(0, 10))
    assert result.history[0].decision == "rejected"

    class NoSpeculation(Listed):
        allows_speculation = False

    with pytest.raises(tg.ArgumentError, match="speculative"):
        run(["ACC=0.1"], optimizer=NoSpeculation("ACC=0.1"), speculative=True)


# --- the significant gate: error rate on seeded simulations --------------------------


def _result(scores):
    return EvalResult(
        scores=list(scores),
        outputs=[],
        feedback=[],
        errors=[],
        mean=sum(scores) / len(scores),
        ci=None,
        n_scored=len(scores),
        n_failed=0,
        usage=Usage(),
        latency_p50=None,
        latency_p95=None,
    )


async def _sequential_significant(cand, inc, alpha, chunk, seed):
    """Screen, then the gate's own test on all examples for a survivor; and the count of
    candidate examples scored."""
    used = [0]

    async def evaluate(candidate, k):
        used[0] = max(used[0], k)
        return _result(cand[:k])

    async def gather(*coroutines):
        return [await c for c in coroutines]

    settings = SequentialSettings(chunk=chunk, futility=alpha, alpha=alpha)
    [screened] = await screen(
        [Candidate({"p": "x"})],
        evaluate,
        n=len(cand),
        gate="significant",
        best_score=sum(inc) / len(inc),
        incumbent=inc,
        settings=settings,
        seed=seed,
        gather=gather,
    )
    if screened.dropped:
        return False, used[0]
    verdict = decide(
        "significant", cand, inc, best_score=sum(inc) / len(inc), alpha=alpha, seed=seed
    )
    return verdict.accepted, len(cand)


def test_significant_gate_keeps_its_false_accept_rate_and_most_of_its_power():
    import asyncio

    alpha, n, sims = 0.05, 50, 300
    rng = random.Random(3)

    def simulate(p_cand, p_inc):
        seq_accepts = full_accepts = used = 0
        for s in range(sims):
            cand = [float(rng.random() < p_cand) for _ in range(n)]
            inc = [float(rng.random() < p_inc) for _ in range(n)]
            ok, k = asyncio.run(_sequential_significant(cand, inc, alpha, 10, s))
            full = decide("significant", cand, inc, best_score=sum(inc) / n, alpha=alpha, seed=s)
            seq_accepts += ok
            full_accepts += full.accepted
            used += k
            assert not (ok and not full.accepted)  # it only ever accepts what full would
        return seq_accepts / sims, full_accepts / sims, used / (sims * n)

    null_rate, null_full, _null_used = simulate(0.6, 0.6)
    assert null_rate <= alpha + 3 * (alpha * (1 - alpha) / sims) ** 0.5
    assert null_rate <= null_full
    worse_rate, _, worse_used = simulate(0.4, 0.7)
    assert worse_rate == 0 and worse_used < 0.5  # clearly worse: stopped early (0.39)
    power, full_power, _ = simulate(0.85, 0.55)
    assert power >= full_power - alpha - 0.02, (power, full_power)


def test_conditional_power_follows_the_trend():
    from statistics import NormalDist

    n = 50
    assert conditional_power([1.0, 0.0] * 5, n, 0.05) is None  # before 40% of the set
    assert conditional_power([0.0] * 20, n, 0.05) is None  # all equal: undefined
    strong = [1.0] * 15 + [0.0] * 5  # 20 pairs, mean 0.75
    weak = [1.0] * 5 + [0.0] * 10 + [-1.0] * 5  # 20 pairs, mean 0
    assert conditional_power(strong, n, 0.05) > 0.99
    assert conditional_power(weak, n, 0.05) < 0.05
    # the closed form at one point: Z_k = 0, t = 0.4 -> 1 - Phi(z_0.95 / sqrt(0.6))
    expected = 1 - NormalDist().cdf(NormalDist().inv_cdf(0.95) / 0.6**0.5)
    assert abs(conditional_power(weak, n, 0.05) - expected) < 1e-9


def test_spending_adds_up_and_looks_cover_the_set():
    shares = spending(0.05, [0.2, 0.4, 0.6, 0.8, 1.0])
    assert abs(sum(shares) - 0.05) < 1e-12 and shares[0] > shares[1] > shares[-1] > 0
    assert looks(50, 10) == [10, 20, 30, 40, 50] and looks(7, 3) == [3, 6, 7]


# --- speculative proposals ----------------------------------------------------------


def test_speculation_is_used_on_rejection_and_discarded_on_acceptance(tmp_path):
    steps = ["ACC=0.1 a", "ACC=0.9 b", "ACC=0.2 c", "ACC=0.95 d"]
    plain, _ = run(steps, tmp_path / "plain")
    engine = world_engine(latency=0.02)
    spec, _ = run(
        steps, tmp_path / "spec", engine=engine, speculative=True, optimizer=Probing(*steps)
    )
    assert decisions(spec) == decisions(plain) and spec.best_state == plain.best_state
    assert [r.decision for r in spec.history] == ["rejected", "accepted", "rejected", "accepted"]
    # each step's candidate was built on the incumbent of its time
    for a, b in zip(plain.history, spec.history, strict=True):
        assert [c.parents for c in a.candidates] == [c.parents for c in b.candidates]
    notes = {r.step: " ".join(r.notes) for r in spec.history}
    assert "the proposal stands" in notes[2]  # step 1 rejected: speculation used
    assert "discarded" in notes[3]  # step 2 accepted: its speculation was redone
    assert "discarded" not in notes[2] and "stands" not in notes[3]
    trace = RunDir(tmp_path / "spec").read_trace()
    speculative = [t for t in trace if t.phase.startswith("speculative")]
    # steps 2 and 4 used their speculative proposals; step 3's was cancelled when step 2
    # accepted (an in-flight call that is cancelled leaves no completed trace line)
    assert {2, 4} <= {t.step for t in speculative} <= {2, 3, 4}
    # overlap, from the recorded timestamps: step 2's speculative proposal began before step
    # 1's last validation call ended
    step1_val_end = max(
        t.started_s + t.latency_s for t in trace if t.step == 1 and t.purpose == "validation"
    )
    step2_start = min(t.started_s for t in speculative if t.step == 2)
    assert step2_start < step1_val_end
    assert RunDir(tmp_path / "spec").read_config()["speculative"] is True


def test_resume_with_speculation_and_sequential_validation_is_exact(tmp_path):
    steps = ["ACC=0.1 a", "ACC=0.9 b", "ACC=0.2 c", "ACC=0.95 d", "ACC=0.3 e"]
    options = dict(validation="sequential", val_chunk=10, speculative=True)
    full, _ = run(steps, tmp_path / "full", **options)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(steps, tmp_path / "crashed", optimizer=Listed(*steps, crash_at=4), **options)
    resumed_engine = world_engine()
    module = Pipeline(resumed_engine)
    module.system.value = "ACC=0.5 start"
    resumed = tg.Trainer(
        module,
        optimizer=Listed(*steps),
        metric=exact,
        run_dir=tmp_path / "crashed",
        train=data(6),
        val=data(50, 100),
        max_steps=len(steps),
        progress=False,
        **options,
    ).fit(resume=True)
    assert decisions(resumed) == decisions(full) and resumed.best_state == full.best_state
    keep = ("step", "decision", "current", "val_score", "best_score", "calls")
    rows = [{k: getattr(r, k) for k in keep} for r in RunDir(tmp_path / "crashed").read_steps()]
    assert rows == [{k: getattr(r, k) for k in keep} for r in full.history]


def test_tgd_speculates_under_the_trainer(tmp_path):
    plain = make_trainer(tmp_path / "plain").fit()
    spec = make_trainer(tmp_path / "spec", speculative=True).fit()
    assert [r.decision for r in spec.history] == [r.decision for r in plain.history]
    assert spec.best_state == plain.best_state
    assert any("speculative" in t.phase for t in RunDir(tmp_path / "spec").read_trace())
