"""Retrieval as an op: a query Variable in, the retrieved passages out.

Forward searches an index (BM25 by default, see `textgraph.retrieval`).
Backward asks the LLM to turn feedback on the passages ("the passage about
the director's birthplace was never retrieved") into feedback on the query,
told that the retriever only matches words — so a query writer upstream
learns which words to search for.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import Any

from textgraph._sync import run_sync
from textgraph.engines.base import Engine
from textgraph.engines.context import check_engine
from textgraph.errors import ArgumentError
from textgraph.ops.base import (
    BackwardContext,
    Feedback,
    Node,
    Operation,
    llm_backward,
    refuse_images,
    shown,
)
from textgraph.prompts import render_file
from textgraph.retrieval import BM25Index, Hit, Index, Passage
from textgraph.variable import Variable, ensure_variable


class Retrieve(Operation):
    """`tg.Retrieve(index, k)(query)` -> a Variable with the top-k passages, numbered."""

    name = "retrieve"

    def __init__(
        self,
        index: Index | Sequence[Passage | str | dict[str, Any]],
        k: int = 3,
        *,
        role_description: str = "passages retrieved for the query",
        engine: Engine | str | None = None,
    ) -> None:
        if not isinstance(index, Index):
            if isinstance(index, (str, bytes)) or not isinstance(index, Sequence):
                raise ArgumentError(
                    "tg.Retrieve needs an index (an object with search(query, k) and len()) or "
                    f"a list of passages, got {type(index).__name__}"
                )
            index = BM25Index(index)
        if not isinstance(k, int) or k < 1:
            raise ArgumentError(f"tg.Retrieve needs k >= 1, got {k!r}")
        engine = check_engine(engine, "tg.Retrieve(engine)")
        self.index, self.k = index, k
        self.role_description = role_description
        # Writes backward feedback when no engine is given to backward() or use_engine();
        # else the engine of the op that wrote the query does.
        self.engine = engine

    def __call__(self, query: Variable) -> Variable:
        return run_sync(self.acall(query))

    async def acall(self, query: Variable) -> Variable:
        query = ensure_variable(query, "tg.Retrieve query")
        refuse_images((query,), "tg.Retrieve")
        hits = await asyncio.to_thread(self.index.search, query.value, self.k)
        node = Node(op=self, inputs=(query,), engine=self.engine, saved={"hits": hits})
        text = format_hits(hits)
        return Variable._from_op(text, role_description=self.role_description, node=node)

    async def backward(self, ctx: BackwardContext) -> list[Feedback]:
        if ctx.engine is None:  # no engine given: the model that wrote the query critiques it
            (query,) = ctx.node.inputs
            writer = query.grad_fn.engine if query.grad_fn is not None else None
            ctx = dataclasses.replace(ctx, engine=writer)
        return await llm_backward(ctx)

    def describe(self, node: Node, elide: Variable | None = None) -> str:
        (query,) = node.inputs
        return render_file(
            "context_retrieve",
            retriever=describe_index(self.index),
            size=len(self.index),
            k=self.k,
            query_role=query.role_description,
            query=shown(query, elide),
            output_role=node.output.role_description if node.output else "",
            passages=shown(node.output, elide) if node.output else "",
        )

    def location_of(self, node: Node, variable: Variable) -> str:
        return "the search query"


def format_hits(hits: list[Hit]) -> str:
    if not hits:
        return "(no passage matched the query)"
    return "\n\n".join(f"[{h.rank}] {h.passage.render()}" for h in hits)


def describe_index(index: Index) -> str:
    if isinstance(index, BM25Index):
        return "BM25 keyword search"
    return getattr(index, "description", type(index).__name__)


def retrieved(variable: Variable) -> list[Hit]:
    """The hits behind a `tg.Retrieve` output (empty for any other variable)."""
    node = variable.grad_fn
    if node is None or not isinstance(node.op, Retrieve):
        return []
    return list(node.saved["hits"])
