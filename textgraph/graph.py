"""The graph view of a variable's ancestry: order, cycle check, export.

`ancestry` is the hot path of backward: an iterative depth-first walk (no
recursion limit on deep chains) that yields predecessors before successors
in a stable order. The networkx view and the Mermaid/DOT/JSON exports are
for inspection.
"""

from __future__ import annotations

import json
from typing import Any

import networkx as nx

from textgraph._text import shorten
from textgraph.errors import ArgumentError, GraphError
from textgraph.variable import Variable


def ancestry(root: Variable) -> list[Variable]:
    """Every variable `root` depends on (itself last), predecessors first.

    Raises GraphError on a cycle, naming the variables on it.
    """
    if not isinstance(root, Variable):
        raise ArgumentError(f"expected a tg.Variable, got {type(root).__name__}")
    order: list[Variable] = []
    state: dict[Variable, int] = {}  # 1 = on the current path, 2 = done
    stack: list[tuple[Variable, int]] = [(root, 0)]
    path: list[Variable] = []
    while stack:
        node, child = stack.pop()
        if child == 0:
            if state.get(node) == 2:
                continue
            state[node] = 1
            path.append(node)
        preds = node.predecessors
        if child < len(preds):
            stack.append((node, child + 1))
            pred = preds[child]
            mark = state.get(pred)
            if mark == 1:
                cycle = [*path[path.index(pred) :], pred]
                raise GraphError(
                    "the graph has a cycle: "
                    + " -> ".join(f"{v.id} ({v.role_description})" for v in reversed(cycle))
                    + ". A variable cannot depend on itself; build a new Variable instead of "
                    "feeding an output back into its own inputs."
                )
            if mark is None:
                stack.append((pred, 0))
            continue
        state[node] = 2
        path.pop()
        order.append(node)
    return order


def critical_path_calls(root: Variable, *, optimizer_step: bool = True, fused: bool = False) -> int:
    """The longest chain of dependent LLM calls of one step ending in `root`.

    Forward: LLM ops on the longest path into the loss. Backward: ops on the
    longest path from the loss to a parameter whose backward asks an LLM
    (`fused`: one call, all losses in parallel; textgraph/fused.py).
    Plus one optimizer call. A step's wall time cannot beat this times the
    latency of one call; textgraph's scheduler aims to approach it.
    """
    order = ancestry(root)
    forward: dict[Variable, int] = {}
    for v in order:
        own = int(v.grad_fn is not None and v.grad_fn.op.calls_llm)
        forward[v] = own + max((forward[p] for p in v.predecessors), default=0)
    if fused:
        # One call per loss, all in parallel; none when the loss's own call wrote the
        # critiques (loss="fused": textgraph/losses/fused.py).
        calls = (
            any(
                v.is_loss
                and v.requires_grad
                and not any(p.is_loss for p in v.predecessors)
                and "parameter_feedback" not in v.grad_fn.saved
                for v in order
                if v.grad_fn is not None
            )
            or not root.is_loss
        )
        has_parameter = any(v.requires_grad and v.grad_fn is None for v in order)
        return forward[root] + int(has_parameter and calls) + int(optimizer_step)
    backward: dict[Variable, int] = {v: 0 for v in order}
    longest = 0
    for v in reversed(order):  # successors before predecessors
        if v.grad_fn is None or not v.requires_grad:
            continue
        step = int(v.grad_fn.op.backward_calls_llm)
        for p in v.predecessors:
            if p.requires_grad:
                backward[p] = max(backward[p], backward[v] + step)
                if p.grad_fn is None:
                    longest = max(longest, backward[p])
    return forward[root] + longest + int(optimizer_step)


def kind_of(variable: Variable) -> str:
    """parameter, input, loss, llm_output or intermediate (for colouring and export)."""
    if variable.grad_fn is None:
        return "parameter" if variable.requires_grad else "input"
    if variable.is_loss:
        return "loss"
    return "llm_output" if variable.grad_fn.op.calls_llm else "intermediate"


class TextGraph(nx.DiGraph):
    """A networkx DiGraph that notebooks display as a drawing."""

    def _repr_html_(self) -> str:
        from textgraph.report.svg import graph_svg

        return graph_svg(graph_record_of(self))


def graph(variable: Variable) -> TextGraph:
    """A networkx DiGraph of `variable`'s ancestry, keyed by variable id.

    Nodes carry value, role, requires_grad, kind, op and gradients; edges go
    from input to output and carry the op name.
    """
    g = TextGraph()
    for v in ancestry(variable):
        g.add_node(
            v.id,
            value=v.value,
            role=v.role_description,
            requires_grad=v.requires_grad,
            kind=kind_of(v),
            op=v.grad_fn.op.name if v.grad_fn else None,
            gradients=[gr.to_dict() for gr in v.gradients],
        )
        for pred in v.predecessors:
            g.add_edge(pred.id, v.id, op=v.grad_fn.op.name if v.grad_fn else None)
    return g


def graph_record(root: Variable, example_of: dict[int, int] | None = None) -> dict[str, Any]:
    """The graph with every gradient in full (text, source, op, context, conversation).

    JSON-ready: what run directories store per step and reports draw.
    `example_of` maps id(variable) to the training example it belongs to.
    """
    record = graph_record_of(graph(root))
    if example_of:
        by_id = {v.id: v for v in ancestry(root)}
        for node in record["nodes"]:
            for g, gradient in zip(node["gradients"], by_id[node["id"]].gradients, strict=True):
                g["example"] = example_of.get(id(gradient.source))
            node["example"] = example_of.get(id(by_id[node["id"]]))
    return record


def critique_paths(
    record: dict[str, Any], parameter_id: str, example: int | None = None, limit: int = 20
) -> list[list[dict[str, Any]]]:
    """The routes critiques took from a loss back to a parameter, in a graph record.

    Each path runs loss first, parameter last; every entry is the variable
    (`id`, `role`, `kind`, `value`) with the `critique` it received on that
    route (None for the loss: its value is the critique). With `example`,
    only routes that start from that training example. Stable order: the
    order in which the critiques arrived.
    """
    nodes = {n["id"]: n for n in record["nodes"]}
    if parameter_id not in nodes:
        raise ArgumentError(f"no variable {parameter_id!r} in this graph record")
    paths: list[list[dict[str, Any]]] = []

    def entry(node_id: str, critique: str | None) -> dict[str, Any]:
        node = nodes[node_id]
        keys = ("id", "role", "kind", "value")
        return {**{k: node.get(k) for k in keys}, "critique": critique}

    def walk(node_id: str, critique: str | None, suffix: list[dict[str, Any]]) -> None:
        if len(paths) >= limit:
            return
        here = [entry(node_id, critique), *suffix]
        gradients = nodes[node_id].get("gradients", [])
        if node_id == parameter_id and example is not None:
            gradients = [g for g in gradients if g.get("example") == example]
        if not gradients:
            if nodes[node_id].get("kind") == "loss":
                paths.append(here)
            return
        for gradient in gradients:
            if gradient["source"] in nodes:
                walk(gradient["source"], gradient["text"], here)

    walk(parameter_id, None, [])
    # `walk` attaches each critique to its sender; shift so each variable carries its own.
    fixed = []
    for path in paths:
        critiques = [None] + [e["critique"] for e in path[:-1]]
        fixed.append([{**e, "critique": c} for e, c in zip(path, critiques, strict=True)])
    return fixed


def graph_record_of(g: nx.DiGraph) -> dict[str, Any]:
    nodes = [{"id": node_id, **data} for node_id, data in g.nodes(data=True)]
    edges = [{"source": u, "target": v, "op": data.get("op")} for u, v, data in g.edges(data=True)]
    return {"nodes": nodes, "edges": edges}


def _as_graph(obj: Variable | nx.DiGraph) -> nx.DiGraph:
    if isinstance(obj, Variable):
        return graph(obj)
    if isinstance(obj, nx.DiGraph):
        if not nx.is_directed_acyclic_graph(obj):
            cycle = " -> ".join(str(u) for u, _ in nx.find_cycle(obj))
            raise GraphError(f"the graph has a cycle ({cycle}); textgraph graphs must be acyclic")
        return obj
    raise ArgumentError(f"expected a tg.Variable or a networkx.DiGraph, got {type(obj).__name__}")


def _edge_critiques(g: nx.DiGraph, source: str, target: str) -> list[str]:
    """Critiques that flowed from `target` back to `source` (stored on the source)."""
    return [gr["text"] for gr in g.nodes[source].get("gradients", []) if gr["source"] == target]


def _edge_label(g: nx.DiGraph, u: str, v: str, with_gradients: bool, separator: str) -> str:
    """The op name, followed by the critiques that flowed back along the edge if asked."""
    label = g.edges[u, v].get("op") or ""
    critiques = _edge_critiques(g, u, v) if with_gradients else []
    return label + separator + shorten(" | ".join(critiques), 120) if critiques else label


def to_json(obj: Variable | nx.DiGraph, *, with_gradients: bool = False) -> str:
    """The graph as a JSON document: {"nodes": [...], "edges": [...]}."""
    g = _as_graph(obj)
    nodes = []
    for node_id, data in g.nodes(data=True):
        item = {"id": node_id, **{k: v for k, v in data.items() if k != "gradients"}}
        if with_gradients:
            item["gradients"] = data.get("gradients", [])
        nodes.append(item)
    edges = []
    for u, v, data in g.edges(data=True):
        edge: dict[str, Any] = {"source": u, "target": v, "op": data.get("op")}
        if with_gradients:
            edge["critiques"] = _edge_critiques(g, u, v)
        edges.append(edge)
    return json.dumps({"nodes": nodes, "edges": edges}, indent=2, ensure_ascii=False)


def _mermaid_text(text: str) -> str:
    table = {
        '"': "#quot;",
        "<": "#lt;",
        ">": "#gt;",
        "&": "#amp;",
        "#": "#35;",
        "\n": " ",
        "[": "#91;",
        "]": "#93;",
        "|": "#124;",
    }
    return "".join(table.get(ch, ch) for ch in text)


def to_mermaid(obj: Variable | nx.DiGraph, *, with_gradients: bool = False) -> str:
    """A Mermaid flowchart; all text escaped with Mermaid entity codes."""
    g = _as_graph(obj)
    names = {node_id: f"n{i}" for i, node_id in enumerate(g.nodes)}
    lines = ["flowchart TD"]
    for node_id, data in g.nodes(data=True):
        label = f"{data.get('role', node_id)}: {shorten(data.get('value', ''))}"
        lines.append(
            f'    {names[node_id]}["{_mermaid_text(label)}"]:::{data.get("kind", "input")}'
        )
    for u, v in g.edges:
        label = _edge_label(g, u, v, with_gradients, ": ")
        arrow = f'-->|"{_mermaid_text(label)}"|' if label else "-->"
        lines.append(f"    {names[u]} {arrow} {names[v]}")
    for kind, colour in _KIND_COLOURS.items():
        lines.append(f"    classDef {kind} fill:{colour}")
    return "\n".join(lines) + "\n"


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def to_dot(obj: Variable | nx.DiGraph, *, with_gradients: bool = False) -> str:
    """A Graphviz DOT digraph; labels escaped for DOT strings."""
    g = _as_graph(obj)
    lines = ["digraph textgraph {", "  rankdir=TB;", "  node [shape=box, style=filled];"]
    for node_id, data in g.nodes(data=True):
        label = f"{data.get('role', node_id)}\n{shorten(data.get('value', ''))}"
        colour = _KIND_COLOURS.get(data.get("kind", "input"), "#ffffff")
        lines.append(
            f'  "{_dot_text(node_id)}" [label="{_dot_text(label)}", fillcolor="{colour}"];'
        )
    for u, v in g.edges:
        label = _edge_label(g, u, v, with_gradients, "\n")
        lines.append(f'  "{_dot_text(u)}" -> "{_dot_text(v)}" [label="{_dot_text(label)}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


_KIND_COLOURS = {
    "parameter": "#ffd59e",
    "input": "#e0e0e0",
    "llm_output": "#b5d8ff",
    "intermediate": "#d9f2d9",
    "loss": "#ffb3b3",
}
