"""The bench's LLM server, run in its own process (its threads must not share our GIL).

Replies are deterministic and parseable by both frameworks: an optimizer
request gets the new value in TextGrad's <IMPROVED_VARIABLE> tags and in
textgraph's per-call markers; every other request gets a fixed-length
answer that starts with a hash of the prompt (so no two prompts share a
reply and neither framework's cache can shortcut the workload).

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

from textgraph.engines import ChatRequest, ScriptedEngine
from textgraph.testing import LLMTestServer

NEW_VALUE = (
    "You are a careful assistant. Read the question twice, reason step by step, "
    "and end with the answer."
)
FILLER = ("This is a deterministic reply from the bench server, of fixed length, so both "
          "frameworks pay for the same completion tokens on every call.")
_MARKERS = re.compile(r"between (<NEW_VALUE_[0-9A-F]+>) and (</NEW_VALUE_[0-9A-F]+>)")


def bench_reply(request: ChatRequest) -> str:
    text = request.prompt_text()
    ours = _MARKERS.search(text)
    if ours or "<IMPROVED_VARIABLE>" in text:
        parts = [f"<IMPROVED_VARIABLE>{NEW_VALUE}</IMPROVED_VARIABLE>"]
        if ours:
            parts.append(f"{ours.group(1)}\n{NEW_VALUE}\n{ours.group(2)}")
        return "\n".join(parts)
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"[{digest}] {FILLER}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=0.1)
    args = parser.parse_args()
    server = LLMTestServer(ScriptedEngine(bench_reply), latency=args.latency,
                           max_requests=1_000_000).start()
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
