"""Compression as an op: a text Variable in, its LLMLingua-style compression out.

Typically between retrieval and the answer call: `tg.Compress(rate=0.5,
question_field="question")(passages, question=q)`. Forward runs the compressor
(a small local model, in a worker thread). Backward passes the feedback on the
compressed text through to the original, with a note of what was removed, so
"the answer was missing" can be traced to the compression; when the rate is a
Variable that requires grad, it receives that feedback too and an optimizer can
raise or lower it (the op reads the first number in its value: "0.6", "60%").
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

from textgraph._sync import run_sync
from textgraph.errors import ArgumentError
from textgraph.ops.base import BackwardContext, Feedback, Node, Operation, refuse_images, shown
from textgraph.prompts import fence, render_file
from textgraph.variable import Variable, ensure_variable

if TYPE_CHECKING:
    from textgraph.compression import CompressionResult, PerplexityCompressor

_NUMBER = re.compile(r"\d+(?:\.\d+)?\s*%?|\.\d+")


class Compress(Operation):
    """`tg.Compress(compressor=None, rate=0.5, *, target_tokens=None, question_field=None)`.

    compressor: a `textgraph.compression.PerplexityCompressor` (default: the embedded
    model's, loaded once per process). rate: the fraction of tokens kept, a number or a
    tg.Variable holding one (an optimizable parameter). target_tokens: tokens to keep
    instead of a rate. question_field: the keyword argument of the call that holds the
    question; then compression is question-aware (LongLLMLingua).
    """

    name = "compress"
    backward_calls_llm = False

    def __init__(
        self,
        compressor: PerplexityCompressor | None = None,
        rate: float | Variable | None = 0.5,
        *,
        target_tokens: int | None = None,
        question_field: str | None = None,
        role_description: str | None = None,
    ) -> None:
        from textgraph.compression import PerplexityCompressor

        if compressor is not None and not isinstance(compressor, PerplexityCompressor):
            raise ArgumentError(
                "tg.Compress(compressor=) takes a textgraph.compression.PerplexityCompressor, "
                f"got {type(compressor).__name__}"
            )
        if (rate is None) == (target_tokens is None):
            raise ArgumentError(
                "tg.Compress needs exactly one of rate= (fraction of tokens kept) and "
                "target_tokens="
            )
        if rate is not None and not isinstance(rate, Variable):
            parse_rate(rate)  # fail at construction
        if target_tokens is not None and (
            isinstance(target_tokens, bool) or not isinstance(target_tokens, int)
        ):
            raise ArgumentError(f"target_tokens must be an int >= 1, got {target_tokens!r}")
        if target_tokens is not None and target_tokens < 1:
            raise ArgumentError(f"target_tokens must be an int >= 1, got {target_tokens!r}")
        if question_field is not None and not (
            isinstance(question_field, str) and question_field.isidentifier()
        ):
            raise ArgumentError(
                f"question_field must be a keyword name such as 'question', got {question_field!r}"
            )
        self._compressor = compressor
        self.rate, self.target_tokens = rate, target_tokens
        self.question_field = question_field
        self.role_description = role_description

    @property
    def compressor(self) -> PerplexityCompressor:
        if self._compressor is None:
            from textgraph.compression import default_compressor

            self._compressor = default_compressor()
        return self._compressor

    def __call__(self, text: Variable | str, **fields: Any) -> Variable:
        return run_sync(self.acall(text, **fields))

    async def acall(self, text: Variable | str, **fields: Any) -> Variable:
        text = ensure_variable(text, "tg.Compress text")
        refuse_images((text,), "tg.Compress")
        unknown = sorted(set(fields) - {self.question_field})
        if unknown:
            raise ArgumentError(
                f"tg.Compress got unexpected keyword(s) {unknown}; "
                + (
                    f"only {self.question_field}= (the question_field) is read"
                    if self.question_field
                    else "give question_field='...' to pass a question"
                )
            )
        question_var: Variable | None = None
        question: str | None = None
        if self.question_field is not None:
            if self.question_field not in fields:
                raise ArgumentError(
                    f"tg.Compress(question_field={self.question_field!r}) needs "
                    f"{self.question_field}=... in the call"
                )
            given = fields[self.question_field]
            question_var = given if isinstance(given, Variable) else None
            question = given.value if isinstance(given, Variable) else str(given)
        rate_var = self.rate if isinstance(self.rate, Variable) else None
        rate = parse_rate(self.rate.value if rate_var else self.rate) if self.rate else None
        result = await asyncio.to_thread(
            self.compressor.compress,
            text.value,
            rate=rate,
            target_tokens=self.target_tokens,
            question=question,
        )
        inputs = tuple(v for v in (text, rate_var, question_var) if v is not None)
        node = Node(
            op=self,
            inputs=inputs,
            saved={"result": result, "rate": rate, "text": text, "rate_var": rate_var},
        )
        role = self.role_description or f"compressed {text.role_description}"
        return Variable._from_op(result.text, role_description=role, node=node)

    async def backward(self, ctx: BackwardContext) -> list[Feedback]:
        texts = [g.text for g in ctx.received] if ctx.output.is_loss else ctx.feedback
        if not texts:
            return []
        result: CompressionResult = ctx.node.saved["result"]
        note = render_file(
            "compress_feedback",
            feedback="\n\n".join(texts),
            kept=result.kept_tokens,
            total=result.original_tokens,
            rate=f"{result.ratio:.2f}",
            removed=removed_text(ctx.node.saved["text"].value, result) or "nothing",
        )
        keep = (ctx.node.saved["text"], ctx.node.saved["rate_var"])
        return [Feedback(t, note) for t in ctx.targets if any(t is k for k in keep)]

    def describe(self, node: Node, elide: Variable | None = None) -> str:
        result: CompressionResult = node.saved["result"]
        text: Variable = node.saved["text"]
        rate_var: Variable | None = node.saved["rate_var"]
        method = "conditioned on a question" if result.question_aware else "plain perplexity"
        return render_file(
            "context_compress",
            method=method,
            kept=result.kept_tokens,
            total=result.original_tokens,
            rate=f"{result.ratio:.2f}",
            input_role=text.role_description,
            input=shown(text, elide),
            rate_role=rate_var.role_description if rate_var else "compression rate (fixed)",
            rate_value=shown(rate_var, elide) if rate_var else f"{node.saved['rate']}",
            output_role=node.output.role_description if node.output else "compressed text",
            output=fence(result.text),
            removed=fence(removed_text(text.value, result)) or "(nothing)",
        )

    def location_of(self, node: Node, variable: Variable) -> str:
        if variable is node.saved.get("rate_var"):
            return "the compression rate"
        if variable is node.saved.get("text"):
            return "the text that was compressed"
        return "the question the compression was conditioned on"


def parse_rate(value: object) -> float:
    """A rate in (0, 1] from a number or a text such as "0.6", "60%", "rate: 0.6"."""
    if isinstance(value, bool):
        raise ArgumentError(f"rate must be a number in (0, 1], got {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str) and (match := _NUMBER.search(value)):
        token = match.group().replace(" ", "")
        number = float(token.rstrip("%")) / (100 if token.endswith("%") else 1)
        if number > 1 and not token.endswith("%"):
            number /= 100  # "60" means 60%
    else:
        raise ArgumentError(
            f"rate must be a number in (0, 1] (the fraction of tokens kept), got {value!r:.60}"
        )
    if not 0 < number <= 1:
        raise ArgumentError(f"rate must be in (0, 1] (the fraction of tokens kept), got {value!r}")
    return number


def removed_text(original: str, result: CompressionResult, limit: int = 600) -> str:
    """The dropped spans, joined with " … " and cut to `limit` characters."""
    parts: list[str] = []
    run: list[str] = []
    for (start, end), kept in zip(result.spans, result.kept_mask, strict=False):
        if kept:
            if run:
                parts.append("".join(run).strip())
                run = []
        else:
            run.append(original[start:end])
    if run:
        parts.append("".join(run).strip())
    text = " … ".join(p for p in parts if p)
    return text if len(text) <= limit else text[: limit - 1] + "…"
