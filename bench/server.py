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

The Pareto bench (bench/pareto.py) runs textgraph's ParetoTGD and GEPA on tickets whose
instruction starts as PARETO_START. Two kinds of tricky tickets are routed right only when
the instruction carries their rule (PARETO_RULES: "but now" -> the keyword after it; "not
about" -> skip the keyword after it); a third kind names no keyword and no rule fixes it.
The bench's metric feedback on a ticket that needs a missing rule quotes that rule, so every
reflection-like request learns the same way: GEPA's reflection prompt, textgraph's backward
request (its critique quotes the rules in its <FEEDBACK>) and textgraph's rewrite request
(optimizer markers) are answered with PARETO_START plus every rule the prompt quotes (the
parent's own and the feedback's) and a revision tag hashed from the prompt, so a reflection
that learns nothing still proposes a distinct text, as a real model would. `request_kind`
names what each request is (task, reflection, backward, rewrite, ...) for the counters.

    python bench/server.py --latency 0.1     # prints {"port": N}, serves until killed
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
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
_PLANTED = re.compile(r"PLANTED ACC=([0-9.]+)")
_PLANTED_QUESTION = re.compile(r"^Question (\d+): what is")
WHOLE_RUN_ACCURACIES = (0.0, 0.1, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7)
_TICKET = re.compile(r"Ticket \d+: [^\n]*")
_MIPRO_PROPOSAL = "Style tip:"  # in textgraph's prompts/mipro_instruction_user.txt
# The Pareto bench's task (bench/pareto.py): rules an instruction can learn from feedback.
PARETO_START = (
    "Send each support ticket to the team that handles it: billing, account, technical or "
    "shipping. Reply with the team name only."
)
PARETO_RULES = {  # rule text -> (trigger words in a ticket, keywords to skip after them)
    "Rule: when a ticket says 'but now', route it by the first keyword after those words.": (
        "but now",
        0,
    ),
    "Rule: when a ticket says 'not about', skip the keyword right after those words.": (
        "not about",
        1,
    ),
}
_GEPA_REFLECTION = "Your task is to write a new instruction for the assistant."  # GEPA 0.1.4
_TG_BACKWARD = "Give feedback on the following variable"  # textgraph's backward_targets.txt
_FEEDBACK_SECTION = re.compile(r"<FEEDBACK>(.*?)</FEEDBACK>", re.S)


def dspy_fields(text: str) -> list[str] | None:
    """The output field names of a DSPy ChatAdapter prompt, or None for any other prompt."""
    if "[[ ## completed ## ]]" not in text:
        return None
    section = _DSPY_OUTPUTS.search(text)
    return _DSPY_FIELD.findall(section.group(1)) if section else None


def ticket_team(text: str, rules: tuple[str, ...] | list[str] = ()) -> str | None:
    """The team of the first keyword in the last ticket of `text` ("other" when it names
    none), or None when `text` holds no ticket. `rules` (PARETO_RULES texts the instruction
    carries) change the pick on the tickets they are about."""
    tickets = _TICKET.findall(text)
    if not tickets:
        return None
    ticket = tickets[-1].lower()
    for rule in rules:
        trigger, skip = PARETO_RULES[rule]
        if trigger in ticket:
            after = [w for w in re.findall(r"[a-z]+", ticket.split(trigger, 1)[1]) if w in TEAMS]
            if len(after) > skip:
                return TEAMS[after[skip]]
    for word in re.findall(r"[a-z]+", ticket):
        if word in TEAMS:
            return TEAMS[word]
    return "other"


def pareto_rules(text: str) -> list[str]:
    """The PARETO_RULES texts that `text` quotes, in PARETO_RULES order."""
    return [rule for rule in PARETO_RULES if rule in text]


def pareto_instruction(text: str) -> str:
    """The Pareto bench's answer to a reflection or rewrite prompt: PARETO_START, every rule
    the prompt quotes, and a revision tag hashed from the prompt."""
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return " ".join([PARETO_START, *pareto_rules(text), f"(revision {digest})"])


def request_kind(request: ChatRequest) -> str:
    """What a request to the bench server is: "reflection" (GEPA's proposal prompt),
    "rewrite" / "backward" (textgraph's optimizer and backward requests on the Pareto
    bench), "optimizer" (any other textgraph or TextGrad optimizer request), "dspy" (a DSPy
    ChatAdapter call), "task" (the last message is a ticket), or "other"."""
    text = request.prompt_text()
    if _GEPA_REFLECTION in text:
        return "reflection"
    if _MARKERS.search(text) or "<IMPROVED_VARIABLE>" in text:
        return "rewrite" if PARETO_START in text else "optimizer"
    if PARETO_START in text and _TG_BACKWARD in text:
        return "backward"
    if dspy_fields(text):
        return "dspy"
    last = request.messages[-1].content if request.messages else ""
    return "task" if _TICKET.search(last) else "other"


def _pareto_backward(text: str) -> str:
    section = _FEEDBACK_SECTION.search(text)
    rules = pareto_rules(section.group(1) if section else text)
    if not rules:
        return "No rule in the instruction would have routed this ticket right; keep it."
    return "The instruction lacks a rule this ticket needs. Add: " + " ".join(rules)


def planted_reply(request: ChatRequest, digest: str) -> str | None:
    """The whole-run bench's world (bench/whole_run_textgrad.py): a prompt carrying
    "PLANTED ACC=a" answers "Question i: what is i + i?" right when (37 i + 11) mod 100 <
    100 a; a rewrite of such a prompt gets an accuracy drawn from WHOLE_RUN_ACCURACIES,
    seeded by the rewrite request's text."""
    text = request.prompt_text()
    if _PLANTED.search(text) is None:
        return None
    if _MARKERS.search(text) or "<IMPROVED_VARIABLE>" in text:
        acc = random.Random(digest).choice(WHOLE_RUN_ACCURACIES)
        value = f"PLANTED ACC={acc} Answer the question with the number alone (v{digest})."
        ours = _MARKERS.search(text)
        parts = [f"<IMPROVED_VARIABLE>{value}</IMPROVED_VARIABLE>"]
        if ours:
            parts.append(f"{ours.group(1)}\n{value}\n{ours.group(2)}")
        return "\n".join(parts)
    system = "\n".join(m.content for m in request.messages[:-1])
    planted = _PLANTED.search(system)
    question = _PLANTED_QUESTION.search(request.messages[-1].content)
    if planted is None or question is None:
        return None
    i = int(question.group(1))
    return str(2 * i) if (i * 37 + 11) % 100 < 100 * float(planted.group(1)) else "no idea"


def bench_reply(request: ChatRequest) -> str:
    text = request.prompt_text()
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    planted = planted_reply(request, digest)
    if planted is not None:
        return planted
    if _GEPA_REFLECTION in text:
        return f"```\n{pareto_instruction(text)}\n```"
    ours = _MARKERS.search(text)
    if ours or "<IMPROVED_VARIABLE>" in text:
        if PARETO_START in text:
            value = pareto_instruction(text)
        elif _MIPRO_PROPOSAL in text:
            value = f"{INSTRUCTION} (variant {digest})"
        else:
            value = NEW_VALUE
        parts = [f"<IMPROVED_VARIABLE>{value}</IMPROVED_VARIABLE>"]
        if ours:
            parts.append(f"{ours.group(1)}\n{value}\n{ours.group(2)}")
        return "\n".join(parts)
    if PARETO_START in text and _TG_BACKWARD in text:
        return _pareto_backward(text)
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
    instruction = "\n".join(m.content for m in request.messages[:-1])
    return ticket_team(last, pareto_rules(instruction)) or answer


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
