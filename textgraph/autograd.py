"""The backward scheduler: dependency-driven and concurrent.

A variable's op runs its backward as soon as every consumer that will send
it feedback has done so; independent branches therefore run at the same
time, bounded only by the engine's concurrency limit. Variables that do not
require grad are never visited. Gradients are appended in a deterministic
order (by consumer position in the topological order), never in completion
order, and a failed backward leaves every variable's gradients as they were.
"""

from __future__ import annotations

import asyncio
import functools

from textgraph.engines.base import Engine
from textgraph.engines.context import check_engine, configured, context_engine, process_engine
from textgraph.errors import ArgumentError
from textgraph.fused import DEFAULT_LIMIT, fused_backward
from textgraph.graph import ancestry
from textgraph.ops.base import BackwardContext, distinct
from textgraph.variable import Gradient, Variable


async def backward(
    root: Variable,
    *,
    engine: Engine | str | None = None,
    per_input: bool = False,
    fused: bool = False,
    limit: int | None = None,
) -> None:
    """Propagate critiques from `root` to every upstream variable that requires grad.

    The engine that writes critiques: `engine` if given, else the context
    default (`tg.use_engine`), else `tg.configure(backward_engine=...)`, else
    each op's own forward engine, else `tg.configure(engine=...)` or
    TEXTGRAPH_MODEL. `fused`: one call per loss for all its parameters
    (textgraph/fused.py), its prompt's texts cut with `limit` (default 6000,
    as tg.Trainer's max_gradient_chars).
    """
    engine = check_engine(engine, "backward(engine)")
    if not isinstance(fused, bool):
        raise ArgumentError(f"backward(fused=) must be True or False, got {fused!r}")
    if not root.requires_grad:
        raise ArgumentError(
            f"{root.id} ({root.role_description}) does not depend on any variable with "
            "requires_grad=True, so backward has nothing to update. Mark the parameters you "
            "want to optimize with requires_grad=True."
        )
    chosen = engine or context_engine() or configured("backward_engine", fallback=False)
    if fused:  # with no engine chosen here, fused_backward falls back as per-op does
        await fused_backward(root, engine=chosen, limit=limit or DEFAULT_LIMIT)
        return
    order = [v for v in ancestry(root) if v.requires_grad]
    position = {v: i for i, v in enumerate(order)}
    pending = dict.fromkeys(order, 0)
    for consumer in order:
        if consumer.grad_fn is not None:
            for v in distinct(consumer.predecessors):
                if v.requires_grad:
                    pending[v] += 1
    incoming: dict[Variable, list[tuple[int, Gradient]]] = {v: [] for v in order}
    before = {v: len(v.gradients) for v in order}

    async def run(variable: Variable, group: asyncio.TaskGroup) -> None:
        node = variable.grad_fn
        assert node is not None
        received = [g for _, g in incoming[variable]]
        own = [variable.value] if variable.is_loss or variable is root else []
        feedback = own + [g.text for g in received]
        targets = tuple(v for v in distinct(node.inputs) if v.requires_grad)
        if feedback:
            ctx = BackwardContext(
                node=node,
                output=variable,
                feedback=feedback,
                received=received,
                targets=targets,
                engine=chosen or node.engine or process_engine("backward_engine"),
                per_input=per_input,
                own_objective=bool(own),
            )
            for item in await node.op.backward(ctx):
                gradient = Gradient(
                    text=item.text,
                    source=variable,
                    operation=node.op.name,
                    conversation=item.conversation,
                    render=functools.partial(node.op.describe, node, elide=item.target),
                )
                incoming[item.target].append((position[variable], gradient))
        for target in targets:
            pending[target] -= 1
            if pending[target] == 0:
                release(target, group)

    def release(variable: Variable, group: asyncio.TaskGroup) -> None:
        incoming[variable].sort(key=lambda item: item[0])
        variable.gradients.extend(g for _, g in incoming[variable])
        if variable.grad_fn is not None:
            group.create_task(run(variable, group))

    try:
        async with asyncio.TaskGroup() as group:
            release(root, group)
    except BaseExceptionGroup as failure:
        for v, count in before.items():
            del v.gradients[count:]
        raise _first_leaf(failure) from None
    except BaseException:
        for v, count in before.items():
            del v.gradients[count:]
        raise


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    """Surface the real error instead of an ExceptionGroup wrapper."""
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


# TextGrad's textgrad.autograd names, so `tg.autograd.FormattedLLMCall(...)` runs as written.
TEXTGRAD_NAMES = ("LLMCall", "FormattedLLMCall", "StringBasedFunction", "sum", "Module")


def __getattr__(name: str) -> object:
    if name in TEXTGRAD_NAMES:
        import textgraph

        return getattr(textgraph, name)
    from textgraph._textgrad import missing_name

    raise missing_name(__name__, name)
