"""Prompt compression with a small causal LM (LLMLingua / LongLLMLingua style).

    from textgraph.compression import PerplexityCompressor, compress

    result = compress(long_prompt, rate=0.5)                      # the embedded SmolLM2
    result = compress(passages, rate=0.33, question="Who ...?")   # question-aware
    demos, result = PerplexityCompressor().compress_demos(demos, rate=0.5)

Scorers give per-token log-probabilities: `LlamaCppScorer` (in process, vectorized over
llama.cpp's logits), `OpenAIPromptLogprobScorer` (vLLM's prompt_logprobs or echo on an
OpenAI-compatible server), `ScriptedScorer` (deterministic, for tests). See
`compressor.py` for the levels, the budget controller and question-aware ranking.
"""

from textgraph.compression.compressor import (
    CompressionResult,
    PerplexityCompressor,
    compress,
    default_compressor,
    demo_text,
)
from textgraph.compression.llamacpp import LlamaCppScorer, clear_model_cache
from textgraph.compression.protect import DEFAULT_PATTERNS
from textgraph.compression.remote import OpenAIPromptLogprobScorer
from textgraph.compression.scorers import (
    Scorer,
    ScorerError,
    ScriptedScorer,
    TokenScores,
    align,
    char_spans,
    word_spans,
)

__all__ = [
    "DEFAULT_PATTERNS",
    "CompressionResult",
    "LlamaCppScorer",
    "OpenAIPromptLogprobScorer",
    "PerplexityCompressor",
    "Scorer",
    "ScorerError",
    "ScriptedScorer",
    "TokenScores",
    "align",
    "char_spans",
    "clear_model_cache",
    "compress",
    "default_compressor",
    "demo_text",
    "word_spans",
]
