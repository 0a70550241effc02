"""MetricLoss: a Python metric decides; the LLM only explains failures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textgraph._sync import run_sync
from textgraph.engines.base import ChatRequest, Engine, call_engine
from textgraph.engines.context import check_engine, resolve_engine
from textgraph.errors import ArgumentError
from textgraph.eval.score import as_score, to_score
from textgraph.losses.base import Loss
from textgraph.ops.base import Node, refuse_images, shown
from textgraph.prompts import fence, render_file
from textgraph.variable import Variable, ensure_variable

Metric = Callable[[str, Any], float]


class MetricLoss(Loss):
    """A Python metric decides; the LLM only explains failures.

    `MetricLoss(metric, engine=)(prediction, target)`: `metric(prediction.value,
    target_value)` returns a number, a bool or a tg.Score; at or above
    `perfect` no LLM call is made and no gradient flows. Otherwise, when the
    metric returned `tg.Score(value, feedback=...)`, that feedback is the
    critique (no LLM call: the metric already said why, as GEPA's feedback
    functions do); else the LLM explains the failure and that explanation is
    the critique passed to the prediction.
    """

    name = "metric_loss"
    calls_llm = True

    def __init__(self, metric: Metric, engine: Engine | str | None = None, *, perfect: float = 1.0):
        if not callable(metric):
            raise ArgumentError(f"metric must be callable(prediction, target), got {metric!r:.40}")
        engine = check_engine(engine, "MetricLoss(engine)")
        self.metric = metric
        self.engine = engine
        self.perfect = float(perfect)
        self.metric_name = getattr(metric, "__name__", type(metric).__name__)

    def __call__(self, prediction: Variable, target: Variable | Any) -> Variable:
        return run_sync(self.acall(prediction, target))

    async def acall(self, prediction: Variable, target: Variable | Any) -> Variable:
        prediction = ensure_variable(prediction, "MetricLoss prediction")
        refuse_images(
            (prediction, *([target] if isinstance(target, Variable) else [])),
            "tg.MetricLoss",
            "The metric would score that line, not the image; score what was computed from it",
        )
        target_value = target.value if isinstance(target, Variable) else target
        scored = to_score(self.metric(prediction.value, target_value), f"metric {self.metric_name}")
        score = scored.value
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
        elif scored.feedback and scored.feedback.strip():
            node.saved["feedback"] = scored.feedback
            text = f"Score {score:g} of {self.perfect:g} on {self.metric_name}. {scored.feedback}"
        else:
            engine = resolve_engine(
                self.engine, what="MetricLoss explanation of a failure", role="backward_engine"
            )
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
        return self.output(
            text,
            role_description=f"{self.metric_name} evaluation of the {prediction.role_description}",
            node=node,
            score=score,
        )

    def score(self, prediction: str, target: Any) -> float:
        return as_score(self.metric(prediction, target), f"metric {self.metric_name}")

    def is_perfect(self, node: Node) -> bool:
        return node.saved["score"] >= self.perfect

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


def example_metric_loss(
    metric: Callable[[str, Any], Any], engine: Engine | str | None = None, *, perfect: float = 1.0
) -> Callable[[Variable, Any], Any]:
    """A Trainer loss_fn from a Trainer metric(prediction_text, example): the metric's
    tg.Score feedback is the critique when it gives one, else the LLM explains the failure.
    `Trainer(loss_fn=tg.example_metric_loss(metric))`."""
    if not callable(metric):
        raise ArgumentError(f"metric must be callable(prediction, example), got {metric!r:.40}")
    loss = MetricLoss(metric, engine, perfect=perfect)

    async def loss_fn(output: Variable, example: Any) -> Variable:
        return await loss.acall(output, example)

    loss_fn.__name__ = f"example_metric_loss({loss.metric_name})"
    return loss_fn
