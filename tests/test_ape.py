"""APE in a scripted world with a planted instruction.

The program answers question n right ("a<n>") when its instruction says PLANTED, and
only the even questions when it says EVEN. The proposer induces "Use the PLANTED rule"
exactly when the training examples it is shown include question 7, an EVEN instruction
when the lowest question shown is even, and a useless one otherwise; each reply names
the questions shown, so replies differ. A variation keeps its parent's words, and turns
EVEN into PLANTED when the request's seed is divisible by 3.
"""

from __future__ import annotations

import itertools
import json
import re

import pytest

import textgraph as tg
from textgraph.engines import ScriptedEngine
from textgraph.optim.ape import APE, halving_cost, halving_schedule
from textgraph.runs import RunDir


def induced(text: str) -> str:
    shown = re.search(r"<DEMONSTRATIONS[^>]*>(.*)</DEMONSTRATIONS>", text, re.DOTALL).group(1)
    numbers = sorted(int(n) for n in re.findall(r"question (\d+)", shown))
    tag = "-".join(map(str, numbers))
    if 7 in numbers:
        return f"Use the PLANTED rule ({tag})."
    if numbers[0] % 2 == 0:
        return f"Answer the EVEN questions ({tag})."
    return f"Answer briefly ({tag})."


def varied(request) -> str:
    text = request.messages[-1].content
    parent = re.search(r"<INSTRUCTION>\n(.*)\n</INSTRUCTION>", text, re.DOTALL).group(1)
    if "EVEN" in parent and request.seed % 3 == 0:
        parent = parent.replace("EVEN", "PLANTED")
    return f"{parent} [v{request.seed % 997}]"


def answer(system: str, question: str) -> str:
    n = int(re.search(r"\d+", question).group())
    right = "PLANTED" in system or ("EVEN" in system and n % 2 == 0)
    return f"a{n}" if right else "no"


def world(propose=None):
    def respond(request):
        if request.purpose == "ape":
            if propose is not None:
                custom = propose(request)
                if custom is not None:
                    return custom
            if "Generate a variation" in request.messages[-1].content:
                return varied(request)
            return induced(request.messages[-1].content)
        return answer(request.messages[0].content, request.messages[-1].content)

    return ScriptedEngine(respond)


class Program(tg.Module):
    def __init__(self, engine):
        self.instruction = tg.Variable(
            "Answer the question.", role_description="instruction", requires_grad=True
        )
        self.call = tg.LLMCall(engine, self.instruction, role_description="answer")

    async def aforward(self, example):
        return await self.call.acall(tg.Variable(example["question"], role_description="q"))


def qa(numbers):
    return [{"question": f"question {i}", "answer": f"a{i}"} for i in numbers]


def exact(prediction, example):
    return float(prediction == example["answer"])


OPTIONS = dict(num_proposals=12, top_k=3, resample_rounds=1, eval_subset=8, demos_per_proposal=3)


def ape(cls=APE, *args, **options):
    return cls(*args, **{**OPTIONS, "verbose": False, **options})


def fit(engine, optimizer=None, run_dir=None, module=None, **options):
    optimizer = optimizer or ape()
    module = module or Program(engine)
    settings = dict(
        train=qa(range(16)),
        val=qa(range(100, 124)),
        max_steps=optimizer.steps_for(module),
        progress=False,
        seed=0,
        critic_engine=engine,
    )
    settings.update(options)
    trainer = tg.Trainer(module, optimizer=optimizer, metric=exact, run_dir=run_dir, **settings)
    return trainer, optimizer


def ape_requests(engine):
    return [c.request for c in engine.calls_for("ape")]


def test_ape_finds_the_planted_instruction(tmp_path, capsys):
    engine = world()
    trainer, opt = fit(engine, ape(verbose=True), tmp_path / "run")
    result = trainer.fit()
    assert result.initial_val_score == 0.0 and result.best_val_score == 1.0
    assert "PLANTED" in trainer.module.instruction.value
    assert result.stopped == "optimizer finished: every text parameter searched (1 x 2 rounds)"
    assert len(result.history) == opt.steps_needed == 2
    notes = [n for r in result.history for n in r.notes]
    assert notes[0].startswith("APE projects at most") and "APE projects" in capsys.readouterr().err
    # induction: 12 calls, each shown 3 training examples, the program and the current value
    first = [r for r in ape_requests(engine) if r.metadata["round"] == 0]
    assert len(first) == 12
    text = first[0].messages[-1].content
    assert text.count("<EXAMPLE>") == 3 and "Output: a" in text and "Input:\nquestion:" in text
    assert "Step 1: a language-model call" in text and "Answer the question." in text
    assert "producing 'answer'" in text
    assert {r.temperature for r in first} == {1.0} and len({r.seed for r in first}) == 12
    assert first[0].variable_ids == [trainer.module.instruction.id]
    # not every proposal was the planted one: the search had to choose
    replies = [c.response.text for c in engine.calls_for("ape")]
    assert any("PLANTED" in t for t in replies) and not all("PLANTED" in t for t in replies)
    # the loop got one candidate per step, with the optimizer's details and a lineage
    steps = RunDir(tmp_path / "run").read_steps()
    chosen = steps[0].candidates[0]
    assert chosen.status == "accepted" and chosen.origin.startswith("APE induction")
    assert chosen.details["optimizer"] == "ape" and chosen.details["round"] == 0
    assert chosen.details["parameter"] == "instruction"
    assert chosen.details["subset_score"] == 1.0 and chosen.details["subset_examples"] == 8
    assert chosen.parents == [tg.Candidate({"instruction": "Answer the question."}).id]


def test_resampling_finds_what_induction_missed():
    # question 7 is never shown: induction can only reach EVEN (0.5); a variation gets there
    engine = world()
    trainer, _ = fit(engine, train=qa([i for i in range(16) if i != 7]))
    result = trainer.fit()
    assert "PLANTED" not in result.history[0].candidates[0].changes[0].new_value
    assert result.history[0].val_score == 0.5
    assert result.best_val_score == 1.0 and "PLANTED" in trainer.module.instruction.value
    accepted = result.history[1].candidates[0]
    assert accepted.details["kind"] == "variation" and accepted.details["proposed_in_round"] == 1
    parent = accepted.details["parent"]
    assert "EVEN" in parent
    # the parent is the id of the candidate whose value was varied
    assert accepted.parents == [tg.Candidate({"instruction": parent}).id]


class Counting(APE):
    """Counts the program's calls made while the optimizer searches."""

    def __init__(self, engine, **options):
        super().__init__(**options)
        self.counter, self.spent = engine, []

    async def propose(self, ctx):
        before = len(self.counter.calls_for("validation"))
        out = await super().propose(ctx)
        self.spent.append(len(self.counter.calls_for("validation")) - before)
        return out


def test_successive_halving_spends_less_than_scoring_every_proposal():
    engine = world()
    opt = ape(Counting, engine, min_rung=1)  # the bare schedule: halving down to 1 example
    trainer, _ = fit(engine, opt)
    trainer.fit()
    rounds = opt.state_dict()["rounds"]
    for spent, summary in zip(opt.spent, rounds, strict=True):
        assert spent == summary["example_runs"]  # one forward call per example
        assert spent < summary["every_on_subset"] / 2
        assert spent <= halving_cost(summary["population"], 3, 8)
    first = rounds[0]
    counts, sizes = halving_schedule(first["population"], 3, 8)
    assert first["rungs"] == [list(x) for x in zip(counts, sizes, strict=True)]
    assert counts[-1] == 3 and sizes[-1] == 8 and sizes[0] < 8
    assert all(b == max(3, -(-a // 2)) for a, b in itertools.pairwise(counts))
    assert all(b == min(8, 2 * a) or b == 8 for a, b in itertools.pairwise(sizes))


def test_halving_schedule():
    assert halving_schedule(51, 5, 20) == ([51, 26, 13, 7, 5], [2, 3, 5, 10, 20])
    assert halving_schedule(4, 5, 20) == ([4], [20])
    assert halving_schedule(6, 5, 20) == ([6, 5], [10, 20])
    assert halving_cost(51, 5, 20) == 51 * 2 + 26 * 1 + 13 * 2 + 7 * 5 + 5 * 10
    assert halving_cost(51, 5, 20) < 51 * 20
    # a floor on rung size: pass/fail metrics do not cut on one or two examples
    assert halving_schedule(51, 5, 20, min_rung=4) == ([51, 26, 13, 7, 5], [4, 4, 5, 10, 20])
    assert halving_schedule(51, 5, 3, min_rung=4) == ([51, 26, 13, 7, 5], [3, 3, 3, 3, 3])


def test_variations_are_asked_for_exactly_the_top_k():
    engine = world()
    trainer, opt = fit(engine, ape(num_proposals=10, top_k=3))
    trainer.fit()
    top = [e["value"] for e in opt.state_dict()["rounds"][0]["top"]]
    assert len(top) == 3
    asked = [r for r in ape_requests(engine) if r.metadata["round"] == 1]
    parents = [
        re.search(r"<INSTRUCTION>\n(.*)\n</INSTRUCTION>", r.messages[-1].content, re.DOTALL).group(
            1
        )
        for r in asked
    ]
    assert sorted(set(parents)) == sorted(top)
    # 10 proposals split evenly over 3 parents: 4, 3, 3 (the best first)
    assert [parents.count(v) for v in top] == [4, 3, 3]
    assert all(
        "Generate a variation of the following instruction" in r.messages[-1].content for r in asked
    )


class TwoSteps(tg.Module):
    """Step 1 restates the question (marking it when its instruction says PLANTED); step 2
    answers even questions when marked and odd ones when its own instruction says PLANTED."""

    def __init__(self, engine):
        self.restate = tg.Variable(
            "Restate the question.", role_description="restating instruction", requires_grad=True
        )
        self.examples = tg.Demos(role_description="examples", max_items=2)
        self.solve = tg.Variable(
            "Answer the question.", role_description="answering instruction", requires_grad=True
        )
        self.first = tg.LLMCall(engine, self.restate, role_description="restated question")
        self.second = tg.LLMCall(engine, self.solve, role_description="answer", demos=self.examples)

    async def aforward(self, example):
        q = tg.Variable(example["question"], role_description="q")
        return await self.second.acall(await self.first.acall(q))


def two_step_world():
    plain = world()

    def respond(request):
        if request.purpose == "ape":
            return plain._respond(request)
        system, user = request.messages[0].content, request.messages[-1].content
        if user.startswith("question"):  # step 1
            return "restated " + user + (" [marked]" if "PLANTED" in system else "")
        n = int(re.search(r"\d+", user).group())
        right = ("[marked]" in user and n % 2 == 0) or ("PLANTED" in system and n % 2 == 1)
        return f"a{n}" if right else "no"

    return ScriptedEngine(respond)


def test_round_robin_over_text_parameters_one_per_step():
    engine = two_step_world()
    module = TwoSteps(engine)
    opt = ape(seed=1)
    assert opt.steps_for(module) == 4  # 2 text parameters (the Demos is skipped) x 2 rounds
    trainer, _ = fit(engine, opt, module=module)
    result = trainer.fit()
    assert opt.steps_needed == 4 and len(result.history) == 4
    chosen = [r.candidates[0] for r in result.history]
    assert [c.details["parameter"] for c in chosen] == ["restate", "restate", "solve", "solve"]
    assert [c.details["round"] for c in chosen] == [0, 1, 0, 1]
    # the requests of each step concern one parameter, in the same order
    seen = []
    for r in ape_requests(engine):
        key = (r.metadata["parameter"], r.metadata["round"])
        if not seen or seen[-1] != key:
            seen.append(key)
    assert seen == [("restate", 0), ("restate", 1), ("solve", 0), ("solve", 1)]
    assert [r.decision for r in result.history] == [
        "accepted",
        "unchanged",
        "accepted",
        "unchanged",
    ]
    assert [r.val_score for r in result.history] == [0.5, 0.5, 1.0, 1.0]
    # the second parameter started from the incumbent holding the first's accepted value
    assert [ch.parameter for ch in chosen[2].changes] == ["solve"]
    assert chosen[2].parents == [result.history[0].current]
    assert "PLANTED" in trainer.module.restate.value and "PLANTED" in trainer.module.solve.value
    assert result.stopped == "optimizer finished: every text parameter searched (2 x 2 rounds)"


def requests_of(seed):
    engine = world()
    trainer, _ = fit(engine, ape(seed=seed))
    trainer.fit()
    # variable ids count the Variables a process made: the only field that may differ
    requests = [r.model_dump(exclude={"variable_ids"}) for r in ape_requests(engine)]
    return sorted(json.dumps(r, sort_keys=True) for r in requests)


def test_seeded_runs_send_the_same_requests_and_seeds_differ():
    assert requests_of(3) == requests_of(3)
    assert requests_of(3) != requests_of(4)


class Crashing(APE):
    async def propose(self, ctx):
        if ctx.step == 2:
            raise KeyboardInterrupt("simulated crash")
        return await super().propose(ctx)


def test_resume_after_an_interrupted_round_continues_exactly(tmp_path):
    full_trainer, full_opt = fit(world(), run_dir=tmp_path / "full")
    full = full_trainer.fit()
    crashed, _ = fit(
        world(),
        ape(Crashing),
        tmp_path / "crashed",
    )
    with pytest.raises(KeyboardInterrupt):
        crashed.fit()
    assert len(RunDir(tmp_path / "crashed").read_steps()) == 1
    engine = world()
    resumed_trainer, resumed_opt = fit(engine, run_dir=tmp_path / "crashed")
    resumed = resumed_trainer.fit(resume=True)

    # the same search: rounds, populations and scores (the resumed run re-scores fewer
    # examples, as the loop's evaluations reloaded from the run directory are cached)
    def search(opt):
        state = opt.state_dict()
        for summary in state["rounds"]:
            summary.pop("example_runs")
        return state

    assert search(resumed_opt) == search(full_opt)
    assert resumed.best_state == full.best_state
    assert resumed_trainer.module.instruction.value == full_trainer.module.instruction.value
    # round 0 was not redone: only the variation round asked for proposals
    assert {r.metadata["round"] for r in ape_requests(engine)} == {1}


def test_unusable_replies_are_noted_not_fatal():
    def propose(request):
        if request.metadata["round"] == 0 and request.seed % 2 == 0:
            return ""  # nothing between the markers, also after the repair request
        return None

    engine = world(propose)
    trainer, opt = fit(engine)
    result = trainer.fit()
    notes = [n for r in result.history for n in r.notes]
    unusable = [n for n in notes if n.startswith("APE 'instruction' round 0: proposal")]
    assert unusable and "nothing between the markers" in unusable[0]
    summary = opt.state_dict()["rounds"][0]
    assert summary["usable"] == 12 - len(unusable) < 12
    assert result.stopped.startswith("optimizer finished")


def test_every_reply_unusable_keeps_the_incumbent():
    engine = world(lambda request: "")
    trainer, _ = fit(engine)
    result = trainer.fit()
    assert [r.decision for r in result.history] == ["unchanged", "unchanged"]
    assert trainer.module.instruction.value == "Answer the question."


def test_bad_arguments_and_a_module_without_text_parameters():
    with pytest.raises(tg.ArgumentError, match=r"top_k \(6\) must be at most num_proposals \(5\)"):
        APE(num_proposals=5, top_k=6)
    for bad in (dict(num_proposals=0), dict(eval_subset=-1), dict(top_k=True)):
        with pytest.raises(tg.ArgumentError, match=f"{next(iter(bad))} must be an int >= 1"):
            APE(**bad)
    with pytest.raises(tg.ArgumentError, match="resample_rounds must be an int >= 0"):
        APE(resample_rounds=-1)
    with pytest.raises(tg.ArgumentError, match="concurrency"):
        APE(concurrency=0)
    with pytest.raises(tg.ArgumentError, match="must be an engine"):
        APE(engine=42)  # a model string is an engine spec (tg.get_engine); a number is not
    with pytest.raises(tg.ArgumentError, match="steps_for"):
        _ = APE().steps_needed

    class OnlyDemos(tg.Module):
        def __init__(self, engine):
            self.examples = tg.Demos(role_description="examples", max_items=2)
            self.call = tg.LLMCall(engine, "Answer.", demos=self.examples)

        async def aforward(self, example):
            return await self.call.acall(tg.Variable(example["question"], role_description="q"))

    engine = world()
    with pytest.raises(tg.ArgumentError, match=r"no text parameter.*BootstrapFewShot"):
        ape().steps_for(OnlyDemos(engine))
    only = tg.Trainer(
        OnlyDemos(engine),
        optimizer=ape(),
        metric=exact,
        train=qa(range(4)),
        val=qa(range(100, 104)),
        max_steps=1,
        progress=False,
    )
    with pytest.raises(tg.ArgumentError, match="no text parameter"):
        only.fit()


def overlap(calls):
    """The most calls in flight at once."""
    edges = sorted([(c.start, 1) for c in calls] + [(c.end, -1) for c in calls])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def test_proposals_run_concurrently_within_the_concurrency_bound():
    def slow(engine):
        engine.latency = lambda request: 0.005 if request.purpose == "ape" else 0.0
        return engine

    free = slow(world())
    fit(free, ape(resample_rounds=0))[0].fit()
    assert overlap(free.calls_for("ape")) > 2
    bounded = slow(world())
    fit(bounded, ape(resample_rounds=0, concurrency=2))[0].fit()
    assert overlap(bounded.calls_for("ape")) == 2


def test_steps_needed_is_known_from_the_parameters_given():
    module = TwoSteps(world())
    assert ape(parameters=module.parameters()).steps_needed == 4
    assert ape(parameters=[module.solve], resample_rounds=2).steps_needed == 3
    with pytest.raises(tg.ArgumentError, match="holds no text parameter"):
        ape(parameters=[module.examples])
