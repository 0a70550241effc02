"""Fused backward: one critic call per loss writes feedback for every parameter at once.

Per-op backward walks the graph one op at a time, so a chain of k LLM calls
costs k dependent backward calls. Fused backward shows the critic the whole
subgraph between a loss and its parameters (every call's inputs and output,
and the loss's feedback) and asks for a JSON object with one critique per
parameter: one dependent call, whatever the depth. A sum of losses (a batch)
gets one fused call per loss, concurrently. Each gradient's `source` is that
example's loss, so reduction, reports and `critique_paths` see which example
it concerns. A reply that stays malformed after one repair turn falls back to
per-op backward for that loss, and the fallback is recorded (`FusedFallback`,
and a line in the `.warnings` of the root, that loss and its parameters).

Long subgraphs are cut with the limits gradient reduction uses: every call's
rendering and every parameter's value at most `limit` characters (cut with
"…"), all calls together at most 3x `limit` (reduction's chunk size); past
that, calls are kept from both ends (nearest the parameters and nearest the
loss) and the middle ones are replaced by a line saying how many were left out.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from textgraph._checks import check_int
from textgraph._text import clip
from textgraph.engines.base import ChatRequest, Engine
from textgraph.engines.context import check_engine, configured, context_engine, process_engine
from textgraph.errors import ArgumentError, ConfigurationError
from textgraph.graph import ancestry
from textgraph.ops.base import shown
from textgraph.prompts import fence, load, render_file
from textgraph.structured import Reply, call_json
from textgraph.variable import Gradient, Variable

DEFAULT_LIMIT = 6000  # characters; the Trainer's max_gradient_chars default
OPERATION = "fused_backward"


@dataclass(frozen=True)
class FusedFallback:
    """A loss whose fused reply could not be parsed; per-op backward ran for it instead."""

    loss: Variable
    error: str


def loss_units(root: Variable) -> list[Variable]:
    """The losses that each get one fused call: the innermost losses under a (sum of)
    loss(es), or `root` itself when it is not a loss."""
    if not root.is_loss:
        return [root]
    units = [
        v
        for v in ancestry(root)
        if v.is_loss and v.requires_grad and not any(p.is_loss for p in v.predecessors)
    ]
    return units or [root]


async def fused_backward(
    root: Variable, *, engine: Engine | str | None = None, limit: int = DEFAULT_LIMIT
) -> list[FusedFallback]:
    """Fill `.gradients` of every parameter under `root` with one critic call per loss.

    Returns the losses that fell back to per-op backward (empty when none did).
    On an exception every variable's gradients are left as they were.
    """
    from textgraph.autograd import backward

    engine = check_engine(engine, "backward(engine)")  # a model string resolves here
    if not root.requires_grad:
        raise ArgumentError(
            f"{root.id} ({root.role_description}) does not depend on any variable with "
            "requires_grad=True, so backward has nothing to update."
        )
    check_int(
        "fused backward limit",
        limit,
        minimum=1,
        instead="the most characters of each text shown (the Trainer's max_gradient_chars)",
    )
    units = loss_units(root)
    before = {v: len(v.gradients) for v in ancestry(root) if v.requires_grad}
    try:
        replies = await asyncio.gather(*(_fused_call(u, engine, limit) for u in units))
        fallbacks = []
        for unit, (params, reply) in zip(units, replies, strict=True):
            if reply is None:
                continue
            if not reply.ok:
                fallbacks.append(FusedFallback(unit, reply.error or "unparseable reply"))
                continue
            for key, p in params.items():
                p.gradients.append(
                    Gradient(
                        text=reply.value[key],
                        source=unit,
                        operation=OPERATION,
                        conversation=reply.conversation,
                        render=lambda p=p, unit=unit: _parameter_context(p, unit, limit),
                    )
                )
        # Per-op fallbacks run one after another, in loss order, so gradient order is stable.
        for fallback in fallbacks:
            note = (
                f"fused backward for {fallback.loss.id} ({fallback.loss.role_description}) "
                f"got no usable reply after one repair ({fallback.error}); "
                "per-op backward ran for it instead"
            )
            await backward(fallback.loss, engine=engine)
            for variable in dict.fromkeys([root, fallback.loss, *_parameters(fallback.loss)]):
                variable.warnings.append(note)
    except BaseException:
        for v, count in before.items():
            del v.gradients[count:]
        raise
    return fallbacks


def _parameters(unit: Variable) -> list[Variable]:
    return [v for v in ancestry(unit) if v.requires_grad and v.grad_fn is None]


def _calls(unit: Variable) -> list[Variable]:
    """Outputs of the calls to show, in the order they ran (a loss's own call is its feedback)."""
    return [
        v
        for v in ancestry(unit)
        if v.requires_grad and v.grad_fn is not None and not (v is unit and v.is_loss)
    ]


def render_calls(outputs: list[Variable], limit: int) -> str:
    """Every call's rendering cut to `limit`; in all at most 3x `limit`, keeping both ends."""
    texts = [
        render_file(
            "fused_backward_call",
            index=i,
            operation=v.grad_fn.op.name,
            context=clip(v.grad_fn.op.describe(v.grad_fn), limit),
        )
        for i, v in enumerate(outputs, 1)
        if v.grad_fn is not None
    ]
    budget = 3 * limit
    if sum(len(t) for t in texts) <= budget:
        return "\n\n".join(texts)
    head: list[str] = []
    tail: list[str] = []
    lo, hi, used = 0, len(texts) - 1, 0
    while lo <= hi:
        take_tail = len(tail) <= len(head)  # alternate: nearest the loss, then the parameters
        text = texts[hi] if take_tail else texts[lo]
        if used + len(text) > budget:
            break
        used += len(text)
        if take_tail:
            tail.insert(0, text)
            hi -= 1
        else:
            head.append(text)
            lo += 1
    omitted = hi - lo + 1
    middle = [render_file("fused_backward_omitted", count=omitted)] if omitted else []
    return "\n\n".join([*head, *middle, *tail])


def _listing(params: dict[str, Variable], limit: int) -> str:
    return "\n".join(
        render_file(
            "fused_backward_parameter",
            key=key,
            role=p.role_description,
            value=clip(shown(p, None), limit),
        )
        for key, p in params.items()
    )


def parameter_keys(variable: Variable) -> dict[str, Variable]:
    """var_1..var_n -> the parameters `variable` depends on, in graph order."""
    return {f"var_{i}": p for i, p in enumerate(_parameters(variable), 1)}


def fused_loss_request(
    output: Variable, params: dict[str, Variable], instruction: str, limit: int
) -> ChatRequest:
    """One request that evaluates `output` and critiques every parameter (loss="fused")."""
    calls = [v for v in ancestry(output) if v.requires_grad and v.grad_fn is not None]
    user = render_file(
        "fused_loss_user",
        calls=render_calls(calls, limit) or "(no calls: the output is a parameter itself)",
        output_role=output.role_description,
        output=fence(clip(output.value, limit)),
        parameters=_listing(params, limit),
        keys=", ".join(f'"{k}"' for k in params),
    )
    return ChatRequest.from_prompts(
        render_file("fused_loss_system", instruction=fence(instruction)),
        user,
        purpose="loss",
        variable_ids=[output.id, *(p.id for p in params.values())],
        metadata={"operation": "fused_loss"},
    )


def fused_request(unit: Variable, params: dict[str, Variable], limit: int) -> ChatRequest:
    listing = _listing(params, limit)
    evaluated = [p for p in unit.predecessors if p.requires_grad] if unit.is_loss else [unit]
    user = render_file(
        "fused_backward_user",
        calls=render_calls(_calls(unit), limit) or "(no calls: the parameters are used directly)",
        output_role="; ".join(v.role_description for v in evaluated) or unit.role_description,
        feedback=fence(clip(unit.value, limit)),
        parameters=listing,
        keys=", ".join(f'"{k}"' for k in params),
    )
    return ChatRequest.from_prompts(
        load("fused_backward_system"),
        user,
        purpose="backward",
        variable_ids=[p.id for p in params.values()],
        metadata={"operation": OPERATION, "output_id": unit.id},
    )


async def _fused_call(
    unit: Variable, engine: Engine | None, limit: int
) -> tuple[dict[str, Variable], Reply | None]:
    params = parameter_keys(unit)
    if not params or is_perfect(unit):
        return params, None
    written = unit.grad_fn.saved.get("parameter_feedback") if unit.grad_fn else None
    if written is not None and set(written) == set(params.values()):
        # loss="fused": the loss's own call already wrote these critiques.
        conversation = unit.grad_fn.saved.get("conversation", ())
        value = {key: written[p] for key, p in params.items()}
        return params, Reply(value=value, text="", conversation=conversation)
    # the order per-op backward uses: given, a use_engine block, tg.configure's backward
    # engine, the graph's own engines, then the process default (TEXTGRAPH_MODEL)
    chosen = (
        engine
        or context_engine()
        or configured("backward_engine", fallback=False)
        or _graph_engine(unit)
        or process_engine("backward_engine")
    )
    if chosen is None:
        raise ConfigurationError(
            "fused backward needs an LLM to write feedback, but no engine is known: pass "
            "loss.backward(engine=..., fused=True) or use `with tg.use_engine(...)`."
        )
    return params, await call_json(chosen, fused_request(unit, params, limit), list(params))


def is_perfect(unit: Variable) -> bool:
    """A loss at its perfect score sends no critique, as in per-op backward (Loss.is_perfect)."""
    node = unit.grad_fn
    check = getattr(node.op, "is_perfect", None) if node is not None else None
    return bool(check(node)) if callable(check) else False


def _graph_engine(unit: Variable) -> Engine | None:
    """The loss's own engine, else the nearest call's: what per-op backward would use."""
    for v in reversed(ancestry(unit)):
        if v.grad_fn is not None and v.grad_fn.engine is not None:
            return v.grad_fn.engine
    return None


def _parameter_context(parameter: Variable, unit: Variable, limit: int) -> str:
    """The calls `parameter` took part in, with its own value elided (for the optimizer)."""
    texts = [
        v.grad_fn.op.describe(v.grad_fn, elide=parameter)
        for v in _calls(unit)
        if v.grad_fn is not None and any(i is parameter for i in v.grad_fn.inputs)
    ]
    return clip("\n\n".join(t for t in texts if t), limit)
