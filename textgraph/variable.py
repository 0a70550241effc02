"""Variable and Gradient: the nodes of a textual computation graph.

A Variable holds text and a role description ("system prompt of the
answering model"). Operations create new Variables whose `predecessors` are
their inputs and whose `grad_fn` remembers how to send feedback back to
those inputs. `loss.backward()` fills `.gradients` of every upstream
variable that requires a gradient; an optimizer then rewrites `.value`.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from textgraph._ids import next_variable_id
from textgraph.errors import ArgumentError

if TYPE_CHECKING:
    from textgraph.engines.base import Engine
    from textgraph.ops.base import Node

Conversation = tuple[dict[str, str], ...]

# Values that stand in for some variables' own, in this context only: how a candidate
# snapshot is evaluated without touching the module, while other tasks evaluate others.
_overrides: contextvars.ContextVar[Mapping[Variable, str] | None] = contextvars.ContextVar(
    "textgraph_value_overrides", default=None
)


@contextlib.contextmanager
def override_values(values: Mapping[Variable, str]) -> Iterator[None]:
    """Inside the block (and tasks and threads started in it) these variables read as
    `values`; outside, and in other tasks, they keep their own. Setting `.value` inside
    still sets the variable's own value."""
    checked = {variable: variable.check_value(value) for variable, value in values.items()}
    outer = _overrides.get()
    token = _overrides.set({**outer, **checked} if outer else checked)
    try:
        yield
    finally:
        _overrides.reset(token)


class Gradient:
    """One critique received by a variable.

    text: the critique itself.
    source: the successor variable the critique came from (the output of
        the operation that consumed this variable).
    operation: name of that operation ("llm_call", "concat", ...).
    context: the forward call the variable took part in, rendered as text
        with the variable's own value elided (what the optimizer shows).
        Backward passes `render` instead, so it is built only when read.
    conversation: the exact backward conversation (request messages and the
        reply) that produced `text`; empty when no LLM call was needed.
    """

    __slots__ = ("_context", "_render", "conversation", "operation", "source", "text")

    def __init__(
        self,
        text: str,
        source: Variable,
        operation: str,
        context: str = "",
        conversation: Conversation = (),
        *,
        render: Callable[[], str] | None = None,
    ) -> None:
        self.text, self.source, self.operation = text, source, operation
        self.conversation = conversation
        self._context: str | None = None if render is not None else context
        self._render = render

    @property
    def context(self) -> str:
        if self._context is None:
            self._context = self._render() if self._render is not None else ""
            self._render = None
        return self._context

    def __repr__(self) -> str:
        return (
            f"Gradient({self.text!r:.80}, source={self.source.id!r}, operation={self.operation!r})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "source": self.source.id,
            "source_role": self.source.role_description,
            "operation": self.operation,
            "context": self.context,
            "conversation": [dict(m) for m in self.conversation],
        }


def _check_text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ArgumentError(
            f"{what} must be a str, got {type(value).__name__} {value!r:.60}. "
            "Convert it first, e.g. str(x)."
        )
    return value


class Variable:
    """A piece of text in a computation graph.

    requires_grad=True marks a parameter (or anything whose critique you
    want); intermediate variables require grad when any predecessor does.
    """

    def __init__(
        self,
        value: str,
        *,
        role_description: str | None = None,
        requires_grad: bool = False,
        name: str | None = None,
    ) -> None:
        if isinstance(value, (bytes, bytearray, memoryview)):
            raise ArgumentError(
                f"tg.Variable holds text and got {len(value)} bytes. For an image (TextGrad's "
                "tg.Variable(image_bytes, ...)) write tg.Image(image_bytes, role_description=...) "
                "and pass it to tg.LLMCall in a list with the question, "
                "tg.LLMCall(engine)([image, question]) (TextGrad's MultimodalLLMCall); see "
                "docs/images.md. For text, decode it first: data.decode('utf-8')"
            )
        self._value = _check_text(value, "Variable value")
        if role_description is None or not str(role_description).strip():
            raise ArgumentError(
                "Variable needs role_description=..., a short phrase saying what this "
                "text is (e.g. 'system prompt of the answering model'). Backward and "
                "optimizer prompts show it to the model."
            )
        self.role_description: str = _check_text(role_description, "role_description")
        if not isinstance(requires_grad, bool):
            raise ArgumentError(f"requires_grad must be True or False, got {requires_grad!r}")
        self.requires_grad: bool = requires_grad
        self.id: str = next_variable_id()
        self.name: str | None = name
        self._predecessors: tuple[Variable, ...] = ()
        self.grad_fn: Node | None = None
        self.gradients: list[Gradient] = []
        self.warnings: list[str] = []
        self.is_loss: bool = False
        self.score: float | None = None

    @classmethod
    def _from_op(
        cls,
        value: str,
        *,
        role_description: str,
        node: Node,
        is_loss: bool = False,
    ) -> Variable:
        """Create an operation's output; it requires grad when any input does."""
        out = cls(value, role_description=role_description)
        out._predecessors = node.inputs
        out.requires_grad = any(v.requires_grad for v in node.inputs)
        out.grad_fn = node
        out.is_loss = is_loss
        node.output = out
        return out

    @property
    def value(self) -> str:
        overrides = _overrides.get()
        if overrides is not None:
            return overrides.get(self, self._value)
        return self._value

    @value.setter
    def value(self, new: str) -> None:
        self._value = self.check_value(new)

    # TextGrad's accessors, so code ported from it runs unchanged
    def get_value(self) -> str:
        return self.value

    def set_value(self, value: str) -> None:
        self.value = value

    def get_role_description(self) -> str:
        return self.role_description

    def set_role_description(self, role_description: str) -> None:
        if not isinstance(role_description, str) or not role_description.strip():
            raise ArgumentError("role_description must be a non-empty str")
        self.role_description = role_description

    def get_gradient_text(self) -> str:
        """TextGrad's name for `.grad`: every critique received, as one text."""
        return self.grad

    def check_value(self, value: object) -> str:
        """The value this variable would hold for `value`, or a clear error. Subclasses
        holding structured text (tg.Demos) validate and canonicalize here."""
        return _check_text(value, "Variable value")

    @property
    def gradients(self) -> list[Gradient]:
        """The critiques received, in a deterministic order (a list, not TextGrad's set)."""
        return self._gradients

    @gradients.setter
    def gradients(self, new: list[Gradient]) -> None:
        if not isinstance(new, list):
            raise ArgumentError(
                f"{self.id}.gradients is a list of tg.Gradient (ordered, so runs are "
                f"reproducible), got {type(new).__name__}. To clear it (TextGrad's "
                "`x.gradients = set()`) write x.zero_grad() or optimizer.zero_grad()."
            )
        self._gradients = new

    @property
    def predecessors(self) -> tuple[Variable, ...]:
        """The inputs this variable was computed from, in call order."""
        return self._predecessors

    @property
    def grad(self) -> str:
        """All critiques received, as one readable text."""
        return "\n\n".join(g.text for g in self.gradients)

    def zero_grad(self) -> None:
        self.gradients.clear()

    def backward(
        self, engine: Engine | str | None = None, *, per_input: bool = False, fused: bool = False
    ) -> None:
        """Send critiques back to every upstream variable that requires grad.

        This variable's own value is the starting critique (a loss *is* a
        critique). Works in plain scripts and inside a running event loop.
        `fused=True`: one critic call per loss writes every parameter's
        critique at once (see docs/training.md, "Fused backward").
        """
        from textgraph._sync import run_sync

        run_sync(self.abackward(engine, per_input=per_input, fused=fused))

    async def abackward(
        self, engine: Engine | str | None = None, *, per_input: bool = False, fused: bool = False
    ) -> None:
        """Async form of `backward`: independent branches run concurrently."""
        from textgraph.autograd import backward

        await backward(self, engine=engine, per_input=per_input, fused=fused)

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        flag = ", requires_grad=True" if self.requires_grad else ""
        value = self.value
        text = value if len(value) <= 60 else value[:57] + "..."
        return f"Variable({text!r}, role={self.role_description!r}{flag}, id={self.id!r})"

    def _repr_html_(self) -> str:
        from html import escape

        grads = "".join(
            f"<li><b>{escape(g.source.role_description)}</b> via {escape(g.operation)}: "
            f"{escape(g.text)}</li>"
            for g in self.gradients
        )
        return (
            f"<div><b>{escape(self.role_description)}</b> "
            f"<code>{escape(self.id)}</code>{' (requires grad)' if self.requires_grad else ''}"
            f"<pre style='white-space:pre-wrap'>{escape(self.value)}</pre>"
            + (f"<ul>{grads}</ul>" if grads else "")
            + "</div>"
        )


def ensure_variable(obj: object, what: str) -> Variable:
    """Reject anything but a Variable with a message that says how to fix it."""
    if isinstance(obj, Variable):
        return obj
    hint = ""
    if isinstance(obj, str):
        hint = (
            f" Wrap the text: tg.Variable({obj[:30]!r}, role_description='...')"
            " (requires_grad=False for fixed inputs)."
        )
    raise ArgumentError(f"{what} must be a tg.Variable, got {type(obj).__name__}.{hint}")


def ensure_variables(objs: Iterable[object], what: str) -> tuple[Variable, ...]:
    if isinstance(objs, (str, Variable)) or not isinstance(objs, Iterable):
        raise ArgumentError(f"{what} must be a list of tg.Variable, got {type(objs).__name__}")
    objs = tuple(objs)
    if not objs:
        raise ArgumentError(f"{what} is empty: give at least one tg.Variable")
    return tuple(ensure_variable(o, f"{what}[{i}]") for i, o in enumerate(objs))
