"""Datasets: generators and loaders for examples and benchmarks."""

from textgraph.datasets.files import load_examples
from textgraph.datasets.loaders import (
    BBHExample,
    DatasetError,
    GSM8KExample,
    HotpotExample,
    Paragraph,
    corpus_of,
    gsm8k_answer,
    load_bbh,
    load_gsm8k,
    load_hotpotqa,
    load_valley_qa,
    load_word_problems,
)
from textgraph.datasets.object_counting import CountingExample, generate_object_counting
from textgraph.datasets.support_tickets import (
    SupportTicket,
    generate_support_tickets,
    load_support_tickets,
)

__all__ = [
    "BBHExample",
    "CountingExample",
    "DatasetError",
    "GSM8KExample",
    "HotpotExample",
    "Paragraph",
    "SupportTicket",
    "corpus_of",
    "generate_object_counting",
    "generate_support_tickets",
    "gsm8k_answer",
    "load_bbh",
    "load_examples",
    "load_gsm8k",
    "load_hotpotqa",
    "load_support_tickets",
    "load_valley_qa",
    "load_word_problems",
]
