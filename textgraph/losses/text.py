"""LLM-judged losses: TextLoss and MultiFieldEvaluation.

An evaluation of some text *is* feedback on that text, so a loss passes its
critique straight to the evaluated variables, with no extra LLM call (TextGrad
spends one per example turning the evaluation into feedback). Only an
optimizable evaluation instruction gets an LLM-written critique.
"""

from __future__ import annotations

from collections.abc import Sequence

from textgraph._sync import run_sync
from textgraph.engines.base import ChatRequest, Engine, call_engine
from textgraph.engines.context import check_engine, resolve_engine
from textgraph.errors import ArgumentError
from textgraph.losses.base import Loss
from textgraph.ops.base import (
    BackwardContext,
    Feedback,
    Node,
    llm_backward,
    refuse_images,
    shown,
)
from textgraph.prompts import fence, render_file
from textgraph.variable import Variable, ensure_variable, ensure_variables

# The judge reads text: an image field would reach it only as its description.
JUDGE_SEES_TEXT = (
    "The judge would see only that line, not the image. Evaluate what was computed from the "
    "image (the answer of the tg.LLMCall that read it); to have a model judge against the image "
    "itself, make the judgement a tg.FormattedLLMCall with the image as a field"
)


def _instruction_variable(instruction: str | Variable) -> Variable:
    if isinstance(instruction, Variable):
        return instruction
    if isinstance(instruction, str) and instruction.strip():
        return Variable(instruction, role_description="evaluation instruction")
    raise ArgumentError(
        "the evaluation instruction must be a non-empty str or a tg.Variable, "
        f"got {type(instruction).__name__} {instruction!r:.40}"
    )


def _field_block(roles: Sequence[str], fields: Sequence[Variable], elide: Variable | None) -> str:
    return "\n".join(
        render_file("context_field", name=f"field {i}", role=role, value=shown(v, elide))
        for i, (role, v) in enumerate(zip(roles, fields, strict=True), 1)
    )


class _Evaluation(Loss):
    """An LLM judges one or more fields against an instruction."""

    name = "evaluation"
    calls_llm = True

    def __init__(self, instruction: str | Variable, engine: Engine | str | None = None) -> None:
        engine = check_engine(engine, f"{type(self).__name__}(engine)")
        self.instruction = _instruction_variable(instruction)
        self.engine = engine

    async def _evaluate(self, fields: tuple[Variable, ...], roles: list[str]) -> Variable:
        refuse_images(fields, f"tg.{type(self).__name__}", JUDGE_SEES_TEXT)
        engine = resolve_engine(self.engine, what=f"{type(self).__name__}", role="backward_engine")
        system = render_file("loss_system", instruction=fence(self.instruction.value))
        what = roles[0] if len(roles) == 1 else "fields"
        user = render_file("loss_user", role=what, fields=_field_block(roles, fields, None))
        request = ChatRequest.from_prompts(
            system,
            user,
            purpose="loss",
            variable_ids=[v.id for v in fields],
        )
        response = await call_engine(engine, request)
        node = Node(
            op=self, inputs=(self.instruction, *fields), engine=engine, saved={"roles": roles}
        )
        return self.output(response.text, role_description=f"evaluation of the {what}", node=node)

    def critiqued(self, ctx: BackwardContext) -> list[Variable]:
        return [t for t in ctx.targets if t is not ctx.node.inputs[0]]

    async def backward(self, ctx: BackwardContext) -> list[Feedback]:
        # An optimizable instruction gets an LLM-written critique; the fields get the text.
        instruction = tuple(t for t in ctx.targets if t is ctx.node.inputs[0])
        direct = await super().backward(ctx)
        return direct + (await llm_backward(ctx, instruction) if instruction else [])

    def describe(self, node: Node, elide: Variable | None = None) -> str:
        instruction, *fields = node.inputs
        return render_file(
            "context_evaluation",
            instruction_role=instruction.role_description,
            instruction=shown(instruction, elide),
            fields=_field_block(node.saved["roles"], fields, elide),
            output=shown(node.output, elide) if node.output else "",
        )

    def location_of(self, node: Node, variable: Variable) -> str:
        if variable is node.inputs[0]:
            return "the evaluation instruction"
        for i, v in enumerate(node.inputs[1:], 1):
            if v is variable:
                return f"field {i} of the evaluated text"
        return super().location_of(node, variable)


class TextLoss(_Evaluation):
    """`TextLoss(instruction, engine=)(variable) -> loss Variable` (an LLM critique)."""

    name = "text_loss"

    def __call__(self, variable: Variable) -> Variable:
        return run_sync(self.acall(variable))

    async def acall(self, variable: Variable) -> Variable:
        variable = ensure_variable(variable, "TextLoss input")
        return await self._evaluate((variable,), [variable.role_description])


class MultiFieldEvaluation(_Evaluation):
    """Judge several fields together (question, answer, reference...)."""

    name = "multi_field_evaluation"

    def __init__(
        self,
        instruction: str | Variable,
        role_descriptions: Sequence[str],
        engine: Engine | str | None = None,
    ) -> None:
        super().__init__(instruction, engine)
        if isinstance(role_descriptions, str) or not all(
            isinstance(r, str) and r.strip() for r in role_descriptions
        ):
            raise ArgumentError("role_descriptions must be a list of non-empty str, one per field")
        self.role_descriptions = list(role_descriptions)

    def __call__(self, variables: Sequence[Variable]) -> Variable:
        return run_sync(self.acall(variables))

    async def acall(self, variables: Sequence[Variable]) -> Variable:
        fields = ensure_variables(variables, "MultiFieldEvaluation input")
        if len(fields) != len(self.role_descriptions):
            raise ArgumentError(
                f"MultiFieldEvaluation got {len(fields)} variables for "
                f"{len(self.role_descriptions)} role_descriptions; give one variable per role."
            )
        return await self._evaluate(fields, self.role_descriptions)
