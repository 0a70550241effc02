"""Datasets: generators and loaders for examples and benchmarks."""

from textgraph.datasets.object_counting import CountingExample, generate_object_counting

__all__ = ["CountingExample", "generate_object_counting"]
