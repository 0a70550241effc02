"""Loaders for the public benchmark files the examples use.

Each returns pydantic models and rejects a malformed file with an error
naming the file, the record and what is wrong.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from textgraph.errors import ArgumentError


class DatasetError(ArgumentError):
    """A data file is missing or not in the expected format."""


class BBHExample(BaseModel):
    input: str
    target: str


class GSM8KExample(BaseModel):
    question: str
    answer: str  # the final number, thousands separators removed
    solution: str  # the worked solution text


class Paragraph(BaseModel):
    title: str
    text: str
    supporting: bool = False


class HotpotExample(BaseModel):
    id: str
    question: str
    answer: str
    paragraphs: list[Paragraph]

    @property
    def supporting_titles(self) -> list[str]:
        return [p.title for p in self.paragraphs if p.supporting]


def _read(path: str | os.PathLike[str]) -> tuple[Path, str]:
    file = Path(path)
    try:
        return file, file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"no data file at {file}") from None


def _json(file: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{file} is not valid JSON ({exc.msg}, line {exc.lineno})") from None


def _jsonl(file: Path, text: str) -> list[Any]:
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{file} line {number} is not valid JSON ({exc.msg})") from None
    return rows


def load_bbh(path: str | os.PathLike[str]) -> list[BBHExample]:
    """A BIG-Bench Hard task file: {"examples": [{"input", "target"}, ...]}."""
    file, text = _read(path)
    data = _json(file, text)
    examples = data.get("examples") if isinstance(data, dict) else None
    if not isinstance(examples, list):
        raise DatasetError(f"{file} has no 'examples' list; is it a BBH task file?")
    out = []
    for i, row in enumerate(examples):
        try:
            out.append(BBHExample.model_validate(row))
        except ValidationError as exc:
            raise DatasetError(f"{file} example {i}: {_first_problem(exc)}") from None
    return out


_FINAL = re.compile(r"####\s*(.+?)\s*$", re.S)


def gsm8k_answer(solution: str) -> str:
    """The final answer after '####', without thousands separators or a trailing period."""
    found = _FINAL.search(solution)
    if not found:
        raise ValueError("the solution has no '#### <answer>' line")
    return found.group(1).replace(",", "").rstrip(".").strip()


def load_gsm8k(path: str | os.PathLike[str]) -> list[GSM8KExample]:
    """GSM8K JSONL: {"question", "answer": "<worked solution> #### <number>"} per line."""
    file, text = _read(path)
    out = []
    for i, row in enumerate(_jsonl(file, text), 1):
        if (
            not isinstance(row, dict)
            or not isinstance(row.get("question"), str)
            or not isinstance(row.get("answer"), str)
        ):
            raise DatasetError(f"{file} line {i}: expected an object with 'question' and 'answer'")
        try:
            final = gsm8k_answer(row["answer"])
        except ValueError as exc:
            raise DatasetError(f"{file} line {i}: {exc}") from None
        out.append(GSM8KExample(question=row["question"], answer=final, solution=row["answer"]))
    return out


def load_hotpotqa(path: str | os.PathLike[str]) -> list[HotpotExample]:
    """HotpotQA with paragraphs, in any of its common layouts.

    - the original JSON list: context [[title, [sentences]]], supporting_facts [[title, i]]
    - the Hugging Face layout: context {"title": [...], "sentences": [[...]]}
    - IRCoT's processed JSONL: question_text, answers_objects, contexts with is_supporting
    """
    file, text = _read(path)
    if file.suffix == ".jsonl":
        rows = _jsonl(file, text)
    else:
        rows = _json(file, text)
        if not isinstance(rows, list):
            raise DatasetError(f"{file} must hold a JSON list of questions")
    out = []
    for i, row in enumerate(rows):
        try:
            out.append(_hotpot_row(row, i))
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            raise DatasetError(
                f"{file} record {i} is not a HotpotQA question ({type(exc).__name__}: {exc})"
            ) from None
    return out


def _hotpot_row(row: dict[str, Any], index: int) -> HotpotExample:
    if "question_text" in row:  # IRCoT processed layout
        paragraphs = [
            Paragraph(
                title=c["title"],
                text=" ".join(c["paragraph_text"].split()),
                supporting=bool(c.get("is_supporting")),
            )
            for c in row["contexts"]
        ]
        return HotpotExample(
            id=str(row.get("question_id", index)),
            question=row["question_text"],
            answer=row["answers_objects"][0]["spans"][0],
            paragraphs=paragraphs,
        )
    context = row["context"]
    if isinstance(context, dict):  # Hugging Face layout
        pairs = list(zip(context["title"], context["sentences"], strict=True))
        facts = row.get("supporting_facts") or {}
        supporting = set(facts.get("title", []))
    else:  # original layout
        pairs = [(title, sentences) for title, sentences in context]
        supporting = {title for title, _ in row.get("supporting_facts", [])}
    paragraphs = [
        Paragraph(
            title=title, text=" ".join("".join(sentences).split()), supporting=title in supporting
        )
        for title, sentences in pairs
    ]
    return HotpotExample(
        id=str(row.get("_id") or row.get("id") or index),
        question=row["question"],
        answer=row["answer"],
        paragraphs=paragraphs,
    )


def _first_problem(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return f"{'.'.join(str(p) for p in err['loc']) or 'record'}: {err['msg']}"


VALLEY_QA = Path(__file__).parent / "data" / "valley_qa.json"


def load_valley_qa() -> list[HotpotExample]:
    """18 two-hop questions (14 bridge, 4 comparison) over 24 paragraphs we wrote.

    A fictional region, so no model can answer from memory: the pipeline has
    to retrieve. Shipped with the package for tests and offline runs; same
    layout as HotpotQA's original JSON.
    """
    return load_hotpotqa(VALLEY_QA)


def corpus_of(examples: list[HotpotExample]) -> list[Paragraph]:
    """Every distinct paragraph of the examples, in first-seen order (the retrieval corpus)."""
    seen: dict[tuple[str, str], Paragraph] = {}
    for example in examples:
        for p in example.paragraphs:
            seen.setdefault((p.title, p.text), Paragraph(title=p.title, text=p.text))
    return list(seen.values())


WORD_PROBLEMS = Path(__file__).parent / "data" / "word_problems.jsonl"


def load_word_problems() -> list[GSM8KExample]:
    """12 grade-school math word problems we wrote, in GSM8K's JSONL layout.

    Shipped for tests and offline runs of the solution-optimization example;
    use `load_gsm8k` for the real dataset.
    """
    return load_gsm8k(WORD_PROBLEMS)
