"""Regenerate docs/prompts.md from textgraph/prompts/*.txt: python scripts/gen_prompts_doc.py"""

from importlib import resources
from pathlib import Path

groups = [
    (
        "Backward (critic)",
        "Sent when an op's output has feedback and some of its inputs require grad. The system prompt frames the job; the user prompt shows the forward call (one of the context templates), the feedback on its output, and the variables to critique. With one target the reply is free text; with several it is a JSON object keyed by variable (the request carries the JSON schema in `response_format`).",
        [
            "backward_system",
            "backward_user",
            "backward_targets",
            "backward_reply_text",
            "backward_reply_json",
        ],
    ),
    (
        "Fused backward (one critic call per loss)",
        "Sent by `loss.backward(fused=True)` and `tg.Trainer(backward=\"fused\")`, once per loss: the user prompt lists every call between the loss and the parameters in the order they ran (each rendered with the context templates below, cut to the limit; a line replaces the middle calls when they exceed three times the limit), the loss's feedback, and the parameters with their current values. The reply is a JSON object keyed by parameter (the request carries the JSON schema); see [fused-backward.md](fused-backward.md).",
        [
            "fused_backward_system",
            "fused_backward_user",
            "fused_backward_call",
            "fused_backward_parameter",
            "fused_backward_omitted",
        ],
    ),
    (
        "Fused loss (tg.losses.FusedTextLoss)",
        "One call that evaluates the output, as `TextLoss` does, and in the same JSON reply writes the critique of every parameter the output depends on, so backward needs no call of its own.",
        ["fused_loss_system", "fused_loss_user"],
    ),
    (
        "Context of a call",
        "How each op renders its forward call inside backward prompts and, with the optimized variable's own text elided, inside optimizer prompts.",
        [
            "context_llm_call",
            "context_llm_call_system",
            "context_demos",
            "context_formatted_call",
            "context_field",
            "context_image",
            "context_structured_call",
            "context_function",
            "context_retrieve",
            "context_compress",
            "context_evaluation",
        ],
    ),
    (
        "Optimizer (TGD)",
        "One request per parameter. The markers `{start}`/`{end}` are unique to the call and never occur in the data, so text inside the variable or its feedback cannot fake the answer block.",
        [
            "optimizer_system",
            "optimizer_user",
            "optimizer_feedback_item",
            "optimizer_momentum",
            "optimizer_past_value",
            "optimizer_examples",
            "optimizer_constraints",
        ],
    ),
    (
        "Instruction proposals (MIPRO)",
        "MIPRO first asks for a short description of the dataset from a sample of training examples, then one instruction per (parameter, tip): the request shows the dataset description, the program's structure read from a traced run's graph, the step's current instruction and its inputs and outputs in runs that passed the metric. Each proposal uses the next style tip from `mipro_tips` (one per line).",
        [
            "mipro_dataset_system",
            "mipro_dataset_user",
            "mipro_instruction_system",
            "mipro_instruction_user",
            "mipro_tips",
        ],
    ),
    (
        "Instruction induction and resampling (APE)",
        "Round 0 of APE sends `num_proposals` induction requests (the paper's forward-generation template), each with a different seeded sample of training examples as input/output pairs, the program's structure and the parameter's current value. Later rounds ask for variations of the best candidates, keeping their meaning. Requests carry `purpose=\"ape\"`.",
        ["ape_induce_system", "ape_induce_user", "ape_vary_system", "ape_vary_user"],
    ),
    (
        "Optimization by prompting (OPRO)",
        "One meta-prompt per step and text parameter, sent `candidates_per_step` times with distinct seeds: the program's structure, up to `history` past values with their validation scores (0-100) in ascending order, the best last, and a few training exemplars with their expected answers. Requests carry `purpose=\"opro\"`. ParetoTGD's rewrites use the TGD templates above.",
        ["opro_system", "opro_user", "opro_past_value", "opro_exemplars", "opro_exemplar"],
    ),
    (
        "Compression (tg.Compress)",
        "`tg.Compress` makes no LLM call: its backward passes the feedback on the compressed text through to the original (and to a rate Variable), with this note of what was removed, so a critique that says information was missing can be traced to the compression.",
        ["compress_feedback"],
    ),
    (
        "Losses",
        "`TextLoss` and `MultiFieldEvaluation` use the evaluator prompts; `MetricLoss` asks for an explanation only when the metric's score is below perfect, and shows how the prediction was produced.",
        ["loss_system", "loss_user", "metric_explain_system", "metric_explain_user"],
    ),
    (
        "Gradient reduction (Trainer)",
        "When a parameter's critiques (with their contexts) exceed `max_gradient_chars`, the trainer merges them in chunks of bounded size, then merges the merges, until one summary fits. Each critique is labelled with the training examples it came from.",
        ["reduce_system", "reduce_user", "reduce_item"],
    ),
    (
        "Typed outputs (tg.StructuredLLMCall)",
        "Appended to the call's system prompt (after a blank line; the optimizable system prompt itself stays as written): the fields, one `structured_field` line each, and the output model's JSON schema, which the request also carries in `response_format`. With `reasoning=True` a first field `reasoning` is added, described by `structured_reasoning`. A reply that does not validate gets one `structured_repair` turn.",
        ["structured_format", "structured_field", "structured_reasoning", "structured_repair"],
    ),
    (
        "Meta-prompting (tg.MetaPrompt)",
        "`meta_conductor` is the conductor's default system prompt (an optimizable parameter; the decision's fields and JSON schema are appended as for any `tg.StructuredLLMCall`). Each round the conductor reads `meta_conductor_user`: the problem, each expert's name and role description (never its instructions), the consultations so far (one `meta_consultation` each) and `meta_rounds_left`, or `meta_last_round` once `max_rounds` consultations are used. Each expert is an `LLMCall` whose system prompt is its instructions and whose user message is only the conductor's question.",
        [
            "meta_conductor",
            "meta_conductor_user",
            "meta_consultation",
            "meta_rounds_left",
            "meta_last_round",
        ],
    ),
    (
        "Repair turns",
        "Sent once when a reply cannot be parsed; the model's bad reply stays in the conversation so it can see what went wrong.",
        ["repair_json", "repair_delimited"],
    ),
]
out = [
    "# Prompts",
    "",
    "The backward, optimizer and loss prompts are product: they are written for capable models (GPT-4o-class, Claude, Llama-3-70B) and live as text files in `textgraph/prompts/`. This page shows each one verbatim (a test keeps it in sync).",
    "",
    "Templates use `{name}` placeholders, filled in a single pass: a value containing braces is inserted as is and never re-expanded. `{{` and `}}` are literal braces. Data placed inside the XML-like section tags is passed through `fence()`, which turns look-alikes of those tags (for example a `</FEEDBACK>` inside a critique) into `&lt;/FEEDBACK>` so data cannot close a section early.",
    "",
]
listed = set()
for title, text, names in groups:
    out += [f"## {title}", "", text, ""]
    for n in names:
        listed.add(n)
        body = resources.files("textgraph.prompts").joinpath(n + ".txt").read_text().rstrip("\n")
        out += [f"### `{n}.txt`", "", "````text", body, "````", ""]
all_names = {
    p.name[:-4] for p in resources.files("textgraph.prompts").iterdir() if p.name.endswith(".txt")
}
assert all_names == listed, all_names ^ listed
open(Path(__file__).resolve().parent.parent / "docs" / "prompts.md", "w").write("\n".join(out))
