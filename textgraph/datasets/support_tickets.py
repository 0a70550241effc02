"""A seeded generator of customer-support messages labelled by the team they go to.

Each message is a short note a shop's customer might send: an optional
greeting, one request for one of three teams, an optional detail and an
optional sign-off. The labels are

    billing    charges, refunds, invoices, payment methods, subscription price
    shipping   where a parcel is, delivery address, damaged or missing parcels
    account    sign-in, password, profile details, deleting or merging accounts

Each label is plain to a person, but no single word gives it away: "order",
"address", "email", "card" and "delivery" turn up under more than one label,
and each label has fourteen phrasings. Three labels rather than more because
the embedded 135M model only tells three apart once shown a few examples.
`load_support_tickets` gives the fixed, label-balanced train/val/test split the
demo and tests use; `generate_support_tickets` draws any number of messages for
a seed.
"""

from __future__ import annotations

import random
from typing import Literal

from pydantic import BaseModel

from textgraph.errors import ArgumentError

LABELS: tuple[str, ...] = ("billing", "shipping", "account")

Split = Literal["train", "val", "test"]
SPLIT_SIZES: dict[str, int] = {"train": 96, "val": 42, "test": 120}  # label-balanced
SEED = 2024


class SupportTicket(BaseModel):
    text: str
    label: str


_REQUESTS: dict[str, list[str]] = {
    "billing": [
        "I was charged twice for order {order}. My bank statement shows two payments of {amount}.",
        "I sent the {item} back {day} but the {amount} still hasn't been refunded to my card.",
        "Can you send me an invoice for order {order}? I need it for my expense report.",
        "My subscription renewed at {amount} a month instead of the price I signed up for.",
        "The discount code was accepted at checkout, but you still took the full {amount}.",
        "My card keeps getting declined when I try to pay, and my bank says it's fine.",
        "I cancelled my membership {day} and I was still billed {amount} this month.",
        "Why is there an extra {amount} fee on my receipt? Nobody mentioned it when I paid.",
        "I'd like to pay for my monthly plan with PayPal instead of my credit card.",
        "You only refunded part of what I paid for the {item}. I paid {amount} in total.",
        "There's a payment of {amount} to you on my bank account that I don't recognise.",
        "The receipt for order {order} is missing my company's VAT number, can you redo it?",
        "I paid for express delivery on order {order} and the fee was taken twice.",
        "Can I split the {amount} for the {item} into monthly instalments?",
    ],
    "shipping": [
        "My order {order} was supposed to arrive {day} and there's still no sign of it.",
        "The tracking for my {item} hasn't moved in {wait}.",
        "The courier says my parcel was delivered, but nothing was left at my door.",
        "I need order {order} to go to a different address, I'm moving this weekend.",
        "The box with my {item} came crushed and the {item} inside is broken.",
        "Do you send orders to Canada, and how long does it usually take to get there?",
        "Only one of the three things in order {order} was in the box. Where are the others?",
        "Can I collect my {item} from one of your stores instead of waiting for the van?",
        "The driver left a card saying he couldn't get in. When will he come back?",
        "It's been {wait} since you said the {item} was dispatched. Has it been lost?",
        "Is there any way to get order {order} before Friday? It's a birthday present.",
        "My {item} went to my neighbour's house and they're away for the month.",
        "The {item} I got is someone else's, the label on the package has another name.",
        "Which courier are you using for order {order}? I want to be home when it comes.",
    ],
    "account": [
        "I forgot my password and the reset link never turns up in my inbox.",
        "How do I change the email address on my profile? I don't use the old one anymore.",
        "Please take me off your system and delete all the personal data you hold about me.",
        "Is it possible to change my username? I picked a silly one years ago.",
        "Someone changed my password and now I can't sign in.",
        "I accidentally signed up twice with different emails. Can you merge the two?",
        "How do I turn on two-factor authentication for signing in?",
        "I'm locked out after too many wrong sign-in attempts. How do I get back in?",
        "I want to update the phone number and date of birth saved in my profile.",
        "Can I stop getting your newsletter but keep my account open?",
        "I'd like to add my partner as a second user on our household account.",
        "My name is spelled wrong on my profile and it won't let me edit it.",
        "I signed up with my Google login and now I'd rather use a normal password.",
        "Which email address did I register with? I've tried three already.",
    ],
}

_DETAILS = [
    "I've been shopping with you for years.",
    "I'd prefer a reply by email.",
    "I already tried the help pages.",
    "I'm writing from my work email.",
    "Sorry if this is the wrong place to ask.",
]

_GREETINGS = [
    "",
    "",
    "Hi!",
    "Hello.",
    "Hi there!",
    "Good morning.",
    "Hey.",
    "Dear support team,\n",
    "Hello support team!",
]
_SIGN_OFFS = [
    "",
    "",
    "Thanks.",
    "Thank you!",
    "Please help.",
    "Any help is appreciated.",
    "Can you look into this?",
    "I'd appreciate a quick reply.",
    "Thanks in advance, {name}",
    "Regards, {name}",
]
_SLOTS: dict[str, list[str]] = {
    "item": [
        "blender",
        "desk lamp",
        "phone case",
        "winter jacket",
        "coffee grinder",
        "yoga mat",
        "backpack",
        "speaker",
        "kettle",
        "pair of boots",
        "office chair",
        "toaster",
    ],
    "amount": ["$12.99", "$24.50", "$39.00", "$59.95", "$84.20", "$129.00", "$18.75", "$7.49"],
    "day": ["on Monday", "last Tuesday", "yesterday", "three days ago", "last week", "on the 14th"],
    "wait": ["five days", "a week", "two weeks", "ten days", "four days"],
    "name": ["Maria", "Tom", "Priya", "Jonas", "Aisha", "Ken", "Lucy", "Omar", "Sven", "Grace"],
}


def _fill(template: str, rng: random.Random) -> str:
    values = {slot: rng.choice(options) for slot, options in _SLOTS.items()}
    values["order"] = f"#{rng.randint(10000, 99999)}"
    return template.format(**values)


def _message(request: str, rng: random.Random) -> str:
    parts = [rng.choice(_GREETINGS), _fill(request, rng)]
    if rng.random() < 0.3:
        parts.append(rng.choice(_DETAILS))
    parts.append(_fill(rng.choice(_SIGN_OFFS), rng))
    return " ".join(p for p in parts if p).replace("\n ", "\n")


def generate_support_tickets(n: int, *, seed: int = 0) -> list[SupportTicket]:
    """`n` distinct messages, labels in turn (balanced), reproducible for a given seed."""
    if n < 0:
        raise ArgumentError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    requests = {label: rng.sample(_REQUESTS[label], len(_REQUESTS[label])) for label in LABELS}
    seen: set[str] = set()
    tickets: list[SupportTicket] = []
    attempts = 0
    while len(tickets) < n:
        attempts += 1
        if attempts > 50 * n + 100:
            raise ArgumentError(f"cannot draw {n} distinct messages; ask for fewer")
        label = LABELS[len(tickets) % len(LABELS)]
        count = sum(t.label == label for t in tickets)
        pool = requests[label]
        text = _message(pool[count % len(pool)], rng)
        if text not in seen:
            seen.add(text)
            tickets.append(SupportTicket(text=text, label=label))
    return tickets


def load_support_tickets(split: Split | None = None) -> list[SupportTicket]:
    """The fixed split: 96 train, 42 val, 120 test (balanced over LABELS); all 258 if None."""
    if split is not None and split not in SPLIT_SIZES:
        raise ArgumentError(f"split must be one of {sorted(SPLIT_SIZES)} or None, got {split!r}")
    tickets = generate_support_tickets(sum(SPLIT_SIZES.values()), seed=SEED)
    by_label = {label: [t for t in tickets if t.label == label] for label in LABELS}
    rng = random.Random(SEED)
    for group in by_label.values():
        rng.shuffle(group)
    splits: dict[str, list[SupportTicket]] = {}
    start = 0
    for name, size in SPLIT_SIZES.items():
        per_label = size // len(LABELS)
        rows = [t for group in by_label.values() for t in group[start : start + per_label]]
        random.Random(f"{SEED}-{name}").shuffle(rows)
        splits[name] = rows
        start += per_label
    if split is None:
        return [t for name in SPLIT_SIZES for t in splits[name]]
    return splits[split]
