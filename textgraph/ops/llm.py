"""LLM operations: a model called with a (possibly optimizable) system prompt."""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from textgraph._sync import run_sync
from textgraph._textgrad import refuse_options
from textgraph.demos import Demo, Demos
from textgraph.engines.base import ChatRequest, Engine, Message, call_engine
from textgraph.engines.content import ImagePart, TextPart, parts_text
from textgraph.engines.context import check_engine, forward_override, resolve_engine
from textgraph.engines.observe import current_forward_purpose
from textgraph.errors import ArgumentError
from textgraph.image import Image
from textgraph.ops.base import BackwardContext, Feedback, Node, Operation, llm_backward, shown
from textgraph.ops.trace import OpCall, record
from textgraph.prompts import fence, placeholders, render, render_file, render_segments
from textgraph.variable import Variable, ensure_variable, ensure_variables

# A user turn: plain text, or text and image parts in reading order.
UserContent = str | tuple[TextPart | ImagePart, ...]

# One image part per tg.Image (immutable), so its bytes are hashed once, not once per call.
_parts: weakref.WeakKeyDictionary[Image, ImagePart] = weakref.WeakKeyDictionary()


def image_part(image: Image) -> ImagePart:
    part = _parts.get(image)
    if part is None:
        part = _parts[image] = ImagePart(data=image.data, media_type=image.media_type)
    return part


def user_content(segments: Sequence[object]) -> UserContent:
    """Text segments and tg.Image inputs in reading order, as a user turn: a str when there
    is no image (exactly as before images existed), else text and image parts."""
    if not any(isinstance(s, Image) for s in segments):
        return "".join(str(s) for s in segments)
    parts: list[TextPart | ImagePart] = []
    text: list[str] = []
    for segment in segments:
        if isinstance(segment, Image):
            if "".join(text):
                parts.append(TextPart(text="".join(text)))
            text = []
            parts.append(image_part(segment))
        else:
            text.append(str(segment))
    if "".join(text):
        parts.append(TextPart(text="".join(text)))
    return tuple(parts)


def joined_content(inputs: Sequence[Variable]) -> UserContent:
    """One user turn of several inputs in order, a blank line between them; images stay
    images (tg.concat's separator, so a list reads as the concatenated text would)."""
    segments: list[object] = []
    for i, v in enumerate(inputs):
        if i:
            segments.append("\n\n")
        segments.append(v if isinstance(v, Image) else v.value)
    return user_content(segments)


def user_turn_context(users: Sequence[Variable], elide: Variable | None) -> tuple[str, str]:
    """(role, text) of a call's user turn for backward context: one input as itself, several
    as numbered fields, so a critic can say which of them to change."""
    if len(users) == 1:
        return users[0].role_description, shown(users[0], elide)
    text = "\n".join(
        render_file(
            "context_field", name=f"input {i}", role=v.role_description, value=shown(v, elide)
        )
        for i, v in enumerate(users, 1)
    )
    return f"user message made of these {len(users)} inputs, in order", text


def content_text(content: UserContent) -> str:
    return content if isinstance(content, str) else parts_text(content)


def _system_variable(system_prompt: Variable | str | None) -> Variable | None:
    if isinstance(system_prompt, Image):
        raise ArgumentError(
            "system_prompt cannot be a tg.Image: providers take images in user messages only; "
            "pass the image as the call's input (or a FormattedLLMCall field)"
        )
    if system_prompt is None or isinstance(system_prompt, Variable):
        return system_prompt
    if isinstance(system_prompt, str):
        return Variable(system_prompt, role_description="system prompt")
    raise ArgumentError(
        f"system_prompt must be a tg.Variable, a str or None, got {type(system_prompt).__name__}"
    )


def output_role(given: object, default: str | None, owner: str) -> str | None:
    """A call's `response_role_description` (TextGrad's name for the output's role), checked;
    `default` when not given."""
    if given is None:
        return default
    if not isinstance(given, str) or not given.strip():
        raise ArgumentError(
            f"{owner} response_role_description= must be a non-empty str (what the reply is, "
            f"e.g. 'evaluation of the answer'), got {given!r}"
        )
    return given


def _demos(demos: object) -> Demos | None:
    if demos is None or isinstance(demos, Demos):
        return demos
    raise ArgumentError(
        f"demos must be a tg.Demos or None, got {type(demos).__name__}: wrap the list, e.g. "
        "tg.Demos([...], role_description='few-shot examples for the classifier')"
    )


def sampling_parameters(
    owner: str,
    *,
    temperature: object = None,
    max_tokens: object = None,
    seed: object = None,
    stop: object = None,
) -> dict[str, Any]:
    """Checked sampling parameters of a call, so a mistake fails where it was made.

    temperature: a finite number >= 0; max_tokens: an int >= 1; seed: an int;
    stop: a str (one stop sequence, not one per character) or a list of
    non-empty str (an empty list means none). None leaves each to the engine.
    """
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not math.isfinite(temperature)
        or temperature < 0
    ):
        raise ArgumentError(
            f"{owner} temperature must be a number >= 0 (0 for the most repeatable output, "
            f"about 1 for varied output) or None for the engine's default, got {temperature!r}"
        )
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise ArgumentError(
            f"{owner} max_tokens must be an int >= 1 (the longest reply, in tokens) or None "
            f"for the engine's default, got {max_tokens!r}"
        )
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ArgumentError(f"{owner} seed must be an int or None, got {seed!r}")
    stops: list[str] | None
    if stop is None:
        stops = None
    elif isinstance(stop, str):
        if not stop:
            raise ArgumentError(f"{owner} stop must not be an empty str; use None for no stop")
        stops = [stop]  # one stop sequence: "\n\n" stops at a blank line, not at any "\n"
    elif isinstance(stop, (list, tuple)):
        for i, item in enumerate(stop):
            if not isinstance(item, str) or not item:
                raise ArgumentError(
                    f"{owner} stop[{i}] must be a non-empty str, got {item!r}; stop is a str "
                    "or a list of str such as ['\\n\\n', 'END']"
                )
        stops = list(stop) or None
    else:
        raise ArgumentError(
            f"{owner} stop must be a str or a list of str (stop sequences, e.g. ['\\n\\n']) "
            f"or None, got {stop!r}"
        )
    return {"temperature": temperature, "max_tokens": max_tokens, "seed": seed, "stop": stops}


class _LLMOperation(Operation):
    """Shared plumbing: engine resolution, sampling parameters, the forward call."""

    calls_llm = True

    def __init__(
        self,
        engine: Engine | str | None,
        system_prompt: Variable | str | None,
        *,
        role_description: str,
        temperature: float | None,
        max_tokens: int | None,
        seed: int | None,
        stop: str | Sequence[str] | None,
        demos: Demos | None = None,
    ) -> None:
        engine = check_engine(engine, f"{type(self).__name__}(engine)")
        self.sampling: dict[str, Any] = sampling_parameters(
            f"{type(self).__name__}(...)",
            temperature=temperature,
            max_tokens=max_tokens,
            seed=seed,
            stop=stop,
        )
        self.engine = engine
        self.system_prompt = _system_variable(system_prompt)
        self.demos = _demos(demos)
        self.role_description = role_description

    async def _generate(
        self, inputs: tuple[Variable, ...], user: UserContent, received: str | dict[str, str]
    ) -> tuple[str, Node]:
        engine = self._forward_engine()
        response = await call_engine(engine, self._request(inputs, user))
        node = Node(op=self, inputs=inputs, engine=engine, saved={"user_text": content_text(user)})
        if isinstance(user, str):  # a demonstration holds text: calls with images are not mined
            record(OpCall(op=self, inputs=received, output=response.text, demos=self.demos))
        return response.text, node

    def _forward_engine(self) -> Engine:
        return resolve_engine(
            forward_override(), self.engine, what=f"{type(self).__name__} forward"
        )

    def _request(
        self,
        inputs: tuple[Variable, ...],
        user_text: UserContent,
        system_suffix: str | None = None,
    ) -> ChatRequest:
        """The forward request: system prompt (plus `system_suffix`), demos, the user turn
        (text, or text and image parts)."""
        user_text = self._with_images(inputs, user_text)
        system = self.system_prompt.value if self.system_prompt is not None else None
        if system_suffix is not None:
            system = f"{system}\n\n{system_suffix}" if system else system_suffix
        messages = [Message(role="system", content=system)] if system is not None else []
        if self.demos is not None:
            for demo in self.demos.items:
                messages.append(Message(role="user", content=self.demo_text(demo)))
                messages.append(Message(role="assistant", content=demo.reply()))
        if isinstance(user_text, str):
            messages.append(Message(role="user", content=user_text))
        else:
            messages.append(Message(role="user", parts=user_text))
        return ChatRequest(
            messages=messages,
            purpose=current_forward_purpose(),
            variable_ids=[v.id for v in inputs],
            **self.sampling,
        )

    def _with_images(self, inputs: tuple[Variable, ...], user: UserContent) -> UserContent:
        """The user turn with its images. An op that passes a lone tg.Image's text (its
        description) gets the image itself; an image input that is not in the turn at all
        is an error, never silently a description sent in its place."""
        if not isinstance(user, str):
            return user
        images = [v for v in inputs[len(self._prefix()) :] if isinstance(v, Image)]
        if not images:
            return user
        if len(images) == 1 and user == images[0].value:
            return (image_part(images[0]),)
        raise ArgumentError(
            f"{type(self).__name__} got image input(s) "
            f"{', '.join(i.value for i in images)} but does not place them in its user "
            "message; pass images to tg.LLMCall or as tg.FormattedLLMCall fields"
        )

    def demo_text(self, demo: Demo) -> str:
        """The user turn of one demonstration."""
        return demo.text_input()

    def _prefix(self) -> tuple[Variable, ...]:
        """Inputs before the call's own: the system prompt and the demos, when set."""
        return tuple(v for v in (self.system_prompt, self.demos) if v is not None)

    def _inputs(self, *rest: Variable) -> tuple[Variable, ...]:
        return self._prefix() + rest

    def _user_inputs(self, node: Node) -> tuple[Variable, ...]:
        return node.inputs[len(self._prefix()) :]

    def location_of(self, node: Node, variable: Variable) -> str:
        """Where `variable` sits in the call: the system prompt or demos, else the user turn
        (numbered when it is made of several inputs). FormattedLLMCall names its fields."""
        where = self._location_in_prefix(node, variable)
        if where is not None:
            return where
        users = self._user_inputs(node)
        if len(users) > 1:
            for i, v in enumerate(users, 1):
                if v is variable:
                    return f"input {i} of the user message"
        return "the input (user message)"

    def _system_block(self, node: Node, elide: Variable | None) -> str:
        """The system prompt and the demonstrations of this call, as context text."""
        block = ""
        if self.system_prompt is not None:
            system = node.inputs[0]
            block += render_file(
                "context_llm_call_system",
                system_role=system.role_description,
                system=shown(system, elide),
            )
            block += "\n"
        if self.demos is not None:
            demos = node.inputs[len(self._prefix()) - 1]
            block += render_file(
                "context_demos", demos_role=demos.role_description, demos=shown(demos, elide)
            )
            block += "\n"
        return block

    def _location_in_prefix(self, node: Node, variable: Variable) -> str | None:
        if self.system_prompt is not None and variable is node.inputs[0]:
            return "the system prompt"
        if self.demos is not None and variable is node.inputs[len(self._prefix()) - 1]:
            return "the few-shot demonstrations"
        return None

    async def backward(self, ctx: BackwardContext) -> list[Feedback]:
        return await llm_backward(ctx)


class LLMCall(_LLMOperation):
    """`LLMCall(engine, system_prompt=...)(question) -> answer Variable`.

    Sampling parameters are checked here, not at call time: temperature a
    number >= 0, max_tokens an int >= 1, seed an int, stop a str (one stop
    sequence) or a list of str; None leaves each to the engine.
    """

    name = "llm_call"

    def __init__(
        self,
        engine: Engine | str | None = None,
        system_prompt: Variable | str | None = None,
        *,
        role_description: str = "response from the language model",
        temperature: float | None = None,
        max_tokens: int | None = None,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        demos: Demos | None = None,
    ) -> None:
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

    def __call__(
        self, input: Variable | Sequence[Variable], *, response_role_description: str | None = None
    ) -> Variable:
        return run_sync(self.acall(input, response_role_description=response_role_description))

    async def acall(
        self, input: Variable | Sequence[Variable], *, response_role_description: str | None = None
    ) -> Variable:
        """One input is the user message; a list of inputs (text and tg.Image) is one user
        message of their values in order, texts separated by a blank line.
        `response_role_description` (as in TextGrad) names the output of this call; None: the
        op's role_description."""
        role = output_role(response_role_description, self.role_description, "LLMCall")
        if isinstance(input, (list, tuple)):
            inputs = ensure_variables(input, "LLMCall inputs")
        else:
            inputs = (ensure_variable(input, "LLMCall input"),)
        user = joined_content(inputs)
        text, node = await self._generate(self._inputs(*inputs), user, content_text(user))
        return Variable._from_op(text, role_description=role, node=node)

    def describe(self, node: Node, elide: Variable | None = None) -> str:
        role, text = user_turn_context(self._user_inputs(node), elide)
        return render_file(
            "context_llm_call",
            system_block=self._system_block(node, elide),
            input_role=role,
            input=text,
            output_role=node.output.role_description if node.output else "",
            output=shown(node.output, elide) if node.output else "",
        )


class FormattedLLMCall(_LLMOperation):
    """An LLM call whose user message is a template filled with named Variables.

    `fields` declares the template's fields: a list of names, or a mapping
    of name -> Variable giving default bindings (None: no default, as TextGrad's
    `fields={"q": None}`). Call with keyword Variables (`op(question=q, context=c)`)
    or a mapping; TextGrad's `op(inputs={...}, response_role_description="...")`
    works too. Values are inserted verbatim: braces or tag-like text in them never
    break it. Sampling parameters are checked as in `LLMCall`.
    """

    name = "formatted_llm_call"

    def __init__(
        self,
        engine: Engine | str | None,
        template: str | None = None,  # None only so format_string= gets a clear error
        fields: Sequence[str] | Mapping[str, Variable] | None = None,
        system_prompt: Variable | str | None = None,
        *,
        role_description: str = "response from the language model",
        temperature: float | None = None,
        max_tokens: int | None = None,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        demos: Demos | None = None,
        **textgrad_options: Any,
    ) -> None:
        refuse_options("FormattedLLMCall", textgrad_options)
        if fields is None:
            raise ArgumentError("FormattedLLMCall needs fields=[...]: the template's field names")
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
        if not isinstance(template, str):
            raise ArgumentError(f"template must be a str, got {type(template).__name__}")
        if isinstance(fields, Mapping):
            # A value is a default binding; None (or TextGrad's {}) declares the field only.
            self.defaults = {
                k: ensure_variable(v, f"field {k!r}")
                for k, v in fields.items()
                if not (v is None or (isinstance(v, dict) and not v))
            }
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
        fields, role = self._textgrad_form(mapping, dict(fields))
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
        texts = {k: v.value for k, v in values.items()}
        # An image field's place in the template is where its image part goes.
        user = user_content(
            render_segments(
                self.template,
                **{k: v if isinstance(v, Image) else v.value for k, v in values.items()},
            )
        )
        text, node = await self._generate(self._inputs(*values.values()), user, texts)
        return Variable._from_op(text, role_description=role or self.role_description, node=node)

    def _textgrad_form(
        self, mapping: Mapping[str, Variable] | None, fields: dict[str, Any]
    ) -> tuple[dict[str, Any], str | None]:
        """TextGrad's call form, `call(inputs={...}, response_role_description="...")`: the
        fields in `inputs` and the output's role for this call. Only when neither name is a
        field of the template, so a template's own {inputs} field keeps its meaning."""
        role = None
        if "response_role_description" in fields and (
            "response_role_description" not in self.field_names
        ):
            role = output_role(fields.pop("response_role_description"), None, "FormattedLLMCall")
        if "inputs" in fields and "inputs" not in self.field_names:
            inputs = fields.pop("inputs")
            if not isinstance(inputs, Mapping):
                raise ArgumentError(
                    "FormattedLLMCall inputs= (TextGrad's call form) must be a dict field name "
                    f"-> tg.Variable, got {type(inputs).__name__}; or pass the fields as keywords, "
                    "call(question=q, answer=a)"
                )
            if mapping is not None:
                raise ArgumentError(
                    "FormattedLLMCall got both a mapping and inputs=...; give the fields once"
                )
            twice = sorted(set(inputs) & set(fields))
            if twice:
                raise ArgumentError(
                    f"FormattedLLMCall got field(s) {twice} both in inputs= and as keywords; "
                    "give each field once"
                )
            fields = {**inputs, **fields}
        return fields, role

    def demo_text(self, demo: Demo) -> str:
        """A demo's fields fill the template; a str demo is the user turn as given."""
        if isinstance(demo.inputs, str):
            return demo.inputs
        missing = [n for n in self.field_names if n not in demo.inputs]
        if missing:
            raise ArgumentError(
                f"a demonstration for this FormattedLLMCall lacks field(s) {missing}; its "
                f"inputs have {sorted(demo.inputs)}, the template needs {self.field_names}"
            )
        return render(self.template, **{n: demo.inputs[n] for n in self.field_names})

    def describe(self, node: Node, elide: Variable | None = None) -> str:
        offset = len(self._prefix())
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
        where = self._location_in_prefix(node, variable)
        if where is not None:
            return where
        offset = len(self._prefix())
        for name, v in zip(self.field_names, node.inputs[offset:], strict=True):
            if v is variable:
                return f"the field '{name}'"
        return super().location_of(node, variable)
