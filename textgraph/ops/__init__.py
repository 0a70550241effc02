"""Differentiable operations over text variables."""

from textgraph.ops.base import BackwardContext, Feedback, Node, Operation
from textgraph.ops.compress import Compress
from textgraph.ops.function import FunctionOp, function, op
from textgraph.ops.llm import FormattedLLMCall, LLMCall
from textgraph.ops.retrieve import Retrieve, retrieved
from textgraph.ops.structured import StructuredLLMCall, StructuredVariable
from textgraph.ops.text import Concat, Sum, concat, sum

__all__ = [
    "BackwardContext",
    "Compress",
    "Concat",
    "Feedback",
    "FormattedLLMCall",
    "FunctionOp",
    "LLMCall",
    "Node",
    "Operation",
    "Retrieve",
    "StructuredLLMCall",
    "StructuredVariable",
    "Sum",
    "concat",
    "function",
    "op",
    "retrieved",
    "sum",
]
