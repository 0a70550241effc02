"""A seeded generator of BBH-style object-counting questions.

BIG-Bench Hard's object_counting task is template-generated: "I have a
flute, two pianos, and a cabbage. How many musical instruments do I have?"
This generator follows the same shape (categories, spelled-out quantities,
distractor items from other categories) so examples run anywhere without
the dataset file.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

CATEGORIES: dict[str, dict[str, str]] = {
    "musical instruments": {
        "flute": "flutes",
        "piano": "pianos",
        "trombone": "trombones",
        "violin": "violins",
        "accordion": "accordions",
        "clarinet": "clarinets",
        "drum": "drums",
        "trumpet": "trumpets",
    },
    "fruits": {
        "apple": "apples",
        "banana": "bananas",
        "peach": "peaches",
        "plum": "plums",
        "grape": "grapes",
        "nectarine": "nectarines",
        "orange": "oranges",
        "strawberry": "strawberries",
    },
    "vegetables": {
        "carrot": "carrots",
        "potato": "potatoes",
        "onion": "onions",
        "cabbage": "cabbages",
        "yam": "yams",
        "stalk of celery": "stalks of celery",
        "head of broccoli": "heads of broccoli",
        "garlic": "garlics",
    },
    "animals": {
        "cat": "cats",
        "dog": "dogs",
        "goat": "goats",
        "rabbit": "rabbits",
        "snake": "snakes",
        "fish": "fish",
        "mouse": "mice",
        "donkey": "donkeys",
    },
    "objects": {
        "chair": "chairs",
        "table": "tables",
        "lamp": "lamps",
        "bed": "beds",
        "stove": "stoves",
        "couch": "couches",
        "car": "cars",
        "oven": "ovens",
    },
}
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five"]


@dataclass(frozen=True)
class CountingExample:
    question: str
    answer: str
    items: tuple[tuple[str, int, str], ...]  # (item name as written, quantity, category)


def _article(name: str) -> str:
    return "an" if name[0] in "aeiou" else "a"


def generate_object_counting(n: int, *, seed: int = 0) -> list[CountingExample]:
    """`n` questions, reproducible for a given seed."""
    rng = random.Random(seed)
    categories = sorted(CATEGORIES)
    examples = []
    for _ in range(n):
        target = rng.choice(categories)
        names = rng.sample(sorted(CATEGORIES[target]), rng.randint(2, 5))
        items = [(name, rng.choice([1, 1, 1, 2, 3, 4]), target) for name in names]
        if rng.random() < 0.5:  # distractors from another category
            other = rng.choice([c for c in categories if c != target])
            for name in rng.sample(sorted(CATEGORIES[other]), rng.randint(1, 2)):
                items.append((name, rng.choice([1, 2]), other))
        rng.shuffle(items)
        phrases = [
            f"{_article(name)} {name}"
            if qty == 1
            else f"{NUMBER_WORDS[qty]} {CATEGORIES[cat][name]}"
            for name, qty, cat in items
        ]
        if len(phrases) == 2:
            listing = f"{phrases[0]} and {phrases[1]}"
        else:
            listing = ", ".join(phrases[:-1]) + f", and {phrases[-1]}"
        question = f"I have {listing}. How many {target} do I have?"
        answer = str(sum(qty for _, qty, cat in items if cat == target))
        examples.append(CountingExample(question, answer, tuple(items)))
    return examples
