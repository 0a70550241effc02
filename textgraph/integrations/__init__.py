"""Trackers and other outside tools a Trainer run reports to (optional extras).

`tg.integrations.MLflowCallback` needs `pip install "textgraph[mlflow]"`; MLflow itself
is imported only when a callback is made, so this package imports without it.
"""

from textgraph.integrations.mlflow import MLflowCallback

__all__ = ["MLflowCallback"]
