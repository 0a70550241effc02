"""Evaluation: the Evaluator and its results, scores, gates and the Pareto front."""

from textgraph.eval.evaluator import FATAL_ERRORS, Evaluator, evaluate
from textgraph.eval.gate import GateDecision, decide
from textgraph.eval.pareto import (
    Objective,
    ParetoEntry,
    pareto_front,
    resolve_objectives,
    select_entry,
)
from textgraph.eval.result import EvalResult, ExampleError, ExampleOutcome, Usage
from textgraph.eval.score import Score, as_score, to_score
from textgraph.eval.stats import PairedTest, mean_ci, paired_test

__all__ = [
    "FATAL_ERRORS",
    "EvalResult",
    "Evaluator",
    "ExampleError",
    "ExampleOutcome",
    "GateDecision",
    "Objective",
    "PairedTest",
    "ParetoEntry",
    "Score",
    "Usage",
    "as_score",
    "decide",
    "evaluate",
    "mean_ci",
    "paired_test",
    "pareto_front",
    "resolve_objectives",
    "select_entry",
    "to_score",
]
