"""LLMLingua-style prompt compression from a small causal LM's per-token surprise.

`PerplexityCompressor(scorer=None, *, protect=())` drops the tokens a small language model
finds predictable, at three levels (LLMLingua, Jiang et al. 2023), and with `question=`
keeps what the question makes likely (LongLLMLingua, Jiang et al. 2024):

1. demonstrations (`compress_demos`): whole demonstrations are kept in order of perplexity
   (or, with a question, of log p(question | demonstration)) while they fit the budget;
2. sentences: a coarse pass keeps the most informative sentences until they hold
   `sentence_budget` (1.4) times the token budget, leaving the token level room to choose;
3. tokens: iterative. The kept text is cut into segments of `segment_tokens` units; each
   segment is scored in context (the already compressed prefix conditions it, as the target
   model will read it) and its least informative units are dropped. With
   `granularity="word"` whole words are kept or dropped (a word is ranked by its most
   informative token; segments end between words), so names and numbers are not cut into
   sub-word pieces.

The budget controller. The budget is T = round(rate * N) units of the N the scorer cut the
text into (or `target_tokens`). The sentence level never goes below T (it keeps sentences
until they hold min(N, 1.4 T)); the token level then spends exactly T: each segment gets the
remaining budget in proportion to its share of the remaining units, so rounding errors are
carried to the next segment and the last segment takes what is left. Protected units are kept
first and count against their segment's quota. Finally, when the scorer can tokenize, the
output is tokenized again (dropping a token can merge or split its neighbours) and the
difference is corrected by dropping or restoring the next units in the token level's order.
So the achieved ratio is T/N up to one unit, unless protected spans alone exceed T (then all
of them are kept and `reason` says so).

Question-aware scoring (LongLLMLingua). Sentences are ranked by log p(question | sentence)
averaged over the question's tokens (`question_ranking="after"`, LongLLMLingua's coarse
ranking), or by the contrastive gain of their tokens (`"contrastive"`, no extra calls).
Tokens are ranked by contrastive perplexity: log p(x | question, prefix) - log p(x | prefix),
both with the compressed prefix; tokens the question makes more likely are kept (ties: the
more surprising first; `surprise_weight` mixes in surprise).

Protected spans (see `protect.py`) are never dropped: placeholders, numbers, tags and
markers, fenced code blocks, and the user's regexes. Demonstration selection drops whole
demonstrations and does not look at protection.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from textgraph._checks import check_int
from textgraph.compression.protect import (
    compile_patterns,
    protected_spans,
    protected_units,
    unit_sentences,
)
from textgraph.compression.scorers import Span, TokenScores, align, check_scores
from textgraph.demos import Demo, Demos, as_demo
from textgraph.errors import ArgumentError

QUESTION_RANKINGS = ("after", "contrastive")


class CompressionResult(BaseModel):
    """What `compress` kept.

    text: the compressed text: the kept units of the original, concatenated (so it is
        valid text that `spans`/`kept_mask` reconstruct exactly).
    original_tokens: units of the original (the scorer's tokens; a UTF-8 character split
        across tokens is one unit).
    compressed_tokens: tokens of `text` as the scorer cuts it again (the kept units when the
        scorer cannot tokenize without scoring).
    ratio: compressed_tokens / original_tokens (1.0 for an empty text).
    kept_mask: one flag per original unit; spans: the units as [start, end) of the original.
    requested_ratio, target_tokens: what was asked for (rate, or target_tokens / N).
    kept_tokens: sum(kept_mask); protected_tokens: units that could not be dropped.
    levels: units removed by each level ("demonstrations", or "sentences" and "tokens").
    reason: why the text was not compressed as requested (empty, too short for the budget,
        protected spans over budget), else None.
    question_aware: the ranking was conditioned on a question.
    kept_items: indices of the demonstrations kept (compress_demos only).
    """

    model_config = ConfigDict(frozen=True)

    text: str
    original_tokens: int
    compressed_tokens: int
    ratio: float
    kept_mask: tuple[bool, ...]
    spans: tuple[tuple[int, int], ...] = ()
    requested_ratio: float
    target_tokens: int
    kept_tokens: int
    protected_tokens: int = 0
    levels: dict[str, int] = {}
    reason: str | None = None
    question_aware: bool = False
    kept_items: tuple[int, ...] | None = None


class PerplexityCompressor:
    """`PerplexityCompressor(scorer=None, *, protect=())`: see the module docstring.

    scorer: per-token log-probabilities (`textgraph.compression.Scorer`); None means the
        embedded SmolLM2 through llama.cpp (`LlamaCppScorer`), created on first use.
    protect: extra regexes (str or compiled) whose matches are never dropped.
    protect_defaults: also protect placeholders, numbers, tags and code blocks (True).
    sentence_budget: the sentence level keeps sentences holding this many times the token
        budget (LLMLingua's token_budget_ratio, 1.4); 1.0 leaves nothing to the token level.
    segment_tokens: units per segment of the iterative token level (100).
    max_context_tokens: the compressed prefix given as context is cut to its last units
        beyond this many, in steps of half of it (1024).
    question_ranking: "after" (log p(question | sentence)) or "contrastive".
    surprise_weight: with a question, token rank = contrastive gain + weight * surprise (0).
    granularity: "token" (LLMLingua: single tokens) or "word" (whole words).
    cache_size: scored (text, context) pairs remembered (256); rates share the scoring.
    """

    def __init__(
        self,
        scorer: Any = None,
        *,
        protect: Any = (),
        protect_defaults: bool = True,
        sentence_budget: float = 1.4,
        segment_tokens: int = 100,
        max_context_tokens: int = 1024,
        question_ranking: str = "after",
        surprise_weight: float = 0.0,
        granularity: str = "token",
        cache_size: int = 256,
    ) -> None:
        if scorer is not None and not callable(getattr(scorer, "score", None)):
            raise ArgumentError(
                f"scorer must have score(text, *, context='') -> TokenScores, got {scorer!r}; "
                "use LlamaCppScorer(), OpenAIPromptLogprobScorer(...) or ScriptedScorer(...)"
            )
        _check_real("sentence_budget", sentence_budget, minimum=1.0)
        _check_real("surprise_weight", surprise_weight, minimum=0.0)
        check_int("segment_tokens", segment_tokens, minimum=1)
        check_int("max_context_tokens", max_context_tokens, minimum=2)
        check_int("cache_size", cache_size, minimum=0)
        if granularity not in ("token", "word"):
            raise ArgumentError(f"granularity must be 'token' or 'word', got {granularity!r}")
        if question_ranking not in QUESTION_RANKINGS:
            raise ArgumentError(
                f"question_ranking must be one of {QUESTION_RANKINGS}, got {question_ranking!r}"
            )
        self._scorer = scorer
        self._patterns = compile_patterns(protect, defaults=bool(protect_defaults))
        self.sentence_budget = float(sentence_budget)
        self.segment_tokens = segment_tokens
        self.max_context_tokens = max_context_tokens
        self.question_ranking = question_ranking
        self.surprise_weight = float(surprise_weight)
        self.granularity = granularity
        self._cache: OrderedDict[tuple[str, str], TokenScores] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    # --- scoring --------------------------------------------------------------------------

    @property
    def scorer(self) -> Any:
        """The scorer; the embedded model's is created (not loaded) on first use."""
        with self._lock:
            if self._scorer is None:
                from textgraph.compression.llamacpp import LlamaCppScorer

                self._scorer = LlamaCppScorer()
            return self._scorer

    def _score(self, text: str, context: str = "") -> TokenScores:
        key = (text, context)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        scorer = self.scorer
        scores = check_scores(scorer.score(text, context=context), text, type(scorer).__name__)
        if self._cache_size:
            with self._lock:
                self._cache[key] = scores
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return scores

    def _units(self, text: str) -> list[Span]:
        tokenize = getattr(self.scorer, "tokenize", None)
        if callable(tokenize):
            return [tuple(s) for s in tokenize(text)]  # type: ignore[misc]
        return list(self._score(text).spans)

    def _count(self, text: str) -> int | None:
        tokenize = getattr(self.scorer, "tokenize", None)
        return len(tokenize(text)) if callable(tokenize) else None

    # --- text -----------------------------------------------------------------------------

    def compress(
        self,
        text: str,
        *,
        rate: float | None = None,
        target_tokens: int | None = None,
        question: str | None = None,
    ) -> CompressionResult:
        """Keep `rate` of the text's tokens (or `target_tokens` of them); see the class."""
        if not isinstance(text, str):
            raise ArgumentError(f"text must be a str, got {type(text).__name__}")
        _check_budget(rate, target_tokens)
        question = _check_question(question)
        units = self._units(text)
        n = len(units)
        if n == 0:
            return _unchanged(text, units, rate, target_tokens, question, "the text is empty")
        target = _target(n, rate, target_tokens)
        protected = protected_units(units, protected_spans(text, self._patterns))
        if target >= n:
            return _unchanged(
                text,
                units,
                rate,
                target_tokens,
                question,
                f"the budget of {target} tokens keeps all {n} tokens of the text",
                protected=int(protected.sum()),
            )
        keep = np.ones(n, dtype=bool)
        levels = {"sentences": 0, "tokens": 0}

        # (2) sentences: keep the best until they hold min(n, sentence_budget * target)
        groups = unit_sentences(text, units)
        coarse = min(n, math.ceil(target * self.sentence_budget))
        if len(groups) > 1 and coarse < n:
            ranks = self._sentence_ranks(text, units, groups, question)
            forced = [bool(protected[i:j].any()) for i, j in groups]
            order = sorted(range(len(groups)), key=lambda g: (not forced[g], -ranks[g], g))
            used = 0
            for g in order:
                i, j = groups[g]
                if forced[g] or used < coarse:
                    used += j - i
                else:
                    keep[i:j] = False
            levels["sentences"] = int(n - keep.sum())

        # (3) tokens: iterative, each segment scored after the compressed prefix
        rank = np.full(n, np.nan)
        if keep.sum() > target:
            before = int(keep.sum())
            self._token_level(text, units, keep, protected, target, question, rank)
            self._retokenize_fix(text, units, keep, protected, target, rank)
            levels["tokens"] = before - int(keep.sum())

        out = "".join(text[a:b] for (a, b), k in zip(units, keep, strict=True) if k)
        kept = int(keep.sum())
        counted = self._count(out)
        compressed = kept if counted is None else counted
        requested = _requested(n, rate, target_tokens)
        reason = None
        n_protected = int(protected.sum())
        if kept > target and n_protected > 0 and not (keep & ~protected).any():
            reason = (
                f"protected spans hold {n_protected} of the {n} tokens, more than the budget "
                f"of {target}: they were all kept, so the ratio is {compressed / n:.3f} "
                f"instead of {requested:.3f}"
            )
        return CompressionResult(
            text=out,
            original_tokens=n,
            compressed_tokens=compressed,
            ratio=compressed / n,
            kept_mask=tuple(bool(k) for k in keep),
            spans=tuple(units),
            requested_ratio=requested,
            target_tokens=target,
            kept_tokens=kept,
            protected_tokens=n_protected,
            levels=levels,
            reason=reason,
            question_aware=question is not None,
        )

    def _sentence_ranks(
        self,
        text: str,
        units: Sequence[Span],
        groups: Sequence[tuple[int, int]],
        question: str | None,
    ) -> list[float]:
        """Higher = keep first: mean surprise in context, or relevance to the question."""
        if question is not None and self.question_ranking == "after":
            ranks = []
            for i, j in groups:
                sentence = text[units[i][0] : units[j - 1][1]].strip()
                if not sentence:
                    ranks.append(-math.inf)
                    continue
                lp = self._score(question, sentence + "\n\n").logprobs
                ranks.append(float(lp.mean()) if lp.size else -math.inf)
            return ranks
        plain = align(units, *_pair(self._score(text)))
        if question is not None:  # contrastive: how much the question helps predict it
            cond = align(units, *_pair(self._score(text, _question_prefix(question))))
            values = cond - plain
        else:
            values = -plain
        return [float(values[i:j].mean()) for i, j in groups]

    def _token_level(
        self,
        text: str,
        units: Sequence[Span],
        keep: np.ndarray,
        protected: np.ndarray,
        target: int,
        question: str | None,
        rank: np.ndarray,
    ) -> None:
        """Spend exactly `target` units over the kept ones, segment by segment (in place)."""
        pieces = [text[a:b] for a, b in units]
        idx = np.flatnonzero(keep)
        seg_len = self.segment_tokens
        budget, left = target, len(idx)
        prefix: list[str] = []
        qprefix = _question_prefix(question) if question is not None else None
        cuts = list(range(0, len(idx), seg_len))
        if self.granularity == "word":  # segments end between words
            starts = _word_starts(text, units, idx)
            cuts = sorted({next((c for c in range(k, len(idx)) if starts[c]), 0) for k in cuts})
        cuts.append(len(idx))
        for s, e in itertools.pairwise(cuts):
            seg = idx[s:e]
            m = len(seg)
            last = e == len(idx)
            quota = budget if last else round(budget * m / left)
            quota = max(0, min(m, quota))
            seg_text = "".join(pieces[i] for i in seg)
            offsets = np.cumsum([0] + [len(pieces[i]) for i in seg])
            local = [(int(offsets[k]), int(offsets[k + 1])) for k in range(m)]
            context = self._prefix_context(prefix)
            plain = align(local, *_pair(self._score(seg_text, context)))
            surprise = -plain
            if qprefix is not None:
                cond = align(local, *_pair(self._score(seg_text, qprefix + context)))
                score = (cond - plain) + self.surprise_weight * surprise
            else:
                score = surprise
            if self.granularity == "word":
                chosen = _choose_words(
                    _word_starts(text, units, seg), protected[seg], score, surprise, quota, last
                )
                rank[seg] = _word_values(_word_starts(text, units, seg), score)
            else:
                chosen = _choose_units(protected[seg], score, surprise, quota)
                rank[seg] = score + 1e-9 * surprise  # ties: the more surprising first
            keep[seg] = chosen
            budget -= int(chosen.sum())
            left -= m
            prefix.extend(pieces[i] for i in seg[chosen])

    def _prefix_context(self, prefix: list[str]) -> str:
        """The compressed prefix, cut to its last units in steps (so a scorer that reuses
        the evaluated prefix keeps reusing it until the next step)."""
        limit = self.max_context_tokens
        if len(prefix) <= limit:
            return "".join(prefix)
        step = limit // 2
        start = -(-(len(prefix) - limit) // step) * step  # the first step that fits
        return "".join(prefix[start:])

    def _retokenize_fix(
        self,
        text: str,
        units: Sequence[Span],
        keep: np.ndarray,
        protected: np.ndarray,
        target: int,
        rank: np.ndarray,
        rounds: int = 8,
    ) -> None:
        """Make the output's own token count meet the target: dropping a token can merge or
        split its neighbours when the output is tokenized again. Each round drops the
        lowest-ranked kept units (or restores the best dropped ones) of the token level;
        after an overshoot the step is halved, so the count settles within one token."""
        tokenize = getattr(self.scorer, "tokenize", None)
        if not callable(tokenize):
            return
        scored = ~np.isnan(rank)
        last_sign = 0
        step_cap = None
        for _ in range(rounds):
            out = "".join(text[a:b] for (a, b), k in zip(units, keep, strict=True) if k)
            diff = len(tokenize(out)) - target
            if diff == 0:
                return
            sign = 1 if diff > 0 else -1
            if last_sign and sign != last_sign:
                step_cap = max(1, (step_cap or abs(diff)) // 2)
            last_sign = sign
            step = abs(diff) if step_cap is None else min(abs(diff), step_cap)
            if diff > 0:  # drop the lowest-ranked kept units the token level chose
                cand = np.flatnonzero(keep & scored & ~protected)
                order = np.argsort(rank[cand], kind="stable")
                flip = False
            else:  # restore the best units the token level dropped
                cand = np.flatnonzero(~keep & scored)
                order = np.argsort(-rank[cand], kind="stable")
                flip = True
            if not cand.size:
                return
            picked = cand[order[:step]]
            if self.granularity == "word":  # whole words
                words = _word_ids(text, units)
                picked = cand[np.isin(words[cand], words[picked])]
            keep[picked] = flip

    # --- demonstrations -------------------------------------------------------------------

    def compress_demos(
        self,
        items: Demos | Iterable[Demo | dict[str, Any]],
        *,
        rate: float | None = None,
        target_tokens: int | None = None,
        question: str | None = None,
    ) -> tuple[list[Demo], CompressionResult]:
        """Keep whole demonstrations within the budget: the most informative first
        (perplexity), or with a question the ones under which it is most likely
        (mean log p(question | demonstration)). At least one is kept; the kept ones stay in
        their order. Returns (kept demos, result); the result's text is the kept
        demonstrations as scored ("input\\nreply" each, blank lines between)."""
        demos = _as_demo_list(items)
        _check_budget(rate, target_tokens)
        question = _check_question(question)
        texts = [demo_text(d) for d in demos]
        joined = "\n\n".join(texts)
        if not demos:
            return [], _unchanged("", [], rate, target_tokens, question, "no demonstrations")
        unit_lists = [self._units(t) for t in texts]
        lengths = [len(u) for u in unit_lists]
        spans: list[Span] = []
        offset = 0
        for t, u in zip(texts, unit_lists, strict=True):
            spans.extend((a + offset, b + offset) for a, b in u)
            offset += len(t) + 2
        n = sum(lengths)
        if n == 0:
            return list(demos), _unchanged(
                joined, spans, rate, target_tokens, question, "the demonstrations are empty"
            )
        target = _target(n, rate, target_tokens)
        if question is not None:
            ranks = [
                float(self._score(question, t + "\n\n").logprobs.mean()) if t.strip() else -1e9
                for t in texts
            ]
        else:
            ranks = [
                float(-self._score(t).logprobs.mean()) if length else -1e9
                for t, length in zip(texts, lengths, strict=True)
            ]
        order = sorted(range(len(demos)), key=lambda i: (-ranks[i], i))
        chosen: set[int] = set()
        used = 0
        for i in order:
            if not chosen or used + lengths[i] <= target:
                chosen.add(i)
                used += lengths[i]
        kept_idx = tuple(sorted(chosen))
        mask = tuple(i in chosen for i, length in enumerate(lengths) for _ in range(length))
        out = "\n\n".join(texts[i] for i in kept_idx)
        reason = None
        if used > target:
            reason = (
                f"the most relevant demonstration alone holds {used} tokens, "
                f"more than the budget of {target}"
            )
        elif target >= n:
            reason = f"the budget of {target} tokens keeps all {n} tokens of the demonstrations"
        result = CompressionResult(
            text=out,
            original_tokens=n,
            compressed_tokens=used,
            ratio=used / n,
            kept_mask=mask,
            spans=tuple(spans),
            requested_ratio=_requested(n, rate, target_tokens),
            target_tokens=target,
            kept_tokens=used,
            protected_tokens=0,
            levels={"demonstrations": n - used},
            reason=reason,
            question_aware=question is not None,
            kept_items=kept_idx,
        )
        return [demos[i] for i in kept_idx], result

    def __repr__(self) -> str:
        scorer = "LlamaCppScorer (lazy)" if self._scorer is None else repr(self._scorer)
        return f"PerplexityCompressor(scorer={scorer}, protect={len(self._patterns)} patterns)"


# --- the convenience function ------------------------------------------------------------------


class _DefaultRate(float):
    """0.5, but recognisable: `compress(text, target_tokens=40)` then means the target."""

    def __repr__(self) -> str:
        return "0.5"


_DEFAULT_RATE = _DefaultRate(0.5)
_default: PerplexityCompressor | None = None
_default_lock = threading.Lock()


def default_compressor() -> PerplexityCompressor:
    """The process's compressor over the embedded model (one per process, thread-safe)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = PerplexityCompressor()
        return _default


def compress(
    text: str,
    rate: float | None = _DEFAULT_RATE,
    question: str | None = None,
    *,
    compressor: PerplexityCompressor | None = None,
    target_tokens: int | None = None,
) -> CompressionResult:
    """`compress(text, rate=0.5, question=None, *, compressor=None)`: keep `rate` of the
    tokens (or `target_tokens`, which replaces the default rate) with `compressor` (default:
    the embedded model's, loaded once per process)."""
    if target_tokens is not None and rate is _DEFAULT_RATE:
        rate = None
    if compressor is not None and not isinstance(compressor, PerplexityCompressor):
        raise ArgumentError(
            f"compressor must be a PerplexityCompressor, got {type(compressor).__name__}"
        )
    engine = compressor or default_compressor()
    return engine.compress(
        text,
        rate=None if rate is None else float(rate),
        target_tokens=target_tokens,
        question=question,
    )


# --- helpers -------------------------------------------------------------------------------------


def demo_text(demo: Demo) -> str:
    """A demonstration as the scorer reads it: its input, a line break, its reply."""
    return f"{demo.text_input()}\n{demo.reply()}"


def _as_demo_list(items: object) -> list[Demo]:
    if isinstance(items, Demos):
        return list(items.items)
    if isinstance(items, (str, bytes, dict)) or not isinstance(items, Iterable):
        raise ArgumentError(
            "compress_demos takes a list of tg.Demo (or dicts) or a tg.Demos, "
            f"got {type(items).__name__}"
        )
    return [as_demo(d, f"items[{i}]") for i, d in enumerate(items)]


def _choose_units(
    forced: np.ndarray, score: np.ndarray, surprise: np.ndarray, quota: int
) -> np.ndarray:
    """The forced units, then the best others (score, then surprise, then position) up to
    `quota` in all."""
    chosen = forced.copy()
    free = max(0, quota - int(forced.sum()))
    if free:
        order = np.lexsort((np.arange(len(score)), -surprise, -score))
        chosen[order[~forced[order]][:free]] = True
    return chosen


def _choose_words(
    starts: np.ndarray,
    protected: np.ndarray,
    score: np.ndarray,
    surprise: np.ndarray,
    quota: int,
    last: bool,
) -> np.ndarray:
    """Whole words: a word is ranked by its best unit and kept whole when it fits the
    quota; a word with a protected unit is kept whole. The last segment fills what is left
    of the budget with single units, so the total stays exact."""
    m = len(score)
    bounds = [*np.flatnonzero(starts).tolist(), m]
    chosen = np.zeros(m, dtype=bool)
    free = quota
    ranked = []
    for w in range(len(bounds) - 1):
        a, b = bounds[w], bounds[w + 1]
        if protected[a:b].any():
            chosen[a:b] = True
            free -= b - a
        else:
            ranked.append((-float(score[a:b].max()), -float(surprise[a:b].sum()), a, b))
    for _, _, a, b in sorted(ranked):
        if free <= 0:
            break
        if b - a <= free:
            chosen[a:b] = True
            free -= b - a
    if last and free > 0:
        chosen = _choose_units(chosen, score, surprise, int(chosen.sum()) + free)
    return chosen


def _word_starts(text: str, units: Sequence[Span], seg: np.ndarray) -> np.ndarray:
    """True where a unit of the segment starts a word: it does unless it follows the
    previous unit directly and both sides of the boundary are letters or digits."""
    starts = np.ones(len(seg), dtype=bool)
    for k in range(1, len(seg)):
        i = int(seg[k])
        a = units[i][0]
        if seg[k - 1] == i - 1 and a > 0 and text[a].isalnum() and text[a - 1].isalnum():
            starts[k] = False
    return starts


def _word_ids(text: str, units: Sequence[Span]) -> np.ndarray:
    """The word each unit belongs to (see _word_starts), over the whole text."""
    return np.cumsum(_word_starts(text, units, np.arange(len(units)))) - 1


def _word_values(starts: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Each unit gets its word's best score (so a correction drops or restores words)."""
    out = score.copy()
    bounds = [*np.flatnonzero(starts).tolist(), len(score)]
    for w in range(len(bounds) - 1):
        a, b = bounds[w], bounds[w + 1]
        out[a:b] = score[a:b].max() + 1e-9 * (b - a)
    return out


def _pair(scores: TokenScores) -> tuple[tuple[Span, ...], np.ndarray]:
    return scores.spans, scores.logprobs


def _question_prefix(question: str) -> str:
    return question.strip() + "\n\n"


def _check_real(name: str, value: object, *, minimum: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < minimum
    ):
        raise ArgumentError(f"{name} must be a finite number >= {minimum}, got {value!r}")


def _check_budget(rate: object, target_tokens: object) -> None:
    if (rate is None) == (target_tokens is None):
        raise ArgumentError(
            "give exactly one of rate= (the fraction of tokens to keep, e.g. 0.5 for 2x "
            "compression) and target_tokens= (how many tokens to keep)"
            + ("" if rate is None else f"; got rate={rate!r} and target_tokens={target_tokens!r}")
        )
    if rate is not None and (
        isinstance(rate, bool)
        or not isinstance(rate, (int, float))
        or not math.isfinite(rate)
        or not 0 < rate <= 1
    ):
        raise ArgumentError(
            f"rate is the fraction of tokens to keep: a number in (0, 1], got {rate!r} "
            "(0.5 keeps half; use target_tokens= for a token count)"
        )
    if target_tokens is not None and (
        isinstance(target_tokens, bool) or not isinstance(target_tokens, int) or target_tokens < 1
    ):
        raise ArgumentError(f"target_tokens must be an int >= 1, got {target_tokens!r}")


def _check_question(question: object) -> str | None:
    if question is None:
        return None
    if not isinstance(question, str):
        raise ArgumentError(f"question must be a str or None, got {type(question).__name__}")
    if not question.strip():
        raise ArgumentError("question is empty: pass None to rank by plain perplexity")
    return question


def _target(n: int, rate: float | None, target_tokens: int | None) -> int:
    if target_tokens is not None:
        return min(n, target_tokens)
    assert rate is not None
    return min(n, max(1, math.floor(rate * n + 0.5)))


def _requested(n: int, rate: float | None, target_tokens: int | None) -> float:
    if rate is not None:
        return float(rate)
    assert target_tokens is not None
    return min(1.0, target_tokens / n) if n else 1.0


def _unchanged(
    text: str,
    units: Sequence[Span],
    rate: float | None,
    target_tokens: int | None,
    question: str | None,
    reason: str,
    *,
    protected: int = 0,
) -> CompressionResult:
    n = len(units)
    return CompressionResult(
        text=text,
        original_tokens=n,
        compressed_tokens=n,
        ratio=1.0,
        kept_mask=(True,) * n,
        spans=tuple(units),
        requested_ratio=_requested(n, rate, target_tokens),
        target_tokens=_target(n, rate, target_tokens) if n else 0,
        kept_tokens=n,
        protected_tokens=protected,
        levels={},
        reason=reason,
        question_aware=question is not None,
    )
