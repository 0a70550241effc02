"""Losses: one base (textgraph.losses.base.Loss), one file per kind."""

from textgraph.losses.base import Loss
from textgraph.losses.code import CodeTestLoss
from textgraph.losses.fused import FusedTextLoss
from textgraph.losses.metric import MetricLoss, example_metric_loss
from textgraph.losses.text import MultiFieldEvaluation, TextLoss

__all__ = [
    "CodeTestLoss",
    "FusedTextLoss",
    "Loss",
    "MetricLoss",
    "MultiFieldEvaluation",
    "TextLoss",
    "example_metric_loss",
]
