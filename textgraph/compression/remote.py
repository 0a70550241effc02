"""Prompt log-probabilities from an OpenAI-compatible server.

`OpenAIPromptLogprobScorer(base_url, model, *, api_key=None, mode="prompt_logprobs")` posts
the context followed by the text to `{base_url}/completions` with `max_tokens=1`,
`temperature=0`, and reads the log-probability of every prompt token:

- mode "prompt_logprobs" (vLLM's extension): `"prompt_logprobs": 0`; the reply's
  `choices[0].prompt_logprobs` is a list with one entry per prompt token: `null` for the
  first (nothing predicts it), then `{token_id: {"logprob", "rank", "decoded_token"}}`
  (with 0 requested, just the prompt token; when there are more, the prompt token is the one
  named by `prompt_token_ids` if the reply has them, else the one whose text continues the
  prompt).
- mode "echo" (the legacy OpenAI completions shape, which vLLM and llama-cpp-python's
  server also answer): `"echo": true, "logprobs": 0`; `choices[0].logprobs` has `tokens`,
  `token_logprobs` (`null` first) and `text_offset`; tokens at or past the prompt's end are
  the generated one and are ignored.

llama.cpp's own server (llama-server) does not return prompt log-probabilities: its
`/completion` `n_probs` and `/v1/completions` `logprobs` cover generated tokens only, and
`echo` is not implemented (ggml-org/llama.cpp#8942, PR #15189 open, #17935 closed
unmerged). Run vLLM or `python -m llama_cpp.server` (echo) instead, or the in-process
`LlamaCppScorer`.

Mapping tokens to characters. The server tokenizes context + text together; token strings
are laid along the prompt left to right. Tokens that carry a partial UTF-8 character (shown
with U+FFFD) or whose string does not continue the prompt are merged with the next token
that does, the characters between going to the merged unit (its log-probability is the sum).
The unknown first token takes whatever precedes the next known one. A token that straddles
the context and the text counts for the text. A text token with no log-probability (the
prompt's first, when there is no context) gets the mean of the others: no evidence either way.

The key comes from `api_key` or the `OPENAI_API_KEY` environment variable and is redacted
from every error message.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import weakref
from typing import Any

import httpx
import numpy as np

from textgraph.compression.scorers import Span, TokenScores
from textgraph.engines.redact import redact
from textgraph.errors import (
    ArgumentError,
    AuthenticationError,
    EngineTimeout,
    MalformedResponse,
    ProviderError,
    RateLimitError,
)

MODES = ("prompt_logprobs", "echo")
_REPLACEMENT = "\ufffd"
_GAP = 16  # characters a token may skip to find where its string continues the prompt


class OpenAIPromptLogprobScorer:
    """See the module docstring. `transport` (an httpx transport) is for tests."""

    key_env = "OPENAI_API_KEY"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        mode: str = "prompt_logprobs",
        timeout: float = 60.0,
        max_retries: int = 2,
        headers: dict[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ArgumentError(f"base_url must be an http(s) URL, got {base_url!r}")
        if not isinstance(model, str) or not model:
            raise ArgumentError("model must be a non-empty str (the server's model name)")
        if mode not in MODES:
            raise ArgumentError(f"mode must be one of {MODES}, got {mode!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ArgumentError(f"max_retries must be an int >= 0, got {max_retries!r}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.mode = mode
        self.max_retries = max_retries
        self._api_key = api_key if api_key is not None else os.environ.get(self.key_env)
        sent = {"Content-Type": "application/json", **(headers or {})}
        if self._api_key:
            sent["Authorization"] = f"Bearer {self._api_key}"
        self._client = httpx.Client(timeout=timeout, headers=sent, transport=transport)
        weakref.finalize(self, _close_client, self._client)

    def close(self) -> None:
        self._client.close()

    # --- the request -----------------------------------------------------------------------

    def _body(self, prompt: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": 1,
            "temperature": 0,
        }
        if self.mode == "prompt_logprobs":
            body["prompt_logprobs"] = 0
        else:
            body["echo"] = True
            body["logprobs"] = 0
        return body

    def _post(self, prompt: str) -> dict[str, Any]:
        url = f"{self.base_url}/completions"
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                response = self._client.post(url, json=self._body(prompt))
            except httpx.TimeoutException as exc:
                if last:
                    raise EngineTimeout(self._clean(f"{url} timed out: {exc}")) from None
            except httpx.TransportError as exc:
                if last:
                    raise ProviderError(self._clean(f"{url} unreachable: {exc}")) from None
            else:
                status = response.status_code
                if status == 200:
                    try:
                        data = response.json()
                    except (json.JSONDecodeError, UnicodeDecodeError):
                        raise MalformedResponse(
                            self._clean(f"{url} answered 200 with a body that is not JSON"),
                            status=200,
                        ) from None
                    if not isinstance(data, dict):
                        raise MalformedResponse(f"{url} answered JSON that is not an object")
                    return data
                message = self._clean(f"{url} answered {status}: {response.text[:300]}")
                if status in (401, 403):
                    raise AuthenticationError(message, status=status)
                retryable = status == 429 or status >= 500
                if not retryable or last:
                    cls = RateLimitError if status == 429 else ProviderError
                    raise cls(message, status=status, retryable=retryable)
            time.sleep(min(4.0, 0.25 * 2**attempt))
        raise AssertionError("unreachable")

    def _clean(self, text: str) -> str:
        return redact(text, self._api_key)

    # --- the reply -------------------------------------------------------------------------

    def _tokens(self, data: dict[str, Any], prompt: str) -> list[tuple[str | None, float | None]]:
        """(token string or None when unknown, log-probability or None) per prompt token."""
        try:
            choice = data["choices"][0]
            if self.mode == "prompt_logprobs":
                entries = choice["prompt_logprobs"]
                ids = choice.get("prompt_token_ids") or data.get("prompt_token_ids")
                return [_pick(entry, ids[k] if ids else None) for k, entry in enumerate(entries)]
            lp = choice["logprobs"]
            tokens, values = lp["tokens"], lp["token_logprobs"]
            offsets = lp.get("text_offset")
            out = []
            for k, (tok, value) in enumerate(zip(tokens, values, strict=True)):
                if offsets is not None and offsets[k] >= len(prompt):
                    break  # the generated token
                out.append((str(tok), None if value is None else float(value)))
            return out
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            want = (
                "choices[0].prompt_logprobs"
                if self.mode == "prompt_logprobs"
                else ("choices[0].logprobs with tokens and token_logprobs")
            )
            raise MalformedResponse(
                f"{self.base_url} answered without {want} ({type(exc).__name__}: {exc}); "
                f"does the server support mode={self.mode!r}?"
            ) from None

    def score(self, text: str, *, context: str = "") -> TokenScores:
        if not isinstance(text, str) or not isinstance(context, str):
            raise ArgumentError("text and context must be str")
        if not text:
            return TokenScores((), np.zeros(0))
        prompt = context + text
        tokens = self._tokens(self._post(prompt), prompt)
        spans, values = _lay_out(tokens, prompt)
        return _text_units(spans, values, len(context), len(prompt))

    def __repr__(self) -> str:
        return (
            f"OpenAIPromptLogprobScorer({self.base_url!r}, model={self.model!r}, "
            f"mode={self.mode!r})"
        )


def _close_client(client: httpx.Client) -> None:
    with contextlib.suppress(Exception):
        client.close()


def _pick(entry: Any, token_id: Any) -> tuple[str | None, float | None]:
    if entry is None:
        return None, None
    if not isinstance(entry, dict) or not entry:
        raise TypeError(f"a prompt_logprobs entry is {entry!r}")
    if token_id is not None and str(token_id) in entry:
        chosen = entry[str(token_id)]
    elif len(entry) == 1:
        chosen = next(iter(entry.values()))
    else:  # several candidates and no ids: keep them all, the layout picks the one that fits
        return "\x00".join(str(v.get("decoded_token", "")) for v in entry.values()), float("nan")
    return str(chosen.get("decoded_token") or ""), float(chosen["logprob"])


def _lay_out(
    tokens: list[tuple[str | None, float | None]], prompt: str
) -> tuple[list[Span], list[float | None]]:
    """Character spans of the prompt's tokens, and their log-probabilities (None: unknown).

    A token whose string continues the prompt takes those characters. Tokens with no string,
    an empty one, or a partial character wait; the next token that can be placed (within
    _GAP characters) closes them: the characters before it become one unit with their summed
    log-probability (or, with nothing in between, they join that token's unit).
    """
    spans: list[Span] = []
    values: list[float | None] = []
    pending: list[float | None] = []
    pos = 0

    def total(items: list[float | None]) -> float | None:
        known = [v for v in items if v is not None]
        return float(sum(known)) if known else None

    for string, value in tokens:
        if pos >= len(prompt):
            break
        if value is not None and value != value:  # NaN: several candidates, value unknown
            value = None
        options = [o for o in (string or "").split("\x00") if o and _REPLACEMENT not in o]
        if not options:
            pending.append(value)
            continue
        found = None
        for option in options:  # the option that continues the prompt right here first
            if prompt.startswith(option, pos):
                found = (pos, option)
                break
        if found is None:
            hits = [
                (at, o) for o in options if (at := prompt.find(o, pos, pos + _GAP + len(o))) >= 0
            ]
            if not hits and not spans and pos == 0:
                pending.append(value)  # a special token before the text (BOS as "<s>")
                continue
            if not hits:
                raise MalformedResponse(
                    f"the server's tokens do not spell the prompt: {string!r} does not "
                    f"continue it at char {pos} ({prompt[pos : pos + 20]!r})"
                )
            found = min(hits)
        at, option = found
        if at > pos:  # the characters the waiting tokens stand for
            spans.append((pos, at))
            values.append(total(pending))
            pending.clear()
        spans.append((at, at + len(option)))
        values.append(total([*pending, value]))
        pending.clear()
        pos = at + len(option)
    if pos < len(prompt):
        spans.append((pos, len(prompt)))
        values.append(total(pending))
    elif pending and values:
        values[-1] = total([values[-1], *pending])
    return spans, values


def _text_units(spans: list[Span], values: list[float | None], start: int, end: int) -> TokenScores:
    """The units of prompt[start:end] (the text after the context)."""
    out_spans: list[Span] = []
    out_values: list[float | None] = []
    for (a, b), v in zip(spans, values, strict=True):
        if b <= start:
            continue
        out_spans.append((max(a, start) - start, b - start))
        out_values.append(v)
    if not out_spans:
        return TokenScores(((0, end - start),), np.zeros(1))
    out_spans[0] = (0, out_spans[0][1])
    out_spans[-1] = (out_spans[-1][0], end - start)
    known = [v for v in out_values if v is not None]
    fill = float(np.mean(known)) if known else -1.0
    lp = np.array([fill if v is None else v for v in out_values], dtype=np.float64)
    return TokenScores(tuple(out_spans), np.minimum(lp, 0.0))
