"""Examples from your own files: JSONL (one example per line) or JSON.

A JSON file holds a list of examples, or an object of splits
({"train": [...], "val": [...], "test": [...]}) from which `split` picks one.
Errors name the file, the line and what to fix.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from textgraph.datasets.loaders import DatasetError


def load_examples(path: str | os.PathLike[str], split: str | None = None) -> list[Any]:
    file = Path(path)
    if not file.exists():
        raise DatasetError(f"no data file at {file}")
    text = file.read_text(encoding="utf-8")
    if file.suffix == ".jsonl":
        if split is not None:
            raise DatasetError(f"{file} is JSONL (one split); --split applies to JSON files")
        examples = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                examples.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{file} line {number} is not JSON: {exc.msg}") from None
        return _non_empty(examples, file)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(
            f"{file} is not JSON ({exc.msg}, line {exc.lineno}); use .jsonl for one example "
            "per line"
        ) from None
    if isinstance(data, list):
        if split is not None:
            raise DatasetError(f"{file} holds one list of examples, not splits; drop --split")
        return _non_empty(data, file)
    if isinstance(data, dict):
        splits = {k: v for k, v in data.items() if isinstance(v, list)}
        if split is None:
            if len(splits) == 1:
                return _non_empty(next(iter(splits.values())), file)
            raise DatasetError(f"{file} has splits {sorted(splits)}; choose one (--split NAME)")
        if split not in splits:
            raise DatasetError(f"{file} has no split {split!r}; it has {sorted(splits)}")
        return _non_empty(splits[split], file)
    raise DatasetError(f"{file} must hold a list of examples or an object of splits")


def _non_empty(examples: list[Any], file: Path) -> list[Any]:
    if not examples:
        raise DatasetError(f"{file} holds no examples")
    return examples
