"""Reading a fitted discrete equation graph off as text, LaTeX, sympy or a graph."""

from __future__ import annotations

from collections.abc import Sequence

import sympy as sp

from .network import OUTPUT_FUNCTION_LABELS, EquationGraph
from .primitives import PRIMITIVES, sympy_primitive
from .symbolic import logistic, render, simplify_equation


def _node_symbol(i: int, output_format: str):
    return sp.Symbol(f"k_{i + 1}" if output_format == "latex" else f"k{i + 1}")


def node_expressions(net: EquationGraph, input_symbols: Sequence, node_symbols: Sequence) -> list:
    """Per hidden node, its value as a sympy expression of the inputs and earlier
    node symbols (``node_symbols``; pass the expressions themselves to inline)."""
    exprs = []
    choice = [int(c) for c in net.fixed]
    for e, (i, j) in enumerate(net.edge_sources()):
        if len(exprs) <= i:
            exprs.append(sp.Integer(0))
        k = choice[e]
        src = input_symbols[j] if j < net.n_inputs else node_symbols[j - net.n_inputs]
        a, b, beta = net.coefficients(e, k)
        exprs[i] = exprs[i] + sympy_primitive(net.primitives[k], src, a, b, beta, net.inner_coefficients)
    return exprs


def readout_expressions(net: EquationGraph, node_symbols: Sequence, output_type: str,
                        function_label: str | None) -> list:
    """Per output, W k + c wrapped in the output function (a named function symbol)."""
    out = []
    for o in range(net.n_outputs):
        w = net.weight.detach()
        expr = sum((sp.Float(float(w[o, i])) * node_symbols[i] for i in range(net.num_nodes)),
                   sp.Integer(0)) + sp.Float(float(net.bias[o].detach()))
        label = OUTPUT_FUNCTION_LABELS[output_type] if function_label is None else function_label
        if label:
            sigmoid = label == "Sigmoid" and output_type != "real"
            expr = logistic(expr) if sigmoid else sp.Function(label)(expr)
        out.append(expr)
    return out


def model_lines(net: EquationGraph, input_labels, output_labels, function_label, decimals: int,
                output_format: str, output_type: str) -> list[str]:
    """AutoRA-style listing: one line per hidden node, then one per output."""
    if output_format not in ("console", "latex"):
        raise ValueError(f"output_format must be 'console' or 'latex', got {output_format!r}")
    xs = [sp.Symbol(str(s)) for s in input_labels]
    ks = [_node_symbol(i, output_format) for i in range(net.num_nodes)]
    lines = [f"{render(k, decimals, output_format)} = {render(v, decimals, output_format)}"
             for k, v in zip(ks, node_expressions(net, xs, ks))]
    for lab, v in zip(output_labels, readout_expressions(net, ks, output_type, function_label)):
        lines.append(f"{lab} = {render(v, decimals, output_format)}")
    return lines


def equations(net: EquationGraph, input_labels, output_type: str, simplify: bool = True) -> list:
    """One sympy expression per output with the nodes substituted in."""
    xs = [sp.Symbol(str(s)) for s in input_labels]
    # nodes depend on earlier nodes: build them in order, inlining as we go
    choice = [int(c) for c in net.fixed]
    values = [sp.Integer(0) for _ in range(net.num_nodes)]
    for e, (i, j) in enumerate(net.edge_sources()):
        k = choice[e]
        src = xs[j] if j < net.n_inputs else values[j - net.n_inputs]
        a, b, beta = net.coefficients(e, k)
        values[i] = values[i] + sympy_primitive(net.primitives[k], src, a, b, beta, net.inner_coefficients)
    outs = readout_expressions(net, values, output_type, None)
    return [simplify_equation(o) if simplify else o for o in outs]


def edge_label(net: EquationGraph, e: int, decimals: int) -> str | None:
    """Text of the function on edge e applied to a placeholder ``x`` (None for none)."""
    k = int(net.fixed[e])
    if PRIMITIVES[net.primitives[k]].zero:
        return None
    a, b, beta = net.coefficients(e, k)
    expr = sympy_primitive(net.primitives[k], sp.Symbol("x"), a, b, beta, net.inner_coefficients)
    return render(expr, decimals, "console")


def graph_spec(net: EquationGraph, input_labels, output_labels, output_type: str, decimals: int = 2):
    """(nodes, edges) for drawing: nodes are (id, label, kind), edges (src, dst, label)."""
    nodes = [(f"in{j}", str(lab), "input") for j, lab in enumerate(input_labels)]
    nodes += [(f"k{i}", f"k{i + 1}", "hidden") for i in range(net.num_nodes)]
    fn = OUTPUT_FUNCTION_LABELS[output_type]
    nodes += [(f"out{o}", f"{lab}" + (f" = {fn}(.)" if fn else ""), "output")
              for o, lab in enumerate(output_labels)]
    edges = []
    for e, (i, j) in enumerate(net.edge_sources()):
        label = edge_label(net, e, decimals)
        if label is not None:
            src = f"in{j}" if j < net.n_inputs else f"k{j - net.n_inputs}"
            edges.append((src, f"k{i}", label))
    for o in range(net.n_outputs):
        for i in range(net.num_nodes):
            w = round(float(net.weight[o, i].detach()), decimals)
            if w != 0:
                edges.append((f"k{i}", f"out{o}", f"{w:g}"))
        c = round(float(net.bias[o].detach()), decimals)
        if c != 0:
            nodes.append((f"bias{o}", f"{c:g}", "bias"))
            edges.append((f"bias{o}", f"out{o}", "+"))
    return nodes, edges


_STYLE = {"input": {"shape": "box", "style": "filled", "fillcolor": "lightgray"},
          "hidden": {"shape": "circle"},
          "output": {"shape": "box", "style": "filled", "fillcolor": "lightblue"},
          "bias": {"shape": "plaintext"}}


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dot_source(nodes, edges) -> str:
    """The graph as Graphviz DOT text (no graphviz package needed)."""
    lines = ["digraph {", "  rankdir=LR"]
    for nid, label, kind in nodes:
        attrs = ", ".join(f"{k}={_quote(v)}" for k, v in {"label": label, **_STYLE[kind]}.items())
        lines.append(f"  {nid} [{attrs}]")
    lines += [f"  {s} -> {d} [label={_quote(lab)}]" for s, d, lab in edges]
    lines.append("}")
    return "\n".join(lines)


def digraph(nodes, edges):
    """A graphviz.Digraph of the graph; ImportError with the fix when graphviz is missing."""
    try:
        import graphviz
    except ImportError as err:
        raise ImportError("visualize_model() draws with the graphviz package: `pip install graphviz` "
                          "(and the Graphviz binaries to render it). Without it, "
                          "DARTSRegressor.dot_source() returns the same graph as DOT text.") from err
    g = graphviz.Digraph(graph_attr={"rankdir": "LR"})
    for nid, label, kind in nodes:
        g.node(nid, label, **_STYLE[kind])
    for s, d, lab in edges:
        g.edge(s, d, label=lab)
    return g
