"""FusedTextLoss: the loss call also writes every upstream parameter's critique.

With fused backward (`loss.backward(fused=True)`, `Trainer(backward="fused")`)
the evaluation and the parameter critiques then cost one dependent call
instead of two: the step's critical path is forward + 1 + optimizer. The
critiques are kept on the loss's node and reach the parameters only when
backward runs, as with any loss. A reply that stays malformed after one repair
turn falls back to a plain TextLoss evaluation (recorded in the loss's
`.warnings`), and fused backward then makes its own critic call for it.
Per-op backward ignores the prewritten critiques and passes the evaluation
down the graph as TextLoss does.
"""

from __future__ import annotations

from textgraph._sync import run_sync
from textgraph.engines.context import resolve_engine
from textgraph.fused import DEFAULT_LIMIT, fused_loss_request, parameter_keys
from textgraph.losses.text import TextLoss
from textgraph.ops.base import Node
from textgraph.structured import call_json
from textgraph.variable import Variable, ensure_variable


class FusedTextLoss(TextLoss):
    """`FusedTextLoss(instruction, engine=)(variable)`: TextLoss plus parameter critiques."""

    name = "fused_text_loss"

    def __call__(self, variable: Variable, *, limit: int = DEFAULT_LIMIT) -> Variable:
        return run_sync(self.acall(variable, limit=limit))

    async def acall(self, variable: Variable, *, limit: int = DEFAULT_LIMIT) -> Variable:
        variable = ensure_variable(variable, "FusedTextLoss input")
        params = parameter_keys(variable)
        if not params:
            return await super().acall(variable)
        engine = resolve_engine(self.engine, what="FusedTextLoss")
        request = fused_loss_request(variable, params, self.instruction.value, limit)
        reply = await call_json(engine, request, ["evaluation", *params])
        if not reply.ok:
            loss = await super().acall(variable)
            loss.warnings.append(
                f"the fused evaluation reply stayed malformed after one repair ({reply.error}); "
                "a plain evaluation ran instead and backward writes the critiques itself"
            )
            return loss
        roles = [variable.role_description]
        node = Node(
            op=self,
            inputs=(self.instruction, variable),
            engine=engine,
            saved={
                "roles": roles,
                "parameter_feedback": {p: reply.value[k] for k, p in params.items()},
                "conversation": reply.conversation,
            },
        )
        return self.output(
            reply.value["evaluation"], role_description=f"evaluation of the {roles[0]}", node=node
        )
