"""ParetoTGD in scripted worlds with planted optima.

World 1 (one instruction): X questions are answered right when the instruction says PLAIN
and not TRICK, Y questions when it says TRICK; MASTER answers both. The critic rewrites
PLAIN into TRICK and TRICK into MASTER. TRICK scores lower on validation than PLAIN (it
wins only the Y examples), so a mean-only search rejects it and never gets to MASTER.

World 2 (two rules): X needs ALPHA in the first rule, Y needs BETA in the second, Z is
right only while the first rule is the starting one. From the start, rewriting either
rule gives a candidate that wins different examples; merging them gives the optimum.
"""

from __future__ import annotations

import re

import pytest

import textgraph as tg
from textgraph.engines import ScriptedEngine
from textgraph.optim.pareto_tgd import ParetoTGD


def kind(text: str) -> str:
    return re.search(r"\b([XYZ])-\d+", text).group(1)


def right(kind_: str, rules: str) -> bool:
    if kind_ == "X":
        return "MASTER" in rules or ("PLAIN" in rules and "TRICK" not in rules)
    return "MASTER" in rules or "TRICK" in rules


FORWARD = ("forward", "validation", "evaluation", "traced")


class World:
    """Counts forward calls (one per scored example) and records every request."""

    def __init__(self, rewrites=None, feedback=True):
        self.forward = 0
        self.requests: list[tuple[str, str]] = []
        self.rewrites = rewrites or {"TRICK": "MASTER", "PLAIN": "TRICK"}
        self.feedback = feedback
        self.crash_on_optimizer_call: int | None = None
        self.optimizer_calls = 0
        self.engine = ScriptedEngine(self.respond)

    def respond(self, request):
        text = "\n".join(m.content for m in request.messages)
        self.requests.append((request.purpose, text))
        if request.purpose in FORWARD:
            self.forward += 1
            question = request.messages[-1].content
            return f"answer {kind(question)}" if right(kind(question), text) else "no"
        if request.purpose == "backward":
            return "The instruction does not handle this kind of question; change it."
        if request.purpose == "loss":
            return "The prediction is wrong."
        if request.purpose == "optimizer":
            self.optimizer_calls += 1
            if self.optimizer_calls == self.crash_on_optimizer_call:
                raise KeyboardInterrupt("simulated crash")
            current = re.search(r"<CURRENT_VALUE>\n(.*?)\n</CURRENT_VALUE>", text, re.S).group(1)
            for old, new in self.rewrites.items():
                if old in current:
                    return new
            return current
        raise AssertionError(request.purpose)


class OneRule(tg.Module):
    def __init__(self, engine, start="PLAIN"):
        self.instruction = tg.Variable(start, role_description="instruction", requires_grad=True)
        self.call = tg.LLMCall(engine, self.instruction)

    async def aforward(self, example):
        return await self.call.acall(tg.Variable(example["q"], role_description="question"))


def data(spec: str, start: int = 0) -> list[dict[str, str]]:
    return [{"q": f"{k}-{start + i}", "a": f"answer {k}"} for i, k in enumerate(spec)]


def metric(prediction, example):
    ok = prediction == example["a"]
    return tg.Score(float(ok), feedback=None if ok else f"expected {example['a']!r}")


def fit(optimizer, world, module=None, **options):
    settings = dict(
        train=data("XXYYYY"),
        val=data("XXXXYY", 100),
        max_steps=6,
        progress=False,
    )
    settings.update(options)
    module = module or OneRule(world.engine)
    trainer = tg.Trainer(module, optimizer=optimizer, metric=metric, **settings)
    return trainer.fit(), module


def test_a_candidate_that_leads_only_some_examples_stays_and_leads_to_the_optimum():
    world = World()
    opt = ParetoTGD(engine=world.engine, minibatch_size=6, verbose=False)
    result, module = fit(opt, world, max_steps=12)
    assert module.instruction.value == "MASTER"
    assert result.stopped.endswith("is perfect on every validation example")
    pool = {e["values"]["instruction"]: e for e in opt.pool}
    # TRICK lost the gate (2/6 < 4/6) but stayed in the pool: it alone leads the Y examples
    assert pool["TRICK"]["scores"] == [0, 0, 0, 0, 1, 1]
    statuses = {
        c.changes[0].new_value: c.status for r in result.history for c in r.candidates if c.changes
    }
    assert statuses["TRICK"] == "rejected"
    assert statuses["MASTER"] == "accepted"
    assert pool["MASTER"]["parents"] == [pool["TRICK"]["id"]]
    # the mean-only search from the same start never gets past TRICK
    tgd_world = World()
    tgd_result, tgd_module = fit(_TGDOn(tgd_world), tgd_world, loss_fn=_loss())
    assert tgd_module.instruction.value == "PLAIN"
    assert {c.status for r in tgd_result.history for c in r.candidates} <= {
        "rejected",
        "unchanged",
        "duplicate",
    }


class _TGDOn(tg.optim.Optimizer):
    """TGD with the module's parameter bound at the first step (the module is built in fit)."""

    requires_gradients = True

    def __init__(self, world):
        self.world, self.inner = world, None

    async def propose(self, ctx):
        if self.inner is None:
            self.inner = tg.TGD(list(ctx.parameters.values()), self.world.engine)
        return await self.inner.propose(ctx)


def _loss():
    return tg.example_metric_loss(metric)


def test_the_metric_feedback_is_the_critique_and_no_loss_call_is_made():
    world = World()
    fit(ParetoTGD(engine=world.engine, minibatch_size=6, verbose=False), world, max_steps=1)
    purposes = [p for p, _ in world.requests]
    assert "loss" not in purposes
    backward = [t for p, t in world.requests if p == "backward"]
    assert backward and all("expected 'answer" in t for t in backward)


def test_without_feedback_the_loss_explains_failures_with_an_llm_call():
    def plain(prediction, example):
        return prediction == example["a"]

    world = World()
    trainer = tg.Trainer(
        OneRule(world.engine),
        optimizer=ParetoTGD(engine=world.engine, minibatch_size=6, verbose=False),
        metric=plain,
        train=data("XXYYYY"),
        val=data("XXXXYY", 100),
        max_steps=1,
        progress=False,
        critic_engine=world.engine,
    )
    trainer.fit()
    assert [p for p, _ in world.requests].count("loss") == 4  # the four failing Y examples


def test_the_budget_is_never_exceeded_and_counts_every_scored_example():
    world = World()
    opt = ParetoTGD(engine=world.engine, minibatch_size=2, max_metric_calls=30, verbose=False)
    result, _ = fit(opt, world, max_steps=50)
    assert result.stopped.startswith("optimizer finished: metric-call budget")
    assert opt.metric_calls <= 30
    assert opt.metric_calls + 2 * 2 + 6 > 30  # the next step could have overrun it
    assert world.forward == opt.metric_calls  # one forward call per scored example
    # decided before the step: no empty last step in the record
    assert not any("metric-call budget" in " ".join(r.notes) for r in result.history)


def test_merge_combines_two_candidates_that_lead_different_examples():
    class TwoRules(tg.Module):
        def __init__(self, engine):
            self.first = tg.Variable("rule one", role_description="first rule", requires_grad=True)
            self.second = tg.Variable(
                "rule two", role_description="second rule", requires_grad=True
            )
            self.call = tg.LLMCall(engine, "Follow the rules.")

        async def aforward(self, example):
            q = tg.Variable(example["q"], role_description="question")
            return await self.call.acall(tg.concat([self.first, self.second, q]))

    def answer(request):
        text = request.messages[-1].content
        k = kind(text)
        ok = {
            "X": "ALPHA" in text,
            "Y": "BETA" in text,
            "Z": "rule one" in text,
        }[k]
        return f"answer {k}" if ok else "no"

    class MergeWorld(World):
        def respond(self, request):
            if request.purpose in FORWARD:
                self.requests.append((request.purpose, request.messages[-1].content))
                self.forward += 1
                return answer(request)
            return super().respond(request)

    world = MergeWorld(rewrites={"rule one": "ALPHA", "rule two": "BETA"})
    opt = ParetoTGD(engine=world.engine, minibatch_size=6, merge=True, seed=1, verbose=False)
    module = TwoRules(world.engine)
    result, module = fit(
        opt, world, module=module, train=data("XXXYYZ"), val=data("XXYYZ", 100), max_steps=4
    )
    merges = [e for e in opt.pool if len(e["parents"]) == 2]
    assert len(merges) == 1, [n for r in result.history for n in r.notes]
    merged = merges[0]
    parents = {e["id"]: e for e in opt.pool if e["id"] in merged["parents"]}
    assert sorted(p["values"]["first"] for p in parents.values()) == ["ALPHA", "rule one"]
    assert sorted(p["values"]["second"] for p in parents.values()) == ["BETA", "rule two"]
    assert merged["values"] == {"first": "ALPHA", "second": "BETA"}
    assert (module.first.value, module.second.value) == ("ALPHA", "BETA")


def test_seeded_runs_make_the_same_requests():
    runs = []
    for _ in range(2):
        world = World()
        fit(
            ParetoTGD(engine=world.engine, minibatch_size=3, seed=7, verbose=False),
            world,
            max_steps=5,
        )
        runs.append(sorted(world.requests))
    assert runs[0] == runs[1]


def test_resume_continues_the_search_as_if_never_interrupted(tmp_path):
    world = World()
    straight = ParetoTGD(engine=world.engine, minibatch_size=3, verbose=False)
    fit(straight, world, max_steps=6)

    crashing = World()
    crashing.crash_on_optimizer_call = 3
    first = ParetoTGD(engine=crashing.engine, minibatch_size=3, verbose=False)
    with pytest.raises(KeyboardInterrupt):
        fit(first, crashing, run_dir=tmp_path / "run", max_steps=6)
    again = World()
    resumed = ParetoTGD(engine=again.engine, minibatch_size=3, verbose=False)
    trainer = tg.Trainer(
        OneRule(again.engine),
        optimizer=resumed,
        metric=metric,
        train=data("XXYYYY"),
        val=data("XXXXYY", 100),
        max_steps=6,
        progress=False,
        run_dir=tmp_path / "run",
    )
    trainer.fit(resume=True)
    assert [e["id"] for e in resumed.pool] == [e["id"] for e in straight.pool]
    assert resumed.metric_calls == straight.metric_calls
    assert resumed.state_dict()["cursor"] == straight.state_dict()["cursor"]


def test_children_that_copy_training_data_or_are_too_long_are_dropped_before_scoring():
    world = World(rewrites={"PLAIN": "Answer like this: X-0 is answered with answer X always"})
    opt = ParetoTGD(engine=world.engine, minibatch_size=6, verbose=False)
    train = [{"q": "X-0 is answered with answer X always", "a": "answer X"}, *data("YYYY", 1)]
    result, _ = fit(opt, world, train=train, max_steps=1)
    notes = " ".join(result.history[0].notes)
    assert "copies training example 0" in notes
    assert world.forward == 6 + 5  # the initial validation and the parent's pass, no child

    world = World(rewrites={"PLAIN": "TRICK " + "x" * 100})
    result, _ = fit(
        ParetoTGD(engine=world.engine, minibatch_size=6, verbose=False),
        world,
        max_chars=50,
        max_steps=1,
    )
    assert "filtered" in " ".join(result.history[0].notes)
    assert world.forward == 6 + 6


def test_without_a_loss_fn_tgd_still_needs_one():
    with pytest.raises(tg.ArgumentError, match="loss_fn"):
        tg.Trainer(
            OneRule(World().engine),
            optimizer=tg.TGD([tg.Variable("x", role_description="x", requires_grad=True)]),
            metric=metric,
            train=data("XY"),
            val=data("XY"),
        )


@pytest.mark.parametrize(
    "options, message",
    [
        ({"minibatch_size": 0}, "minibatch_size"),
        ({"max_metric_calls": 0}, "max_metric_calls"),
        ({"merge": "yes"}, "merge"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"constraints": [""]}, "constraints"),
    ],
)
def test_bad_arguments_are_named(options, message):
    with pytest.raises(tg.ArgumentError, match=message):
        ParetoTGD(**options)


def test_validation_data_is_required():
    world = World()
    with pytest.raises(tg.ArgumentError, match="val="):
        tg.Trainer(
            OneRule(world.engine),
            optimizer=ParetoTGD(verbose=False),
            metric=metric,
            train=data("XY"),
            gate="always",
            progress=False,
            max_steps=1,
        ).fit()


def test_a_module_with_only_demos_is_refused_with_the_fix():
    class OnlyDemos(tg.Module):
        def __init__(self, engine):
            self.demos = tg.Demos(role_description="examples")
            self.call = tg.LLMCall(engine, "Answer.", demos=self.demos)

        async def aforward(self, example):
            return await self.call.acall(tg.Variable(example["q"], role_description="q"))

    world = World()
    for optimizer in (
        ParetoTGD(engine=world.engine, verbose=False),
        tg.optim.OPRO(engine=world.engine, verbose=False),
    ):
        trainer = tg.Trainer(
            OnlyDemos(world.engine),
            optimizer=optimizer,
            metric=metric,
            train=data("XY"),
            val=data("XY", 100),
            max_steps=1,
            progress=False,
            loss_fn=tg.example_metric_loss(metric),
        )
        with pytest.raises(tg.ArgumentError, match=r"rewrites text parameters.*BootstrapFewShot"):
            trainer.fit()
