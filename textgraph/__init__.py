"""textgraph: automatic differentiation over text.

Text variables and LLM calls form a DAG; a loss critiques the output;
`loss.backward()` carries critiques to every upstream variable that
requires a gradient; an optimizer rewrites those variables.
"""

import logging

from textgraph import autograd, compression, engines, integrations, optim, report
from textgraph.artifact import export_run, load_prompts, save_prompts
from textgraph.candidate import Candidate
from textgraph.compression import compress
from textgraph.demos import Demo, Demos
from textgraph.engines.context import (
    configure,
    reset_configuration,
    set_backward_engine,
    use_engine,
)
from textgraph.engines.registry import get_engine
from textgraph.engines.usage import Budget
from textgraph.errors import (
    ArgumentError,
    AuthenticationError,
    BudgetExceeded,
    CacheError,
    CallbackError,
    ConductorError,
    ConfigurationError,
    ContentFiltered,
    EngineError,
    EngineTimeout,
    EvaluationError,
    GraphError,
    ImageError,
    ImagesNotSupported,
    ImagesRefused,
    MalformedResponse,
    ParseError,
    ProviderError,
    RateLimitError,
    ReplayMiss,
    StateDictError,
    StructuredOutputError,
    TextgraphError,
    TruncatedOutput,
    UnknownModelError,
)
from textgraph.eval import EvalResult, Evaluator, Objective, Score, evaluate
from textgraph.graph import ancestry, graph, to_dot, to_json, to_mermaid
from textgraph.image import Image
from textgraph.losses import (
    CodeTestLoss,
    FusedTextLoss,
    Loss,
    MetricLoss,
    MultiFieldEvaluation,
    TextLoss,
    example_metric_loss,
)
from textgraph.module import Module
from textgraph.ops import (
    Compress,
    Concat,
    FormattedLLMCall,
    FunctionOp,
    LLMCall,
    Operation,
    Retrieve,
    Sum,
    concat,
    function,
    op,
    retrieved,
    sum,
)
from textgraph.ops.meta import MetaPrompt
from textgraph.ops.string_based import StringBasedFunction
from textgraph.ops.structured import StructuredLLMCall, StructuredVariable
from textgraph.optim import TGD, Update
from textgraph.report.terminal import show
from textgraph.retrieval import BM25Index, DenseIndex, Hit, Index, Passage
from textgraph.runs import RunDir, RunError
from textgraph.train import Callback, FitResult, Trainer
from textgraph.variable import Gradient, Variable

__version__ = "0.1.0"

# TextGrad's names, so code ported from it runs unchanged (docs/coming-from-textgrad.md)
BlackboxLLM = LLMCall
TextualGradientDescent = TGD


def __getattr__(name: str) -> object:
    """A TextGrad name textgraph spells differently: an AttributeError saying what to write."""
    from textgraph._textgrad import missing_name

    raise missing_name(__name__, name)


# A library never configures logging for the application; users opt in.
logging.getLogger("textgraph").addHandler(logging.NullHandler())

__all__ = [
    "TGD",
    "ArgumentError",
    "AuthenticationError",
    "BM25Index",
    "BlackboxLLM",
    "Budget",
    "BudgetExceeded",
    "CacheError",
    "Callback",
    "CallbackError",
    "Candidate",
    "CodeTestLoss",
    "Compress",
    "Concat",
    "ConductorError",
    "ConfigurationError",
    "ContentFiltered",
    "Demo",
    "Demos",
    "DenseIndex",
    "EngineError",
    "EngineTimeout",
    "EvalResult",
    "EvaluationError",
    "Evaluator",
    "FitResult",
    "FormattedLLMCall",
    "FunctionOp",
    "FusedTextLoss",
    "Gradient",
    "GraphError",
    "Hit",
    "Image",
    "ImageError",
    "ImagesNotSupported",
    "ImagesRefused",
    "Index",
    "LLMCall",
    "Loss",
    "MalformedResponse",
    "MetaPrompt",
    "MetricLoss",
    "Module",
    "MultiFieldEvaluation",
    "Objective",
    "Operation",
    "ParseError",
    "Passage",
    "ProviderError",
    "RateLimitError",
    "ReplayMiss",
    "Retrieve",
    "RunDir",
    "RunError",
    "Score",
    "StateDictError",
    "StringBasedFunction",
    "StructuredLLMCall",
    "StructuredOutputError",
    "StructuredVariable",
    "Sum",
    "TextLoss",
    "TextgraphError",
    "TextualGradientDescent",
    "Trainer",
    "TruncatedOutput",
    "UnknownModelError",
    "Update",
    "Variable",
    "ancestry",
    "autograd",
    "compress",
    "compression",
    "concat",
    "configure",
    "engines",
    "evaluate",
    "example_metric_loss",
    "export_run",
    "function",
    "get_engine",
    "graph",
    "integrations",
    "load_prompts",
    "op",
    "optim",
    "report",
    "reset_configuration",
    "retrieved",
    "save_prompts",
    "set_backward_engine",
    "show",
    "sum",
    "to_dot",
    "to_json",
    "to_mermaid",
    "use_engine",
]
