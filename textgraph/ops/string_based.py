"""TextGrad's StringBasedFunction, for code ported from it.

`tg.StringBasedFunction(fn, function_purpose)` is `tg.function` with
TextGrad's calling convention: it is called with `inputs={name: Variable}`
(and optionally `response_role_description=`), `fn` receives the Variables
themselves (so `prediction.value` in a TextGrad judge works), and a number
it returns becomes its text ("1"), so `int(output.value)` reads it back.
Backward is tg.function's: the LLM is told the function's purpose.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from textgraph._sync import run_sync
from textgraph.engines.base import Engine
from textgraph.errors import ArgumentError
from textgraph.ops.function import FunctionOp
from textgraph.variable import Variable, ensure_variable


class StringBasedFunction(FunctionOp):
    """`StringBasedFunction(fn, function_purpose)(inputs={...}) -> Variable`."""

    def __init__(
        self, fn: Callable[..., Any], function_purpose: str, *, engine: Engine | str | None = None
    ) -> None:
        super().__init__(fn, function_purpose, engine=engine)
        self.role_description = f"output of the string-based function with purpose: {self.purpose}"

    def __call__(  # type: ignore[override]
        self,
        inputs: Mapping[str, Variable] | None = None,
        response_role_description: str | None = None,
    ) -> Variable:
        return run_sync(self.acall(inputs, response_role_description))

    async def acall(  # type: ignore[override]
        self,
        inputs: Mapping[str, Variable] | None = None,
        response_role_description: str | None = None,
    ) -> Variable:
        if not isinstance(inputs, Mapping) or not inputs:
            raise ArgumentError(
                f"StringBasedFunction({self.name}) is called with inputs={{name: tg.Variable}}, "
                f"the names being {self.name}'s parameters, got {type(inputs).__name__}. "
                "For a function of plain strings called with positional Variables, use "
                "tg.function(fn, purpose=...)"
            )
        checked = {}
        for name, value in inputs.items():
            if not isinstance(name, str):
                raise ArgumentError(f"inputs= keys are parameter names (str), got {name!r}")
            checked[name] = ensure_variable(value, f"inputs[{name!r}]")
        role = self.role_description
        if response_role_description is not None:
            if not isinstance(response_role_description, str) or not (
                response_role_description.strip()
            ):
                raise ArgumentError("response_role_description= must be a non-empty str")
            role = response_role_description
        return await self._apply((), checked, role)

    def _passed(self, variable: Variable) -> Any:
        return variable  # TextGrad hands the function its Variables

    def _text(self, result: object) -> str:
        if isinstance(result, bool) or not isinstance(result, (str, int, float)):
            raise ArgumentError(
                f"{self.name}() returned {type(result).__name__} {result!r:.40}; a "
                "StringBasedFunction returns a str or a number (return int(ok) for a "
                "verdict, so int(output.value) reads it back)"
            )
        return result if isinstance(result, str) else str(result)
