"""Optimizers: one contract (`Optimizer.propose`), one file per family."""

from textgraph.candidate import Candidate
from textgraph.optim.base import CandidateOutcome, Optimizer
from textgraph.optim.context import StepContext
from textgraph.optim.demos import BootstrapFewShot, RandomSearchDemos
from textgraph.optim.mipro import MIPRO
from textgraph.optim.pareto_tgd import ParetoTGD
from textgraph.optim.tgd import TGD, Update

__all__ = [
    "MIPRO",
    "TGD",
    "BootstrapFewShot",
    "Candidate",
    "CandidateOutcome",
    "Optimizer",
    "ParetoTGD",
    "RandomSearchDemos",
    "StepContext",
    "Update",
]
