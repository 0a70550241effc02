"""Few-shot demonstrations as a parameter: `tg.Demos` holding `tg.Demo`s.

A Demos is a Variable whose value is the canonical JSON of its items, so
everything that handles parameter values (candidates, overrides, state
dicts, checkpoints, run records, diffs, reports) handles demonstrations
without a second code path; `.items` is the parsed, validated view. An LLM
op given `demos=` renders them as user/assistant turns before the real
input, and they are an input of the op's node, so backward can critique
them like any other text.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from textgraph.errors import ArgumentError
from textgraph.variable import Variable

DEMOS_FORMAT = "textgraph.demos/1"


class Demo(BaseModel):
    """One demonstration: what the op received (`inputs`) and what it should answer.

    inputs: the user text (str) or the op's template fields by name (dict).
    output: the assistant's reply. rationale: optional reasoning shown before it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    inputs: str | dict[str, str]
    output: str
    rationale: str | None = None

    def __init__(
        self,
        inputs: str | dict[str, str] | None = None,
        output: str | None = None,
        rationale: str | None = None,
        **data: object,
    ) -> None:
        """Positional or keyword: `tg.Demo("2+2", "4")` == `tg.Demo(inputs="2+2", output="4")`."""
        if inputs is not None:
            data["inputs"] = inputs
        if output is not None:
            data["output"] = output
        if rationale is not None:
            data["rationale"] = rationale
        super().__init__(**data)

    @field_validator("inputs")
    @classmethod
    def _inputs_not_empty(cls, value: str | dict[str, str]) -> str | dict[str, str]:
        if isinstance(value, dict) and not value:
            raise ValueError("inputs is an empty dict: give the op's fields by name")
        return value

    def text_input(self) -> str:
        """The inputs as one user message (fields as `name: value` lines)."""
        if isinstance(self.inputs, str):
            return self.inputs
        if len(self.inputs) == 1:
            return next(iter(self.inputs.values()))
        return "\n".join(f"{name}: {value}" for name, value in self.inputs.items())

    def reply(self) -> str:
        """The assistant turn: the rationale (when given), then the output."""
        return f"{self.rationale}\n\n{self.output}" if self.rationale else self.output


def as_demo(obj: object, where: str = "demo") -> Demo:
    """A Demo from a Demo or a plain dict with inputs/output[/rationale]."""
    if isinstance(obj, Demo):
        return obj
    if isinstance(obj, Mapping):
        try:
            return Demo.model_validate(dict(obj))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'demo'}: {e['msg']}" for e in exc.errors()
            )
            raise ArgumentError(
                f"{where} is not a valid demonstration ({problems}). A demo is "
                "tg.Demo(inputs='user text' or {'field': 'value'}, output='reply', "
                "rationale=None)."
            ) from None
    raise ArgumentError(
        f"{where} must be a tg.Demo or a dict with 'inputs' and 'output', got {type(obj).__name__}"
    )


def demos_text(items: Iterable[object]) -> str:
    """The canonical JSON of a list of demos (the parameter's value)."""
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Iterable):
        raise ArgumentError(
            f"demonstrations must be a list of tg.Demo (or dicts), got {type(items).__name__}"
        )
    demos = [as_demo(d, f"demos[{i}]") for i, d in enumerate(items)]
    payload = {
        "format": DEMOS_FORMAT,
        "items": [d.model_dump(exclude_none=True) for d in demos],
    }
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


@functools.lru_cache(maxsize=1024)
def parse_demos(text: str) -> tuple[Demo, ...]:
    """Parse a Demos value; errors say what is wrong. Cached: values repeat a lot."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArgumentError(
            f"a Demos value must be the JSON written by tg.Demos ({exc.msg} at char {exc.pos}); "
            "set demos.items = [...] instead of editing the text"
        ) from None
    if not isinstance(data, dict) or data.get("format") != DEMOS_FORMAT:
        raise ArgumentError(
            f"a Demos value must be a JSON object with format {DEMOS_FORMAT!r}; "
            "set demos.items = [...] instead of editing the text"
        )
    items = data.get("items")
    if not isinstance(items, list):
        raise ArgumentError("a Demos value has no 'items' list")
    return tuple(as_demo(d, f"demos[{i}]") for i, d in enumerate(items))


def is_demos_value(value: object) -> bool:
    """True for a list/tuple meant as demonstrations (Candidate values accept these)."""
    return isinstance(value, (list, tuple))


class Demos(Variable):
    """`tg.Demos(items=None, *, role_description, requires_grad=True, max_items=None)`.

    An ordered list of demonstrations an LLM op shows as few-shot turns.
    `items` is a copy, as a list of `tg.Demo`: assign to change it
    (`demos.items = [...]`), appending to the copy changes nothing.
    `value` is its canonical JSON.
    """

    def __init__(
        self,
        items: Iterable[object] | None = None,
        *,
        role_description: str,
        requires_grad: bool = True,
        max_items: int | None = None,
        name: str | None = None,
    ) -> None:
        if max_items is not None and (
            isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 0
        ):
            raise ArgumentError(f"max_items must be a non-negative int or None, got {max_items!r}")
        self.max_items = max_items
        text = demos_text(items or [])
        super().__init__(
            text, role_description=role_description, requires_grad=requires_grad, name=name
        )
        self.check_value(text)

    def check_value(self, value: object) -> str:
        """Accept the canonical text or a list of demos; return the canonical text."""
        text = demos_text(value) if is_demos_value(value) else super().check_value(value)
        demos = parse_demos(text)
        limit = getattr(self, "max_items", None)
        if limit is not None and len(demos) > limit:
            raise ArgumentError(
                f"{len(demos)} demonstrations exceed max_items={limit} for "
                f"'{self.role_description}'"
            )
        return text

    @property
    def items(self) -> list[Demo]:
        return list(parse_demos(self.value))

    @items.setter
    def items(self, new: Iterable[object]) -> None:
        self.value = demos_text(new)

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        flag = ", requires_grad=True" if self.requires_grad else ""
        return (
            f"Demos({len(self.items)} items, role={self.role_description!r}{flag}, id={self.id!r})"
        )

    def render(self) -> str:
        """Readable text of the demonstrations (for critics, reports and diffs)."""
        return render_demos(self.items)


def render_demos(demos: Iterable[Demo]) -> str:
    blocks = []
    for i, demo in enumerate(demos, 1):
        lines = [f"Demonstration {i}:"]
        if isinstance(demo.inputs, str):
            lines.append(f"  input: {demo.inputs}")
        else:
            lines.extend(f"  {name}: {value}" for name, value in demo.inputs.items())
        if demo.rationale:
            lines.append(f"  rationale: {demo.rationale}")
        lines.append(f"  output: {demo.output}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) if blocks else "(no demonstrations)"


def is_demos_text(value: object) -> bool:
    """True for a value written by tg.Demos (its canonical JSON)."""
    return isinstance(value, str) and value.startswith('{"format":"' + DEMOS_FORMAT)


def readable_value(value: str) -> str:
    """A parameter value for people: demonstrations as text, other text unchanged."""
    if is_demos_text(value):
        try:
            return render_demos(parse_demos(value))
        except ArgumentError:
            return value
    return value
