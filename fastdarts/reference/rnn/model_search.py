"""The DARTS recurrent search model (reference port of the original rnn/
``model.py`` + ``model_search.py``).

State-dict keys equal the original's RNNModelSearch: ``encoder.weight``,
``rnns.0._W0``, ``rnns.0._Ws.{0..7}``, ``rnns.0.bn.*``, ``decoder.weight`` (tied to
the encoder) and ``decoder.bias``.  The architecture tensor ``weights`` [36, 5]
is a plain leaf tensor, outside ``parameters()`` and the state_dict, as in the
original, but it follows the model through ``.to()``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...space.genotypes import RNN_CONCAT, RNN_PRIMITIVES, RNN_STEPS, RNNGenotype
from .._arch import ArchTensorsFollowModel

INITRANGE = 0.04
PRIMITIVES = RNN_PRIMITIVES
STEPS = RNN_STEPS
CONCAT = RNN_CONCAT

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid,
               "identity": lambda x: x}


def mask2d(B, D, keep_prob, like):
    """A [B, D] dropout mask scaled by 1/keep_prob, on ``like``'s device and dtype."""
    m = torch.floor(torch.rand(B, D, device=like.device, dtype=like.dtype) + keep_prob)
    return m / keep_prob


def embedded_dropout(embed, words, dropout=0.1):
    """Drop whole rows (words) of the embedding matrix."""
    if dropout:
        w = embed.weight
        mask = w.new_empty((w.size(0), 1)).bernoulli_(1 - dropout).expand_as(w) / (1 - dropout)
        weight = mask * w
    else:
        weight = embed.weight
    padding_idx = embed.padding_idx if embed.padding_idx is not None else -1
    return F.embedding(words, weight, padding_idx, embed.max_norm, embed.norm_type,
                       embed.scale_grad_by_freq, embed.sparse)


class LockedDropout(nn.Module):
    """Variational dropout: one mask per sequence, shared over time steps."""

    def forward(self, x, dropout=0.5):
        if not self.training or not dropout:
            return x
        m = x.new_empty(1, x.size(1), x.size(2)).bernoulli_(1 - dropout) / (1 - dropout)
        return m.expand_as(x) * x


class DARTSCell(nn.Module):
    """The recurrent cell; with a genotype it is the derived (evaluation) cell."""

    def __init__(self, ninp, nhid, dropouth, dropoutx, genotype):
        super().__init__()
        self.nhid = nhid
        self.dropouth = dropouth
        self.dropoutx = dropoutx
        self.genotype = genotype
        steps = len(genotype.recurrent) if genotype is not None else STEPS
        self._W0 = nn.Parameter(torch.empty(ninp + nhid, 2 * nhid).uniform_(-INITRANGE, INITRANGE))
        self._Ws = nn.ParameterList([
            nn.Parameter(torch.empty(nhid, 2 * nhid).uniform_(-INITRANGE, INITRANGE))
            for _ in range(steps)])

    def forward(self, inputs, hidden):
        T, B = inputs.size(0), inputs.size(1)
        if self.training:
            x_mask = mask2d(B, inputs.size(2), 1.0 - self.dropoutx, inputs)
            h_mask = mask2d(B, hidden.size(2), 1.0 - self.dropouth, inputs)
        else:
            x_mask = h_mask = None
        hidden = hidden[0]
        hiddens = []
        for t in range(T):
            hidden = self.cell(inputs[t], hidden, x_mask, h_mask)
            hiddens.append(hidden)
        hiddens = torch.stack(hiddens)
        return hiddens, hiddens[-1].unsqueeze(0)

    def _compute_init_state(self, x, h_prev, x_mask, h_mask):
        if self.training:
            xh_prev = torch.cat([x * x_mask, h_prev * h_mask], dim=-1)
        else:
            xh_prev = torch.cat([x, h_prev], dim=-1)
        c0, h0 = torch.split(xh_prev.mm(self._W0), self.nhid, dim=-1)
        c0 = c0.sigmoid()
        h0 = h0.tanh()
        return h_prev + c0 * (h0 - h_prev)

    def cell(self, x, h_prev, x_mask, h_mask):
        s0 = self._compute_init_state(x, h_prev, x_mask, h_mask)
        states = [s0]
        for i, (name, pred) in enumerate(self.genotype.recurrent):
            s_prev = states[pred]
            ch = (s_prev * h_mask).mm(self._Ws[i]) if self.training else s_prev.mm(self._Ws[i])
            c, h = torch.split(ch, self.nhid, dim=-1)
            c = c.sigmoid()
            h = ACTIVATIONS[name](h)
            states.append(s_prev + c * (h - s_prev))
        return torch.mean(torch.stack([states[i] for i in self.genotype.concat], -1), -1)


class DARTSCellSearch(DARTSCell):
    """The search cell: every node mixes all earlier states through all ops."""

    def __init__(self, ninp, nhid, dropouth, dropoutx):
        super().__init__(ninp, nhid, dropouth, dropoutx, genotype=None)
        self.bn = nn.BatchNorm1d(nhid, affine=False)

    def cell(self, x, h_prev, x_mask, h_mask):
        s0 = self._compute_init_state(x, h_prev, x_mask, h_mask)
        s0 = self.bn(s0)
        probs = F.softmax(self.weights, dim=-1)
        offset = 0
        states = s0.unsqueeze(0)
        for i in range(STEPS):
            masked_states = states * h_mask.unsqueeze(0) if self.training else states
            ch = masked_states.view(-1, self.nhid).mm(self._Ws[i]).view(i + 1, -1, 2 * self.nhid)
            c, h = torch.split(ch, self.nhid, dim=-1)
            c = c.sigmoid()
            s = torch.zeros_like(s0)
            for k, name in enumerate(PRIMITIVES):
                if name == "none":
                    continue
                unweighted = states + c * (ACTIVATIONS[name](h) - states)
                s = s + torch.sum(probs[offset:offset + i + 1, k].unsqueeze(-1).unsqueeze(-1)
                                  * unweighted, dim=0)
            s = self.bn(s)
            states = torch.cat([states, s.unsqueeze(0)], 0)
            offset += i + 1
        return torch.mean(states[-CONCAT:], dim=0)


class RNNModel(nn.Module):
    """Container: embedding, the recurrent cell, tied decoder, log-softmax."""

    def __init__(self, ntoken, ninp, nhid, nhidlast, dropout=0.5, dropouth=0.5, dropoutx=0.5,
                 dropouti=0.5, dropoute=0.1, cell_cls=DARTSCell, genotype=None):
        super().__init__()
        if not ninp == nhid == nhidlast:
            raise ValueError(f"DARTS ties the decoder: ninp, nhid and nhidlast must be equal, "
                             f"got {ninp}, {nhid}, {nhidlast}")
        self.lockdrop = LockedDropout()
        self.encoder = nn.Embedding(ntoken, ninp)
        if cell_cls is DARTSCell:
            if genotype is None:
                raise ValueError("the evaluation cell needs a genotype")
            self.rnns = nn.ModuleList([cell_cls(ninp, nhid, dropouth, dropoutx, genotype)])
        else:
            self.rnns = nn.ModuleList([cell_cls(ninp, nhid, dropouth, dropoutx)])
        self.decoder = nn.Linear(ninp, ntoken)
        self.decoder.weight = self.encoder.weight
        self.init_weights()
        self.ninp, self.nhid, self.nhidlast = ninp, nhid, nhidlast
        self.dropout, self.dropouti, self.dropoute = dropout, dropouti, dropoute
        self.ntoken = ntoken
        self.cell_cls = cell_cls

    def init_weights(self):
        self.encoder.weight.data.uniform_(-INITRANGE, INITRANGE)
        self.decoder.bias.data.fill_(0)
        self.decoder.weight.data.uniform_(-INITRANGE, INITRANGE)

    def forward(self, input, hidden, return_h=False):
        if input.dim() != 2:
            raise ValueError(f"expected token ids of shape [seq_len, batch], got {tuple(input.shape)}")
        if input.device != self.encoder.weight.device:
            raise ValueError(f"input is on {input.device} but the model is on "
                             f"{self.encoder.weight.device}; move one of them (model.to(device))")
        batch_size = input.size(1)
        emb = embedded_dropout(self.encoder, input, dropout=self.dropoute if self.training else 0)
        emb = self.lockdrop(emb, self.dropouti)
        raw_output = emb
        new_hidden, raw_outputs, outputs = [], [], []
        for layer, rnn in enumerate(self.rnns):
            raw_output, new_h = rnn(raw_output, hidden[layer])
            new_hidden.append(new_h)
            raw_outputs.append(raw_output)
        output = self.lockdrop(raw_output, self.dropout)
        outputs.append(output)
        logit = self.decoder(output.view(-1, self.ninp))
        log_prob = F.log_softmax(logit, dim=-1).view(-1, batch_size, self.ntoken)
        if return_h:
            return log_prob, new_hidden, raw_outputs, outputs
        return log_prob, new_hidden

    def init_hidden(self, bsz):
        weight = next(self.parameters())
        return [weight.new_zeros(1, bsz, self.nhid)]


class RNNModelSearch(ArchTensorsFollowModel, RNNModel):
    def __init__(self, ntoken, ninp, nhid, nhidlast, dropout=0.5, dropouth=0.5, dropoutx=0.5,
                 dropouti=0.5, dropoute=0.1):
        super().__init__(ntoken, ninp, nhid, nhidlast, dropout, dropouth, dropoutx, dropouti,
                         dropoute, cell_cls=DARTSCellSearch, genotype=None)
        self._args = (ntoken, ninp, nhid, nhidlast, dropout, dropouth, dropoutx, dropouti, dropoute)
        self._initialize_arch_parameters()

    def _initialize_arch_parameters(self):
        k = sum(i for i in range(1, STEPS + 1))
        self.weights = (1e-3 * torch.randn(k, len(PRIMITIVES))).to(self.encoder.weight).requires_grad_()
        self._arch_parameters = [self.weights]
        for rnn in self.rnns:
            rnn.weights = self.weights

    def arch_parameters(self):
        return self._arch_parameters

    def new(self):
        model_new = RNNModelSearch(*self._args).to(self.weights)
        for x, y in zip(model_new.arch_parameters(), self.arch_parameters()):
            x.data.copy_(y.data)
        return model_new

    def forward(self, input, hidden, return_h=False):
        k = sum(range(1, STEPS + 1))
        if tuple(self.weights.shape) != (k, len(PRIMITIVES)):
            raise ValueError(f"weights (alpha) has shape {tuple(self.weights.shape)}; the RNN "
                             f"search cell needs [{k}, {len(PRIMITIVES)}]")
        return super().forward(input, hidden, return_h)

    def _loss(self, hidden, input, target):
        log_prob, hidden_next = self(input, hidden, return_h=False)
        loss = F.nll_loss(log_prob.view(-1, log_prob.size(2)), target)
        return loss, hidden_next

    def genotype(self):
        gene = parse_rnn(F.softmax(self.weights, dim=-1).detach().cpu().numpy())
        return RNNGenotype(recurrent=gene, concat=list(range(STEPS + 1))[-CONCAT:])


def parse_rnn(probs, steps=STEPS, primitives=PRIMITIVES):
    """Each node keeps its strongest incoming edge (by its best non-none op) and
    that op; ties go to the lower index, as in the original."""
    none = primitives.index("none")
    if probs.shape != (sum(range(1, steps + 1)), len(primitives)):
        raise ValueError(f"weights of shape {tuple(probs.shape)} do not fit an RNN cell with "
                         f"{steps} nodes and {len(primitives)} ops")
    gene = []
    start = 0
    for i in range(steps):
        end = start + i + 1
        W = probs[start:end]
        j = sorted(range(i + 1), key=lambda x: -max(W[x][c] for c in range(len(W[x])) if c != none))[0]
        k_best = None
        for c in range(len(W[j])):
            if c != none and (k_best is None or W[j][c] > W[j][k_best]):
                k_best = c
        gene.append((primitives[k_best], j))
        start = end
    return gene
