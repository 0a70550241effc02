"""Loaders parse the real files in ../shared/data and reject malformed ones clearly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from textgraph.datasets import (
    DatasetError,
    gsm8k_answer,
    load_bbh,
    load_gsm8k,
    load_hotpotqa,
)

DATA = Path(
    os.environ.get("TEXTGRAPH_SHARED_DATA")
    or Path(__file__).resolve().parents[2] / "shared" / "data"
)
needs_data = pytest.mark.skipif(not DATA.exists(), reason=f"shared data not found at {DATA}")


@needs_data
def test_bbh_object_counting():
    examples = load_bbh(DATA / "bbh" / "object_counting.json")
    assert len(examples) == 250
    assert examples[0].target == "8" and examples[0].input.startswith("I have a flute")


@needs_data
def test_gsm8k_final_answers_have_no_separators():
    examples = load_gsm8k(DATA / "gsm8k" / "test.jsonl")
    assert len(examples) == 1319 and examples[0].answer == "18"
    assert all("," not in e.answer for e in examples)
    assert any(len(e.answer) > 3 for e in examples)  # numbers that had separators


@needs_data
@pytest.mark.parametrize(
    ("name", "count"),
    [
        ("hotpotqa_dev_distractor_ircot500.jsonl", 500),
        ("hotpotqa_dev_distractor_first100_hf.json", 100),
        ("hotpotqa_train100_hipporag.json", 100),
    ],
)
def test_hotpotqa_layouts(name, count):
    examples = load_hotpotqa(DATA / "multihop" / name)
    assert len(examples) == count
    assert all(e.question and e.answer and e.paragraphs for e in examples)
    assert sum(len(e.supporting_titles) == 2 for e in examples) >= count * 0.9


@needs_data
def test_the_two_dev_layouts_agree():
    ircot = {
        e.question: e
        for e in load_hotpotqa(DATA / "multihop" / "hotpotqa_dev_distractor_ircot500.jsonl")
    }
    for e in load_hotpotqa(DATA / "multihop" / "hotpotqa_dev_distractor_first100_hf.json"):
        other = ircot[e.question]
        assert e.answer == other.answer
        assert [p.title for p in e.paragraphs] == [p.title for p in other.paragraphs]
        assert set(e.supporting_titles) == set(other.supporting_titles)


def test_malformed_files_are_named(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"examples": [{"input": "x"}]}')
    with pytest.raises(DatasetError, match=r"bad.json example 0: target"):
        load_bbh(bad)
    bad.write_text("[1, 2")
    with pytest.raises(DatasetError, match="not valid JSON"):
        load_bbh(bad)
    lines = tmp_path / "g.jsonl"
    lines.write_text('{"question": "q", "answer": "no final line"}\n')
    with pytest.raises(DatasetError, match=r"g.jsonl line 1: .*####"):
        load_gsm8k(lines)
    hp = tmp_path / "h.json"
    hp.write_text('[{"question": "q"}]')
    with pytest.raises(DatasetError, match="record 0 is not a HotpotQA question"):
        load_hotpotqa(hp)
    with pytest.raises(DatasetError, match="no data file"):
        load_hotpotqa(tmp_path / "missing.json")
    assert gsm8k_answer("so... #### 1,234.") == "1234"
