"""Typed outputs: an LLM call whose reply is a pydantic model instance.

The request carries the model's JSON schema in `response_format` (each
provider enforces it its own way: OpenAI-compatible `response_format`,
Anthropic a forced tool, llama.cpp a grammar), the reply is validated with
one repair turn, and a reply that still does not validate raises
`StructuredOutputError`, so an evaluation records the example as failed
instead of scoring unparsed text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field, ValidationError, create_model

from textgraph._sync import run_sync
from textgraph.demos import Demos
from textgraph.engines.base import Engine, ResponseFormat
from textgraph.errors import ArgumentError, StructuredOutputError
from textgraph.ops.base import Node, shown
from textgraph.ops.llm import _LLMOperation, content_text, joined_content, user_turn_context
from textgraph.ops.trace import OpCall, record
from textgraph.prompts import load, render_file
from textgraph.structured import call_with_repair, load_json_object, validation_problems
from textgraph.variable import Variable, ensure_variable, ensure_variables

REASONING = "reasoning"


class StructuredVariable(Variable):
    """The output of a StructuredLLMCall: `value` is the JSON text, `parsed` the model
    instance, `reasoning` the free-text reasoning field (None without reasoning=True)."""

    parsed: BaseModel
    reasoning: str | None = None


def _check_model(output: object) -> type[BaseModel]:
    if isinstance(output, type) and issubclass(output, BaseModel):
        return output
    raise ArgumentError(
        "StructuredLLMCall(output=...) must be a pydantic model class (class Answer(BaseModel): "
        f"answer: str), got {output!r:.80}"
    )


def _reply_model(model: type[BaseModel]) -> type[BaseModel]:
    """`model` with a free-text reasoning field first (DSPy's ChainOfThought)."""
    fields: dict[str, Any] = {
        REASONING: (str, Field(description=load("structured_reasoning"), min_length=1))
    }
    fields.update({name: (info.annotation, info) for name, info in model.model_fields.items()})
    return create_model(  # type: ignore[call-overload, no-any-return]
        model.__name__, __config__=model.model_config, __doc__=model.__doc__, **fields
    )


def _type_of(spec: dict[str, Any]) -> str:
    """A JSON-schema property's type in a few words, for prompts."""
    if "enum" in spec:
        return "one of " + ", ".join(json.dumps(v) for v in spec["enum"])
    if "$ref" in spec:
        return f"object {spec['$ref'].rsplit('/', 1)[-1]}"
    for key in ("anyOf", "oneOf"):
        if key in spec:
            return " or ".join(_type_of(s) for s in spec[key])
    kind = spec.get("type")
    if kind == "array":
        items = spec.get("items")
        return f"array of {_type_of(items)}" if isinstance(items, dict) else "array"
    if isinstance(kind, list):
        return " or ".join(map(str, kind))
    return str(kind) if kind else "any JSON value"


class StructuredLLMCall(_LLMOperation):
    """`StructuredLLMCall(engine, output=Answer, system_prompt=...)(question)`.

    The output Variable's value is the reply as JSON text (validated, in the
    schema's field order) and `.parsed` the `Answer` instance. `reasoning=True`
    asks for a free-text "reasoning" field before the others; it stays in the
    JSON text and is `.reasoning` on the output, and `.parsed` is still an
    `Answer`. Sampling parameters are checked as in `LLMCall`.
    """

    name = "structured_llm_call"

    def __init__(
        self,
        engine: Engine | str | None = None,
        output: type[BaseModel] | None = None,
        system_prompt: Variable | str | None = None,
        *,
        demos: Demos | None = None,
        reasoning: bool = False,
        role_description: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
    ) -> None:
        model = _check_model(output)
        if not isinstance(reasoning, bool):
            raise ArgumentError(f"reasoning must be True or False, got {reasoning!r}")
        if reasoning and REASONING in model.model_fields:
            raise ArgumentError(
                f"{model.__name__} already has a field named {REASONING!r}; reasoning=True adds "
                "one. Rename the field or leave reasoning=False."
            )
        self.output_model = model
        self.reasoning = reasoning
        self.reply_model = _reply_model(model) if reasoning else model
        self.schema: dict[str, Any] = self.reply_model.model_json_schema()
        properties: dict[str, Any] = self.schema.get("properties", {})
        self.field_names: list[str] = list(properties)
        if role_description is None:
            role_description = (
                f"{model.__name__} from the language model, a JSON object with the fields "
                + ", ".join(self.field_names)
            )
        super().__init__(
            engine,
            system_prompt,
            role_description=role_description,
            temperature=temperature,
            max_tokens=max_tokens,
            seed=seed,
            stop=stop,
            demos=demos,
        )
        required = set(self.schema.get("required", []))
        self.fields_text = "\n".join(
            render_file(
                "structured_field",
                name=name,
                type=_type_of(spec),
                required="required" if name in required else "optional",
                description=f": {spec['description']}" if spec.get("description") else "",
            )
            for name, spec in properties.items()
        )
        self.format_text = render_file(
            "structured_format",
            fields=self.fields_text,
            schema=json.dumps(self.schema, ensure_ascii=False),
        )
        self.response_format = ResponseFormat(
            type="json_schema", name=model.__name__, json_schema=self.schema
        )

    def __call__(self, input: Variable | Sequence[Variable]) -> StructuredVariable:
        return run_sync(self.acall(input))

    async def acall(self, input: Variable | Sequence[Variable]) -> StructuredVariable:
        """One input is the user message; a list of inputs is one user message of their
        values in order, separated by a blank line, as `tg.LLMCall([a, b])` joins them.
        Backward reaches each of them."""
        if isinstance(input, (list, tuple)):
            given = ensure_variables(input, "StructuredLLMCall inputs")
        else:
            given = (ensure_variable(input, "StructuredLLMCall input"),)
        user = joined_content(given)
        user_text = content_text(user)
        inputs = self._inputs(*given)
        engine = self._forward_engine()
        request = self._request(inputs, user, system_suffix=self.format_text)
        request = request.model_copy(update={"response_format": self.response_format})
        reply = await call_with_repair(
            engine,
            request,
            self._parse,
            lambda error: render_file("structured_repair", error=error, fields=self._quoted()),
        )
        if not reply.ok:
            raise StructuredOutputError(
                f"StructuredLLMCall: the reply is not a valid {self.output_model.__name__} "
                f"after one repair turn: {reply.error}. The last reply began "
                f"{reply.text[:200]!r}. Use a model or provider that supports structured "
                "outputs, raise max_tokens if the reply was cut off, or simplify the model's "
                "fields.",
                reply=reply.text,
                problem=reply.error or "",
            )
        parsed, reasoning = reply.value
        text = self._json_text(parsed, reasoning)
        node = Node(op=self, inputs=inputs, engine=engine, saved={"user_text": user_text})
        if isinstance(user, str):  # a demonstration holds text: calls with images are not mined
            record(OpCall(op=self, inputs=user_text, output=text, demos=self.demos))
        out = StructuredVariable._from_op(text, role_description=self.role_description, node=node)
        assert isinstance(out, StructuredVariable)
        out.parsed, out.reasoning = parsed, reasoning
        return out

    def parse(self, text: str) -> BaseModel:
        """The output model instance in `text` (an output's value): for metrics that read
        fields, `metric = lambda pred, ex: op.parse(pred).answer == ex["answer"]`."""
        try:
            return self._parse(text)[0]
        except ValueError as exc:
            raise StructuredOutputError(
                f"not a valid {self.output_model.__name__}: {exc}", reply=text, problem=str(exc)
            ) from exc

    def _parse(self, text: str) -> tuple[BaseModel, str | None]:
        data = load_json_object(text)
        if not isinstance(data, dict):
            raise ValueError("the reply's JSON is not an object")
        reasoning = None
        if self.reasoning:
            data = dict(data)
            reasoning = data.pop(REASONING, None)
            if not isinstance(reasoning, str) or not reasoning.strip():
                raise ValueError(f'the field "{REASONING}" is missing or is not a non-empty string')
        try:
            parsed = self.output_model.model_validate(data)
        except ValidationError as exc:
            raise ValueError(
                f"the JSON object does not match the schema ({validation_problems(exc)})"
            ) from exc
        return parsed, reasoning

    def _json_text(self, parsed: BaseModel, reasoning: str | None) -> str:
        fields = parsed.model_dump(mode="json", by_alias=True)
        if reasoning is not None:
            fields = {REASONING: reasoning, **fields}
        return json.dumps(fields, ensure_ascii=False)

    def _quoted(self) -> str:
        return ", ".join(f'"{name}"' for name in self.field_names)

    def describe(self, node: Node, elide: Variable | None = None) -> str:
        role, text = user_turn_context(self._user_inputs(node), elide)
        return render_file(
            "context_structured_call",
            field_names=self._quoted(),
            fields=self.fields_text,
            system_block=self._system_block(node, elide),
            input_role=role,
            input=text,
            output_role=node.output.role_description if node.output else "",
            output=shown(node.output, elide) if node.output else "",
        )
