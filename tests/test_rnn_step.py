"""RNNSearchStep: graphs per sequence length (issue 14, part 2).

On the CPU: the cache (keyed by the input shapes, warm-up per key, a cap with eager
steps beyond it), the static-buffer copies, and the captured path against the eager
one through RecordedGraphs (a recorder that re-runs the step function on the static
buffers, as a replayed graph re-runs its kernels on them): bit-identical, dropout
included.  The step's math against the search engine's own eager loop (architect.step,
clip_grad_norm_, torch SGD): float64, 1e-10 (the clip norm is summed in another order).
On a GPU (skipped at run time without one): real capture against eager.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fastdarts
from fastdarts import nn as fnn
from fastdarts.rnn_step import GraphCache, RecordedGraphs, RNNSearchStep, StaticBuffers, shape_key
from fastdarts.step import CaptureError

from .helpers import one_thread, rnn_args  # noqa: F401  (autouse fixture)

NTOKEN, NHID, B = 20, 6, 3


def _model(seed=0, dropout=0.3, dtype=torch.float64, device="cpu"):
    torch.manual_seed(seed)
    m = fnn.RNNModelSearch(NTOKEN, NHID, NHID, NHID, dropout, dropout, dropout, dropout, 0.0)
    return m.to(device=device, dtype=dtype)


def _setup(model, unrolled, capturable=False, **kw):
    opt = torch.optim.SGD(model.parameters(), lr=20.0, weight_decay=5e-7)
    arch = fastdarts.Architect(model, rnn_args(), capturable=capturable)
    return RNNSearchStep(model, arch, opt, unrolled=unrolled, clip=0.25, alpha=1e-3, beta=1e-3, **kw)


def _batches(lengths, device="cpu", valid_len=3):
    g = torch.Generator().manual_seed(11)
    for T in lengths:
        x = torch.randint(0, NTOKEN, (T + 1, B), generator=g)
        xv = torch.randint(0, NTOKEN, (valid_len + 1, B), generator=g)
        yield (x[:-1].to(device), x[1:].reshape(-1).to(device), xv[:-1].to(device),
               xv[1:].reshape(-1).to(device), 20.0 * T / 4)


def test_graph_cache_warms_up_each_key_and_caps():
    c = GraphCache(max_graphs=2, warmup=2)
    assert [c.want_capture("a"), c.want_capture("a"), c.want_capture("a")] == [False, False, True]
    c.add("a", "graph a")
    assert c.get("a") == "graph a" and c.get("b") is None
    assert [c.want_capture("b") for _ in range(3)] == [False, False, True]
    c.add("b", "graph b")
    assert [c.want_capture("c") for _ in range(5)] == [False] * 5  # full: eager for good
    assert len(c) == 2
    with pytest.raises(RuntimeError, match="full"):
        c.add("c", "graph c")
    with pytest.raises(ValueError):
        GraphCache(max_graphs=1, warmup=0)


def test_static_buffers_copy_in_place():
    a, b = torch.randn(2, 3), torch.arange(4)
    s = StaticBuffers([a, b])
    kept = [t.data_ptr() for t in s.tensors]
    s.copy_in([a + 1, b * 2])
    assert [t.data_ptr() for t in s.tensors] == kept
    assert torch.equal(s.tensors[0], a + 1) and torch.equal(s.tensors[1], b * 2)
    with pytest.raises(ValueError, match="shape"):
        s.copy_in([torch.randn(3, 3), b])
    assert shape_key([a, b]) != shape_key([torch.randn(3, 3), b])


@pytest.mark.parametrize("unrolled", [False, True], ids=["first_order", "second_order"])
def test_recorded_graphs_equal_the_eager_step_bit_for_bit(unrolled):
    """Lengths 4,4,4,2,2 with max_graphs=1, warmup=1: 4 is warmed up (one eager step),
    captured (and run) then replayed; 2 runs eagerly (cache full)."""
    lengths = [4, 4, 4, 2, 2]
    m1, m2 = _model(), _model()
    eager = _setup(m1, unrolled)
    graphs = RecordedGraphs()
    captured = _setup(m2, unrolled, graphs=graphs, max_graphs=1, warmup=1)
    states = []
    for step, m in ((eager, m1), (captured, m2)):
        torch.manual_seed(5)  # the same dropout masks in both runs
        h, hv = m.init_hidden(B), m.init_hidden(B)
        outs = []
        for x, y, xv, yv, lr in _batches(lengths):
            loss, h, hv, gnorm = step(h, x, y, hv, xv, yv, lr)
            outs.append([t.clone() for t in (loss, *h, *hv, gnorm)])
        states.append(outs)
    for a, b in zip(*states):
        for x, z in zip(a, b):
            assert torch.equal(x, z)
    for p, q in zip([*m1.parameters(), *m1.arch_parameters()], [*m2.parameters(), *m2.arch_parameters()]):
        assert torch.equal(p, q)
    s = captured.summary()
    assert graphs.captured == s["graphs"] == 1
    assert s["eager_steps"] == 1 + 2 and s["replays"] == 2  # the warm-up of 4, both 2s
    assert [k[1][0][0] for k in s["keys"]] == [4]  # [hidden, data, ...]: data's length


def _engine_like_step(model, arch, opt, batch_iter, unrolled):
    """The RNN search engine's eager step: RNNArchitectureUpdate, then one_batch with
    GradClip and the optimizer (fastdarts.search.rnn)."""
    h, hv = model.init_hidden(B), model.init_hidden(B)
    for x, y, xv, yv, lr in batch_iter:
        for g in opt.param_groups:
            g["lr"] = lr
        hv, _ = arch.step(h, x, y, hv, xv, yv, opt, unrolled)
        model.train()
        opt.zero_grad()
        log_prob, h, rnn_hs, dropped = model(x, h, return_h=True)
        raw = F.nll_loss(log_prob.view(-1, log_prob.size(2)), y)
        loss = raw + sum(1e-3 * d.pow(2).mean() for d in dropped[-1:])
        loss = loss + sum(1e-3 * (r[1:] - r[:-1]).pow(2).mean() for r in rnn_hs[-1:])
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()
        h = [t.detach() for t in h]
        hv = [t.detach() for t in hv]
    return h


@pytest.mark.parametrize("unrolled", [False, True], ids=["first_order", "second_order"])
def test_step_math_equals_the_search_engines_eager_step(unrolled):
    lengths = [4, 2, 4]
    m1, m2 = _model(), _model()
    opt1 = torch.optim.SGD(m1.parameters(), lr=20.0, weight_decay=5e-7)
    arch1 = fastdarts.Architect(m1, rnn_args())
    torch.manual_seed(5)
    h1 = _engine_like_step(m1, arch1, opt1, _batches(lengths), unrolled)
    step = _setup(m2, unrolled, graphs=RecordedGraphs(), max_graphs=2, warmup=1)
    torch.manual_seed(5)
    h, hv = m2.init_hidden(B), m2.init_hidden(B)
    for x, y, xv, yv, lr in _batches(lengths):
        _, h, hv, _ = step(h, x, y, hv, xv, yv, lr)
    torch.testing.assert_close(h[0], h1[0], rtol=1e-10, atol=1e-12)
    for p, q in zip([*m1.parameters(), *m1.arch_parameters()], [*m2.parameters(), *m2.arch_parameters()]):
        torch.testing.assert_close(q, p, rtol=1e-10, atol=1e-12)
    assert (m2.weights - _model().weights).abs().max() > 1e-4  # it moved


def test_refuses_what_it_cannot_capture():
    m = _model()
    opt = torch.optim.SGD(m.parameters(), lr=1.0, momentum=0.9)
    with pytest.raises(CaptureError, match="momentum"):
        RNNSearchStep(m, fastdarts.Architect(m, rnn_args()), opt, unrolled=True, clip=0.25)
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    with pytest.raises(CaptureError, match="CUDA device"):
        RNNSearchStep(m, fastdarts.Architect(m, rnn_args()), opt, unrolled=True, clip=0.25,
                      cuda_graph=True)


@pytest.mark.parametrize("unrolled", [False, True], ids=["first_order", "second_order"])
def test_cuda_graph_capture_matches_eager_gpu(unrolled):
    """Real capture on a GPU: lengths 6,6,6,3,3,3,6 with warmup 2, float32, against the
    same step run eagerly; two graphs in one pool.  Tolerance 1e-5 relative: the
    captured kernels are the eager ones, so only reduction order inside cuBLAS could
    differ."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    lengths = [6, 6, 6, 3, 3, 3, 6]
    m1 = _model(dtype=torch.float32, device="cuda")
    m2 = copy.deepcopy(m1)
    eager = _setup(m1, unrolled, capturable=True)
    captured = _setup(m2, unrolled, capturable=True, cuda_graph=True, warmup=2)
    outs = []
    for step, m in ((eager, m1), (captured, m2)):
        torch.manual_seed(5)
        h, hv = m.init_hidden(B), m.init_hidden(B)
        losses = []
        for x, y, xv, yv, lr in _batches(lengths, device="cuda"):
            loss, h, hv, _ = step(h, x, y, hv, xv, yv, lr)
            losses.append(loss.clone())
        outs.append(torch.stack(losses))
    s = captured.summary()
    assert s["graphs"] == 2 and s["replays"] == 3 and s["eager_steps"] == 4
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-6)
    for p, q in zip([*m1.parameters(), *m1.arch_parameters()], [*m2.parameters(), *m2.arch_parameters()]):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("unrolled", [False, True], ids=["first_order", "second_order"])
def test_search_engine_with_the_step_follows_the_eager_engine(tmp_path, unrolled):
    """The RNN search engine with an RNNSearchStep (RecordedGraphs, the CPU stand-in
    for --cuda_graph) against the plain engine: 4 steps, float64, alphas after every
    step to 1e-10 (the clip norm summed in another order)."""
    from fastdarts.loop import Callback
    from fastdarts.search.rnn import RNNSearchConfig, build

    class Trace(Callback):
        order = 1000

        def __init__(self):
            self.alphas = []

        def after_weight_step(self, e):
            self.alphas.append(e.model.weights.detach().clone())

    traces = []
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        for with_step in (False, True):
            trace = Trace()
            cfg = RNNSearchConfig(emsize=6, nhid=6, nhidlast=6, batch_size=3, bptt=5, epochs=1,
                                  max_steps_per_epoch=4, save=str(tmp_path / str(with_step)),
                                  quiet=True, eval_batch_size=64, unrolled=unrolled, alpha=1e-3)
            e = build(cfg, callbacks=[trace])
            if with_step:
                e.fused_step = RNNSearchStep(e.model, e.architect, e.optimizer, unrolled=unrolled,
                                             clip=cfg.clip, alpha=cfg.alpha, beta=cfg.beta,
                                             graphs=RecordedGraphs(), warmup=1)
            e.run()
            traces.append(trace.alphas)
    finally:
        torch.set_default_dtype(old)
    assert len(traces[0]) == len(traces[1]) == 4
    for a, b in zip(*traces):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
    assert (traces[0][-1] - traces[0][0]).abs().max() > 1e-5
