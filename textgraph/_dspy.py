"""A clear error for a metric written in DSPy's argument order.

DSPy calls `metric(example, pred, trace=None)`; textgraph calls
`metric(prediction_text, example)`. A DSPy metric passed as it is would
get its arguments swapped: an unclear TypeError at best, at worst an
asymmetric check (`gold in pred`) scoring the wrong way round, silently.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from textgraph.errors import ArgumentError

GOLD_NAMES = ("example", "gold", "ex", "reference", "target")
PREDICTION_NAMES = ("pred", "prediction", "prediction_text", "predicted", "output")


def refuse_dspy_metric(metric: Callable[..., Any]) -> None:
    """Raise when `metric`'s parameters say it takes (example, pred[, trace])."""
    try:
        parameters = list(inspect.signature(metric).parameters.values())
    except (TypeError, ValueError):  # builtins and C callables: nothing to read
        return
    names = [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(names) < 2:
        return
    gold_first = names[0] in GOLD_NAMES and names[1] in PREDICTION_NAMES
    # (x, y, trace): DSPy's shape, unless the prediction visibly comes first
    traced = len(names) >= 3 and names[2] == "trace" and names[0] not in PREDICTION_NAMES
    if gold_first or traced:
        name = getattr(metric, "__name__", "metric")
        raise ArgumentError(
            f"metric {name}({', '.join(names)}) looks like DSPy's metric(example, pred, "
            "trace=None); textgraph calls metric(prediction_text, example) with no trace. "
            "Write it as def metric(prediction, example), or wrap it: "
            f"lambda prediction, example: {name}(example, prediction)"
        )
