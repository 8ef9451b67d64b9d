"""The equation graph: input nodes, hidden nodes fed by mixed-primitive edges, and
a linear read-out (AutoRA's "classifier").

Node ``k_i`` (i = 0..N-1) takes one edge from every earlier state (the d inputs
and k_0..k_{i-1}) and either sums them (a "sum" node, AutoRA's only kind) or
multiplies them (a "product" node: there the ``none`` primitive is the factor 1,
so ``x1 * 1/(x2 + 0.5)`` is one node with two edges); the outputs are
``y_o = sum_i W[o, i] k_i + c_o``.  With more than one allowed node type, the
type of each node is searched like a primitive: ``node_alphas[i, t]``, and in
the search form the node is the softmax-weighted sum of its sum and product
values (both computed from the same edge mixtures).  Edge e
carries, for each primitive p, coefficients ``a[e, p]``, ``b[e, p]``,
``beta[e, p]`` (see primitives.py) and an architecture weight ``alpha[e, p]``.
In the search form an edge is the softmax(alpha)-weighted (sigmoid for fair
DARTS) sum of all primitives; in the discrete form (``fixed`` set) it is the one
chosen primitive and no other is evaluated.

Shapes: x [n, d] -> output [n, O]; alphas [E, P] with E = sum_i (d + i) edges,
edge order node-major (node 0's edges from x_1..x_d first); node_alphas [N, T].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..functional import mixed_sum
from .primitives import PRIMITIVES

# Output types: (output function, loss).  The MSE losses are divided by the
# variance of the training targets so that learning rates and the simplicity
# penalty mean the same thing whatever the units of y.
OUTPUT_TYPES = ("real", "sigmoid", "probability", "probability_sample", "probability_distribution", "class")
OUTPUT_FUNCTION_LABELS = {"real": "", "sigmoid": "Sigmoid", "probability": "Sigmoid",
                          "probability_sample": "Sigmoid", "probability_distribution": "Softmax",
                          "class": "Softmax"}


def output_function(output_type: str, out: Tensor) -> Tensor:
    """The output transformation applied to the read-out [n, O]."""
    if output_type == "real":
        return out
    if output_type in ("sigmoid", "probability", "probability_sample"):
        return torch.sigmoid(out)
    return torch.softmax(out, dim=1)


def criterion(output_type: str, out: Tensor, y: Tensor, y_scale: Tensor) -> Tensor:
    """Loss of read-out ``out`` [n, O] against targets ``y`` ([n, O], or [n] class ids)."""
    if output_type == "class":
        return F.cross_entropy(out, y)
    if output_type == "probability_distribution":
        return -(y * torch.log_softmax(out, dim=1)).sum(1).mean()
    pred = output_function(output_type, out)
    return (((pred - y) ** 2).mean(0) / y_scale).mean()


NODE_TYPES = ("sum", "product")


def edge_count(n_inputs: int, num_nodes: int) -> int:
    return sum(n_inputs + i for i in range(num_nodes))


def _combine(kind: str, factors: list[Tensor], like: Tensor) -> Tensor:
    """A discrete node's value from its non-none edge terms: their sum, or their
    product (an empty product is 1, an empty sum 0)."""
    if not factors:
        return torch.ones_like(like) if kind == "product" else torch.zeros_like(like)
    out = factors[0]
    for f in factors[1:]:
        out = out * f if kind == "product" else out + f
    return out


class EquationGraph(nn.Module):
    """DARTS search graph for equations (see the module docstring).

    ``parameters()`` are the coefficients (a, b, beta, read-out); the
    architecture weights are ``arch_parameters()``, a plain leaf tensor so the
    fastdarts Architect and the coefficient optimizer see disjoint sets.
    """

    def __init__(self, n_inputs: int, n_outputs: int, num_nodes: int, primitives: tuple[str, ...], *,
                 output_type: str = "real", darts_type: str = "original", inner_coefficients: bool = True,
                 train_classifier_coefficients: bool = True, train_classifier_bias: bool = True,
                 fair_darts_loss_weight: float = 1.0, fused: bool | None = None,
                 node_types: tuple[str, ...] = ("sum",),
                 generator: torch.Generator | None = None, dtype=torch.float32, device="cpu"):
        super().__init__()
        self.n_inputs, self.n_outputs, self.num_nodes = n_inputs, n_outputs, num_nodes
        self.primitives = tuple(primitives)
        self.output_type, self.darts_type = output_type, darts_type
        self.inner_coefficients = inner_coefficients
        self.fair_darts_loss_weight = float(fair_darts_loss_weight)
        self.fused = fused
        self.node_types = tuple(node_types)
        E, P = edge_count(n_inputs, num_nodes), len(self.primitives)
        specs = [PRIMITIVES[p] for p in self.primitives]
        kw = dict(dtype=dtype)
        self.register_buffer("learn_a", torch.tensor(
            [float(s.learn_a or (s.inner and inner_coefficients)) for s in specs], **kw))
        self.register_buffer("learn_b", torch.tensor([float(s.learn_b) for s in specs], **kw))
        self.register_buffer("sign", torch.tensor([s.sign for s in specs], **kw))
        self.register_buffer("y_scale", torch.ones(n_outputs, **kw))
        # in a product node the none primitive is the factor 1: outs + is_zero
        self.register_buffer("is_zero", torch.tensor([float(s.zero) for s in specs], **kw))

        def randn(*shape):
            return torch.randn(*shape, generator=generator, **kw)

        # a starts near 1 (the primitive's natural scale), b near 0, beta at 1
        self.a = nn.Parameter(1.0 + 0.1 * randn(E, P))
        self.b = nn.Parameter(0.1 * randn(E, P))
        self.beta = nn.Parameter(torch.ones(E, P, **kw))
        self.weight = nn.Parameter(torch.ones(n_outputs, num_nodes, **kw),
                                   requires_grad=bool(train_classifier_coefficients))
        self.bias = nn.Parameter(torch.zeros(n_outputs, **kw), requires_grad=bool(train_classifier_bias))
        self.alphas = (1e-3 * randn(E, P)).requires_grad_()
        # drawn only when there is a choice, so a sum-only graph consumes the
        # generator exactly as before node types existed
        self.node_alphas = (1e-3 * randn(num_nodes, len(self.node_types))).requires_grad_() \
            if len(self.node_types) > 1 else None
        self.fixed: Tensor | None = None  # [E] chosen primitive per edge (discrete form)
        self.fixed_nodes: Tensor | None = None  # [N] chosen index into node_types (discrete form)
        self.to(device)  # moves alphas too (see _apply)

    # -- architecture ------------------------------------------------------------------
    def arch_parameters(self) -> list[Tensor]:
        return [self.alphas] + ([self.node_alphas] if self.node_alphas is not None else [])

    def _weights(self, alphas: Tensor) -> Tensor:
        if self.darts_type == "fair":
            return torch.sigmoid(alphas)
        return torch.softmax(alphas, dim=-1)

    def mixing_weights(self) -> Tensor:
        """[E, P] weights of the primitives on each edge."""
        return self._weights(self.alphas)

    def node_type_weights(self) -> Tensor:
        """[N, T] weights of the node types (all ones for a single type)."""
        if self.node_alphas is None:
            return torch.ones(self.num_nodes, 1, dtype=self.alphas.dtype, device=self.alphas.device)
        return self._weights(self.node_alphas)

    def fix(self, choice) -> EquationGraph:
        """Discrete form (returns self): edge e uses primitive ``choice[e]`` only;
        ``choice`` has E entries (every node of the first allowed type) or E + N,
        the last N being each node's index into ``node_types``."""
        choice = [int(c) for c in choice]
        E, N = edge_count(self.n_inputs, self.num_nodes), self.num_nodes
        if len(choice) not in (E, E + N):
            raise ValueError(f"a choice has {E} edge entries (+ {N} node types), got {len(choice)}")
        kinds = choice[E:] or [0] * N
        if not all(0 <= k < len(self.node_types) for k in kinds):
            raise ValueError(f"node type indices {kinds} out of range for {self.node_types}")
        self.fixed = torch.as_tensor(choice[:E], dtype=torch.long)
        self.fixed_nodes = torch.as_tensor(kinds, dtype=torch.long)
        return self

    def choice(self) -> tuple[int, ...]:
        """The discrete architecture as one tuple: E primitive indices, N node types."""
        return tuple(int(c) for c in self.fixed) + tuple(int(c) for c in self.fixed_nodes)

    def canonicalize_node_types(self) -> EquationGraph:
        """Give every node with exactly one used edge the first allowed type: a
        sum and a product of one term are the same function, and "product" on
        3 sin(2 x1) + 1 reads as if something were multiplied (returns self)."""
        used = [0] * self.num_nodes
        for (i, _), k in zip(self.edge_sources(), self.fixed.tolist()):
            used[i] += not PRIMITIVES[self.primitives[k]].zero
        self.fixed_nodes = torch.as_tensor([0 if u == 1 else int(t) for u, t in zip(used, self.fixed_nodes)],
                                           dtype=torch.long)
        return self

    def node_kind(self, i: int) -> str:
        """"sum" or "product": node i's type in the discrete form."""
        return self.node_types[int(self.fixed_nodes[i]) if self.fixed_nodes is not None else 0]

    def _apply(self, fn, *args, **kwargs):
        # alphas are plain tensor attributes: move them with the module (.to/.double)
        out = super()._apply(fn, *args, **kwargs)
        self.alphas = fn(self.alphas.detach()).requires_grad_()
        if self.node_alphas is not None:
            self.node_alphas = fn(self.node_alphas.detach()).requires_grad_()
        return out

    # -- forward -----------------------------------------------------------------------
    def _mix(self, outs: Tensor, w: Tensor) -> Tensor:
        """sum over edges and primitives of w[e, p] * outs[e, p, :]."""
        fused = self.fused if self.fused is not None else outs.is_cuda
        if fused:
            return mixed_sum(outs.reshape(-1, outs.shape[-1]), w)
        # On the CPU at these sizes the op dispatch costs more than the math: plain
        # broadcasting is 0.007 ms vs 0.10 ms per [14, 80] mix (2-core CPU, torch 2.13).
        return (outs * w.unsqueeze(-1)).sum((0, 1))

    def _coefficients(self) -> tuple[Tensor, Tensor]:
        """(a, b) [E, P] with the fixed values where a primitive does not learn them."""
        return torch.where(self.learn_a > 0, self.a, self.sign), self.b * self.learn_b

    def __getstate__(self):
        # the plan holds the primitives' functions (lambdas): rebuilt, not pickled
        state = self.__dict__.copy()
        state.pop("_plan_cache", None)
        state.pop("_plan_key", None)
        return state

    def _plan(self) -> list[tuple]:
        """Per edge of the discrete form: (node, source state, flat index of its
        coefficients, primitive spec, learns a, learns b), cached per choice."""
        key = (self.fixed.tolist(), self.fixed_nodes.tolist())
        if getattr(self, "_plan_key", None) != key:
            P = len(self.primitives)
            self._plan_cache = [
                (i, j, e * P + k, PRIMITIVES[self.primitives[k]], bool(self.learn_a[k] > 0),
                 bool(self.learn_b[k] > 0))
                for e, ((i, j), k) in enumerate(zip(self.edge_sources(), key[0]))]
            self._plan_key = key
        return self._plan_cache

    def edge_terms(self, x: Tensor, replace_edges: dict | None = None,
                   replace_nodes: dict | None = None) -> tuple[list[Tensor | None], Tensor]:
        """Discrete form only: each edge's term [n] (None for a none edge) and the
        node values [n, N], for inputs x [n, d].  ``replace_edges`` / ``replace_nodes``
        ({index: value}) evaluate the graph with those terms / nodes held constant
        (what pruning a term would do)."""
        replace_edges, replace_nodes = replace_edges or {}, replace_nodes or {}
        # Only the chosen primitive's coefficients, and only those it learns: the
        # L-BFGS fits of the candidates run this a few hundred thousand times on
        # ~100 points, where each tensor op's dispatch costs more than its math.
        a, b, beta = self.a.view(-1), self.b.view(-1), self.beta.view(-1)
        states = list(x.unbind(1))
        terms: list[Tensor | None] = []
        factors: list[Tensor] = []
        nodes = []
        for e, (i, j, idx, spec, learn_a, learn_b) in enumerate(self._plan()):
            if spec.zero:
                terms.append(None)
            elif e in replace_edges:
                terms.append(torch.full_like(x[:, 0], replace_edges[e]))
            else:
                z = a[idx] * states[j] if learn_a else (states[j] if spec.sign > 0 else -states[j])
                if learn_b:
                    z = z + b[idx]
                terms.append(spec.fn(z, beta[idx] if spec.learn_beta else None))
            if terms[-1] is not None:
                factors.append(terms[-1])
            if j == len(states) - 1:  # node i's last edge (edges are node-major)
                node = _combine(self.node_kind(i), factors, x[:, 0])
                if i in replace_nodes:
                    node = torch.full_like(x[:, 0], replace_nodes[i])
                states.append(node)
                nodes.append(node)
                factors = []
        return terms, torch.stack(nodes, 1)

    def node_values(self, x: Tensor) -> Tensor:
        """Hidden node values [n, N] for inputs x [n, d]."""
        if self.fixed is not None:
            return self.edge_terms(x)[1]
        states = list(x.unbind(1))
        a_eff, b_eff = self._coefficients()
        w = self.mixing_weights()
        v = self.node_type_weights()
        fns = [PRIMITIVES[p].fn for p in self.primitives]
        nodes, off = [], 0
        for i in range(self.num_nodes):
            m = len(states)
            S = torch.stack(states)  # [m, n]
            Z = a_eff[off:off + m, :, None] * S[:, None, :] + b_eff[off:off + m, :, None]  # [m, P, n]
            beta = self.beta[off:off + m]
            outs = torch.stack([fn(Z[:, k], beta[:, k, None]) for k, fn in enumerate(fns)], 1)
            node = 0
            for t, kind in enumerate(self.node_types):
                if kind == "sum":
                    val = self._mix(outs, w[off:off + m])
                else:  # product of the per-edge mixtures, none counting as the factor 1
                    val = ((outs + self.is_zero[:, None]) * w[off:off + m, :, None]).sum(1).prod(0)
                node = node + v[i, t] * val
            states.append(node)
            nodes.append(node)
            off += m
        return torch.stack(nodes, 1)

    def readout(self, nodes: Tensor) -> Tensor:
        """W k + c [n, O] from node values [n, N]."""
        return nodes @ self.weight.t() + self.bias

    def forward(self, x: Tensor) -> Tensor:
        """Read-out [n, O] (before the output function)."""
        return self.readout(self.node_values(x))

    def _loss(self, x: Tensor, y: Tensor) -> Tensor:
        loss = criterion(self.output_type, self(x), y, self.y_scale)
        if self.darts_type == "fair" and self.fixed is None and self.fair_darts_loss_weight:
            # Fair DARTS' zero-one loss: pushes each sigmoid(alpha) away from 0.5
            zero_one = ((torch.sigmoid(self.alphas) - 0.5) ** 2).mean()
            if self.node_alphas is not None:
                zero_one = zero_one + ((torch.sigmoid(self.node_alphas) - 0.5) ** 2).mean()
            loss = loss - self.fair_darts_loss_weight * zero_one
        return loss

    # -- reading the graph off ---------------------------------------------------------
    def edge_sources(self) -> list[tuple[int, int]]:
        """(node, source state) per edge, in edge order; states 0..d-1 are inputs."""
        out = []
        for i in range(self.num_nodes):
            out.extend((i, j) for j in range(self.n_inputs + i))
        return out

    @torch.no_grad()
    def coefficients(self, e: int, k: int) -> tuple[float, float, float]:
        """(a, b, beta) of primitive k on edge e, with the fixed values where not learned."""
        a = self.a[e, k] if self.learn_a[k] > 0 else self.sign[k]
        return float(a), float(self.b[e, k] * self.learn_b[k]), float(self.beta[e, k])
