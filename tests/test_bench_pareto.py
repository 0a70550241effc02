"""A tiny run of bench/pareto.py (ParetoTGD vs GEPA), so the bench cannot rot.

The server's Pareto replies are checked directly; textgraph's side runs here (the test venv
has no GEPA); the side-by-side run needs gepa in the interpreter running the test (bench/.venv
has it) and is skipped otherwise. They assert counts and the document's shape, never time.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from bench.server import (
    PARETO_RULES,
    PARETO_START,
    bench_reply,
    pareto_instruction,
    request_kind,
    ticket_team,
)
from textgraph.engines import ChatRequest

BUT_NOW, NOT_ABOUT = PARETO_RULES
GEPA_PROMPT = (
    "I provided an assistant with the following instructions to perform a task for me:\n```\n"
    f"{PARETO_START}\n```\n\nThe following are examples ...\n```\n# Example 1\n## Inputs\n"
    "Ticket 4: the invoice went fine, but now my parcel is the problem.\n## Feedback\nWrong: "
    f"answered 'billing'; this ticket goes to 'shipping'. The instruction needs this rule: "
    f"{BUT_NOW}\n```\n\nYour task is to write a new instruction for the assistant.\n\n"
    "Provide the new instructions within ``` blocks."
)


def test_rules_change_the_routing_of_the_tickets_they_are_about():
    but_now = "Ticket 4: the invoice went fine, but now my parcel is the problem."
    not_about = "Ticket 8: this is not about my invoice; my crash is broken."
    assert ticket_team(but_now) == "billing"  # the first keyword: MIPRO's bench unchanged
    assert ticket_team(but_now, [BUT_NOW]) == "shipping"
    assert ticket_team(not_about, [BUT_NOW]) == "billing"
    assert ticket_team(not_about, [NOT_ABOUT]) == "technical"
    assert ticket_team("Ticket 9: nobody answers, please call me back.", [*PARETO_RULES]) == "other"
    # a task call reads the rules from its system prompt
    task = ChatRequest.from_prompts(f"{PARETO_START} {BUT_NOW}", but_now)
    assert request_kind(task) == "task" and bench_reply(task) == "shipping"
    assert bench_reply(ChatRequest.from_prompts(PARETO_START, but_now)) == "billing"


def test_gepa_reflection_and_textgraph_rewrite_learn_the_quoted_rules():
    reflection = ChatRequest.from_prompts(None, GEPA_PROMPT)
    assert request_kind(reflection) == "reflection"
    reply = bench_reply(reflection)
    assert reply.startswith("```\n") and reply.endswith("\n```")
    new = reply.strip("`\n")
    assert new.startswith(PARETO_START) and BUT_NOW in new and NOT_ABOUT not in new
    assert new == pareto_instruction(GEPA_PROMPT)
    # textgraph: the backward critique quotes the rule, the rewrite keeps the parent's rules
    backward = ChatRequest.from_prompts(
        "You are the critic",
        f"<SYSTEM_PROMPT>\n{PARETO_START} {NOT_ABOUT}\n</SYSTEM_PROMPT>\n<FEEDBACK>\nWrong. "
        f"The instruction needs this rule: {BUT_NOW}\n</FEEDBACK>\n\n"
        "Give feedback on the following variable(s), which appear in the call above:",
    )
    assert request_kind(backward) == "backward"
    critique = bench_reply(backward)
    assert BUT_NOW in critique and NOT_ABOUT not in critique  # only what the feedback says
    rewrite = ChatRequest.from_prompts(
        "You are the optimizer",
        f"<CURRENT_VALUE>\n{PARETO_START} {NOT_ABOUT} (revision 0a1b2c3d)\n</CURRENT_VALUE>\n"
        f"<CRITIQUE>\n{critique}\n</CRITIQUE>\nPut the complete new value between "
        "<NEW_VALUE_AB12> and </NEW_VALUE_AB12>",
    )
    assert request_kind(rewrite) == "rewrite"
    value = bench_reply(rewrite).split("<NEW_VALUE_AB12>\n")[1].split("\n</NEW_VALUE_AB12>")[0]
    assert value.startswith(f"{PARETO_START} {BUT_NOW} {NOT_ABOUT} (revision ")
    assert "0a1b2c3d" not in value  # a fresh revision tag: never the parent's text again


def run_bench(tmp_path: Path, frameworks: str) -> dict:
    from bench import pareto  # runs each framework in a child process of this interpreter

    out = tmp_path / "pareto.json"
    return pareto.main(
        [
            "--frameworks",
            frameworks,
            "--budgets",
            "50",
            "--repeats",
            "1",
            "--latency",
            "0.01",
            "--train",
            "10",
            "--val",
            "10",
            "--out",
            str(out),
        ]
    ) | {"written": json.loads(out.read_text())}


def check_run(run: dict, budget: int) -> None:
    for key in (
        "wall_s",
        "client_cpu_s",
        "server_cpu_s",
        "requests",
        "requests_by_kind",
        "metric_calls",
        "steps",
        "best_val_score",
        "initial_val_score",
        "best_instruction",
        "final_instruction",
        "to_best",
        "discoveries",
        "latency_rounds",
        "idle_s",
    ):
        assert key in run, key
    assert run["requests"] == sum(run["requests_by_kind"].values())
    assert run["requests_by_kind"]["task"] >= run["metric_calls"]  # one call per scoring
    assert run["initial_val_score"] == 0.7  # 7 tickets in 10 are plain
    assert run["best_val_score"] >= run["initial_val_score"]
    assert run["best_instruction"].startswith(PARETO_START)
    assert run["discoveries"][0]["metric_calls"] == 10  # the initial validation
    assert 0 < run["latency_rounds"] <= run["requests"]


def test_textgraph_side_of_the_pareto_bench(tmp_path):
    document = run_bench(tmp_path, "textgraph")
    assert document["written"]["runs"] == document["runs"]
    row = document["runs"]["budget=50"]
    (run,) = row["runs"]["textgraph"]
    check_run(run, 50)
    assert run["metric_calls"] <= 50  # ParetoTGD never exceeds its budget
    assert set(run["requests_by_kind"]) <= {"task", "backward", "rewrite"}
    assert row["median"]["textgraph"]["requests"] == run["requests"]
    assert "comparison" not in row  # no baseline ran


def test_pareto_bench_side_by_side(tmp_path):
    if importlib.util.find_spec("gepa") is None:
        pytest.skip("gepa is not installed here (bench/.venv has it)")
    document = run_bench(tmp_path, "textgraph,gepa")
    row = document["runs"]["budget=50"]
    check_run(row["runs"]["textgraph"][0], 50)
    gepa = row["runs"]["gepa"][0]
    check_run(gepa, 50)
    assert gepa["metric_calls"] >= 50  # GEPA stops once the budget is reached
    assert set(gepa["requests_by_kind"]) <= {"task", "reflection"}
    comparison = row["comparison"]["textgraph"]
    for key in ("wall_ratio", "requests_ratio", "met_wall_target", "met_requests_target"):
        assert key in comparison, key
    assert set(document["metric_calls_counting"]) == {"textgraph", "gepa"}
