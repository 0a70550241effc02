"""LLM operations: a model called with a (possibly optimizable) system prompt."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from textgraph._sync import run_sync
from textgraph.engines.base import ChatRequest, Engine, call_engine
from textgraph.engines.context import check_engine, resolve_engine
from textgraph.engines.observe import current_forward_purpose
from textgraph.errors import ArgumentError
from textgraph.ops.base import BackwardContext, Feedback, Node, Operation, llm_backward, shown
from textgraph.prompts import fence, placeholders, render, render_file
from textgraph.variable import Variable, ensure_variable


def _system_variable(system_prompt: Variable | str | None) -> Variable | None:
    if system_prompt is None or isinstance(system_prompt, Variable):
        return system_prompt
    if isinstance(system_prompt, str):
        return Variable(system_prompt, role_description="system prompt")
    raise ArgumentError(
        f"system_prompt must be a tg.Variable, a str or None, got {type(system_prompt).__name__}"
    )


class _LLMOperation(Operation):
    """Shared plumbing: engine resolution, sampling parameters, the forward call."""

    calls_llm = True

    def __init__(
        self,
        engine: Engine | None,
        system_prompt: Variable | str | None,
        *,
        role_description: str,
        temperature: float | None,
        max_tokens: int | None,
        seed: int | None,
        stop: list[str] | None,
    ) -> None:
        check_engine(engine, f"{type(self).__name__}(engine)")
        self.engine = engine
        self.system_prompt = _system_variable(system_prompt)
        self.role_description = role_description
        self.sampling: dict[str, Any] = {
            "temperature": temperature,
            "max_tokens": max_tokens,
            "seed": seed,
            "stop": stop,
        }

    async def _generate(self, inputs: tuple[Variable, ...], user_text: str) -> tuple[str, Node]:
        engine = resolve_engine(self.engine, what=f"{type(self).__name__} forward")
        request = ChatRequest.from_prompts(
            self.system_prompt.value if self.system_prompt is not None else None,
            user_text,
            purpose=current_forward_purpose(),
            variable_ids=[v.id for v in inputs],
            **self.sampling,
        )
        response = await call_engine(engine, request)
        node = Node(op=self, inputs=inputs, engine=engine, saved={"user_text": user_text})
        return response.text, node

    def _inputs(self, *rest: Variable) -> tuple[Variable, ...]:
        return ((self.system_prompt,) if self.system_prompt is not None else ()) + rest

    def _system_block(self, node: Node, elide: Variable | None) -> str:
        system = node.inputs[0] if self.system_prompt is not None else None
        if system is None:
            return ""
        return (
            render_file(
                "context_llm_call_system",
                system_role=system.role_description,
                system=shown(system, elide),
            )
            + "\n"
        )

    async def backward(self, ctx: BackwardContext) -> list[Feedback]:
        return await llm_backward(ctx)


class LLMCall(_LLMOperation):
    """`LLMCall(engine, system_prompt=...)(question) -> answer Variable`."""

    name = "llm_call"

    def __init__(
        self,
        engine: Engine | None = None,
        system_prompt: Variable | str | None = None,
        *,
        role_description: str = "response from the language model",
        temperature: float | None = None,
        max_tokens: int | None = None,
        seed: int | None = None,
        stop: list[str] | None = None,
    ) -> None:
        super().__init__(
            engine,
            system_prompt,
            role_description=role_description,
            temperature=temperature,
            max_tokens=max_tokens,
            seed=seed,
            stop=stop,
        )

    def __call__(self, input: Variable) -> Variable:
        return run_sync(self.acall(input))

    async def acall(self, input: Variable) -> Variable:
        input = ensure_variable(input, "LLMCall input")
        text, node = await self._generate(self._inputs(input), input.value)
        return Variable._from_op(text, role_description=self.role_description, node=node)

    def describe(self, node: Node, elide: Variable | None = None) -> str:
        user = node.inputs[-1]
        return render_file(
            "context_llm_call",
            system_block=self._system_block(node, elide),
            input_role=user.role_description,
            input=shown(user, elide),
            output_role=node.output.role_description if node.output else "",
            output=shown(node.output, elide) if node.output else "",
        )

    def location_of(self, node: Node, variable: Variable) -> str:
        if self.system_prompt is not None and variable is node.inputs[0]:
            return "the system prompt"
        return "the input (user message)"


class FormattedLLMCall(_LLMOperation):
    """An LLM call whose user message is a template filled with named Variables.

    `fields` declares the template's fields: a list of names, or a mapping
    of name -> Variable giving default bindings. Call with keyword
    Variables (`op(question=q, context=c)`) or a mapping. Values are
    inserted verbatim: braces or tag-like text in them never break it.
    """

    name = "formatted_llm_call"

    def __init__(
        self,
        engine: Engine | None,
        template: str,
        fields: Sequence[str] | Mapping[str, Variable],
        system_prompt: Variable | str | None = None,
        *,
        role_description: str = "response from the language model",
        temperature: float | None = None,
        max_tokens: int | None = None,
        seed: int | None = None,
        stop: list[str] | None = None,
    ) -> None:
        super().__init__(
            engine,
            system_prompt,
            role_description=role_description,
            temperature=temperature,
            max_tokens=max_tokens,
            seed=seed,
            stop=stop,
        )
        if not isinstance(template, str):
            raise ArgumentError(f"template must be a str, got {type(template).__name__}")
        if isinstance(fields, Mapping):
            self.defaults = {k: ensure_variable(v, f"field {k!r}") for k, v in fields.items()}
            names = list(fields)
        elif isinstance(fields, Sequence) and not isinstance(fields, str):
            self.defaults = {}
            names = list(fields)
        else:
            raise ArgumentError("fields must be a list of field names or a dict name -> Variable")
        in_template = placeholders(template)
        missing, unused = (
            [n for n in in_template if n not in names],
            [n for n in names if n not in in_template],
        )
        if missing or unused:
            raise ArgumentError(
                f"template fields and declared fields differ: in the template but not declared "
                f"{missing or 'none'}; declared but not in the template {unused or 'none'}. "
                "Use {{ and }} for literal braces in the template."
            )
        self.template = template
        self.field_names = names

    def __call__(
        self, mapping: Mapping[str, Variable] | None = None, **fields: Variable
    ) -> Variable:
        return run_sync(self.acall(mapping, **fields))

    async def acall(
        self, mapping: Mapping[str, Variable] | None = None, **fields: Variable
    ) -> Variable:
        given = {**self.defaults, **(mapping or {}), **fields}
        unknown = [k for k in given if k not in self.field_names]
        absent = [k for k in self.field_names if k not in given]
        if unknown or absent:
            raise ArgumentError(
                f"FormattedLLMCall fields: missing {absent or 'none'}, "
                f"unknown {unknown or 'none'}; "
                f"expected {self.field_names}"
            )
        values = {k: ensure_variable(given[k], f"field {k!r}") for k in self.field_names}
        user_text = render(self.template, **{k: v.value for k, v in values.items()})
        text, node = await self._generate(self._inputs(*values.values()), user_text)
        return Variable._from_op(text, role_description=self.role_description, node=node)

    def describe(self, node: Node, elide: Variable | None = None) -> str:
        offset = 1 if self.system_prompt is not None else 0
        fields = "\n".join(
            render_file("context_field", name=name, role=v.role_description, value=shown(v, elide))
            for name, v in zip(self.field_names, node.inputs[offset:], strict=True)
        )
        return render_file(
            "context_formatted_call",
            system_block=self._system_block(node, elide),
            input=fence(self.template),
            fields=fields,
            output_role=node.output.role_description if node.output else "",
            output=shown(node.output, elide) if node.output else "",
        )

    def location_of(self, node: Node, variable: Variable) -> str:
        if self.system_prompt is not None and variable is node.inputs[0]:
            return "the system prompt"
        offset = 1 if self.system_prompt is not None else 0
        for name, v in zip(self.field_names, node.inputs[offset:], strict=True):
            if v is variable:
                return f"the field '{name}'"
        return super().location_of(node, variable)
