"""The shipped support-ticket dataset: fixed, balanced, disjoint splits."""

from __future__ import annotations

from collections import Counter

import pytest

from textgraph.datasets.support_tickets import (
    LABELS,
    SPLIT_SIZES,
    SupportTicket,
    generate_support_tickets,
    load_support_tickets,
)
from textgraph.errors import ArgumentError


def test_generation_is_deterministic_and_seeded():
    first = generate_support_tickets(30, seed=7)
    assert first == generate_support_tickets(30, seed=7)
    assert first != generate_support_tickets(30, seed=8)
    assert len({t.text for t in first}) == 30


def test_splits_are_deterministic():
    for split in ("train", "val", "test", None):
        assert load_support_tickets(split) == load_support_tickets(split)
    assert load_support_tickets("test")[0].text == load_support_tickets("test")[0].text


def test_split_sizes():
    sizes = {split: len(load_support_tickets(split)) for split in SPLIT_SIZES}
    assert sizes == {"train": 96, "val": 42, "test": 120}
    assert len(load_support_tickets()) == sum(sizes.values()) >= 240


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_labels_are_balanced(split):
    tickets = load_support_tickets(split)
    assert all(isinstance(t, SupportTicket) for t in tickets)
    counts = Counter(t.label for t in tickets)
    assert set(counts) == set(LABELS)
    assert len(set(counts.values())) == 1


def test_no_text_is_in_two_splits():
    texts = {split: {t.text for t in load_support_tickets(split)} for split in SPLIT_SIZES}
    assert all(len(texts[s]) == SPLIT_SIZES[s] for s in SPLIT_SIZES)
    assert not texts["train"] & texts["val"]
    assert not texts["train"] & texts["test"]
    assert not texts["val"] & texts["test"]


def test_splits_are_shuffled_not_grouped_by_label():
    labels = [t.label for t in load_support_tickets("test")[:12]]
    assert len(set(labels)) == len(LABELS)


def test_messages_read_like_text_without_template_holes():
    for ticket in load_support_tickets():
        assert "{" not in ticket.text and "}" not in ticket.text
        assert 20 < len(ticket.text) < 300


def test_the_label_word_rarely_gives_the_label_away():
    tickets = load_support_tickets()
    for label in LABELS:
        own = [t for t in tickets if t.label == label]
        named = [t for t in own if label in t.text.lower()]
        assert len(named) < len(own) / 4


def test_bad_arguments_are_rejected():
    with pytest.raises(ArgumentError):
        load_support_tickets("dev")  # type: ignore[arg-type]
    with pytest.raises(ArgumentError):
        generate_support_tickets(-1)
