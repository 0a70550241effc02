"""Scorers: per-token log-probabilities of a text, optionally conditioned on a context.

A scorer cuts a text into *units* (its tokens) and says how likely each unit
was given everything before it: the context, then the earlier units of the
text. The compressor only sees units as character spans, so any scorer
works: the embedded model (`LlamaCppScorer`), an OpenAI-compatible server
that returns prompt log-probabilities (`OpenAIPromptLogprobScorer`), or the
deterministic `ScriptedScorer` for exact tests.

The contract (`Scorer`):

- `score(text, *, context="") -> TokenScores`: `spans` are contiguous
  character spans that cover `text` exactly (the first starts at 0, each
  starts where the previous ended, the last ends at `len(text)`), and
  `logprobs[i]` is log p(unit i | context + text before unit i), a finite
  float <= 0. The text's units never depend on the context: a scorer
  tokenizes the text on its own.
- optional `tokenize(text) -> list of spans`: the same units without scoring
  (cheap); the compressor uses it to count the tokens of its output and to
  skip a scoring pass when it needs only the spans.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from textgraph.errors import ArgumentError, TextgraphError

Span = tuple[int, int]


class ScorerError(TextgraphError):
    """A scorer broke its contract (spans that do not cover the text, bad log-probabilities)."""


@dataclass(frozen=True)
class TokenScores:
    """The units of a text (character spans) and log p of each given what came before."""

    spans: tuple[Span, ...]
    logprobs: np.ndarray = field(repr=False)

    def __len__(self) -> int:
        return len(self.spans)


@runtime_checkable
class Scorer(Protocol):
    """Anything with `score(text, *, context="") -> TokenScores` (see the module docstring)."""

    def score(self, text: str, *, context: str = "") -> TokenScores: ...


def check_scores(scores: TokenScores, text: str, who: str = "scorer") -> TokenScores:
    """Refuse scores that break the contract, saying how."""
    spans = scores.spans
    lp = np.asarray(scores.logprobs, dtype=np.float64)
    if lp.shape != (len(spans),):
        raise ScorerError(f"{who} returned {lp.shape} log-probabilities for {len(spans)} units")
    end = 0
    for i, (a, b) in enumerate(spans):
        if a != end or b <= a:
            raise ScorerError(
                f"{who}: unit {i} spans [{a}, {b}) but must start at {end} and be non-empty "
                "(units cover the text exactly, in order)"
            )
        end = b
    if end != len(text):
        raise ScorerError(f"{who}: units end at char {end}, the text has {len(text)} chars")
    if lp.size and not np.all(np.isfinite(lp)):
        raise ScorerError(f"{who} returned a log-probability that is not finite")
    if lp.size and lp.max() > 1e-6:
        raise ScorerError(f"{who} returned a log-probability above 0 ({lp.max():.4g})")
    return TokenScores(tuple(spans), np.minimum(lp, 0.0))


# --- units ------------------------------------------------------------------------------------

_WORD = re.compile(r"\s*\S+")


def word_spans(text: str) -> list[Span]:
    """Whitespace tokens: each unit is a word with the whitespace before it; whitespace at the
    end joins the last word (a whitespace-only text is one unit)."""
    spans = [m.span() for m in _WORD.finditer(text)]
    if not spans:
        return [(0, len(text))] if text else []
    if spans[-1][1] < len(text):
        spans[-1] = (spans[-1][0], len(text))
    return spans


def char_spans(text: str) -> list[Span]:
    return [(i, i + 1) for i in range(len(text))]


def align(
    unit_spans: Sequence[Span], score_spans: Sequence[Span], logprobs: np.ndarray
) -> np.ndarray:
    """Carry log-probabilities from one cutting of a text to another.

    Each scored token's log-probability is shared among the units it overlaps, in proportion
    to the characters they share, so the total is kept. Identical cuttings map one to one.
    """
    out = np.zeros(len(unit_spans), dtype=np.float64)
    if list(unit_spans) == list(score_spans):
        out[:] = logprobs
        return out
    j = 0
    for (a, b), lp in zip(score_spans, logprobs, strict=True):
        while j < len(unit_spans) and unit_spans[j][1] <= a:
            j += 1
        k = j
        while k < len(unit_spans) and unit_spans[k][0] < b:
            s, e = unit_spans[k]
            out[k] += lp * (min(b, e) - max(a, s)) / (b - a)
            k += 1
    return out


# --- the scripted scorer ----------------------------------------------------------------------


LogprobFn = Callable[[str, str], float]


class ScriptedScorer:
    """`ScriptedScorer(logprob=None, *, table=None, default=-3.0, unit="word")`: deterministic
    log-probabilities for exact tests.

    Units are whitespace tokens (`unit="word"`: a word with the whitespace before it) or
    characters (`unit="char"`). Each unit's log-probability is

    - `logprob(token, context)` when a function is given: `token` is the unit without its
      whitespace, `context` everything the model would have seen before it (the scoring
      context followed by the text up to the unit);
    - else `table[token]` (exact, then lower-case), falling back to `default`.

    `calls` records every `(text, context)` scored. `ScriptedScorer.seeded(seed)` gives
    pseudo-random but reproducible log-probabilities (a hash of the seed, the token and the
    word before it).
    """

    def __init__(
        self,
        logprob: LogprobFn | None = None,
        *,
        table: Mapping[str, float] | None = None,
        default: float = -3.0,
        unit: str = "word",
    ) -> None:
        if logprob is not None and table is not None:
            raise ArgumentError("give ScriptedScorer a logprob function or a table, not both")
        if logprob is not None and not callable(logprob):
            raise ArgumentError(
                f"logprob must be a function (token, context) -> float, got {logprob!r}"
            )
        if unit not in ("word", "char"):
            raise ArgumentError(f"unit must be 'word' or 'char', got {unit!r}")
        if not isinstance(default, (int, float)) or not math.isfinite(default) or default > 0:
            raise ArgumentError(f"default must be a finite log-probability <= 0, got {default!r}")
        self._fn = logprob
        self._table = dict(table or {})
        self._lower = {k.lower(): v for k, v in self._table.items()}
        self.default = float(default)
        self.unit = unit
        self.calls: list[tuple[str, str]] = []

    @classmethod
    def seeded(
        cls, seed: int = 0, *, low: float = -8.0, high: float = -0.05, unit: str = "word"
    ) -> ScriptedScorer:
        """Log-probabilities in [low, high] from a hash of (seed, previous word, token)."""

        def logprob(token: str, context: str) -> float:
            before = context.split()
            prev = before[-1] if before else ""
            h = zlib.crc32(f"{seed}\x00{prev}\x00{token}".encode()) / 0xFFFFFFFF
            return low + (high - low) * h

        return cls(logprob, unit=unit)

    def tokenize(self, text: str) -> list[Span]:
        return word_spans(text) if self.unit == "word" else char_spans(text)

    def score(self, text: str, *, context: str = "") -> TokenScores:
        self.calls.append((text, context))
        spans = self.tokenize(text)
        values = []
        for a, b in spans:
            token = text[a:b].strip() if self.unit == "word" else text[a:b]
            if self._fn is not None:
                value = float(self._fn(token, context + text[:a]))
            else:
                value = self._table.get(token, self._lower.get(token.lower(), self.default))
            values.append(value)
        return TokenScores(tuple(spans), np.asarray(values, dtype=np.float64))

    def __repr__(self) -> str:
        how = "function" if self._fn else f"table of {len(self._table)}"
        return f"ScriptedScorer({how}, unit={self.unit!r})"
