"""Optimizers: one contract (`Optimizer.propose`), one file per family."""

from textgraph.candidate import Candidate
from textgraph.optim.ape import APE
from textgraph.optim.base import CandidateOutcome, Optimizer
from textgraph.optim.compress import Compress
from textgraph.optim.context import StepContext
from textgraph.optim.demos import BootstrapFewShot, RandomSearchDemos
from textgraph.optim.mipro import MIPRO
from textgraph.optim.opro import OPRO
from textgraph.optim.pareto_tgd import ParetoTGD
from textgraph.optim.tgd import TGD, Update

__all__ = [
    "APE",
    "MIPRO",
    "OPRO",
    "TGD",
    "BootstrapFewShot",
    "Candidate",
    "CandidateOutcome",
    "Compress",
    "Optimizer",
    "ParetoTGD",
    "RandomSearchDemos",
    "StepContext",
    "Update",
]
