"""Operations: forward computes a Variable, backward turns feedback into critiques.

Like PyTorch's autograd.Function, an op's forward records a `Node` (the op,
its inputs and whatever it saved) on the output variable. The scheduler in
`autograd.py` later calls `op.backward(ctx)` with the feedback the output
received, and the op returns one `Feedback` per input that requires grad.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from textgraph._media import human_size
from textgraph.engines.base import ChatRequest, Engine
from textgraph.errors import ArgumentError, ConfigurationError
from textgraph.image import Image
from textgraph.prompts import fence, load, render_file
from textgraph.structured import call_json, call_text
from textgraph.variable import Conversation, Gradient, Variable

ELIDED = "[the variable being improved; its current value is shown above]"


@dataclass(eq=False)
class Node:
    """One application of an op: what backward needs to know about the call."""

    op: Operation
    inputs: tuple[Variable, ...]
    saved: dict[str, Any] = field(default_factory=dict)
    engine: Engine | None = None
    output: Variable | None = None


@dataclass
class Feedback:
    """A critique for one input, produced by an op's backward."""

    target: Variable
    text: str
    conversation: Conversation = ()


@dataclass
class BackwardContext:
    node: Node
    output: Variable
    feedback: list[str]
    received: list[Gradient]
    targets: tuple[Variable, ...]
    engine: Engine | None
    per_input: bool = False
    # The output's own value is the objective (it is the root or a loss): `feedback[0]`.
    own_objective: bool = False

    def require_engine(self) -> Engine:
        if self.engine is None:
            raise ConfigurationError(
                f"backward through {self.node.op.name!r} needs an LLM to write feedback, but no "
                "engine is known: pass loss.backward(engine=...), use `with tg.use_engine(...)`, "
                "call tg.configure(backward_engine=...) or set TEXTGRAPH_MODEL."
            )
        return self.engine


class Operation:
    """Base class of differentiable operations.

    Subclasses implement `aforward` (creating the output with `self._output`)
    and `backward`; `describe` renders the call for prompts.
    """

    name: str = "op"
    calls_llm: bool = False  # forward makes an LLM call
    backward_calls_llm: bool = True  # backward asks an LLM (False: passes feedback through)

    async def backward(self, ctx: BackwardContext) -> list[Feedback]:
        raise NotImplementedError

    def describe(self, node: Node, elide: Variable | None = None) -> str:
        """The forward call as text for backward/optimizer prompts."""
        return ""

    def location_of(self, node: Node, variable: Variable) -> str:
        """Where `variable` appears in `describe`'s text ("the system prompt")."""
        return f"the input with role '{variable.role_description}'"


def shown(variable: Variable, elide: Variable | None) -> str:
    """A variable's value for a prompt, or a placeholder for the elided one."""
    if variable is elide:
        return ELIDED
    if isinstance(variable, Image):  # its description, never its bytes
        return render_file(
            "context_image",
            media_type=variable.media_type,
            size=human_size(variable.size),
            sha256=variable.sha256,
        )
    render = getattr(variable, "render", None)  # tg.Demos: demonstrations as readable text
    return fence(render() if callable(render) else variable.value)


IMAGES_GO_TO_CALLS = (
    "Pass images to tg.LLMCall (alone or in a list of inputs) or as a tg.FormattedLLMCall "
    "field, where the model receives the image itself"
)


def refuse_images(
    variables: tuple[Variable, ...], what: str, instead: str = IMAGES_GO_TO_CALLS
) -> None:
    """Ops that work on text refuse a tg.Image: its text is only a description, and
    joining, searching or judging that would quietly drop the image."""
    for v in variables:
        if isinstance(v, Image):
            raise ArgumentError(
                f"{what} works on text and got a tg.Image ({v.value}); its text is only a "
                f"description. {instead}"
            )


def distinct(variables: tuple[Variable, ...]) -> tuple[Variable, ...]:
    """Drop repeated inputs, keeping first-seen order (identity, not value)."""
    seen: dict[int, Variable] = {}
    for v in variables:
        seen.setdefault(id(v), v)
    return tuple(seen.values())


def format_feedback(texts: list[str]) -> str:
    if len(texts) == 1:
        return fence(texts[0])
    return "\n\n".join(f"[{i}] {fence(t)}" for i, t in enumerate(texts, 1))


async def llm_backward(
    ctx: BackwardContext, targets: tuple[Variable, ...] | None = None
) -> list[Feedback]:
    """Ask the backward engine for critiques of `targets` given the output's feedback.

    One call for all targets (a JSON object keyed by variable), or one
    free-text call per target when there is a single target, when
    `per_input` is set, or when the JSON reply could not be parsed.
    """
    targets = ctx.targets if targets is None else targets
    if not targets:
        return []
    engine = ctx.require_engine()
    op, node = ctx.node.op, ctx.node
    context = op.describe(node)
    feedback = format_feedback(ctx.feedback)

    def request(target_list: str, reply_instructions: str, ids: list[str]) -> ChatRequest:
        user = render_file(
            "backward_user",
            context=context,
            output_role=ctx.output.role_description,
            feedback=feedback,
            targets=render_file("backward_targets", target_list=target_list),
            reply_instructions=reply_instructions,
        )
        return ChatRequest.from_prompts(
            load("backward_system"),
            user,
            purpose="backward",
            variable_ids=ids,
            metadata={"operation": op.name, "output_id": ctx.output.id},
        )

    def describe_target(target: Variable) -> str:
        return f"{op.location_of(node, target)} (role: {target.role_description})"

    async def one(target: Variable) -> Feedback:
        reply = await call_text(
            engine,
            request(f"- {describe_target(target)}", load("backward_reply_text"), [target.id]),
        )
        return Feedback(target, reply.text.strip(), reply.conversation)

    if len(targets) == 1 or ctx.per_input:
        return list(await asyncio.gather(*(one(t) for t in targets)))

    keys = [f"var_{i}" for i in range(1, len(targets) + 1)]
    listing = "\n".join(
        f'- "{k}": {describe_target(t)}' for k, t in zip(keys, targets, strict=True)
    )
    reply = await call_json(
        engine,
        request(
            listing,
            render_file("backward_reply_json", keys=", ".join(f'"{k}"' for k in keys)),
            [t.id for t in targets],
        ),
        keys,
    )
    if not reply.ok:
        # A model that cannot produce the JSON still writes good prose: ask per input.
        return list(await asyncio.gather(*(one(t) for t in targets)))
    return [
        Feedback(t, reply.value[k], reply.conversation) for k, t in zip(keys, targets, strict=True)
    ]
