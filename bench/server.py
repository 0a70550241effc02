"""The bench's LLM server, run in its own process (its threads must not share our GIL).

Replies are deterministic and parseable by every framework: an optimizer
request gets the new value in TextGrad's <IMPROVED_VARIABLE> tags and in
textgraph's per-call markers; a DSPy ChatAdapter request (its system prompt
lists "Your output fields are:" and the `[[ ## completed ## ]]` marker) gets
each output field under its `[[ ## name ## ]]` marker, then the completed
marker, so DSPy parses it on the first try (no JSONAdapter retry, one
request per call); every other request gets a fixed-length answer that
starts with a hash of the prompt (so no two prompts share a reply and no
framework's cache can shortcut the workload).

The MIPRO bench (bench/mipro.py) routes support tickets ("Ticket N: ...") to a
team: a request whose last message is a ticket (textgraph's plain call; a DSPy
call whose output field is `label`) is answered with the team of the first
keyword in that ticket (`ticket_team`), so the answer is deterministic, right
on plain tickets and wrong on the dataset's tricky ones. A textgraph MIPRO
instruction proposal (its prompt carries a "Style tip:") and a DSPy
`proposed_instruction` field get a distinct instruction per prompt, so no
proposal is dropped as a duplicate.

    python bench/server.py --latency 0.1     # prints {"port": N}, serves until killed
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import signal
import sys
import threading
from http.server import ThreadingHTTPServer

from textgraph.engines import ChatRequest, ScriptedEngine
from textgraph.testing import LLMTestServer

NEW_VALUE = (
    "You are a careful assistant. Read the question twice, reason step by step, "
    "and end with the answer."
)
FILLER = (
    "This is a deterministic reply from the bench server, of fixed length, so both "
    "frameworks pay for the same completion tokens on every call."
)
LISTEN_BACKLOG = 1024
_MARKERS = re.compile(r"between (<NEW_VALUE_[0-9A-F]+>) and (</NEW_VALUE_[0-9A-F]+>)")
_DSPY_OUTPUTS = re.compile(
    r"Your output fields are:\n(.*?)\nAll interactions will be structured", re.S
)
_DSPY_FIELD = re.compile(r"^\d+\. `(\w+)`", re.M)
# The MIPRO bench's task: a support ticket goes to the team of its first keyword.
TEAMS = {
    "invoice": "billing",
    "refund": "billing",
    "password": "account",
    "login": "account",
    "crash": "technical",
    "error": "technical",
    "parcel": "shipping",
    "delivery": "shipping",
}
INSTRUCTION = (
    "Route the support ticket to the team that should handle it: billing, "
    "account, technical or shipping. Answer with the team name alone."
)
_TICKET = re.compile(r"Ticket \d+: [^\n]*")
_MIPRO_PROPOSAL = "Style tip:"  # in textgraph's prompts/mipro_instruction_user.txt


def dspy_fields(text: str) -> list[str] | None:
    """The output field names of a DSPy ChatAdapter prompt, or None for any other prompt."""
    if "[[ ## completed ## ]]" not in text:
        return None
    section = _DSPY_OUTPUTS.search(text)
    return _DSPY_FIELD.findall(section.group(1)) if section else None


def ticket_team(text: str) -> str | None:
    """The team of the first keyword in the last ticket of `text` ("other" when it names
    none), or None when `text` holds no ticket."""
    tickets = _TICKET.findall(text)
    if not tickets:
        return None
    for word in re.findall(r"[a-z]+", tickets[-1].lower()):
        if word in TEAMS:
            return TEAMS[word]
    return "other"


def bench_reply(request: ChatRequest) -> str:
    text = request.prompt_text()
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    ours = _MARKERS.search(text)
    if ours or "<IMPROVED_VARIABLE>" in text:
        value = f"{INSTRUCTION} (variant {digest})" if _MIPRO_PROPOSAL in text else NEW_VALUE
        parts = [f"<IMPROVED_VARIABLE>{value}</IMPROVED_VARIABLE>"]
        if ours:
            parts.append(f"{ours.group(1)}\n{value}\n{ours.group(2)}")
        return "\n".join(parts)
    answer = f"[{digest}] {FILLER}"
    last = request.messages[-1].content if request.messages else ""
    fields = dspy_fields(text)
    if fields:
        team = ticket_team(last)
        values = {"label": team, "proposed_instruction": f"{INSTRUCTION} (variant {digest})"}
        return (
            "".join(f"[[ ## {name} ## ]]\n{values.get(name) or answer}\n\n" for name in fields)
            + "[[ ## completed ## ]]"
        )
    return ticket_team(last) or answer


def start_server(latency: float, max_requests: int = 1_000_000) -> LLMTestServer:
    """An LLMTestServer answering with bench_reply, listening with a deep backlog.

    socketserver listens with a backlog of 5: 64 clients connecting at once overflow it,
    and the kernel resets some of those connections (the client sees ReadError and retries
    after a backoff) or drops their SYN until it is resent a second later. Real servers
    queue more, so the bench server does too."""
    server = LLMTestServer(ScriptedEngine(bench_reply), latency=latency, max_requests=max_requests)
    own = "request_queue_size" in vars(ThreadingHTTPServer)
    saved = ThreadingHTTPServer.request_queue_size
    ThreadingHTTPServer.request_queue_size = LISTEN_BACKLOG  # read by listen() in start()
    try:
        return server.start()
    finally:
        if own:
            ThreadingHTTPServer.request_queue_size = saved
        else:
            del ThreadingHTTPServer.request_queue_size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=0.1)
    args = parser.parse_args()
    server = start_server(args.latency)
    print(json.dumps({"port": server.port}), flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    server.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
