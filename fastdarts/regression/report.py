"""Reading a fitted discrete equation graph off as text, LaTeX, sympy or a graph."""

from __future__ import annotations

from collections.abc import Sequence

import sympy as sp

from .network import OUTPUT_FUNCTION_LABELS, EquationGraph
from .primitives import PRIMITIVES, sympy_primitive
from .symbolic import count_constants, logistic, render, simplify_equation


def _node_symbol(i: int, output_format: str):
    return sp.Symbol(f"k_{i + 1}" if output_format == "latex" else f"k{i + 1}")


def node_expressions(net: EquationGraph, input_symbols: Sequence,
                     node_symbols: Sequence | None = None) -> list:
    """Per hidden node, its value as a sympy expression: the sum, or for a product
    node the product, of its edges' functions (none edges left out).  Earlier nodes
    appear as ``node_symbols``, or inlined when that is None."""
    choice = [int(c) for c in net.fixed]
    sources = net.edge_sources()
    values: list = []
    for i in range(net.num_nodes):
        terms = []
        for e, (node, j) in enumerate(sources):
            k = choice[e]
            if node != i or PRIMITIVES[net.primitives[k]].zero:
                continue
            src = input_symbols[j] if j < net.n_inputs else (node_symbols or values)[j - net.n_inputs]
            a, b, beta = net.coefficients(e, k)
            terms.append(sympy_primitive(net.primitives[k], src, a, b, beta, net.inner_coefficients))
        values.append(sp.Mul(*terms) if net.node_kind(i) == "product" else sp.Add(*terms))
    return values


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
    values = node_expressions(net, [sp.Symbol(str(s)) for s in input_labels])
    outs = readout_expressions(net, values, output_type, None)
    return [simplify_equation(o) if simplify else o for o in outs]


def constants(net: EquationGraph) -> int:
    """How many constants the equations of discrete graph ``net`` show (summed over
    outputs; see symbolic.count_constants)."""
    labels = [f"x{j + 1}" for j in range(net.n_inputs)]
    return sum(count_constants(e) for e in equations(net, labels, net.output_type))


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
    nodes += [(f"k{i}", f"k{i + 1}" + (" (product)" if net.node_kind(i) == "product" else ""), "hidden")
              for i in range(net.num_nodes)]
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
