"""OPRO in a scripted world with a planted optimum.

Question n is answered right when the instruction names more than n % 4 of the four
KEYWORDS: on the validation set (n = 100..107) an instruction with k keywords scores
k / 4. The scripted optimizer LLM reads the meta-prompt as OPRO lays it out: it takes
the last past value shown (the best, when the trajectory is sorted ascending) and adds a
keyword it lacks. So it climbs only when it is shown the trajectory the right way round.
"""

from __future__ import annotations

import re

import pytest

import textgraph as tg
from textgraph.engines import ScriptedEngine
from textgraph.optim.opro import OPRO, request_seed
from textgraph.runs import RunDir

KEYWORDS = ("alpha", "beta", "gamma", "delta")
PAST = re.compile(r'<PAST_VALUE score="(\d+)">\n(.*?)\n</PAST_VALUE>', re.DOTALL)
EXAMPLE = re.compile(r"<EXAMPLE>\n(.*?)\n</EXAMPLE>", re.DOTALL)
START = "Answer the question."


def count(text):
    return sum(word in text for word in KEYWORDS)


def forward_engine():
    def respond(request):
        system = request.messages[0].content
        user = request.messages[-1].content
        plan = re.fullmatch(r"question (\d+)", user)
        if plan and "PLAN" in system:  # the first call of the two-step program
            return f"{plan.group(1)} {count(system)}"
        if "PLAN" not in system and re.fullmatch(r"\d+ \d+", user):  # its second call
            n, planned = map(int, user.split())
            return f"a{n}" if planned + count(system) > n % 4 else "no"
        n = int(re.search(r"\d+", user).group())
        return f"a{n}" if count(system) > n % 4 else "no"

    return ScriptedEngine(respond)


def improve(best, k):
    missing = [w for w in KEYWORDS if w not in best]
    return f"{best} Use {missing[k % len(missing)]}." if missing else f"{best} Variant {k}."


def wrap(request, text):
    fmt = request.response_format
    return f"{fmt.start}\n{text}\n{fmt.end}"


def proposer(reply=None):
    """The optimizer LLM (raw: it writes the markers itself). `reply(request, best, k)`
    may override the default answer, the best shown value improved by a keyword."""

    def respond(request):
        text = request.messages[1].content  # the meta-prompt (later ones: a repair request)
        past = PAST.findall(text)
        best = past[-1][1]
        k = request.metadata["request"]
        out = reply(request, best, k) if reply else None
        return wrap(request, improve(best, k)) if out is None else out

    return ScriptedEngine(respond, raw=True)


class Program(tg.Module):
    def __init__(self, engine, start=START):
        self.instruction = tg.Variable(start, role_description="instruction", requires_grad=True)
        self.call = tg.LLMCall(engine, self.instruction)

    async def aforward(self, example):
        return await self.call.acall(tg.Variable(example["question"], role_description="q"))


class TwoSteps(tg.Module):
    """Two instructions (a plan and an answer) and demonstrations, which OPRO skips."""

    def __init__(self, engine):
        self.plan = tg.Variable("PLAN: restate.", role_description="plan", requires_grad=True)
        self.answer = tg.Variable("Answer.", role_description="answering", requires_grad=True)
        self.demos = tg.Demos(role_description="examples", max_items=2)
        self.first = tg.LLMCall(engine, self.plan)
        self.second = tg.LLMCall(engine, self.answer, demos=self.demos)

    async def aforward(self, example):
        planned = await self.first.acall(tg.Variable(example["question"], role_description="q"))
        return await self.second.acall(planned)


def qa(n, start=0):
    return [{"question": f"question {i}", "answer": f"a{i}"} for i in range(start, start + n)]


def exact(prediction, example):
    return float(prediction == example["answer"])


def opro(engine, **options):
    settings = dict(candidates_per_step=3, verbose=False, engine=engine)
    settings.update(options)
    return OPRO(**settings)


def trainer(optimizer, run_dir=None, module=None, **options):
    settings = dict(train=qa(12), val=qa(8, 100), max_steps=6, progress=False)
    settings.update(options)
    module = module or Program(forward_engine())
    return tg.Trainer(module, optimizer=optimizer, metric=exact, run_dir=run_dir, **settings)


def sent(engine):
    """What the optimizer LLM was sent: messages, seed and temperature of each request."""
    return [
        ([(m.role, m.content) for m in c.request.messages], c.request.seed, c.request.temperature)
        for c in engine.calls
    ]


def test_opro_climbs_to_the_planted_optimum_under_the_trainer():
    engine = proposer()
    opt = opro(engine)
    result = trainer(opt).fit()
    assert result.initial_val_score == 0.0
    assert result.best_val_score == 1.0
    final = result.summary.final_parameters["instruction"]
    assert count(final) == 4 and final.startswith(START)
    # one keyword per step: 0.25, 0.5, 0.75, 1.0; then it cannot beat 1.0
    assert [r.val_score for r in result.history[:4]] == [0.25, 0.5, 0.75, 1.0]
    assert [r.decision for r in result.history[:4]] == ["accepted"] * 4
    notes = result.history[0].notes
    assert notes[0] == (
        "OPRO projects at most 27 LLM calls per step: 3 proposal requests (each may add one "
        "repair call) + up to 3 candidates x 8 validation examples x 1 call(s) = 24 "
        "(examples already scored for a candidate are never re-run)"
    )
    first = result.history[0].candidates[0]
    assert first.origin == "opro step 1"
    assert first.details == {
        "optimizer": "opro",
        "parameter": "instruction",
        "request": 0,
        "trajectory": [0],
    }
    assert len(first.parents) == 1  # the incumbent
    # every request asked for a value that scores higher, at temperature 1.0
    request = engine.calls[0].request
    assert request.purpose == "opro" and request.temperature == 1.0
    assert "different from every value above" in request.messages[-1].content
    assert "Step 1: a language-model call" in request.messages[-1].content


def test_meta_prompt_shows_the_best_history_ascending_with_the_best_last():
    engine = proposer()
    opt = opro(engine, history=4, exemplars=2, candidates_per_step=1)
    entries = [
        (START, 0.0),
        ("v1 alpha", 0.5),
        ("v2", 0.25),
        ("v3 alpha beta gamma", 0.75),
        ("v4", 0.25),
        ("v5", 0.0),
    ]
    state = opt.state_dict()
    state["trajectories"] = {
        "instruction": [
            {"value": v, "score": s, "step": 0, "examples": 8, "partial": False} for v, s in entries
        ]
    }
    opt.load_state_dict(state)
    result = trainer(opt, max_steps=1).fit()
    text = engine.calls[0].request.messages[-1].content
    shown = PAST.findall(text)
    # the 4 best of 6, ascending; ties (v2, v4 at 25) in the order they were recorded
    assert shown == [("25", "v2"), ("25", "v4"), ("50", "v1 alpha"), ("75", "v3 alpha beta gamma")]
    assert "(4 of 6)" in text
    # the proposal built on the best value shown (the last one)
    assert result.history[0].candidates[0].changes[0].new_value == "v3 alpha beta gamma Use delta."
    # exemplars: 2 training examples, every field shown (inputs and the target)
    examples = EXAMPLE.findall(text)
    assert len(examples) == 2
    train = [f"question: {e['question']}\nanswer: {e['answer']}" for e in qa(12)]
    assert all(e in train for e in examples)

    # over a longer run every meta-prompt keeps to history and exemplars
    engine = proposer()
    trainer(opro(engine, history=2, exemplars=1), max_steps=4).fit()
    for call in engine.calls:
        text = call.request.messages[-1].content
        scores = [int(s) for s, _ in PAST.findall(text)]
        assert 1 <= len(scores) <= 2 and scores == sorted(scores)
        assert len(EXAMPLE.findall(text)) == 1
    assert max(len(PAST.findall(c.request.messages[-1].content)) for c in engine.calls) == 2

    # exemplars=0: no example section at all
    engine = proposer()
    trainer(opro(engine, exemplars=0), max_steps=1).fit()
    assert "<EXAMPLE>" not in engine.calls[0].request.messages[-1].content


def test_validated_candidates_join_the_trajectory_with_their_scores():
    def reply(request, best, k):
        if k == 1:
            return wrap(request, "Answer. Use alpha and beta.")  # 0.5, but not selected
        if k == 2:
            return wrap(request, "x" * 300)  # filtered by max_chars: never validated
        return None

    opt = opro(proposer(reply))
    result = trainer(opt, max_steps=1, max_chars=200).fit()
    step = result.history[0]
    statuses = {c.changes[0].new_value: (c.status, c.val_score) for c in step.candidates}
    assert statuses[f"{START} Use alpha."] == ("not selected", 0.25)
    assert statuses["Answer. Use alpha and beta."] == ("accepted", 0.5)
    assert statuses["x" * 300][0] == "filtered"
    assert opt.trajectories == {
        "instruction": [
            (START, 0.0),
            (f"{START} Use alpha.", 0.25),
            ("Answer. Use alpha and beta.", 0.5),
        ]
    }
    state = opt.state_dict()["trajectories"]["instruction"]
    assert [e["step"] for e in state] == [1, 1, 1]
    assert not any(e["partial"] for e in state)


def test_a_subset_rejection_is_kept_as_partial_and_never_shown_or_proposed_again():
    # the incumbent (alpha, beta) answers the first two validation examples; "Plainly."
    # answers none of them and is rejected on the val_subset of 2
    def reply(request, best, k):
        return wrap(request, "Plainly.") if k == 0 else None

    engine = proposer(reply)
    opt = opro(engine, candidates_per_step=2)
    module = Program(forward_engine(), start="Use alpha and beta.")
    result = trainer(opt, module=module, max_steps=2, val_subset=2).fit()
    first = {c.changes[0].new_value: c for c in result.history[0].candidates}
    assert first["Plainly."].status == "rejected"
    assert "first 2 val examples" in first["Plainly."].reason
    entries = {e["value"]: e for e in opt.state_dict()["trajectories"]["instruction"]}
    assert entries["Plainly."]["partial"] is True and entries["Plainly."]["examples"] == 2
    assert entries["Plainly."]["score"] == 0.0
    assert entries["Use alpha and beta. Use delta."]["partial"] is False
    # step 2: not shown to the model, and proposed again it is dropped as already tried
    text = engine.calls[-1].request.messages[-1].content
    assert "Plainly." not in [v for _, v in PAST.findall(text)]
    assert "Plainly." not in [c.changes[0].new_value for c in result.history[1].candidates]
    assert "1 already tried" in " ".join(result.history[1].notes)


def test_target_stops_the_run_early(capsys):
    result = trainer(opro(proposer(), target=0.5, verbose=True), max_steps=10).fit()
    assert "OPRO projects at most 27 LLM calls per step" in capsys.readouterr().err
    assert result.stopped == (
        "optimizer finished: target 0.5 reached: 'instruction' scored 0.500 on validation"
    )
    assert len(result.history) == 2 and result.best_val_score == 0.5


def test_resume_after_an_interruption_ends_as_an_uninterrupted_run(tmp_path):
    def run(engine, run_dir, resume=False):
        opt = opro(engine)
        module = TwoSteps(forward_engine())
        return opt, trainer(opt, run_dir, module=module, max_steps=3).fit(resume=resume)

    full_engine = proposer()
    full_opt, full = run(full_engine, tmp_path / "full")

    calls = []

    def crash(request, best, k):
        calls.append(k)
        if len(calls) == 4:  # the first request of step 2
            raise KeyboardInterrupt("simulated crash")
        return None

    with pytest.raises(KeyboardInterrupt):
        run(proposer(crash), tmp_path / "crashed")
    assert len(RunDir(tmp_path / "crashed").read_steps()) == 1

    engine = proposer()
    opt, resumed = run(engine, tmp_path / "crashed", resume=True)
    assert [r.step for r in resumed.history] == [1, 2, 3]
    assert resumed.summary.final_parameters == full.summary.final_parameters
    assert [r.candidates[0].details["parameter"] for r in resumed.history] == [
        "plan",
        "answer",
        "plan",
    ]
    assert opt.state_dict() == full_opt.state_dict()
    assert opt.trajectories == full_opt.trajectories
    # the resumed session sent exactly the requests of steps 2 and 3 of the full run
    assert sent(engine) == sent(full_engine)[3:]


def test_seeded_runs_send_identical_requests_and_seeds_differ():
    def requests(seed):
        engine = proposer()
        trainer(opro(engine, seed=seed), max_steps=3).fit()
        return sent(engine)

    first = requests(7)
    assert first == requests(7)
    other = requests(8)
    assert [s for _, s, _ in first] != [s for _, s, _ in other]
    # other exemplars drawn
    assert EXAMPLE.findall(first[0][0][-1][1]) != EXAMPLE.findall(other[0][0][-1][1])
    seeds = [s for _, s, _ in first]
    assert len(set(seeds)) == len(seeds)  # one seed per request
    assert seeds[:3] == [request_seed(7, 1, k) for k in range(3)]


def test_past_values_and_repeats_are_not_proposed():
    def reply(request, best, k):
        past = [v for _, v in PAST.findall(request.messages[-1].content)]
        if k == 0:
            return wrap(request, f"  {past[0]}  ")  # a past value, padded
        if k == 2:
            return wrap(request, improve(best, 0))  # the same as request 1
        return wrap(request, improve(best, 0)) if k == 1 else None

    opt = opro(proposer(reply), candidates_per_step=3)
    result = trainer(opt, max_steps=2).fit()
    for record in result.history:
        assert len(record.candidates) == 1
        assert "1 new, 1 already tried, 1 repeated, 0 unusable" in " ".join(record.notes)
    values = [v for v, _ in opt.trajectories["instruction"]]
    assert len(values) == len(set(values)) == 3


def test_unusable_replies_are_noted_and_skipped():
    def reply(request, best, k):
        if k == 2:
            raise tg.TruncatedOutput("the model stopped at max_tokens")
        return "I would rather not say." if k == 1 else None  # no markers

    engine = proposer(reply)
    result = trainer(opro(engine), max_steps=1).fit()
    notes = " ".join(result.history[0].notes)
    assert "instruction: proposal 1 unusable (the end marker" in notes
    assert "instruction: proposal 2 unusable (TruncatedOutput: the model stopped" in notes
    assert "1 new, 0 already tried, 0 repeated, 2 unusable" in notes
    assert result.history[0].decision == "accepted"
    # the reply without markers got one repair request, as every delimited call does
    assert sorted(c.request.metadata["request"] for c in engine.calls) == [0, 1, 1, 2]


def test_stops_when_every_parameter_brings_nothing_new():
    def reply(request, best, k):
        return wrap(request, best) if k else "no markers here"

    result = trainer(opro(proposer(reply), max_empty_rounds=2), max_steps=10).fit()
    assert result.stopped == (
        "optimizer finished: no new value in the last 2 turn(s) of every parameter "
        "(every reply unusable or already tried)"
    )
    assert len(result.history) == 2
    assert all(r.decision == "unchanged" for r in result.history)
    # None: never stops on it
    result = trainer(opro(proposer(reply), max_empty_rounds=None), max_steps=3).fit()
    assert result.stopped == "max_steps"


def test_two_text_parameters_take_turns_and_demos_are_skipped():
    engine = proposer()
    opt = opro(engine, candidates_per_step=2)
    result = trainer(opt, module=TwoSteps(forward_engine()), max_steps=4).fit()
    turns = [r.candidates[0].details["parameter"] for r in result.history]
    assert turns == ["plan", "answer", "plan", "answer"]
    for record in result.history:
        for c in record.candidates:
            assert [ch.parameter for ch in c.changes] == [c.details["parameter"]]
    assert sorted(opt.trajectories) == ["answer", "plan"]
    asked = [c.request for c in engine.calls]
    assert [r.metadata["parameter"] for r in asked] == ["plan"] * 2 + ["answer"] * 2 + [
        "plan"
    ] * 2 + ["answer"] * 2
    text = asked[2].messages[-1].content
    assert "The parameter to improve: 'answer' (the instruction of step 2 above)" in text
    # its own trajectory only, with the incumbent's score refreshed: the plan improved in
    # step 1, so "Answer." now scores 0.25 where it scored 0 at the start
    assert PAST.findall(text) == [("25", "Answer.")]
    assert opt.trajectories["answer"][0] == ("Answer.", 0.25)
    assert result.best_val_score == 1.0  # two keywords in each instruction


def test_argument_and_state_errors():
    with pytest.raises(tg.ArgumentError, match="history must be an int >= 1"):
        OPRO(history=0)
    with pytest.raises(tg.ArgumentError, match="candidates_per_step"):
        OPRO(candidates_per_step=0)
    with pytest.raises(tg.ArgumentError, match="exemplars must be an int >= 0"):
        OPRO(exemplars=-1)
    with pytest.raises(tg.ArgumentError, match="seed"):
        OPRO(seed="1")
    for bad in (1.5, -0.1, True, float("nan"), "0.5"):
        with pytest.raises(tg.ArgumentError, match="target must be a validation score"):
            OPRO(target=bad)
    with pytest.raises(tg.ArgumentError, match="temperature"):
        OPRO(temperature=-1)
    with pytest.raises(tg.ArgumentError, match="max_tokens"):
        OPRO(max_tokens=0)
    with pytest.raises(tg.ArgumentError, match="max_empty_rounds"):
        OPRO(max_empty_rounds=0)
    with pytest.raises(tg.ArgumentError, match="must be an engine"):
        OPRO(engine=42)  # a model string is an engine spec (tg.get_engine); a number is not
    # no validation split: the first propose says what to do
    with pytest.raises(tg.ArgumentError, match=r"OPRO needs validation scores.*val="):
        trainer(opro(proposer()), val=None, gate="always", max_steps=1).fit()
    # state: round-trips through JSON, refuses malformed input
    opt = OPRO()
    assert opt.config() == {
        "name": "opro",
        "history": 20,
        "candidates_per_step": 8,
        "exemplars": 3,
        "seed": 0,
        "target": None,
        "temperature": 1.0,
        "max_tokens": None,
        "max_empty_rounds": 3,
    }
    good = opt.state_dict()
    opt.load_state_dict(good)
    for broken in (
        [],
        {**good, "version": 99},
        {**good, "trajectories": None},
        {**good, "turn": -1},
        {**good, "trajectories": {"p": [{"value": "v", "score": "high"}]}},
        {**good, "empty": {"p": "x"}},
    ):
        with pytest.raises(tg.StateDictError):
            opt.load_state_dict(broken)
