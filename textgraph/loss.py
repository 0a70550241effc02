"""Textual losses: an evaluation whose text is the critique backward starts from.

An evaluation of some text *is* feedback on that text, so a loss passes its
critique straight to the evaluated variables, with no extra LLM call (TextGrad
spends one per example turning the evaluation into feedback). Only an
optimizable evaluation instruction gets an LLM-written critique.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from textgraph._sync import run_sync
from textgraph.engines.base import ChatRequest, Engine, call_engine
from textgraph.engines.context import check_engine, resolve_engine
from textgraph.errors import ArgumentError
from textgraph.eval.score import as_score
from textgraph.ops.base import BackwardContext, Feedback, Node, Operation, llm_backward, shown
from textgraph.prompts import fence, render_file
from textgraph.variable import Variable, ensure_variable, ensure_variables


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


class _Evaluation(Operation):
    """An LLM judges one or more fields against an instruction."""

    name = "evaluation"
    calls_llm = True
    backward_calls_llm = False  # the critique passes straight to the evaluated text

    def __init__(self, instruction: str | Variable, engine: Engine | None = None) -> None:
        check_engine(engine, f"{type(self).__name__}(engine)")
        self.instruction = _instruction_variable(instruction)
        self.engine = engine

    async def _evaluate(self, fields: tuple[Variable, ...], roles: list[str]) -> Variable:
        engine = resolve_engine(self.engine, what=f"{type(self).__name__}")
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
        role = f"evaluation of the {what}"
        return Variable._from_op(response.text, role_description=role, node=node, is_loss=True)

    async def backward(self, ctx: BackwardContext) -> list[Feedback]:
        critique = "\n\n".join(ctx.feedback)
        direct = [Feedback(t, critique) for t in ctx.targets if t is not ctx.node.inputs[0]]
        instruction = tuple(t for t in ctx.targets if t is ctx.node.inputs[0])
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
        engine: Engine | None = None,
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


Metric = Callable[[str, Any], float]


class MetricLoss(Operation):
    """A Python metric decides; the LLM only explains failures.

    `MetricLoss(metric, engine=)(prediction, target)`: `metric(prediction.value,
    target_value)` returns a number; at or above `perfect` no LLM call is
    made and no gradient flows. Otherwise the LLM explains the failure and
    that explanation is the critique passed to the prediction.
    """

    name = "metric_loss"
    calls_llm = True
    backward_calls_llm = False

    def __init__(self, metric: Metric, engine: Engine | None = None, *, perfect: float = 1.0):
        if not callable(metric):
            raise ArgumentError(f"metric must be callable(prediction, target), got {metric!r:.40}")
        check_engine(engine, "MetricLoss(engine)")
        self.metric = metric
        self.engine = engine
        self.perfect = float(perfect)
        self.metric_name = getattr(metric, "__name__", type(metric).__name__)

    def __call__(self, prediction: Variable, target: Variable | Any) -> Variable:
        return run_sync(self.acall(prediction, target))

    async def acall(self, prediction: Variable, target: Variable | Any) -> Variable:
        prediction = ensure_variable(prediction, "MetricLoss prediction")
        target_value = target.value if isinstance(target, Variable) else target
        score = self.score(prediction.value, target_value)
        target_text = target_value if isinstance(target_value, str) else repr(target_value)
        target_role = target.role_description if isinstance(target, Variable) else "target"
        node = Node(
            op=self,
            inputs=(prediction,),
            saved={"score": score, "target": target_text, "target_role": target_role},
        )
        if score >= self.perfect:
            text = (
                f"Score {score:g} (perfect) on {self.metric_name}: the "
                f"{prediction.role_description} passed the check."
            )
        else:
            engine = resolve_engine(self.engine, what="MetricLoss explanation of a failure")
            node.engine = engine
            origin = prediction.grad_fn
            context = (
                "How the prediction was produced:\n" + origin.op.describe(origin)
                if origin is not None
                else "(the prediction was given directly, not computed in the graph)"
            )
            user = render_file(
                "metric_explain_user",
                context=context,
                score=f"{score:g}",
                perfect=f"{self.perfect:g}",
                prediction_role=prediction.role_description,
                prediction=fence(prediction.value),
                target_role=target_role,
                target=fence(target_text),
            )
            request = ChatRequest.from_prompts(
                render_file("metric_explain_system"),
                user,
                purpose="loss",
                variable_ids=[prediction.id],
            )
            response = await call_engine(engine, request)
            text = f"Score {score:g} of {self.perfect:g} on {self.metric_name}. {response.text}"
        loss = Variable._from_op(
            text,
            role_description=f"{self.metric_name} evaluation of the {prediction.role_description}",
            node=node,
            is_loss=True,
        )
        loss.score = score
        return loss

    def score(self, prediction: str, target: Any) -> float:
        return as_score(self.metric(prediction, target), f"metric {self.metric_name}")

    async def backward(self, ctx: BackwardContext) -> list[Feedback]:
        if ctx.node.saved["score"] >= self.perfect:
            return []
        critique = "\n\n".join(ctx.feedback)
        return [Feedback(t, critique) for t in ctx.targets]

    def describe(self, node: Node, elide: Variable | None = None) -> str:
        (prediction,) = node.inputs
        return (
            f"The metric {self.metric_name} compared a prediction with its target "
            f"(score {node.saved['score']:g}).\n"
            f'<PREDICTION role="{prediction.role_description}">\n{shown(prediction, elide)}\n'
            f'</PREDICTION>\n<TARGET role="{node.saved["target_role"]}">\n'
            f"{fence(node.saved['target'])}\n</TARGET>"
        )

    def location_of(self, node: Node, variable: Variable) -> str:
        return "the prediction"
