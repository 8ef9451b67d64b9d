"""The equation graph: input nodes, hidden nodes fed by mixed-primitive edges, and
a linear read-out (AutoRA's "classifier").

Node ``k_i`` (i = 0..N-1) sums one edge from every earlier state (the d inputs
and k_0..k_{i-1}); the outputs are ``y_o = sum_i W[o, i] k_i + c_o``.  Edge e
carries, for each primitive p, coefficients ``a[e, p]``, ``b[e, p]``,
``beta[e, p]`` (see primitives.py) and an architecture weight ``alpha[e, p]``.
In the search form an edge is the softmax(alpha)-weighted (sigmoid for fair
DARTS) sum of all primitives; in the discrete form (``fixed`` set) it is the one
chosen primitive and no other is evaluated.

Shapes: x [n, d] -> output [n, O]; alphas [E, P] with E = sum_i (d + i) edges,
edge order node-major (node 0's edges from x_1..x_d first).
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


def edge_count(n_inputs: int, num_nodes: int) -> int:
    return sum(n_inputs + i for i in range(num_nodes))


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
                 generator: torch.Generator | None = None, dtype=torch.float32, device="cpu"):
        super().__init__()
        self.n_inputs, self.n_outputs, self.num_nodes = n_inputs, n_outputs, num_nodes
        self.primitives = tuple(primitives)
        self.output_type, self.darts_type = output_type, darts_type
        self.inner_coefficients = inner_coefficients
        self.fair_darts_loss_weight = float(fair_darts_loss_weight)
        self.fused = fused
        E, P = edge_count(n_inputs, num_nodes), len(self.primitives)
        specs = [PRIMITIVES[p] for p in self.primitives]
        kw = dict(dtype=dtype)
        self.register_buffer("learn_a", torch.tensor(
            [float(s.learn_a or (s.inner and inner_coefficients)) for s in specs], **kw))
        self.register_buffer("learn_b", torch.tensor([float(s.learn_b) for s in specs], **kw))
        self.register_buffer("sign", torch.tensor([s.sign for s in specs], **kw))
        self.register_buffer("y_scale", torch.ones(n_outputs, **kw))

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
        self.fixed: Tensor | None = None  # [E] chosen primitive per edge (discrete form)
        self.to(device)  # moves alphas too (see _apply)

    # -- architecture ------------------------------------------------------------------
    def arch_parameters(self) -> list[Tensor]:
        return [self.alphas]

    def mixing_weights(self) -> Tensor:
        """[E, P] weights of the primitives on each edge."""
        if self.darts_type == "fair":
            return torch.sigmoid(self.alphas)
        return torch.softmax(self.alphas, dim=-1)

    def fix(self, choice) -> EquationGraph:
        """Discrete form: edge e uses primitive ``choice[e]`` only (returns self)."""
        self.fixed = torch.as_tensor(list(choice), dtype=torch.long)
        return self

    def _apply(self, fn, *args, **kwargs):
        # alphas is a plain tensor attribute: move it with the module (.to/.double)
        out = super()._apply(fn, *args, **kwargs)
        self.alphas = fn(self.alphas.detach()).requires_grad_()
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

    def node_values(self, x: Tensor) -> Tensor:
        """Hidden node values [n, N] for inputs x [n, d]."""
        states = list(x.unbind(1))
        a_eff = torch.where(self.learn_a > 0, self.a, self.sign)
        b_eff = self.b * self.learn_b
        w = None if self.fixed is not None else self.mixing_weights()
        fns = [PRIMITIVES[p].fn for p in self.primitives]
        nodes, off = [], 0
        for _ in range(self.num_nodes):
            m = len(states)
            S = torch.stack(states)  # [m, n]
            if self.fixed is not None:
                total = 0
                for j in range(m):
                    k = int(self.fixed[off + j])
                    if PRIMITIVES[self.primitives[k]].zero:
                        continue
                    z = a_eff[off + j, k] * S[j] + b_eff[off + j, k]
                    total = total + fns[k](z, self.beta[off + j, k])
                node = total if isinstance(total, Tensor) else torch.zeros_like(S[0])
            else:
                Z = a_eff[off:off + m, :, None] * S[:, None, :] + b_eff[off:off + m, :, None]  # [m, P, n]
                beta = self.beta[off:off + m]
                outs = torch.stack([fn(Z[:, k], beta[:, k, None]) for k, fn in enumerate(fns)], 1)
                node = self._mix(outs, w[off:off + m])
            states.append(node)
            nodes.append(node)
            off += m
        return torch.stack(nodes, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Read-out [n, O] (before the output function)."""
        return self.node_values(x) @ self.weight.t() + self.bias

    def _loss(self, x: Tensor, y: Tensor) -> Tensor:
        loss = criterion(self.output_type, self(x), y, self.y_scale)
        if self.darts_type == "fair" and self.fixed is None and self.fair_darts_loss_weight:
            # Fair DARTS' zero-one loss: pushes each sigmoid(alpha) away from 0.5
            loss = loss - self.fair_darts_loss_weight * ((torch.sigmoid(self.alphas) - 0.5) ** 2).mean()
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
