"""The training loop: one loop for every optimizer (see trainer.py)."""

from textgraph.train.trainer import FitResult, Trainer

__all__ = ["FitResult", "Trainer"]
