"""tg.Loss: a new loss is a few lines; its text passes back as the critique."""

from __future__ import annotations

import textgraph as tg
from textgraph.ops.base import Node


class TooLong(tg.Loss):
    """No LLM: a length check whose message is the critique."""

    name = "too_long"

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def __call__(self, text: tg.Variable) -> tg.Variable:
        words = len(text.value.split())
        node = Node(op=self, inputs=(text,), saved={"words": words})
        message = f"{words} words; keep it under {self.limit}."
        return self.output(message, role_description="length check", node=node, score=words)

    def is_perfect(self, node: Node) -> bool:
        return node.saved["words"] <= self.limit


def test_a_custom_loss_passes_its_text_back_and_stays_quiet_when_perfect():
    prompt = tg.Variable("one two three four", role_description="prompt", requires_grad=True)
    loss = TooLong(2)(prompt)
    assert loss.is_loss and loss.score == 4
    loss.backward()
    assert prompt.grad == "4 words; keep it under 2."
    prompt.zero_grad()
    TooLong(10)(prompt).backward()
    assert prompt.gradients == []


def test_the_built_in_losses_share_the_base():
    for cls in (tg.TextLoss, tg.MultiFieldEvaluation, tg.MetricLoss, tg.CodeTestLoss):
        assert issubclass(cls, tg.Loss)
