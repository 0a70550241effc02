"""A program's structure as text, read from its graph: what instruction proposers see.

The steps are the module's LLM ops in the order one traced run called them;
the data flow comes from the run's graph (which op's output variable is
which other op's input), so it is what the program did, not what its source
says.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from textgraph.module import Module
from textgraph.ops.base import Node, Operation
from textgraph.variable import Variable


def _nodes(output: Variable) -> list[Node]:
    """The graph's nodes, inputs before the ops that consumed them."""
    order: list[Node] = []
    seen: set[int] = set()

    def visit(variable: Variable) -> None:
        node = variable.grad_fn
        if node is None or id(node) in seen:
            return
        seen.add(id(node))
        for v in node.inputs:
            visit(v)
        order.append(node)

    visit(output)
    return order


def describe_program(module: Module, output: Any = None) -> str:
    """Numbered steps (op, its parameters by name, where its inputs come from)."""
    names = {id(p): n for n, p in module.named_parameters()}
    nodes = _nodes(output) if isinstance(output, Variable) else []
    llm_nodes = [n for n in nodes if n.op.calls_llm]
    step_of: dict[int, int] = {}
    for i, node in enumerate(llm_nodes, 1):
        step_of.setdefault(id(node.op), i)
    lines = []
    if not llm_nodes:  # no traced run: list the module's LLM ops
        from textgraph.optim.demos import ops_of

        ops = [op for op in ops_of(module) if op.calls_llm]
        for i, op in enumerate(ops, 1):
            lines.append(f"Step {i}: {_describe_op(op, names)}")
        return "\n".join(lines) or "(no language-model calls found)"
    producer = {id(n.output): n for n in nodes if n.output is not None}
    for i, node in enumerate(llm_nodes, 1):
        lines.append(f"Step {i}: {_describe_op(node.op, names)}")
        for v in node.inputs:
            if id(v) in names:
                continue
            where = node.op.location_of(node, v)
            source = producer.get(id(v))
            if source is None:
                lines.append(f"  - {where} ({v.role_description}) is an input of the program")
            elif source.op.calls_llm:
                lines.append(f"  - {where} is the output of step {step_of[id(source.op)]}")
            else:
                lines.append(
                    f"  - {where} ({v.role_description}) is computed by '{source.op.name}' "
                    "from earlier values"
                )
    last = llm_nodes[-1]
    if last.output is output:
        lines.append(f"The output of step {len(llm_nodes)} is the program's answer.")
    return "\n".join(lines)


def _describe_op(op: Operation, names: dict[int, str]) -> str:
    role = getattr(op, "role_description", op.name)
    parts = [f"a language-model call ({op.name}) producing '{role}'"]
    system = getattr(op, "system_prompt", None)
    if system is not None:
        label = names.get(id(system))
        parts.append(f"instruction: parameter '{label}'" if label else "a fixed system prompt")
    demos = getattr(op, "demos", None)
    if demos is not None:
        label = names.get(id(demos))
        parts.append(f"few-shot demonstrations: parameter '{label or 'fixed'}'")
    fields = getattr(op, "field_names", None)
    if fields:
        parts.append("template fields: " + ", ".join(fields))
    return "; ".join(parts)


def example_text(example: Any) -> str:
    """An example as `field: value` lines (every field), for prompts that show data."""
    if isinstance(example, BaseModel):
        example = example.model_dump()
    if isinstance(example, dict):
        return "\n".join(f"{k}: {v}" for k, v in example.items())
    return str(example)
