"""The fused DARTS recurrent search model: every node is one matmul + one ``rnn_node``.

A drop-in for ``fastdarts.reference.rnn.RNNModelSearch``: same constructor, module
tree, state_dict keys (``encoder.weight``, ``rnns.0._W0``, ``rnns.0._Ws.{0..7}``,
``rnns.0.bn.*``, ``decoder.*``), construction order (so one seed gives the same
weights), arch tensor ``weights`` [36, 5], ``arch_parameters()``, ``_loss``,
``genotype()``, ``init_hidden`` and ``new()``.  Only the cell's computation differs:

* the x-part of node 0's matmul, (x * x_mask) @ W0[:ninp], is one matmul over all
  T time steps before the loop (x and the fixed x_mask are known for the whole
  sequence); each step adds only (h_prev * h_mask) @ W0[ninp:] (one addmm).
  Exact in real arithmetic; T small matmuls fewer.
* each node i is one cuBLAS matmul of its i+1 (masked) states with W_i, as in
  the original, then ONE ``fastdarts::rnn_node`` (sigmoid gate, four activations,
  four blends and the weighted sum; the original launches ~25 kernels for it).
* node 0's gate, s0 = h + sigmoid(c0) (tanh(h0) - h), is the same op with one
  state and the one-hot weights of 'tanh'.
* softmax(alpha) is taken once per forward, not once per time step, and split
  per node once (one cat in the backward instead of a zero [36, 5] per node and
  step); the per-step x-parts are unbound, not indexed, for the same reason.
* the masked copy of each state is made once, when the state is made, not again
  by every later node.

BatchNorm1d(affine=False) stays the reference's module.  In training mode each
node's rnn_node, BN and ``* h_mask`` are one ``fastdarts::rnn_node_bn`` (through
``node_bn``), which updates the module's running statistics and num_batches_tracked
in the kernel, once per node in the reference's order and with ATen's formula, so
they end as the module's (up to the rounding of the batch statistics); eval mode
(running statistics) takes the module.  Launches per search step (profile/launches,
bptt 35): first order 12,636 -> 7,040, second 31,645 -> 17,653.  Dropout masks are drawn from the RNG in
the reference's order (x_mask, then h_mask, per forward), so with one seed the two
models give the same outputs in training mode with dropout on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..ops import rnn_node as _rnn_node_op  # noqa: F401  (registers torch.ops.fastdarts.rnn_node)
from ..ops.rnn_node_bn import node_bn
from ..reference.rnn import model_search as _ref

__all__ = ["DARTSCellSearch", "RNNModelSearch"]

_TANH = _ref.PRIMITIVES.index("tanh")


class DARTSCellSearch(_ref.DARTSCellSearch):
    """The search cell with the reference's parameters (``_W0`` [ninp+nhid, 2nhid],
    ``_Ws`` 8 x [nhid, 2nhid], ``bn``) and fused nodes.

    forward(inputs: [T, B, ninp], hidden: [1, B, nhid]) -> (hiddens [T, B, nhid],
    last hidden [1, B, nhid]).  ``self.weights`` [36, 5] is set by the model.
    """

    def forward(self, inputs: Tensor, hidden: Tensor) -> tuple[Tensor, Tensor]:
        T, B, ninp = inputs.shape
        if self.training:  # same draws, same order as the reference
            x_mask = _ref.mask2d(B, ninp, 1.0 - self.dropoutx, inputs)
            h_mask = _ref.mask2d(B, hidden.size(2), 1.0 - self.dropouth, inputs)
            x = inputs * x_mask
        else:
            x, h_mask = inputs, None
        # x-part of every step's node-0 matmul at once: [T*B, ninp] @ [ninp, 2nhid].
        x_ch = x.reshape(T * B, ninp).mm(self._W0[:ninp]).view(T, B, 2 * self.nhid)
        node_probs = self._node_probs()
        h = hidden[0]
        hiddens = []
        # unbind, not x_ch[t]: its backward is one stack, where T selects would each
        # write a zero [T, B, 2nhid] gradient (O(T^2) bytes).
        for x_ch_t in x_ch.unbind(0):
            h = self._fused_cell(x_ch_t, h, h_mask, node_probs)
            hiddens.append(h)
        hiddens = torch.stack(hiddens)
        return hiddens, hiddens[-1].unsqueeze(0)

    def cell(self, x: Tensor, h_prev: Tensor, x_mask: Tensor | None, h_mask: Tensor | None
             ) -> Tensor:
        """One time step with the reference's signature: x [B, ninp], h_prev [B, nhid]."""
        x = x * x_mask if self.training else x
        return self._fused_cell(x.mm(self._W0[:x.size(-1)]), h_prev, h_mask, self._node_probs())

    def _node_probs(self) -> list[Tensor]:
        """[probs of node 0 ('tanh' only, [1, 5]), then node i's rows of softmax(alpha),
        [i + 1, 5]].  Computed once per forward; torch.split's backward is one cat for all
        nodes and steps, where per-step slices would each write a zero [36, 5] gradient."""
        probs = F.softmax(self.weights, dim=-1)
        # Node 0's gate is the op with one state and 'tanh' only (0 * finite adds exactly 0).
        tanh_only = torch.zeros(1, probs.size(1), dtype=probs.dtype, device=probs.device)
        tanh_only[0, _TANH] = 1.0
        return [tanh_only, *torch.split(probs, list(range(1, _ref.STEPS + 1)))]

    def _fused_cell(self, x_ch: Tensor, h_prev: Tensor, h_mask: Tensor | None,
                    node_probs: list[Tensor]) -> Tensor:
        """x_ch [B, 2nhid] = (masked x) @ W0[:ninp]; h_prev [B, nhid]; node_probs from
        :meth:`_node_probs`.  Returns the next hidden state [B, nhid]."""
        ninp = self._W0.size(0) - self.nhid
        h_in = h_prev * h_mask if h_mask is not None else h_prev
        ch0 = torch.addmm(x_ch, h_in, self._W0[ninp:])
        if h_mask is not None and self._bn_fusable():
            return self._fused_cell_bn(ch0, h_prev, h_mask, node_probs)
        s0 = self.bn(torch.ops.fastdarts.rnn_node(ch0.unsqueeze(0), h_prev.unsqueeze(0),
                                                  node_probs[0]))
        states = s0.unsqueeze(0)
        masked = (s0 * h_mask).unsqueeze(0) if h_mask is not None else states
        for i in range(_ref.STEPS):
            ch = masked.view(-1, self.nhid).mm(self._Ws[i]).view(i + 1, -1, 2 * self.nhid)
            s = self.bn(torch.ops.fastdarts.rnn_node(ch, states, node_probs[i + 1]))
            states = torch.cat([states, s.unsqueeze(0)], 0)
            if h_mask is not None:
                masked = torch.cat([masked, (s * h_mask).unsqueeze(0)], 0)
            else:
                masked = states
        return torch.mean(states[-_ref.CONCAT:], dim=0)

    def _bn_fusable(self) -> bool:
        """BN in training mode with running statistics and a float momentum: what
        ``node_bn`` implements (eval mode or momentum=None take the module)."""
        bn = self.bn
        return (bn.training and bn.track_running_stats and bn.running_mean is not None
                and bn.momentum is not None and not bn.affine)

    def _fused_cell_bn(self, ch0: Tensor, h_prev: Tensor, h_mask: Tensor,
                       node_probs: list[Tensor]) -> Tensor:
        """The training-mode cell with each node's rnn_node, BN (running statistics updated
        once per node, in the same order) and ``* h_mask`` in one op (node_bn)."""
        s0, m0 = node_bn(ch0.unsqueeze(0), h_prev.unsqueeze(0), node_probs[0], h_mask, self.bn)
        states, masked = s0.unsqueeze(0), m0.unsqueeze(0)
        for i in range(_ref.STEPS):
            ch = masked.view(-1, self.nhid).mm(self._Ws[i]).view(i + 1, -1, 2 * self.nhid)
            s, m = node_bn(ch, states, node_probs[i + 1], h_mask, self.bn)
            states = torch.cat([states, s.unsqueeze(0)], 0)
            if i + 1 < _ref.STEPS:  # the last node's masked copy feeds no matmul
                masked = torch.cat([masked, m.unsqueeze(0)], 0)
        return torch.mean(states[-_ref.CONCAT:], dim=0)


class RNNModelSearch(_ref.RNNModelSearch):
    """The DARTS RNN search model with the fused cell; see the module docstring.

    RNNModelSearch(ntoken, ninp, nhid, nhidlast, dropout=0.5, dropouth=0.5,
    dropoutx=0.5, dropouti=0.5, dropoute=0.1); forward(input: [T, B] token ids,
    hidden: [[1, B, nhid]]) -> (log_prob [T, B, ntoken], [hidden [1, B, nhid]]).
    """

    def __init__(self, ntoken, ninp, nhid, nhidlast, dropout=0.5, dropouth=0.5, dropoutx=0.5,
                 dropouti=0.5, dropoute=0.1):
        # The reference RNNModel constructor with the fused cell class: identical module
        # tree and parameter creation order.
        _ref.RNNModel.__init__(self, ntoken, ninp, nhid, nhidlast, dropout, dropouth, dropoutx,
                               dropouti, dropoute, cell_cls=DARTSCellSearch, genotype=None)
        self._args = (ntoken, ninp, nhid, nhidlast, dropout, dropouth, dropoutx, dropouti,
                      dropoute)
        self._initialize_arch_parameters()

    def new(self) -> RNNModelSearch:
        """A fresh fused model with the same hyperparameters and a copy of the alphas."""
        model_new = type(self)(*self._args).to(self.weights)
        for x, y in zip(model_new.arch_parameters(), self.arch_parameters(), strict=True):
            x.data.copy_(y.data)
        return model_new
