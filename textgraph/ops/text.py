"""Text operations without an LLM call: concatenation and sum.

Backward passes the output's feedback to each distinct input exactly once
(TextGrad's Sum adds it twice). A sum of losses is itself a loss; each loss
input then carries its own critique, so the sum passes down only feedback
it received from further downstream. A sum that is the objective but whose
inputs are not losses (per-example judgements from a `tg.function`) gives
each input its own text as its part of the objective, never the whole sum:
a correct example is not told about the others' failures.
"""

from __future__ import annotations

from collections.abc import Iterable

from textgraph._sync import run_sync
from textgraph.errors import ArgumentError
from textgraph.ops.base import BackwardContext, Feedback, Node, Operation, refuse_images, shown
from textgraph.variable import Variable, ensure_variables


class Concat(Operation):
    """`Concat(separator)(variables) -> Variable` joining the values."""

    name = "concat"
    backward_calls_llm = False

    def __init__(self, separator: str = "\n\n", *, role_description: str | None = None) -> None:
        if not isinstance(separator, str):
            raise ArgumentError(f"separator must be a str, got {type(separator).__name__}")
        self.separator = separator
        self.role_description = role_description

    def __call__(self, variables: Iterable[Variable]) -> Variable:
        return run_sync(self.acall(variables))

    async def acall(self, variables: Iterable[Variable]) -> Variable:
        return self.forward(variables)

    def forward(self, variables: Iterable[Variable]) -> Variable:
        inputs = ensure_variables(variables, f"{type(self).__name__} input")
        refuse_images(inputs, f"tg.{type(self).__name__.lower()}")
        role = self.role_description or self._default_role(inputs)
        node = Node(op=self, inputs=inputs)
        return Variable._from_op(
            self.separator.join(v.value for v in inputs),
            role_description=role,
            node=node,
            is_loss=all(v.is_loss for v in inputs),
        )

    @staticmethod
    def _default_role(inputs: tuple[Variable, ...]) -> str:
        roles = list(dict.fromkeys(v.role_description for v in inputs))
        if len(roles) == 1:
            return f"concatenation of {len(inputs)} x {roles[0]}"
        return "concatenation of " + "; ".join(roles)

    async def backward(self, ctx: BackwardContext) -> list[Feedback]:
        texts = [g.text for g in ctx.received] if ctx.output.is_loss else ctx.feedback
        if not texts:
            return []
        text = "\n\n".join(texts)
        return [Feedback(target, text) for target in ctx.targets]

    def describe(self, node: Node, elide: Variable | None = None) -> str:
        parts = "\n".join(
            f'<INPUT role="{v.role_description}">\n{shown(v, elide)}\n</INPUT>' for v in node.inputs
        )
        return f"The following texts were concatenated into one:\n{parts}"

    def location_of(self, node: Node, variable: Variable) -> str:
        return f"one of the concatenated texts (role '{variable.role_description}')"


class Sum(Concat):
    """Aggregate several variables (usually losses) into one."""

    name = "sum"

    async def backward(self, ctx: BackwardContext) -> list[Feedback]:
        if not ctx.own_objective:  # an intermediate value: its feedback is about the whole sum
            return await super().backward(ctx)
        downstream = [g.text for g in ctx.received]
        out = []
        for target in ctx.targets:
            # A loss input already carries its own critique; any other input's part of the
            # objective is its own text.
            texts = downstream if target.is_loss else [target.value, *downstream]
            if texts:
                out.append(Feedback(target, "\n\n".join(texts)))
        return out

    @staticmethod
    def _default_role(inputs: tuple[Variable, ...]) -> str:
        roles = list(dict.fromkeys(v.role_description for v in inputs))
        return f"sum of {len(inputs)} " + ("; ".join(roles) if len(roles) > 1 else roles[0])


def concat(variables: Iterable[Variable], separator: str = "\n\n") -> Variable:
    return Concat(separator).forward(variables)


def sum(variables: Iterable[Variable]) -> Variable:
    return Sum().forward(variables)
