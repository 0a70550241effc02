"""Loss: the base of every loss op.

A loss's output text *is* a critique of what it evaluated, so its backward
passes that critique straight to the evaluated variables, with no LLM call
(TextGrad spends one per example). A loss at its perfect score sends
nothing. Subclasses compute the output in `acall` with `self.output(...)`
and say which inputs receive the critique (`critiqued`).
"""

from __future__ import annotations

from textgraph.ops.base import BackwardContext, Feedback, Node, Operation
from textgraph.variable import Variable


class Loss(Operation):
    """Owns the loss output, its score and the pass-through backward."""

    name = "loss"
    backward_calls_llm = False

    def output(
        self, text: str, *, role_description: str, node: Node, score: float | None = None
    ) -> Variable:
        """The loss Variable: its text is the critique; `score` is what metrics read."""
        loss = Variable._from_op(text, role_description=role_description, node=node, is_loss=True)
        loss.score = score
        node.saved.setdefault("score", score)
        return loss

    def is_perfect(self, node: Node) -> bool:
        """True when nothing is left to criticize: backward sends no feedback."""
        return False

    def critiqued(self, ctx: BackwardContext) -> list[Variable]:
        """The targets that receive the critique as it is (default: all of them)."""
        return list(ctx.targets)

    async def backward(self, ctx: BackwardContext) -> list[Feedback]:
        if self.is_perfect(ctx.node):
            return []
        critique = "\n\n".join(ctx.feedback)
        return [Feedback(t, critique) for t in self.critiqued(ctx)]
