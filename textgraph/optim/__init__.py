"""Textual optimizers."""

from textgraph.optim.tgd import TGD, Update

__all__ = ["TGD", "Update"]
