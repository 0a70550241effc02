"""Clear errors for TextGrad keyword arguments that textgraph spells differently.

Code ported from TextGrad fails with a message saying what to write
instead, rather than a bare "unexpected keyword argument".
"""

from __future__ import annotations

from typing import Any

from textgraph.errors import ArgumentError

INSTEAD = {
    "format_string": "pass the template as `template=` (or the second positional argument)",
    "gradient_memory": (
        "pass `momentum=N`: TGD then shows the parameter's last N values with the feedback "
        "each received"
    ),
    "new_variable_tags": "drop it: TGD asks for the new value between its own markers",
    "optimizer_system_prompt": (
        "drop it: textgraph's optimizer prompts are files in textgraph/prompts/ (see "
        "docs/prompts.md); steer the rewrite with `constraints=[...]`"
    ),
    "verbose": "drop it: textgraph logs to the 'textgraph' logger; enable it with logging",
}


def refuse_options(where: str, options: dict[str, Any]) -> None:
    """Raise for keyword arguments `where` does not take, naming the textgraph spelling."""
    if not options:
        return
    name = sorted(options)[0]
    advice = INSTEAD.get(name)
    if advice is not None:
        raise ArgumentError(f"{where} has no {name}= (a TextGrad argument); {advice}.")
    raise ArgumentError(f"{where} got unexpected keyword argument(s) {sorted(options)}")
