"""Optimizers: one contract (`Optimizer.propose`), one file per family."""

from textgraph.candidate import Candidate
from textgraph.optim.base import CandidateOutcome, Optimizer
from textgraph.optim.context import StepContext
from textgraph.optim.demos import BootstrapFewShot, RandomSearchDemos
from textgraph.optim.tgd import TGD, Update

__all__ = [
    "TGD",
    "BootstrapFewShot",
    "Candidate",
    "CandidateOutcome",
    "Optimizer",
    "RandomSearchDemos",
    "StepContext",
    "Update",
]
