"""Meta-prompting: a conductor LLM that consults expert LLMs (Suzgun & Kalai, 2024).

Each round the conductor reads the problem and the consultations so far
and decides, as a typed JSON object, to consult one expert (name and a
self-contained question) or to give the final answer. Every step is an op
in the graph (the conductor's decision, the question taken from it, the
expert's reply, the transcript), so backward from a loss on the answer
reaches the conductor's instructions and the instructions of each expert
it consulted, and an optimizer can rewrite them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model, model_validator

from textgraph._sync import run_sync
from textgraph.engines.base import Engine
from textgraph.engines.context import check_engine
from textgraph.errors import ArgumentError, ConductorError, StructuredOutputError
from textgraph.module import Module
from textgraph.ops.base import refuse_images
from textgraph.ops.function import FunctionOp
from textgraph.ops.llm import LLMCall, sampling_parameters
from textgraph.ops.structured import StructuredLLMCall, StructuredVariable
from textgraph.prompts import load, render_file
from textgraph.structured import load_json_object
from textgraph.variable import Variable, ensure_variable

CONDUCTOR_ROLE = "instructions of the conductor, who consults experts and gives the final answer"


class Decision(BaseModel):
    """The conductor's move in one round."""

    action: Literal["consult", "final"] = Field(
        description="consult an expert, or give the final answer"
    )
    expert: str = Field(description="the expert to consult; ignored when action is final")
    question: str = Field(description='the self-contained question; "" when action is final')
    answer: str = Field(description='the final answer; "" when action is consult')

    @model_validator(mode="before")
    @classmethod
    def _final_ignores_expert(cls, data: Any) -> Any:
        """A final answer names no expert to consult: whatever it put there ("none", null, a
        name) is dropped, so a right answer is not refused over a field that is ignored."""
        if isinstance(data, dict) and data.get("action") == "final":
            return {**data, "expert": ""}
        return data

    @model_validator(mode="after")
    def _consultation_names_an_expert(self) -> Decision:
        """A consultation naming no expert fails validation, so it gets the repair turn
        (as a made-up name does) instead of ending the problem at once."""
        if self.action == "consult" and not self.expert.strip():
            raise ValueError('a consultation must name the expert to consult in "expert"')
        return self


def decision_model(names: Sequence[str], *, final_only: bool = False) -> type[Decision]:
    """`Decision` whose JSON schema allows only the expert names (and, with `final_only`, only
    the final action), so a grammar or response_format rules out a made-up expert, a
    consultation without one and, in the last round, a further consultation. Validation
    also accepts "" for the expert, and a final decision's expert is dropped (it is ignored,
    and a provider that does not enforce the schema may send "" or "none"); a consultation
    naming no expert or a made-up one fails it and gets the repair turn."""
    expert = Decision.model_fields["expert"]
    fields: dict[str, Any] = {
        "expert": (
            Literal[tuple([*names, ""])],  # type: ignore[valid-type]
            Field(description=expert.description, json_schema_extra={"enum": list(names)}),
        )
    }
    if final_only:
        action = Decision.model_fields["action"]
        fields["action"] = (
            Literal["final"],
            Field(description=action.description, json_schema_extra={"enum": ["final"]}),
        )
    return create_model(  # type: ignore[call-overload, no-any-return]
        "Decision", __base__=Decision, __doc__=Decision.__doc__, **fields
    )


def _experts(experts: object) -> dict[str, Variable]:
    if not isinstance(experts, Mapping):
        raise ArgumentError(
            "MetaPrompt(experts=...) must be a dict name -> tg.Variable (each expert's "
            f"instructions), got {type(experts).__name__}"
        )
    if not experts:
        raise ArgumentError(
            "MetaPrompt(experts={}) is empty: give at least one expert, e.g. {'mathematician': "
            "tg.Variable('You are an expert mathematician...', role_description=..., "
            "requires_grad=True)}"
        )
    checked: dict[str, Variable] = {}
    for name, instruction in experts.items():
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise ArgumentError(
                f"MetaPrompt expert names must be non-empty str without surrounding spaces, "
                f"got {name!r}"
            )
        if not isinstance(instruction, Variable):
            raise ArgumentError(
                f"MetaPrompt expert {name!r} must be a tg.Variable holding its instructions, got "
                f"{type(instruction).__name__}: wrap it, e.g. tg.Variable(text, role_description="
                f"'instructions of the {name} expert', requires_grad=True)"
            )
        checked[name] = instruction
    return checked


def _conductor_prompt(prompt: object) -> Variable:
    if prompt is None:
        return Variable(load("meta_conductor"), role_description=CONDUCTOR_ROLE, requires_grad=True)
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ArgumentError("MetaPrompt(conductor_prompt='') is empty; give instructions")
        return Variable(prompt, role_description=CONDUCTOR_ROLE, requires_grad=True)
    if isinstance(prompt, Variable):
        return prompt
    raise ArgumentError(
        "MetaPrompt(conductor_prompt=...) must be a tg.Variable, a str or None (the shipped "
        f"instructions), got {type(prompt).__name__}"
    )


def _max_rounds(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArgumentError(
            "MetaPrompt(max_rounds=...) must be an int >= 1 (the most expert consultations "
            f"before the conductor must answer), got {value!r}"
        )
    return value


def _reply_object(reply: str) -> dict[str, Any]:
    """The JSON object of a reply that failed validation, or {} when there is none."""
    try:
        data = load_json_object(reply)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def question_for_expert(decision: str) -> str:
    """The question field of a conductor's decision (its JSON text)."""
    return str(json.loads(decision)["question"])


def final_answer(decision: str) -> str:
    """The answer field of a conductor's decision (its JSON text)."""
    return str(json.loads(decision)["answer"])


class MetaPrompt(Module):
    """`MetaPrompt(engine, {"name": instructions, ...})(problem) -> answer Variable`.

    The conductor sees each expert's name and role_description, never its
    instructions. At most `max_rounds` consultations; in the last round the
    conductor is told to answer. A decision that cannot be carried out (an
    unknown expert, an empty question or answer, a consultation after the
    last round) raises ConductorError.

    Call options bound the replies: `temperature` and `seed` apply to every
    call, `max_tokens` to each conductor decision and `expert_max_tokens`
    (default: `max_tokens`) and `expert_stop` to each expert reply. The
    conductor takes no stop sequence: one inside its JSON would cut it off.
    """

    def __init__(
        self,
        engine: Engine | str | None,
        experts: Mapping[str, Variable],
        *,
        conductor_prompt: Variable | str | None = None,
        max_rounds: int = 3,
        temperature: float | None = None,
        seed: int | None = None,
        max_tokens: int | None = None,
        expert_max_tokens: int | None = None,
        expert_stop: str | Sequence[str] | None = None,
    ) -> None:
        engine = check_engine(engine, "MetaPrompt(engine)")
        self.conductor_prompt = _conductor_prompt(conductor_prompt)
        self.experts = _experts(experts)
        self.max_rounds = _max_rounds(max_rounds)
        conductor: dict[str, Any] = sampling_parameters(
            "MetaPrompt(...)", temperature=temperature, max_tokens=max_tokens, seed=seed
        )
        expert: dict[str, Any] = sampling_parameters(
            "MetaPrompt(expert_...)",
            max_tokens=max_tokens if expert_max_tokens is None else expert_max_tokens,
            stop=expert_stop,
        )
        expert.update(temperature=temperature, seed=seed)
        del conductor["stop"]
        names = list(self.experts)
        self.conductor = StructuredLLMCall(
            engine,
            output=decision_model(names),
            system_prompt=self.conductor_prompt,
            role_description="the conductor's decision: consult an expert or give the final answer",
            **conductor,
        )
        self.last_conductor = StructuredLLMCall(
            engine,
            output=decision_model(names, final_only=True),
            system_prompt=self.conductor_prompt,
            role_description="the conductor's final answer, once no consultations remain",
            **conductor,
        )
        self.expert_calls = {
            name: LLMCall(
                engine, instruction, role_description=f"reply of the expert {name!r}", **expert
            )
            for name, instruction in self.experts.items()
        }
        self._roster = "\n".join(f"- {n}: {v.role_description}" for n, v in self.experts.items())
        self._view = FunctionOp(
            self._render_view,
            "Shows the conductor the problem, the list of experts, every consultation so far "
            "and how many consultations remain.",
            role_description="what the conductor reads: the problem and the consultations so far",
            engine=engine,
        )
        self._question = FunctionOp(
            question_for_expert,
            "Takes the question the conductor wrote for the expert out of its decision.",
            role_description="the conductor's question to an expert",
            engine=engine,
        )
        self._consultation = FunctionOp(
            self._render_consultation,
            "Writes one consultation (the expert's name, the question, the reply) into the "
            "conductor's transcript.",
            role_description="one consultation in the conductor's transcript",
            engine=engine,
        )
        self._answer = FunctionOp(
            final_answer,
            "Takes the final answer out of the conductor's decision.",
            role_description="the final answer of the conductor",
            engine=engine,
        )

    def forward(self, problem: Variable) -> Variable:
        return run_sync(self.aforward(problem))

    async def aforward(self, problem: Variable) -> Variable:
        problem = ensure_variable(problem, "MetaPrompt problem")
        refuse_images(
            (problem,),
            "MetaPrompt",
            "The conductor and experts read the problem as text: describe the image in words "
            "first (e.g. with tg.LLMCall(vision_engine)([image, question])) and pass that text.",
        )
        consultations: list[Variable] = []
        for number in range(1, self.max_rounds + 2):
            left = self.max_rounds + 1 - number
            view = await self._view.acall(problem, *consultations, left=left)
            decision = await self._decide(view, number, last=left == 0)
            chosen = decision.parsed
            assert isinstance(chosen, Decision)
            if chosen.action == "final":
                if not chosen.answer.strip():
                    raise ConductorError(
                        f"MetaPrompt: the conductor gave an empty final answer in round {number}"
                    )
                return await self._answer.acall(decision)
            assert left > 0  # the last round's schema allows only "final"
            consultations.append(await self._consult(decision, chosen, number))
        raise AssertionError("unreachable: the last round returns or raises")

    async def _decide(self, view: Variable, number: int, *, last: bool) -> StructuredVariable:
        conductor = self.last_conductor if last else self.conductor
        try:
            return await conductor.acall(view)
        except StructuredOutputError as exc:
            data = _reply_object(exc.reply)
            if last and data.get("action") == "consult":
                raise ConductorError(
                    f"MetaPrompt: the conductor consulted {data.get('expert')!r} again after "
                    f"its {self.max_rounds} consultation(s) (max_rounds), although it was told "
                    "to answer, even after a repair turn. Use a provider that enforces the "
                    "JSON schema (the last round's allows only a final answer), a stronger "
                    "conductor model, or instructions that insist on answering."
                ) from exc
            unknown = data.get("expert")
            if data.get("action") == "consult" and not (isinstance(unknown, str) and unknown):
                raise ConductorError(
                    f"MetaPrompt: the conductor consulted without naming an expert in round "
                    f"{number}, even after a repair turn; the experts are "
                    f"{sorted(self.experts)}. Use a provider that enforces the JSON schema (its "
                    "expert field lists the names) or a stronger conductor model."
                ) from exc
            if isinstance(unknown, str) and unknown and unknown not in self.experts:
                raise ConductorError(
                    f"MetaPrompt: the conductor asked for the expert {unknown!r} in round "
                    f"{number}, even after a repair turn, but the experts are "
                    f"{sorted(self.experts)}. Use a provider that enforces the JSON schema (its "
                    "expert field lists the names) or a stronger conductor model."
                ) from exc
            raise

    async def _consult(
        self, decision: StructuredVariable, chosen: Decision, number: int
    ) -> Variable:
        call = self.expert_calls.get(chosen.expert)
        if call is None:
            raise ConductorError(
                f"MetaPrompt: the conductor asked for the expert {chosen.expert!r} in round "
                f"{number}, but the experts are {sorted(self.experts)}"
            )
        if not chosen.question.strip():
            raise ConductorError(
                f"MetaPrompt: the conductor consulted {chosen.expert!r} in round {number} "
                "without a question"
            )
        question = await self._question.acall(decision)
        reply = await call.acall(question)
        return await self._consultation.acall(question, reply, number=number, expert=chosen.expert)

    def _render_view(self, problem: str, *consultations: str, left: int) -> str:
        rounds = (
            render_file("meta_rounds_left", left=str(left)) if left else load("meta_last_round")
        )
        return render_file(
            "meta_conductor_user",
            problem=problem,
            experts=self._roster,
            transcript="\n\n".join(consultations) or "(none yet)",
            rounds=rounds,
        )

    @staticmethod
    def _render_consultation(question: str, reply: str, *, number: int, expert: str) -> str:
        return render_file(
            "meta_consultation", number=str(number), expert=expert, question=question, reply=reply
        )
