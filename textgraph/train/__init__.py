"""The training loop: one loop for every optimizer (see trainer.py)."""

from textgraph.train.callbacks import Callback
from textgraph.train.trainer import FitResult, Trainer

__all__ = ["Callback", "FitResult", "Trainer"]
