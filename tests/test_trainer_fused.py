"""Trainer(backward="fused"): same decisions as per-op, provenance in the step record,
a malformed fused reply falls back to per-op and the step record says so."""

from __future__ import annotations

import pytest

import textgraph as tg
from tests.trainer_task import make_engine, make_trainer
from textgraph.engines import ScriptedEngine


def _decisions(result: tg.TrainResult) -> list[tuple[int, str, str]]:
    return [(r.step, r.decision, r.reason) for r in result.history]


def test_fused_and_per_op_reach_the_same_accepted_rewrite():
    per_op = make_trainer(engine=make_engine()).fit()
    engine = make_engine()
    fused = make_trainer(engine=engine, backward="fused").fit()
    assert _decisions(fused) == _decisions(per_op)
    assert fused.best_state["parameters"]["system"]["value"] == "GOOD prompt"
    assert (
        fused.best_state["parameters"]["system"]["value"]
        == per_op.best_state["parameters"]["system"]["value"]
    )
    backward = [c.request for c in engine.calls if c.request.purpose == "backward"]
    # one fused call per failing example, every one asking for a JSON object
    assert backward and all(r.metadata["operation"] == "fused_backward" for r in backward)
    assert all(r.response_format.type == "json_schema" for r in backward)


def test_fused_gradients_keep_per_example_provenance_in_the_step_record():
    trainer = make_trainer(backward="fused", max_steps=1, max_gradient_chars=100_000)
    result = trainer.fit()
    step = result.history[0]
    records = step.gradients["system"]
    assert records, "the failing examples should have sent critiques"
    assert all(g.operation == "fused_backward" for g in records)
    examples = [g.example for g in records]
    assert len(set(examples)) == len(examples)  # one critique per example, each labelled
    assert set(examples) <= set(step.batch)
    assert not step.notes or not any("fell back" in n for n in step.notes)


def test_a_malformed_fused_reply_falls_back_to_per_op_and_the_step_record_says_so():
    inner = make_engine()

    def respond(request):
        if request.metadata.get("operation") == "fused_backward":
            return '{"feedback": "one critique, not keyed by parameter"}'
        return inner._respond(request)

    engine = ScriptedEngine(respond)
    result = make_trainer(engine=engine, backward="fused", max_steps=1).fit()
    step = result.history[0]
    fallbacks = [n for n in step.notes if "fused backward fell back to per-op" in n]
    assert fallbacks, step.notes
    assert all(n.startswith("example ") for n in fallbacks)
    # two fused attempts (the reply and its repair) per example, then per-op critiques
    fused_calls = [
        c for c in engine.calls if c.request.metadata.get("operation") == "fused_backward"
    ]
    assert len(fused_calls) == 2 * len(fallbacks)
    assert step.gradients["system"]
    assert all(g.operation != "fused_backward" for g in step.gradients["system"])


def test_an_unknown_backward_mode_is_a_clear_error():
    with pytest.raises(tg.ArgumentError, match="backward must be one of 'per_op', 'fused'"):
        make_trainer(backward="fast")


def test_the_mode_is_part_of_the_run_config_so_resume_cannot_switch_it(tmp_path):
    make_trainer(tmp_path / "run", backward="fused", max_steps=1).fit()
    with pytest.raises(tg.RunError, match=r"\(backward differ\)"):
        make_trainer(tmp_path / "run", max_steps=1).fit(resume=True)
    # a per-op run's config is what it was before the option existed: old runs resume
    make_trainer(tmp_path / "old", max_steps=1).fit()
    config = (tmp_path / "old" / "config.json").read_text()
    assert '"backward"' not in config
