"""MIPRO in a scripted world where one instruction and one demo are planted.

Question n is answered right when n is even and the instruction says PLANTED, or when
n is odd and the demonstrations include "question 7": only the planted combination
scores 1.0; each half of it scores about 0.5.
"""

from __future__ import annotations

import itertools
import re

import pytest

import textgraph as tg
from textgraph.engines import ScriptedEngine
from textgraph.runs import RunDir

PROPOSALS = ["Answer briefly.", "Use the PLANTED rule.", "Think first.", "Be exact."]


def world():
    def respond(request):
        if request.purpose == "propose":
            text = request.messages[-1].content
            if "Dataset description" not in text:
                return "A dataset of numbered questions whose answers are a<number>."
            tip = re.search(r"Style tip: (.*)", text).group(1)
            tips = [t for t in tg.optim.mipro.load("mipro_tips").splitlines() if t]
            return PROPOSALS[tips.index(tip) % len(PROPOSALS)]
        system = request.messages[0].content
        shown = [m.content for m in request.messages[1:-1] if m.role == "user"]
        n = int(re.search(r"\d+", request.messages[-1].content).group())
        right = (n % 2 == 0 and "PLANTED" in system) or (n % 2 == 1 and "question 7" in shown)
        return f"a{n}" if right else "no"

    return ScriptedEngine(respond, latency=0.005)


class Program(tg.Module):
    def __init__(self, engine):
        self.instruction = tg.Variable(
            "Answer the question.", role_description="instruction", requires_grad=True
        )
        self.demos = tg.Demos(role_description="examples", max_items=2)
        self.call = tg.LLMCall(engine, self.instruction, demos=self.demos)

    async def aforward(self, example):
        return await self.call.acall(tg.Variable(example["question"], role_description="q"))


def qa(n, start=0):
    return [{"question": f"question {i}", "answer": f"a{i}"} for i in range(start, start + n)]


def exact(prediction, example):
    return float(prediction == example["answer"])


# The demos "question 7" passes only once an instruction is right on odd n... it is not:
# odd questions need the demo itself. Bootstrapping therefore cannot trace question 7;
# labeled fill (max_labeled) is what can put it in a demo set.


def mipro(**options):
    settings = dict(
        auto=None,
        num_instructions=3,
        num_demo_sets=4,
        trials=12,
        minibatch_size=6,
        full_eval_every=4,
        max_bootstrapped=2,
        max_labeled=2,
        verbose=False,
    )
    settings.update(options)
    return tg.optim.MIPRO(**settings)


def fit(engine, run_dir=None, optimizer=None, **options):
    optimizer = optimizer or mipro()
    settings = dict(
        train=qa(16), val=qa(12, 100), max_steps=10, progress=False, seed=0, critic_engine=engine
    )
    settings.update(options)
    trainer = tg.Trainer(
        Program(engine), optimizer=optimizer, metric=exact, run_dir=run_dir, **settings
    )
    return trainer, optimizer


def test_mipro_finds_the_planted_combination_within_its_trials(tmp_path):
    engine = world()
    trainer, opt = fit(engine, tmp_path / "run")
    result = trainer.fit()
    assert result.initial_val_score == 0.0
    assert result.best_val_score == 1.0
    assert trainer.module.instruction.value == "Use the PLANTED rule."
    assert "question 7" in [d.inputs for d in trainer.module.demos.items]
    assert result.stopped == "optimizer finished: all 12 trials run"
    assert len(result.history) == opt.steps_needed == 3
    notes = [n for r in result.history for n in r.notes]
    assert notes[0].startswith("MIPRO projects at most")
    assert sum(n.startswith("trial ") for n in notes) == 12
    # instructions were proposed with the dataset summary and the program's structure
    proposals = [c.request for c in engine.calls_for("propose")]
    text = proposals[-1].messages[-1].content
    assert "numbered questions" in text and "Step 1: a language-model call" in text
    assert "parameter 'instruction'" in text and "parameter 'demos'" in text
    # trials ran concurrently: minibatch evaluations of different trials overlapped
    forward = [c for c in engine.calls if c.request.purpose == "validation"]
    assert any(
        a.start < b.end and b.start < a.end and a.request.messages != b.request.messages
        for a, b in itertools.pairwise(forward)
    )
    steps = RunDir(tmp_path / "run").read_steps()
    assert steps[0].candidates[0].origin == "MIPRO best of trials"


def test_seeded_searches_repeat_and_seeds_differ():
    def trials(seed):
        trainer, opt = fit(world(), optimizer=mipro(seed=seed))
        trainer.fit()
        return [(t["params"], t["value"]) for t in opt.state_dict()["trials"]]

    assert trials(3) == trials(3)
    assert trials(3) != trials(4)


class Crashing(tg.optim.MIPRO):
    async def propose(self, ctx):
        if ctx.step == 2:
            raise KeyboardInterrupt("simulated crash")
        return await super().propose(ctx)


def test_resume_mid_study_continues_and_matches(tmp_path):
    full_trainer, full_opt = fit(world(), tmp_path / "full")
    full = full_trainer.fit()
    settings = mipro().config()
    crashing = Crashing(
        **{
            **dict(auto=None, verbose=False),
            **{
                k: settings[k]
                for k in (
                    "num_instructions",
                    "num_demo_sets",
                    "trials",
                    "minibatch_size",
                    "full_eval_every",
                    "max_bootstrapped",
                    "max_labeled",
                )
            },
        }
    )
    crashed, _ = fit(world(), tmp_path / "crashed", optimizer=crashing)
    with pytest.raises(KeyboardInterrupt):
        crashed.fit()
    assert len(RunDir(tmp_path / "crashed").read_steps()) == 1
    engine = world()
    resumed_trainer, resumed_opt = fit(engine, tmp_path / "crashed")
    resumed = resumed_trainer.fit(resume=True)
    assert resumed_opt.state_dict()["trials"] == full_opt.state_dict()["trials"]
    assert resumed.best_state == full.best_state
    # the bootstrap and the proposals were not redone on resume
    assert engine.calls_for("propose") == []


def test_budget_stops_the_search_cleanly(tmp_path):
    trainer, _ = fit(world(), tmp_path / "run", budget=tg.Budget(max_calls=70))
    result = trainer.fit()
    assert result.stopped.startswith("budget")
    assert RunDir(tmp_path / "run").read_summary().stopped == result.stopped


def test_bad_settings_are_rejected():
    with pytest.raises(tg.ArgumentError, match="auto must be one of"):
        tg.optim.MIPRO(auto="huge")
    with pytest.raises(tg.ArgumentError, match="minibatch_size"):
        tg.optim.MIPRO(minibatch_size=0)
    with pytest.raises(tg.ArgumentError, match="num_instructions, num_demo_sets and trials"):
        tg.optim.MIPRO(auto=None, trials=3)
