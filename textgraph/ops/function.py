"""Python functions as differentiable ops.

`tg.function(fn, purpose=...)` (or `@tg.op`) wraps a function of strings:
Variable arguments are passed as their values, other arguments as they
are. Backward asks an LLM to turn the output's feedback into feedback for
each Variable input, told what the function does (`purpose`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from textgraph._sync import run_sync
from textgraph.engines.base import Engine
from textgraph.engines.context import check_engine
from textgraph.errors import ArgumentError
from textgraph.image import Image
from textgraph.ops.base import BackwardContext, Feedback, Node, Operation, llm_backward, shown
from textgraph.prompts import render_file
from textgraph.variable import Variable


class FunctionOp(Operation):
    """A Python function lifted into the graph."""

    def __init__(
        self,
        fn: Callable[..., Any],
        purpose: str,
        *,
        role_description: str | None = None,
        engine: Engine | str | None = None,
    ) -> None:
        if not callable(fn):
            raise ArgumentError(f"tg.function needs a callable, got {type(fn).__name__}")
        if not isinstance(purpose, str) or not purpose.strip():
            raise ArgumentError(
                f"tg.function({getattr(fn, '__name__', 'fn')}) needs purpose='...': one sentence "
                "saying what the function does, so backward can explain its effect to the LLM."
            )
        engine = check_engine(engine, "tg.function(engine)")
        self.fn = fn
        self.purpose = purpose.strip()
        self.name = getattr(fn, "__name__", "function")
        self.role_description = role_description or f"output of the function {self.name}"
        self.engine = engine
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    def __call__(self, *args: Any, **kwargs: Any) -> Variable:
        return run_sync(self.acall(*args, **kwargs))

    async def acall(self, *args: Any, **kwargs: Any) -> Variable:
        return await self._apply(args, kwargs, self.role_description)

    def _passed(self, variable: Variable) -> Any:
        """What `fn` receives for a Variable argument: its value (a tg.Image as itself:
        .data, .media_type; str() is its description)."""
        return variable if isinstance(variable, Image) else variable.value

    def _text(self, result: object) -> str:
        """The output Variable's value for what `fn` returned."""
        if not isinstance(result, str):
            raise ArgumentError(
                f"{self.name}() returned {type(result).__name__}; a tg.function must return a str "
                "(format lists or numbers into text yourself)."
            )
        return result

    async def _apply(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], role_description: str
    ) -> Variable:
        inputs: list[Variable] = []
        names: list[str] = []

        def unwrap(name: str, arg: Any) -> Any:
            if isinstance(arg, Variable):
                inputs.append(arg)
                names.append(name)
                return self._passed(arg)
            return arg

        plain_args = [unwrap(f"argument {i + 1}", a) for i, a in enumerate(args)]
        plain_kwargs = {k: unwrap(f"argument {k}", v) for k, v in kwargs.items()}
        if not inputs:
            raise ArgumentError(
                f"{self.name}() got no tg.Variable arguments; wrap at least one input in "
                "tg.Variable so the op has something to pass feedback to."
            )
        result = self.fn(*plain_args, **plain_kwargs)
        if inspect.isawaitable(result):
            result = await result
        node = Node(op=self, inputs=tuple(inputs), engine=self.engine, saved={"names": names})
        return Variable._from_op(self._text(result), role_description=role_description, node=node)

    async def backward(self, ctx: BackwardContext) -> list[Feedback]:
        return await llm_backward(ctx)

    def describe(self, node: Node, elide: Variable | None = None) -> str:
        inputs = "\n".join(
            f'<INPUT name="{name}" role="{v.role_description}">\n{shown(v, elide)}\n</INPUT>'
            for name, v in zip(node.saved["names"], node.inputs, strict=True)
        )
        return render_file(
            "context_function",
            purpose=self.purpose,
            function_name=self.name,
            inputs=inputs,
            output_role=node.output.role_description if node.output else "",
            output=shown(node.output, elide) if node.output else "",
        )

    def location_of(self, node: Node, variable: Variable) -> str:
        for name, v in zip(node.saved["names"], node.inputs, strict=True):
            if v is variable:
                return f"the function's {name}"
        return super().location_of(node, variable)


def function(
    fn: Callable[..., Any],
    *,
    purpose: str,
    role_description: str | None = None,
    engine: Engine | str | None = None,
) -> FunctionOp:
    """Wrap `fn` (of strings, returning a str) into an op over Variables."""
    return FunctionOp(fn, purpose, role_description=role_description, engine=engine)


def op(
    fn: Callable[..., Any] | None = None,
    *,
    purpose: str | None = None,
    role_description: str | None = None,
    engine: Engine | str | None = None,
) -> Any:
    """Decorator form: `@tg.op` (purpose from the docstring) or `@tg.op(purpose=...)`."""

    def wrap(f: Callable[..., Any]) -> FunctionOp:
        text = purpose or inspect.getdoc(f) or ""
        return FunctionOp(f, text, role_description=role_description, engine=engine)

    return wrap(fn) if fn is not None else wrap
