"""Prompt compression with scripted log-probabilities: exact behaviour of every level.

The real model is in tests/test_compression_real.py (`-m real_model`). Here: units and
the scorer contract; the token level keeps the most surprising tokens, conditioned on the
compressed prefix; the sentence level drops the least informative sentences and leaves the
token level room; the budget controller meets the rate within 5% on hundreds of random
texts (and re-tokenization drift is corrected); protected spans survive; the question
changes what is kept; short texts; argument errors; demonstrations; the OpenAI-compatible
scorer against a local fake vLLM / echo server.
"""

from __future__ import annotations

import json
import math
import random
import re
import threading
import types
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

import textgraph as tg
from textgraph.compression import (
    CompressionResult,
    OpenAIPromptLogprobScorer,
    PerplexityCompressor,
    ScorerError,
    ScriptedScorer,
    TokenScores,
    align,
    char_spans,
    compress,
    word_spans,
)
from textgraph.compression.llamacpp import LlamaCppScorer
from textgraph.compression.protect import sentence_bounds, unit_sentences
from textgraph.errors import ArgumentError, AuthenticationError, MalformedResponse

VOCAB = (
    "the a of and to in is was for on with as by at from that this it an be are were "
    "river mountain castle engine protocol harvest quantum ledger violin glacier senate "
    "orbit canyon lantern archive falcon meadow reactor prism beacon tundra"
).split()


def random_text(rng: random.Random, words: int, *, sentences: bool = True) -> str:
    out = []
    for i in range(words):
        w = rng.choice(VOCAB)
        if sentences and i and rng.random() < 0.08:
            out[-1] += rng.choice([".", "!", "?"])
            w = w.capitalize()
        out.append(w)
    return " ".join(out) + "."


def rebuild(text: str, result: CompressionResult) -> str:
    return "".join(text[a:b] for (a, b), k in zip(result.spans, result.kept_mask, strict=True) if k)


def kept_words(result: CompressionResult) -> list[str]:
    return result.text.split()


# --- units and the scorer contract ----------------------------------------------------------


def test_word_and_char_spans_cover_the_text_exactly():
    for text in ["", "one", "  lead and trail  ", "a\n\nb\tc", "   "]:
        spans = word_spans(text)
        assert "".join(text[a:b] for a, b in spans) == text
        assert all(b > a for a, b in spans)
    assert word_spans("a b  c ") == [(0, 1), (1, 3), (3, 7)]
    assert char_spans("añ😀") == [(0, 1), (1, 2), (2, 3)]


def test_scripted_scorer_table_function_and_seeded_are_deterministic():
    table = ScriptedScorer(table={"cat": -7.0, "The": -0.5}, default=-2.0)
    s = table.score("The cat sat", context="x")
    assert s.spans == ((0, 3), (3, 7), (7, 11))
    assert list(s.logprobs) == [-0.5, -7.0, -2.0]
    assert table.calls == [("The cat sat", "x")]
    seen = []
    fn = ScriptedScorer(lambda tok, ctx: seen.append((tok, ctx)) or -1.0)
    fn.score("b c", context="a ")
    assert seen == [("b", "a "), ("c", "a b")]  # the context then the text before the token
    one, two = ScriptedScorer.seeded(3), ScriptedScorer.seeded(3)
    text = random_text(random.Random(1), 40)
    assert np.array_equal(one.score(text).logprobs, two.score(text).logprobs)
    other = ScriptedScorer.seeded(4).score(text).logprobs
    assert not np.array_equal(one.score(text).logprobs, other)


def test_a_scorer_that_breaks_the_contract_is_refused():
    class Gappy:
        def score(self, text, *, context=""):
            return TokenScores(((0, 1), (2, len(text))), np.array([-1.0, -1.0]))

    class Positive:
        def score(self, text, *, context=""):
            return TokenScores(((0, len(text)),), np.array([0.5]))

    with pytest.raises(ScorerError, match="must start at 1"):
        PerplexityCompressor(Gappy()).compress("ab cd ef", rate=0.5)
    with pytest.raises(ScorerError, match="above 0"):
        PerplexityCompressor(Positive()).compress("ab cd ef", rate=0.5)


def test_align_keeps_one_to_one_cuttings_and_shares_merged_tokens():
    lp = np.array([-1.0, -2.0, -3.0])
    assert list(align([(0, 1), (1, 3), (3, 4)], [(0, 1), (1, 3), (3, 4)], lp)) == [-1, -2, -3]
    # one scored token over two units: shared by characters; the total is kept
    out = align([(0, 1), (1, 4), (4, 6)], [(0, 4), (4, 6)], np.array([-4.0, -2.0]))
    assert out.tolist() == [-1.0, -3.0, -2.0]


def test_sentences_are_unit_ranges_and_line_breaks_open_the_next_one():
    text = 'One. "Two!" Three?\n\nFour and more. Dr'
    assert sentence_bounds(text) == [0, 4, 11, 18, 34]
    units = word_spans(text)
    groups = unit_sentences(text, units)
    assert [text[units[i][0] : units[j - 1][1]].strip() for i, j in groups] == [
        "One.",
        '"Two!"',
        "Three?",
        "Four and more.",
        "Dr",
    ]


# --- the token level ------------------------------------------------------------------------


def test_token_level_keeps_the_most_surprising_tokens():
    words = "wa wb wc wd we wf wg wh wi wj".split()
    surprise = [3, 9, 1, 7, 5, 8, 2, 6, 4, 0.5]
    scorer = ScriptedScorer(table={w: -s for w, s in zip(words, surprise, strict=True)})
    result = PerplexityCompressor(scorer).compress(" ".join(words), rate=0.5)
    assert kept_words(result) == ["wb", "wd", "we", "wf", "wh"]
    assert result.compressed_tokens == result.kept_tokens == 5
    assert result.ratio == 0.5 and result.reason is None
    assert result.levels == {"sentences": 0, "tokens": 5}


def test_iterative_token_level_is_conditioned_on_the_compressed_prefix():
    # "gamma" is predictable only after "beta". The first segment drops "beta" (it is
    # predictable itself), so in the second segment, scored after the compressed prefix as
    # the target model will read it, "gamma" is surprising and kept; scored after the
    # original text it would have been dropped.
    table = {"alpha": -9.0, "beta": -0.2, "cone": -5.0, "ctwo": -4.0, "dee": -0.3}
    table |= {"done": -3.5, "dtwo": -2.5}

    def logprob(tok, ctx):
        if tok == "gamma":
            return -0.05 if "beta" in ctx.split() else -8.0
        return table.get(tok, -3.0)

    scorer = ScriptedScorer(logprob)
    text = "alpha beta cone ctwo zzone gamma dee done dtwo zztwo"
    comp = PerplexityCompressor(scorer, segment_tokens=5)
    result = comp.compress(text, rate=0.6)
    assert kept_words(result) == ["alpha", "cone", "ctwo", "gamma", "done", "zztwo"]
    # the second segment was scored after exactly the kept text of the first
    contexts = [ctx for seg, ctx in scorer.calls if seg.startswith(" gamma")]
    assert contexts == ["alpha cone ctwo"]
    # after the original text, gamma is the most predictable token of its segment
    plain = ScriptedScorer(logprob).score(text).logprobs
    assert plain[5] == max(plain[5:])


def test_long_compressed_prefixes_are_cut_in_steps():
    comp = PerplexityCompressor(ScriptedScorer(), max_context_tokens=4)
    assert comp._prefix_context(list("abcd")) == "abcd"
    assert comp._prefix_context(list("abcde")) == "cde"
    assert comp._prefix_context(list("abcdef")) == "cdef"
    assert comp._prefix_context(list("abcdefg")) == "efg"


# --- the sentence level ---------------------------------------------------------------------


def sentence_text():
    dull = "the the the the the the the the the."  # 9 predictable tokens
    rich = ["Quantum ledger violin glacier senate orbit canyon lantern archive."] * 3
    return " ".join([rich[0], dull, rich[1], dull, rich[2]])


def test_sentence_level_drops_the_least_informative_sentences_first():
    scorer = ScriptedScorer(lambda tok, ctx: -0.05 if tok.strip(".").lower() == "the" else -6.0)
    text = sentence_text()
    result = PerplexityCompressor(scorer).compress(text, rate=0.4)
    assert "the the" not in result.text
    assert result.levels["sentences"] == 18  # both dull sentences, whole
    assert result.levels["tokens"] == 9  # 1.4x the budget was left for the token level
    assert result.kept_tokens == round(0.4 * result.original_tokens)
    # sentence_budget=1.0: the sentence level spends the whole budget itself
    tight = PerplexityCompressor(scorer, sentence_budget=1.0).compress(text, rate=0.6)
    assert tight.levels["sentences"] == 18 and tight.levels["tokens"] == 0


def test_sentences_holding_protected_spans_are_not_dropped_whole():
    scorer = ScriptedScorer(lambda tok, ctx: -0.05 if tok.strip(".").lower() == "the" else -6.0)
    text = sentence_text().replace("the the the.", "the the 42.", 1)
    result = PerplexityCompressor(scorer).compress(text, rate=0.5)
    assert "42" in result.text


# --- the budget controller ------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.33, 0.5, 0.8])
def test_budget_controller_meets_the_rate_within_5_percent(rate):
    rng = random.Random(int(rate * 100))
    comp = PerplexityCompressor(ScriptedScorer.seeded(7), segment_tokens=37)
    errors = []
    for i in range(120):
        text = random_text(rng, rng.randint(50, 400))
        question = "where is the castle?" if i % 3 == 0 else None
        result = comp.compress(text, rate=rate, question=question)
        assert result.original_tokens >= 50
        errors.append(abs(result.ratio - rate) / rate)
        assert rebuild(text, result) == result.text
        assert result.compressed_tokens == len(word_spans(result.text))
    assert max(errors) <= 0.05, max(errors)


class PieceScorer(ScriptedScorer):
    """Sub-word units like a BPE model's: up to 3 characters, a space joins the piece after
    it (" mou", "nta", "in")."""

    def tokenize(self, text):
        spans = [m.span() for m in re.finditer(r"\s*\S{1,3}", text)]
        if spans and spans[-1][1] < len(text):
            spans[-1] = (spans[-1][0], len(text))
        return spans or word_spans(text)

    def score(self, text, *, context=""):
        self.calls.append((text, context))
        spans = self.tokenize(text)
        lp = [-(zlib.crc32(text[a:b].encode()) % 1000) / 125.0 - 0.01 for a, b in spans]
        return TokenScores(tuple(spans), np.array(lp))


@pytest.mark.parametrize("rate", [0.33, 0.5, 0.8])
def test_word_granularity_meets_the_rate_and_keeps_words_whole(rate):
    rng = random.Random(int(rate * 1000))
    comp = PerplexityCompressor(PieceScorer(), granularity="word", segment_tokens=40)
    for i in range(60):
        text = random_text(rng, rng.randint(30, 200))
        question = "which castle?" if i % 2 else None
        result = comp.compress(text, rate=rate, question=question)
        assert result.original_tokens >= 50
        assert abs(result.ratio - rate) <= 0.05 * rate, (result.ratio, rate)
        assert rebuild(text, result) == result.text
        # every kept word is a whole word of the text, except what the last segment's
        # fill took from the end
        original = set(re.findall(r"\w+", text))
        words = re.findall(r"\w+", result.text)
        broken = [w for w in words if w not in original]
        assert len(broken) <= 3, broken


def test_word_granularity_keeps_the_surprising_words_whole():
    # the first piece of a word carries its surprise; in token mode the rest of the word,
    # predictable, would be dropped
    class FirstPiece(PieceScorer):
        def score(self, text, *, context=""):
            spans = self.tokenize(text)
            lp = []
            for a, _ in spans:
                first = a == 0 or not text[a - 1].isalnum() or not text[a].isalnum()
                word = re.match(r"\s*(\w*)", text[a:]).group(1)
                if not first:
                    lp.append(-0.01)  # the rest of a word is predictable
                else:
                    lp.append(-8.0 if word in ("mountain", "glacier") else -0.5)
            return TokenScores(tuple(spans), np.array(lp))

    text = "the mountain and the glacier were seen by the people of the valley today"
    tokens = PerplexityCompressor(FirstPiece()).compress(text, target_tokens=6)
    words = PerplexityCompressor(FirstPiece(), granularity="word").compress(text, target_tokens=6)
    assert words.text == " mountain glacier"
    assert "mountain" not in tokens.text  # only " mou" and " gla" carried the surprise
    assert words.kept_tokens == tokens.kept_tokens == 6


def test_target_tokens_is_met_exactly():
    comp = PerplexityCompressor(ScriptedScorer.seeded(2))
    text = random_text(random.Random(5), 200)
    for target in (1, 17, 60, 150):
        result = comp.compress(text, target_tokens=target)
        assert result.kept_tokens == target == result.target_tokens
        assert result.requested_ratio == target / result.original_tokens


def test_retokenization_drift_is_corrected():
    """Dropping a hyphen joins two words into one token: the controller counts the tokens
    of its output again and restores units until the count meets the target."""

    class HyphenScorer(ScriptedScorer):
        def tokenize(self, text):
            return [m.span() for m in re.finditer(r"\s*[^\s-]+|-", text)] or word_spans(text)

        def score(self, text, *, context=""):
            spans = self.tokenize(text)
            lp = [-0.01 if text[a:b] == "-" else -3.0 - (a % 7) for a, b in spans]
            return TokenScores(tuple(spans), np.array(lp))

    text = " ".join(f"well-known{c} long-term{c}" for c in "abcdefghijklmnopqrstuvwxyz")
    comp = PerplexityCompressor(HyphenScorer())
    result = comp.compress(text, rate=0.5)
    assert result.compressed_tokens == len(comp.scorer.tokenize(result.text))
    assert abs(result.compressed_tokens - result.target_tokens) <= 1
    assert result.kept_tokens > result.compressed_tokens  # merged words were made up for


# --- protected spans ------------------------------------------------------------------------

PROTECTED_TEXT = (
    "Please answer the {question} using the context below in at most 42 words, or 3.5% "
    "of <context>the full document</context>, then write <NEW_VALUE_AB12CD34> after that. "
    "Here is some code:\n```python\ndef f(x):\n    return x + 1\n```\n"
    "and the ticket id is TCK-ALPHA-BRAVO which must stay, plus more filler words here "
    "that are not important at all for anything whatsoever in this prompt."
)


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.6])
def test_protected_spans_are_never_dropped(rate):
    scorer = ScriptedScorer.seeded(11)
    comp = PerplexityCompressor(scorer, protect=[r"TCK-[A-Z-]+", re.compile(r"must stay")])
    result = comp.compress(PROTECTED_TEXT, rate=rate)
    for span in [
        "{question}",
        "42",
        "3.5%",
        "<context>",
        "</context>",
        "<NEW_VALUE_AB12CD34>",
        "```python\ndef f(x):\n    return x + 1\n```",
        "TCK-ALPHA-BRAVO",
        "must stay",
    ]:
        assert span in result.text, (span, result.text)
    assert rebuild(PROTECTED_TEXT, result) == result.text
    # without the defaults and the user's regexes, the same spans can go
    bare = PerplexityCompressor(scorer, protect_defaults=False).compress(PROTECTED_TEXT, rate=0.1)
    assert "TCK-ALPHA-BRAVO" not in bare.text or "{question}" not in bare.text


def test_protected_spans_over_budget_are_kept_and_the_reason_says_so():
    text = "1 2 3 4 5 6 7 8 9 10 and then some words"
    result = PerplexityCompressor(ScriptedScorer.seeded(1)).compress(text, rate=0.3)
    assert result.text.split() == [str(i) for i in range(1, 11)]
    assert result.ratio > 0.3 and result.protected_tokens == 10
    assert "protected spans hold 10 of the 14 tokens" in result.reason


def test_custom_protect_arguments_are_checked():
    with pytest.raises(ArgumentError, match="not a valid regex"):
        PerplexityCompressor(ScriptedScorer(), protect=["("])
    with pytest.raises(ArgumentError, match=r"protect\[0\] must be a regex"):
        PerplexityCompressor(ScriptedScorer(), protect=[3])
    # one pattern alone is accepted
    result = PerplexityCompressor(ScriptedScorer.seeded(0), protect="zebra").compress(
        "a b c d e zebra f g h i j", rate=0.1
    )
    assert "zebra" in result.text


# --- questions ------------------------------------------------------------------------------


def test_question_keeps_the_tokens_it_makes_likely():
    # "Paris" is predictable on its own (plain perplexity drops it) but the question makes
    # it more likely still: the contrastive score keeps it.
    def logprob(tok, ctx):
        if tok.strip(".") == "Paris":
            return -0.05 if "Louvre" in ctx else -0.5
        return -1.0 - (len(tok) % 5)

    scorer = ScriptedScorer(logprob)
    text = "The famous old capital city of the country is Paris which has many museums today"
    comp = PerplexityCompressor(scorer)
    assert "Paris" not in comp.compress(text, rate=0.3).text
    result = comp.compress(text, rate=0.3, question="Which city hosts the Louvre?")
    assert "Paris" in result.text and result.question_aware
    assert abs(result.ratio - 0.3) <= 0.05


def test_question_ranks_sentences_by_how_likely_they_make_it():
    # log p(question token | sentence): question words found in the sentence are likely.
    def logprob(tok, ctx):
        return -0.2 if tok.lower().strip("?.") in ctx.lower() else -4.0

    scorer = ScriptedScorer(logprob)
    sentences = [
        "Bananas grow in warm places.",
        "Marie Curie discovered polonium in Paris.",
        "Trains are fast.",
        "Clouds hold water.",
    ]
    text = " ".join(sentences)
    question = "Who discovered polonium?"
    for ranking in ("after", "contrastive"):
        comp = PerplexityCompressor(scorer, sentence_budget=1.0, question_ranking=ranking)
        result = comp.compress(text, target_tokens=6, question=question)
        assert result.text == " Marie Curie discovered polonium in Paris.", ranking
        assert result.levels == {"sentences": 11, "tokens": 0}
    plain = PerplexityCompressor(scorer, sentence_budget=1.0).compress(text, target_tokens=6)
    assert "polonium" not in plain.text


# --- short texts ----------------------------------------------------------------------------


def test_short_texts_are_compressed_or_say_why_not():
    comp = PerplexityCompressor(ScriptedScorer.seeded(3))
    short = comp.compress("The quick brown fox jumps over the lazy dog today", rate=0.5)
    assert short.original_tokens == 10 and short.kept_tokens == 5 and short.reason is None
    one = comp.compress("Hello", rate=0.5)
    assert one.text == "Hello" and "keeps all 1 tokens" in one.reason
    empty = comp.compress("", rate=0.5)
    assert empty.text == "" and empty.reason == "the text is empty" and empty.ratio == 1.0
    whole = comp.compress("a b c", rate=1.0)
    assert whole.text == "a b c" and whole.reason


# --- arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "exactly one of rate"),
        ({"rate": 0.5, "target_tokens": 3}, "exactly one of rate"),
        ({"rate": 0}, "in \\(0, 1\\]"),
        ({"rate": 1.5}, "in \\(0, 1\\]"),
        ({"rate": float("nan")}, "in \\(0, 1\\]"),
        ({"rate": True}, "in \\(0, 1\\]"),
        ({"rate": "0.5"}, "in \\(0, 1\\]"),
        ({"target_tokens": 0}, "int >= 1"),
        ({"target_tokens": 2.5}, "int >= 1"),
        ({"rate": 0.5, "question": "  "}, "question is empty"),
        ({"rate": 0.5, "question": 3}, "question must be a str"),
    ],
)
def test_argument_errors_are_typed_and_say_what_to_pass(kwargs, match):
    comp = PerplexityCompressor(ScriptedScorer())
    with pytest.raises(ArgumentError, match=match):
        comp.compress("a b c d", **kwargs)
    with pytest.raises(ArgumentError, match=match):
        comp.compress_demos([tg.Demo("a", "b")], **kwargs)


def test_constructor_and_input_errors():
    with pytest.raises(ArgumentError, match="scorer must have score"):
        PerplexityCompressor(object())
    with pytest.raises(ArgumentError, match="text must be a str"):
        PerplexityCompressor(ScriptedScorer()).compress(b"bytes", rate=0.5)
    with pytest.raises(ArgumentError, match="sentence_budget"):
        PerplexityCompressor(ScriptedScorer(), sentence_budget=0.5)
    with pytest.raises(ArgumentError, match="granularity"):
        PerplexityCompressor(ScriptedScorer(), granularity="sentence")
    with pytest.raises(ArgumentError, match="question_ranking"):
        PerplexityCompressor(ScriptedScorer(), question_ranking="before")
    with pytest.raises(ArgumentError, match=r"list of tg\.Demo"):
        PerplexityCompressor(ScriptedScorer()).compress_demos("a demo", rate=0.5)
    with pytest.raises(ArgumentError, match="n_ctx"):
        LlamaCppScorer(n_ctx=4)
    with pytest.raises(ArgumentError, match="ScriptedScorer a logprob function or a table"):
        ScriptedScorer(lambda t, c: -1.0, table={})


# --- demonstrations -------------------------------------------------------------------------


def demos():
    return [
        tg.Demo("What is 2+2?", "4"),
        tg.Demo("Name the capital of France and describe its river", "Paris, on the Seine"),
        tg.Demo("the the the", "the the"),
        tg.Demo({"a": "Translate cat to German", "b": "noun"}, "Katze", rationale="dictionary"),
    ]


def test_demonstrations_are_kept_whole_by_perplexity_within_the_budget():
    scorer = ScriptedScorer(lambda tok, ctx: -0.1 if tok == "the" else -5.0)
    comp = PerplexityCompressor(scorer)
    from textgraph.compression import demo_text

    sizes = [len(word_spans(demo_text(d))) for d in demos()]
    # room for all but the dull demonstration: it is the one left out
    kept, result = comp.compress_demos(demos(), target_tokens=sum(sizes) - sizes[2])
    assert kept == [d for i, d in enumerate(demos()) if i != 2]
    # the dull one would fit where the best ones do not: the budget is filled in rank order
    kept, result = comp.compress_demos(demos(), target_tokens=sizes[0] + sizes[3] + sizes[2])
    assert result.kept_items == (0, 2, 3)
    assert result.kept_tokens <= result.target_tokens
    assert result.levels["demonstrations"] == result.original_tokens - result.kept_tokens
    assert list(result.kept_items) == sorted(result.kept_items)  # original order
    assert kept == [demos()[i] for i in result.kept_items]
    assert len(result.kept_mask) == result.original_tokens
    # a tg.Demos variable works too, and at least one demonstration is always kept
    variable = tg.Demos(demos(), role_description="few-shot examples")
    kept_one, tiny = comp.compress_demos(variable, target_tokens=1)
    assert len(kept_one) == 1 and "more than the budget" in tiny.reason


def test_question_selects_the_demonstrations_it_is_likely_under():
    def logprob(tok, ctx):
        return -0.1 if tok.lower().strip("?") in ctx.lower() else -6.0

    comp = PerplexityCompressor(ScriptedScorer(logprob))
    question = "What is the river of Paris?"
    kept, result = comp.compress_demos(demos(), target_tokens=12, question=question)
    assert kept[0].output == "Paris, on the Seine" and result.question_aware


def test_no_demonstrations_is_a_result_not_an_error():
    kept, result = PerplexityCompressor(ScriptedScorer()).compress_demos([], rate=0.5)
    assert kept == [] and result.reason == "no demonstrations"


# --- the convenience function, caching, threads ----------------------------------------------


def test_compress_function_uses_the_given_compressor_and_target_tokens():
    comp = PerplexityCompressor(ScriptedScorer.seeded(0))
    text = random_text(random.Random(2), 80)
    assert compress(text, compressor=comp).kept_tokens == round(0.5 * len(word_spans(text)))
    assert compress(text, compressor=comp, target_tokens=9).kept_tokens == 9
    assert compress(text, 0.25, compressor=comp).requested_ratio == 0.25
    with pytest.raises(ArgumentError, match="exactly one"):
        compress(text, 0.5, compressor=comp, target_tokens=9)
    with pytest.raises(ArgumentError, match="PerplexityCompressor"):
        compress(text, compressor=ScriptedScorer())


def test_scores_are_cached_across_rates():
    scorer = ScriptedScorer.seeded(0)
    comp = PerplexityCompressor(scorer)
    text = random_text(random.Random(9), 300)
    comp.compress(text, rate=0.3)
    first = len(scorer.calls)
    comp.compress(text, rate=0.3)
    assert len(scorer.calls) == first  # everything came from the cache


def test_concurrent_compressions_match_serial_ones():
    comp = PerplexityCompressor(ScriptedScorer.seeded(4), cache_size=8)
    rng = random.Random(3)
    texts = [random_text(rng, rng.randint(60, 200)) for _ in range(16)]
    serial = [comp.compress(t, rate=0.5).text for t in texts]
    out: dict[int, str] = {}

    def work(i):
        out[i] = comp.compress(texts[i], rate=0.5).text

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [out[i] for i in range(len(texts))] == serial


# --- the llama.cpp scorer's token-to-character mapping (a fake tokenizer, no model) ----------


class FakeLlama:
    """Byte-level tokens: ASCII words with their leading space, and every non-ASCII
    character split into one token per UTF-8 byte pair (so boundaries fall inside it)."""

    def __init__(self, leading_space=False):
        self.vocab: dict[bytes, int] = {}
        self.leading_space = leading_space

    def tokenize(self, data, add_bos=False, special=False):
        pieces = re.findall(rb" ?[A-Za-z]+|[\x00-\x7f]|[\x80-\xff]{1,2}", data)
        if self.leading_space and pieces:
            pieces[0] = b" " + pieces[0]
        return [self.vocab.setdefault(p, len(self.vocab) + 10) for p in pieces]

    def detokenize(self, ids):
        inverse = {v: k for k, v in self.vocab.items()}
        return b"".join(inverse[i] for i in ids)


@pytest.mark.parametrize("leading_space", [False, True])
def test_llamacpp_units_merge_tokens_that_split_a_character(leading_space):
    scorer = LlamaCppScorer()
    llama = FakeLlama(leading_space)
    model = types.SimpleNamespace(slots=[types.SimpleNamespace(llama=llama)], pieces={})
    text = "Hi 😀 and 日本 ok"
    ids = scorer._token_ids(model, text)
    spans, unit_of = scorer._units(model, text, ids)
    assert "".join(text[a:b] for a, b in spans) == text
    # 😀 is 4 bytes in 2 tokens; 日本 is 6 bytes in 3 tokens of 2: one unit
    assert [text[a:b] for a, b in spans] == ["Hi", " ", "😀", " and", " ", "日本", " ok"]
    assert len(unit_of) == len(ids) == len(spans) + 3
    assert unit_of == sorted(unit_of)


def test_llamacpp_units_refuse_tokens_that_do_not_spell_the_text():
    class Lossy(FakeLlama):
        def detokenize(self, ids):
            return super().detokenize(ids).upper()

    scorer = LlamaCppScorer()
    model = types.SimpleNamespace(slots=[types.SimpleNamespace(llama=Lossy())], pieces={})
    with pytest.raises(tg.ConfigurationError, match="byte for byte"):
        scorer._units(model, "abc", scorer._token_ids(model, "abc"))


# --- the OpenAI-compatible scorer against a local fake server --------------------------------


def fake_logprob(token: str, before: str) -> float:
    """The fake server's model: -(length of the token) - 0.1 * (words before it)."""
    return -float(len(token.strip())) - 0.1 * len(before.split())


class FakeCompletions(BaseHTTPRequestHandler):
    """/v1/completions answering like vLLM (prompt_logprobs) or with echo logprobs."""

    def log_message(self, *args):
        pass

    def do_POST(self):
        server = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server.requests.append((self.path, body, dict(self.headers)))
        if server.faults:
            status = server.faults.pop(0)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"error": "bad key sk-secret-123456789 given"}')
            return
        prompt = body["prompt"]
        tokens = re.findall(r"\s*\S+", prompt)
        if server.bos:
            tokens = ["<s>", *tokens]
        choice = {"index": 0, "text": " x", "finish_reason": "length"}
        if "prompt_logprobs" in body:
            entries, before = [], ""
            for k, tok in enumerate(tokens):
                shown = "" if tok == "<s>" else tok
                if k == 0:
                    entries.append(None)
                else:
                    entries.append(
                        {
                            str(100 + k): {
                                "logprob": fake_logprob(shown, before),
                                "rank": 1,
                                "decoded_token": shown,
                            }
                        }
                    )
                before += shown
            choice["prompt_logprobs"] = entries
            choice["logprobs"] = None
        elif body.get("echo"):
            offsets, values, shown_tokens, before = [], [], [], ""
            for k, tok in enumerate(tokens):
                offsets.append(len(before))
                values.append(None if k == 0 else fake_logprob(tok, before))
                shown_tokens.append(tok)
                before += tok
            shown_tokens.append(" x")
            values.append(-1.0)
            offsets.append(len(prompt))
            choice["logprobs"] = {
                "tokens": shown_tokens,
                "token_logprobs": values,
                "text_offset": offsets,
                "top_logprobs": None,
            }
            choice["text"] = prompt + " x"
        payload = {"id": "cmpl-1", "object": "text_completion", "choices": [choice]}
        raw = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture
def fake_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeCompletions)
    server.requests, server.faults, server.bos = [], [], False
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        assert not thread.is_alive()


def url(server):
    return f"http://127.0.0.1:{server.server_address[1]}/v1"


@pytest.mark.parametrize(
    "mode, bos", [("prompt_logprobs", False), ("prompt_logprobs", True), ("echo", False)]
)
def test_openai_scorer_reads_prompt_logprobs(fake_server, mode, bos):
    fake_server.bos = bos
    scorer = OpenAIPromptLogprobScorer(url(fake_server), "m", api_key="k-1", mode=mode)
    try:
        text = " the river bank floods often"
        scores = scorer.score(text, context="Question: why?\n\n")
    finally:
        scorer.close()
    assert [text[a:b] for a, b in scores.spans] == [" the", " river", " bank", " floods", " often"]
    prefix = "Question: why?\n\n"
    want = []
    for a, b in scores.spans:
        want.append(fake_logprob(text[a:b], prefix + text[:a]))
    assert np.allclose(scores.logprobs, want)
    path, body, headers = fake_server.requests[0]
    assert path == "/v1/completions" and body["prompt"] == prefix + text
    assert body["max_tokens"] == 1 and body["model"] == "m"
    assert headers["Authorization"] == "Bearer k-1"
    assert (body.get("prompt_logprobs") == 0) == (mode == "prompt_logprobs")
    assert body.get("echo", False) == (mode == "echo")


def test_openai_scorer_first_token_without_logprob_gets_the_mean(fake_server):
    scorer = OpenAIPromptLogprobScorer(url(fake_server), "m", api_key="k")
    try:
        scores = scorer.score("alpha be gamma")
    finally:
        scorer.close()
    assert scores.spans == ((0, 5), (5, 8), (8, 14))
    rest = [fake_logprob(" be", "alpha"), fake_logprob(" gamma", "alpha be")]
    assert np.allclose(scores.logprobs, [np.mean(rest), *rest])


def test_openai_scorer_drives_the_compressor_end_to_end(fake_server):
    scorer = OpenAIPromptLogprobScorer(url(fake_server), "m", api_key="k")
    try:
        text = random_text(random.Random(4), 120)
        result = PerplexityCompressor(scorer).compress(text, rate=0.5)
    finally:
        scorer.close()
    assert abs(result.ratio - 0.5) <= 0.025
    assert rebuild(text, result) == result.text
    assert len(fake_server.requests) >= 2  # the whole text, then the segments in context


def test_openai_scorer_retries_server_errors_and_redacts_keys(fake_server):
    key = "sk-secret-123456789"
    scorer = OpenAIPromptLogprobScorer(url(fake_server), "m", api_key=key, max_retries=1)
    try:
        fake_server.faults = [503]
        assert len(scorer.score("a b c")) == 3  # retried once
        fake_server.faults = [401]
        with pytest.raises(AuthenticationError) as info:
            scorer.score("a b c")
        assert key not in str(info.value) and "401" in str(info.value)
    finally:
        scorer.close()


def test_openai_scorer_refuses_replies_without_prompt_logprobs():
    import httpx

    def handler(request):
        return httpx.Response(200, json={"choices": [{"text": "x", "logprobs": None}]})

    scorer = OpenAIPromptLogprobScorer(
        "http://127.0.0.1:9/v1", "m", api_key="k", transport=httpx.MockTransport(handler)
    )
    with pytest.raises(MalformedResponse, match="prompt_logprobs"):
        scorer.score("a b")
    with pytest.raises(ArgumentError, match="mode"):
        OpenAIPromptLogprobScorer("http://x/v1", "m", mode="n_probs")


def test_openai_scorer_lays_out_partial_characters_and_unknown_first_tokens():
    from textgraph.compression.remote import _lay_out, _text_units

    prompt = "Hi 😀 there"
    tokens = [(None, None), (" ", -1.0), ("\ufffd", -2.0), ("\ufffd", -3.0), (" there", -4.0)]
    spans, values = _lay_out(tokens, prompt)
    assert [prompt[a:b] for a, b in spans] == ["Hi", " ", "😀", " there"]
    assert values == [None, -1.0, -5.0, -4.0]
    # a special token spelled out before the text waits like an unknown one
    assert _lay_out([("<|endoftext|>", None), ("Hi", -1.0), (" there", -2.0)], "Hi there") == (
        [(0, 2), (2, 8)],
        [-1.0, -2.0],
    )
    with pytest.raises(MalformedResponse, match="do not spell the prompt"):
        _lay_out([("Hi", -1.0), (" nowhere", -2.0)], "Hi there")
    units = _text_units(spans, values, 3, len(prompt))  # the text after "Hi "
    assert [prompt[3:][a:b] for a, b in units.spans] == ["😀", " there"]
    assert math.isclose(units.logprobs[0], -5.0)
