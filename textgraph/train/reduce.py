"""Gradient reduction: merge a parameter's critiques when they outgrow a limit.

Critiques are merged in chunks of at most 3x the limit, concurrently, and
the merged texts merged again until one fits, so the optimizer's prompt
stays bounded however large the batch.
"""

from __future__ import annotations

import asyncio

from textgraph.engines.base import ChatRequest, Engine, call_engine
from textgraph.prompts import fence, load, render_file
from textgraph.variable import Gradient, Variable


async def reduce_gradients(
    named: dict[str, Variable], example_of: dict[int, int], engine: Engine | None, limit: int
) -> dict[str, str]:
    """Replace each over-long gradient list by one merged critique; returns the merged texts."""
    reduced = {}
    for name, p in named.items():
        size = sum(len(g.text) + len(g.context) for g in p.gradients)
        if size <= limit:
            continue
        if engine is None:
            from textgraph.engines.context import resolve_engine

            engine = resolve_engine(
                None, what="gradient reduction (pass reduce_engine=)", role="backward_engine"
            )
        items = [(str(example_of.get(id(g.source), "?")), g.text) for g in p.gradients]
        text = await _reduce(engine, p, items, limit)
        merged = Variable(
            f"merged feedback from {len(p.gradients)} critiques",
            role_description="merged critiques of several examples",
        )
        p.gradients[:] = [Gradient(text=text, source=merged, operation="reduce")]
        reduced[name] = text
    return reduced


async def _reduce(
    engine: Engine, parameter: Variable, items: list[tuple[str, str]], limit: int
) -> str:
    chunk_limit = 3 * limit
    while True:
        chunks: list[list[tuple[str, str]]] = [[]]
        size = 0
        for label, text in items:
            text = text[:chunk_limit]  # one oversized critique cannot blow up a prompt
            if chunks[-1] and size + len(text) > chunk_limit:
                chunks.append([])
                size = 0
            chunks[-1].append((label, text))
            size += len(text)
        merged = await asyncio.gather(*(_reduce_chunk(engine, parameter, c, limit) for c in chunks))
        if len(merged) == 1:
            return merged[0]
        items = [
            (",".join(sorted({lbl for lbl, _ in c})), m)
            for c, m in zip(chunks, merged, strict=True)
        ]


async def _reduce_chunk(
    engine: Engine, parameter: Variable, chunk: list[tuple[str, str]], limit: int
) -> str:
    critiques = "\n".join(
        render_file("reduce_item", examples=label, text=fence(text)) for label, text in chunk
    )
    user = render_file(
        "reduce_user",
        role=parameter.role_description,
        count=len(chunk),
        critiques=critiques,
        limit=limit,
    )
    request = ChatRequest.from_prompts(
        load("reduce_system"),
        user,
        purpose="reduce",
        variable_ids=[parameter.id],
        max_tokens=max(64, limit // 3),
    )
    text = (await call_engine(engine, request)).text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"
