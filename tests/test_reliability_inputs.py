"""Bad input gets a clear, typed error at the boundary (issue 12, item 16).

Sampling parameters of LLM calls, metrics that return nonsense, garbage state
files, an optimizer over a variable the module does not have, corrupt run
files read by `textgraph show` / `textgraph report`, Rich markup in model
text, and write errors (a full disk) that name the file.
"""

from __future__ import annotations

import errno
import io
import json
import math
import os

import numpy as np
import pytest
from rich.console import Console

import textgraph as tg
from tests.trainer_task import answer, data, make_engine, make_trainer
from textgraph import _io
from textgraph.cli import main
from textgraph.engines import ScriptedEngine
from textgraph.report.html import build_report
from textgraph.report.terminal import show_run
from textgraph.runs import RunDir, RunError, Summary, append_jsonl

# --- LLMCall / FormattedLLMCall sampling parameters ----------------------------------


def _formatted(**sampling):
    return tg.FormattedLLMCall(ScriptedEngine(lambda r: "x"), "Q: {q}", ["q"], **sampling)


def _plain(**sampling):
    return tg.LLMCall(ScriptedEngine(lambda r: "x"), **sampling)


@pytest.mark.parametrize("make", [_plain, _formatted], ids=["LLMCall", "FormattedLLMCall"])
@pytest.mark.parametrize(
    ("sampling", "message"),
    [
        ({"temperature": "hot"}, r"temperature must be a number >= 0.*got 'hot'"),
        ({"temperature": -0.5}, r"temperature must be a number >= 0.*got -0.5"),
        ({"temperature": math.nan}, r"temperature must be a number >= 0.*got nan"),
        ({"temperature": True}, r"temperature must be a number >= 0.*got True"),
        ({"max_tokens": 0}, r"max_tokens must be an int >= 1.*got 0"),
        ({"max_tokens": 1.5}, r"max_tokens must be an int >= 1.*got 1.5"),
        ({"max_tokens": "10"}, r"max_tokens must be an int >= 1.*got '10'"),
        ({"seed": "7"}, r"seed must be an int.*got '7'"),
        ({"stop": ["\n", 3]}, r"stop\[1\] must be a non-empty str, got 3"),
        ({"stop": [""]}, r"stop\[0\] must be a non-empty str"),
        ({"stop": 5}, r"stop must be a str or a list of str.*got 5"),
    ],
)
def test_llm_calls_check_sampling_parameters_at_construction(make, sampling, message):
    with pytest.raises(tg.ArgumentError, match=message) as caught:
        make(**sampling)
    assert type(caught.value).__name__ == "ArgumentError"  # not a pydantic error at call time


@pytest.mark.parametrize("make", [_plain, _formatted], ids=["LLMCall", "FormattedLLMCall"])
def test_a_str_stop_is_one_stop_sequence(make):
    engine = ScriptedEngine(lambda r: "four")
    call = make(stop="\n\n", temperature=0, max_tokens=5, seed=3)
    call.engine = engine
    if isinstance(call, tg.FormattedLLMCall):
        call(q=tg.Variable("2+2?", role_description="question"))
    else:
        call(tg.Variable("2+2?", role_description="question"))
    request = engine.calls[0].request
    assert request.stop == ["\n\n"]  # not ["\n", "\n"]
    assert (request.temperature, request.max_tokens, request.seed) == (0.0, 5, 3)
    # a tuple and an empty list are fine too
    assert make(stop=("END",)).sampling["stop"] == ["END"]
    assert make(stop=[]).sampling["stop"] is None


def test_tgd_checks_its_sampling_parameters_too():
    p = tg.Variable("x", role_description="prompt", requires_grad=True)
    with pytest.raises(tg.ArgumentError, match="TGD max_tokens must be an int >= 1"):
        tg.TGD([p], max_tokens=0)
    with pytest.raises(tg.ArgumentError, match="TGD temperature must be a number"):
        tg.TGD([p], temperature="warm")


# --- metrics that return nonsense ----------------------------------------------------


class Echo(tg.Module):
    def __init__(self, engine):
        self.system = tg.Variable("GOOD", role_description="system prompt", requires_grad=True)
        self.call = tg.LLMCall(engine, self.system)

    async def aforward(self, example):
        return await self.call.acall(tg.Variable(example["question"], role_description="q"))


@pytest.mark.parametrize(
    ("returned", "shown"),
    [
        (math.inf, "inf"),
        (-math.inf, "-inf"),
        (math.nan, "nan"),
        ("0.5", "'0.5'"),
        (None, "None"),
    ],
)
def test_a_metric_returning_a_non_finite_or_non_number_is_fatal_and_named(returned, shown):
    def odd_metric(prediction, example):
        return returned if example["question"] == "What is 2?" else 1.0

    engine = ScriptedEngine(lambda r: answer("GOOD", r.messages[-1].content))
    with pytest.raises(tg.ArgumentError) as caught:
        tg.evaluate(Echo(engine), data(4), odd_metric)
    message = str(caught.value)
    assert "odd_metric" in message and "example 2" in message and shown in message
    assert "finite number" in message  # what to return instead
    # never silently a zero: Score and MetricLoss reject the same values
    if returned is not None and not isinstance(returned, str):
        with pytest.raises(tg.ArgumentError, match="finite number"):
            tg.Score(returned)
    loss = tg.MetricLoss(lambda p, t: returned, engine=engine)
    with pytest.raises(tg.ArgumentError, match="finite number"):
        loss(tg.Variable("4", role_description="answer"), "4")


def test_any_finite_number_is_a_score_including_numpy_scalars():
    # scores are not limited to [0, 1]: MetricLoss(perfect=...) and the gates compare any scale
    engine = ScriptedEngine(lambda r: answer("GOOD", r.messages[-1].content))
    result = tg.evaluate(Echo(engine), data(3), lambda p, e: 7)
    assert result.scores == [7.0, 7.0, 7.0]
    result = tg.evaluate(Echo(engine), data(2), lambda p, e: np.float32(0.5))
    assert result.scores == [0.5, 0.5]
    assert tg.Score(np.int64(1)).value == 1.0
    with pytest.raises(tg.ArgumentError, match="finite number"):
        tg.Score(np.float64("nan"))


# --- Module.load of garbage ---------------------------------------------------------------


class One(tg.Module):
    def __init__(self):
        self.system = tg.Variable("answer", role_description="system prompt", requires_grad=True)


def test_loading_binary_garbage_or_a_directory_is_a_state_dict_error_naming_the_file(tmp_path):
    garbage = tmp_path / "weights.bin"
    garbage.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(tg.StateDictError, match=r"weights\.bin is not a textgraph state file"):
        One().load(garbage)
    with pytest.raises(tg.StateDictError, match=r"is a directory"):
        One().load(tmp_path)
    wrong = tmp_path / "other.json"
    wrong.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(tg.StateDictError, match=r"other\.json: not a textgraph state dict"):
        One().load(wrong)


# --- an optimizer over a variable the module does not have -------------------------------


def test_tgd_over_a_variable_outside_the_module_names_it_under_the_trainer():
    engine = make_engine()
    stray = tg.Variable("other prompt", role_description="stray prompt", requires_grad=True)
    trainer = make_trainer(engine=engine, max_steps=2)
    trainer.optimizer = tg.TGD([trainer.module.system, stray], engine=engine)
    with pytest.raises(tg.ArgumentError) as caught:
        trainer.fit()
    message = str(caught.value)
    assert f"{stray.id} ('stray prompt')" in message
    assert "not a parameter of the module being trained" in message
    assert "its parameters are: system" in message  # what the optimizer could have been given
    assert not engine.calls_for("optimizer")  # no step pretended to run


# --- corrupt run files in `textgraph show` / `textgraph report` -------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    make_trainer(run_dir, max_steps=2).fit()
    return run_dir


@pytest.fixture
def run_copy(finished_run, tmp_path):
    import shutil

    target = tmp_path / "run"
    shutil.copytree(finished_run, target)
    return target


def _render(run_dir, step=None):
    """Every reader: the terminal view (all steps and one step) and the HTML report."""
    show_run(str(run_dir), console=Console(file=io.StringIO(), width=200))
    show_run(str(run_dir), step=1, console=Console(file=io.StringIO(), width=200))
    build_report(run_dir)


def _first_line(path, raw: bytes):
    """Replace the first of several lines (not the last: that one may be cut by a crash)."""
    lines = path.read_bytes().splitlines(keepends=True)
    assert len(lines) >= 2
    lines[0] = raw
    path.write_bytes(b"".join(lines))


CORRUPTIONS = {
    "config not utf-8": ("config.json", lambda p: p.write_bytes(b"\xff\xfe\x00garbage")),
    "config not an object": ("config.json", lambda p: p.write_text("[1, 2]")),
    "config wrong types": (
        "config.json",
        lambda p: p.write_text(
            json.dumps({"version": 2, "initial_val_score": "high", "initial_parameters": 3})
        ),
    ),
    "steps line not json": ("steps.jsonl", lambda p: _first_line(p, b"{oops\n")),
    "steps line wrong shape": ("steps.jsonl", lambda p: _first_line(p, b'{"step": "one"}\n')),
    "steps not utf-8": ("steps.jsonl", lambda p: _first_line(p, b"\xff\xfe\n")),
    "summary not json": ("summary.json", lambda p: p.write_text('{"steps": ')),
    "summary wrong shape": ("summary.json", lambda p: p.write_text('{"steps": []}')),
    "summary binary": ("summary.json", lambda p: p.write_bytes(os.urandom(64) + b"\xff")),
    "graph wrong shape": ("graphs/step-0001.json", lambda p: p.write_text('{"nodes": 1}')),
    "graph node without id": (
        "graphs/step-0001.json",
        lambda p: p.write_text('{"nodes": [{"role": "x"}], "edges": []}'),
    ),
    "graph dangling edge": (
        "graphs/step-0001.json",
        lambda p: p.write_text(
            '{"nodes": [{"id": "a"}], "edges": [{"source": "zz", "target": "a"}]}'
        ),
    ),
    "graph binary": ("graphs/step-0001.json", lambda p: p.write_bytes(b"\x80\x81\x82")),
    "checkpoint binary": (
        "checkpoints/step-0002.json",
        lambda p: p.write_bytes(b"\x80" * 10),
    ),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupt_run_files_are_a_run_error_naming_the_file(run_copy, case, capsys):
    name, corrupt = CORRUPTIONS[case]
    path = run_copy / name
    corrupt(path)
    if name.startswith("checkpoints/"):
        # a corrupt checkpoint is skipped (the pool comes from an earlier one) and said so
        html = build_report(run_copy)
        assert "step-0002.json is corrupt: not UTF-8 text" in html
        return
    with pytest.raises(RunError) as caught:
        _render(run_copy)
    message = str(caught.value)
    assert str(path) in message, message
    assert "Traceback" not in message and "validation error" not in message
    if name.endswith(".jsonl"):
        assert "line 1" in message
    # the command line prints that one line, not a traceback hint
    report = ["report", str(run_copy), "-o", str(run_copy / "r.html")]
    for argv in (["show", str(run_copy), "--step", "1"], report):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("textgraph: error: ") and str(path) in err
        assert "--debug for the traceback" not in err


def test_every_reader_names_the_file_and_the_line(run_copy):
    run = RunDir(run_copy)
    for path, read, model in (
        (run.trace, run.read_trace, "TraceRecord"),
        (run.evaluations, run.read_evaluations, "EvaluationRecord"),
        (run.steps, run.read_steps, "StepRecord"),
    ):
        original = path.read_bytes()
        lines = original.split(b"\n")
        path.write_bytes(b"\n".join([lines[0], b'{"step": 1}', *lines[1:]]))
        with pytest.raises(RunError, match=rf"{path} line 2 is not a valid {model}") as caught:
            read()
        assert "field" in str(caught.value) and "missing" in str(caught.value)
        assert "move the file aside" in str(caught.value)  # what to do
        path.write_bytes(b"\n".join([lines[0], b"\xff\xfe", *lines[1:]]))
        with pytest.raises(RunError, match=rf"{path} line 2 is not UTF-8 text"):
            read()
        # a last line cut short by a crash (even mid-character) is still dropped quietly
        path.write_bytes(original + '{"step": 9, "é'.encode()[:-1])
        assert len(read()) == len(original.strip().split(b"\n"))
        path.write_bytes(original)
    checkpoint = run.checkpoint_path(2)
    checkpoint.write_text('{"format": "textgraph.checkpoint"}')
    found, skipped = run.latest_checkpoint()
    assert found is not None and found.trainer.step == 1
    assert skipped[0][1].startswith("step-0002.json is corrupt: field 'parameters': missing")
    run.summary.write_text('{"steps": 2, "stopped": 3}')
    with pytest.raises(RunError, match=r"summary\.json is not a valid Summary") as caught:
        run.read_summary()
    assert "stopped" in str(caught.value)


def test_the_files_themselves_unreadable_are_run_errors(run_copy):
    run = RunDir(run_copy)
    run.steps.unlink()
    run.steps.mkdir()
    with pytest.raises(RunError, match=r"cannot read .*steps\.jsonl"):
        run.read_steps()


# --- Rich markup in model text -------------------------------------------------------------

MARKUP = "[/] [bold red]not bold[/bold red] [link=file:///etc]x[/link] [/"


def markup_engine() -> ScriptedEngine:
    def respond(request):
        if request.purpose in ("forward", "validation"):
            return answer(request.messages[0].content, request.messages[-1].content)
        if request.purpose == "loss":
            return f"Wrong {MARKUP}"
        if request.purpose == "backward":
            return f"Critique {MARKUP}"
        return f"GOOD {MARKUP}"

    return ScriptedEngine(respond)


def test_show_prints_model_text_literally_and_never_interprets_markup(tmp_path):
    run_dir = tmp_path / "run [/]"
    make_trainer(run_dir, engine=markup_engine(), max_steps=1).fit()
    config = RunDir(run_dir).read_config()
    config["module"] = "Pipeline[/]"
    config["gate"] = "[bold]x[/]"
    (run_dir / "config.json").write_text(json.dumps(config))
    for step in (None, 1):
        buffer = io.StringIO()
        show_run(str(run_dir), step=step, console=Console(file=buffer, width=400))
        text = buffer.getvalue()
        assert "GOOD [/] [bold red]not bold[/bold red]" in text
        assert "Pipeline[/]" in text and str(run_dir) in text
        if step == 1:
            assert "Critique [/] [bold red]" in text


def test_example_summaries_print_model_text_literally():
    from textgraph.examples._common import print_trainer_summary

    summary = Summary(
        steps=1,
        stopped="error: provider said [/] [bold]no[/bold]",
        initial_val_score=0.5,
        best_val_score=0.5,
        test_score=None,
        accepted_steps=0,
        calls=1,
        cached_calls=0,
        prompt_tokens=1,
        completion_tokens=1,
        cost_usd=0.0,
        seconds=1.0,
        by_purpose={"forward[/]": {"calls": 1}},
        final_parameters={"system[/]": "x"},
    )
    buffer = io.StringIO()
    print_trainer_summary(Console(file=buffer, width=300), summary, None)
    text = buffer.getvalue()
    assert "provider said [/] [bold]no[/bold]" in text
    assert "forward[/] 1" in text and "final system[/]:" in text


# --- a full disk ------------------------------------------------------------------------------


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_names_the_file_in_atomic_writes(tmp_path, monkeypatch):
    target = tmp_path / "state.json"
    monkeypatch.setattr(_io.os, "fsync", _disk_full)
    with pytest.raises(OSError) as caught:
        One().save(target)
    message = str(caught.value)
    assert str(target) in message and "No space left on device" in message
    assert caught.value.errno == errno.ENOSPC
    assert "free some disk space" in message
    assert not target.exists() and not list(tmp_path.iterdir())  # no temp file left behind


def test_a_full_disk_names_the_file_in_jsonl_appends_and_leaves_no_partial_line(
    tmp_path, monkeypatch
):
    run = RunDir(tmp_path)
    record = Summary(
        steps=1,
        stopped="max_steps",
        initial_val_score=None,
        best_val_score=None,
        test_score=None,
        accepted_steps=0,
        calls=0,
        cached_calls=0,
        prompt_tokens=0,
        completion_tokens=0,
        cost_usd=0.0,
        seconds=0.0,
    )
    path = run.path / "records.jsonl"
    append_jsonl(path, record)
    before = path.read_bytes()
    real_write = os.write

    def half_then_full(fd, chunk):
        real_write(fd, bytes(chunk)[:10])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_io.os, "write", half_then_full)
    with pytest.raises(OSError) as caught:
        append_jsonl(path, record)
    assert str(path) in str(caught.value) and caught.value.errno == errno.ENOSPC
    assert path.read_bytes() == before  # the partial line was cut off again


def test_a_permission_error_keeps_its_type_and_names_the_file(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(_io.os, "replace", denied)
    with pytest.raises(PermissionError, match=r"state\.json"):
        One().save(tmp_path / "state.json")
