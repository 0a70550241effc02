"""Clear errors for TextGrad keyword arguments that textgraph spells differently.

Code ported from TextGrad fails with a message saying what to write
instead, rather than a bare "unexpected keyword argument".
"""

from __future__ import annotations

from typing import Any

from textgraph.errors import ArgumentError

INSTEAD = {
    "format_string": "pass the template as `template=` (or the second positional argument)",
    "gradient_memory": (
        "pass `momentum=N`: TGD then shows the parameter's last N values with the feedback "
        "each received"
    ),
    "new_variable_tags": "drop it: TGD asks for the new value between its own markers",
    "optimizer_system_prompt": (
        "drop it: textgraph's optimizer prompts are files in textgraph/prompts/ (see "
        "docs/prompts.md); steer the rewrite with `constraints=[...]`"
    ),
    "verbose": "drop it: textgraph logs to the 'textgraph' logger; enable it with logging",
}


def refuse_options(where: str, options: dict[str, Any]) -> None:
    """Raise for keyword arguments `where` does not take, naming the textgraph spelling."""
    if not options:
        return
    name = sorted(options)[0]
    advice = INSTEAD.get(name)
    if advice is not None:
        raise ArgumentError(f"{where} has no {name}= (a TextGrad argument); {advice}.")
    raise ArgumentError(f"{where} got unexpected keyword argument(s) {sorted(options)}")


# TextGrad names textgraph does not define, with what to write instead (a module-level
# __getattr__ in textgraph and textgraph.autograd raises AttributeError with this advice).
MISSING_NAMES = {
    "aggregate": (
        "use tg.sum(variables): backward gives each summed input its own part of the "
        "objective, so no LLM call is spent merging critiques"
    ),
    "EngineLM": (
        "engines subclass tg.engines.Engine and implement async _generate(request) -> "
        "ChatResponse; for a test double use tg.engines.ScriptedEngine(lambda request: 'reply')"
    ),
    "MultimodalLLMCall": (
        "pass a tg.Image and the question in a list to tg.LLMCall: "
        "tg.LLMCall(engine)([image, question]) (see docs/images.md)"
    ),
    "OrderedFieldsMultimodalLLMCall": (
        "use tg.FormattedLLMCall with the tg.Image as a field: its place in the template is "
        "where the image goes (see docs/images.md)"
    ),
    "LLMCall_with_in_context_examples": (
        "pass demos=tg.Demos([...]) to tg.LLMCall: the examples are chat turns and a "
        "parameter of their own (see docs/demos.md)"
    ),
    "MultiFieldTokenParsedEvaluation": (
        "use tg.MultiFieldEvaluation(instruction, role_descriptions) and read the tags from "
        "the loss's .value, or score with a Python metric through tg.MetricLoss"
    ),
    "MultiChoiceTestTime": (
        "use tg.TextLoss(instruction) on the answer, or tg.FormattedLLMCall with the question "
        "and the answer as fields (docs/coming-from-textgrad.md)"
    ),
    "SingletonBackwardEngine": (
        "set it with tg.set_backward_engine(...) or tg.configure(backward_engine=...); read "
        "it with tg.engines.context.configured('backward_engine')"
    ),
    "tasks": (
        "textgraph's datasets are in textgraph.datasets (load_bbh, load_gsm8k, "
        "generate_object_counting); tg.Trainer draws seeded minibatches (batch_size=)"
    ),
    "loss": "the losses are at the top level: tg.TextLoss, tg.MultiFieldEvaluation, ...",
    "optimizer": "the optimizers are tg.TGD (tg.TextualGradientDescent) and tg.optim.*",
    "engine": "engines: tg.get_engine(...) and the tg.engines package",
    "model": "tg.BlackboxLLM is at the top level (an alias of tg.LLMCall)",
}


def missing_name(module: str, name: str) -> AttributeError:
    """The AttributeError for `module.name`, naming textgraph's spelling for TextGrad's."""
    advice = MISSING_NAMES.get(name)
    if advice is None:
        return AttributeError(f"module {module!r} has no attribute {name!r}")
    return AttributeError(
        f"module {module!r} has no attribute {name!r} (a TextGrad name); {advice}"
    )
