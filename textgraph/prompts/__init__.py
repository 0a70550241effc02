"""Prompt templates as text files, and a renderer that cannot be broken by data.

Templates use `{name}` placeholders and `{{`/`}}` for literal braces.
Rendering is a single pass: a value that itself contains `{x}` or
`{{` is inserted verbatim and never re-interpreted (str.format would choke
on user text with braces). Text embedded inside our XML-like section tags
goes through `fence`, which neutralizes look-alike tags so user data cannot
close a section early.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from textgraph.errors import ArgumentError
from textgraph.image import Image

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")

SECTION_TAGS = (
    "CONVERSATION",
    "SYSTEM_PROMPT",
    "INPUT",
    "OUTPUT",
    "FIELD",
    "FEEDBACK",
    "CRITIQUE",
    "CONTEXT",
    "VARIABLE",
    "CURRENT_VALUE",
    "PAST_VALUE",
    "EXAMPLE",
    "INSTRUCTION",
    "FUNCTION",
    "PREDICTION",
    "TARGET",
    "DEMONSTRATIONS",
    "COMPRESSION",
    "RATE",
    "REMOVED",
)
_TAG_LOOKALIKE = re.compile(r"<(/?)(" + "|".join(SECTION_TAGS) + r")\b", re.IGNORECASE)


@cache
def load(name: str) -> str:
    """The text of `textgraph/prompts/<name>.txt`, trailing newline removed."""
    try:
        text = resources.files(__package__).joinpath(f"{name}.txt").read_text("utf-8")
    except FileNotFoundError as exc:
        raise ArgumentError(f"no prompt template named {name!r}") from exc
    return text.rstrip("\n")


def placeholders(template: str) -> list[str]:
    """Field names in a template, in order of first appearance."""
    seen: dict[str, None] = {}
    for match in _PLACEHOLDER.finditer(template):
        if match.group(1):
            seen.setdefault(match.group(1), None)
    return list(seen)


def render(template: str, /, **values: object) -> str:
    """Fill `{name}` placeholders in one pass; values are inserted verbatim."""

    def substitute(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        name = match.group(1)
        if name not in values:
            raise ArgumentError(
                f"template field {{{name}}} has no value; given: {sorted(values) or 'none'}"
            )
        value = values[name]
        if isinstance(value, Image):
            raise ArgumentError(
                f"template field {{{name}}} got a tg.Image ({value.value}): written into text "
                "it would be only that description, and the model would never see the image. "
                "Pass images to tg.LLMCall (alone or in a list of inputs) or as a "
                "tg.FormattedLLMCall field, where the model receives the image itself"
            )
        return str(value)

    return _PLACEHOLDER.sub(substitute, template)


def render_segments(template: str, /, **values: object) -> list[object]:
    """Like `render`, in one pass, but a value that is not a str (an image) is kept as
    itself: the result is the template's text and str values merged into strings, with each
    such value between them at its field's place."""
    segments: list[object] = []
    text: list[str] = []
    at = 0
    for match in _PLACEHOLDER.finditer(template):
        text.append(template[at : match.start()])
        at = match.end()
        token = match.group(0)
        if token in ("{{", "}}"):
            text.append(token[0])
            continue
        name = match.group(1)
        if name not in values:
            raise ArgumentError(
                f"template field {{{name}}} has no value; given: {sorted(values) or 'none'}"
            )
        value = values[name]
        if isinstance(value, str):
            text.append(value)
            continue
        segments.append("".join(text))
        segments.append(value)
        text = []
    text.append(template[at:])
    segments.append("".join(text))
    return [s for s in segments if s != ""]


def render_file(name: str, /, **values: object) -> str:
    return render(load(name), **values)


def fence(text: str) -> str:
    """Neutralize look-alikes of our section tags inside embedded data."""
    return _TAG_LOOKALIKE.sub(lambda m: f"&lt;{m.group(1)}{m.group(2)}", text)
