"""RNNSearchStep: one RNN search step, eager or captured in a CUDA graph per sequence length.

    step = RNNSearchStep(model, architect, optimizer, unrolled=True, clip=0.25, beta=1e-3,
                         cuda_graph=True)
    loss, hidden, hidden_valid, arch_grad_norm = step(
        hidden, data, targets, hidden_valid, data_valid, targets_valid, lr)

A step is the body of the original rnn/train_search.py loop: the architect update
(eta = lr) returning the next validation hidden state, then the weight step on the
training batch (forward with return_h, NLL + alpha/beta activation regularisation,
backward, gradient clipping, SGD with weight decay) returning the next training
hidden state.  ``lr`` is the learning rate already scaled by seq_len / bptt.

Sequence lengths vary (bptt, bptt/2 with probability 5%, shorter batches at the end
of the data), so a graph is captured per set of input shapes met, never padded: the
alphas are what the eager steps give.  Per shape key (:class:`GraphCache`):

* the first ``warmup`` steps of a key run eagerly (warm-up per length: the Adam
  state, cuBLAS handles and autograd caches exist before capture);
* the next one is captured and replayed; later ones copy their inputs into the
  key's static buffers (:class:`StaticBuffers`), fill the lr scalar and replay;
* at most ``max_graphs`` keys are captured; a key met after that always runs eagerly.

All graphs share one memory pool (``torch.cuda.graph_pool_handle``): they are only
ever replayed one at a time on one stream, and everything that lives past a replay
(inputs, outputs, the Architect's flat buffers, optimizer states) is allocated
outside the pool.  The eager step and the captured one run the same function
(:meth:`RNNSearchStep._body`), so they compute the same thing; on the CPU the graph is
a recorder that re-runs that function (:class:`RecordedGraphs`), which is how the
caching and copying logic is tested without a GPU.

The returned tensors of a replayed step are the key's static outputs, overwritten by
its next replay (clone them to keep them).  The weight update is the flat
``sgd_step_`` (momentum 0, clip scale folded in, lr read from a device scalar): the
same formula as clip_grad_norm_ + torch.optim.SGD, rounded differently (the clip
norm is summed in another order).

Needs: a fastdarts RNNArchitect (``capturable=True`` to capture), a torch.optim.SGD
with one parameter group holding exactly the model's weights, no momentum, dampening,
nesterov or maximize.  Anything else raises :class:`fastdarts.step.CaptureError`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from .architect import RNNArchitect
from .ops import flat_update as flat_ops
from .step import CaptureError


# -- the pieces ---------------------------------------------------------------------
class GraphCache:
    """Graphs by shape key, at most ``max_graphs``; a key becomes capturable after
    ``warmup`` eager steps of it.  Pure bookkeeping: no tensors, no CUDA."""

    def __init__(self, max_graphs: int = 8, warmup: int = 2):
        if max_graphs < 0 or warmup < 1:
            raise ValueError(f"need max_graphs >= 0 and warmup >= 1, got {max_graphs}, {warmup}")
        self.max_graphs, self.warmup = int(max_graphs), int(warmup)
        self.entries: dict[Hashable, object] = {}
        self.seen: dict[Hashable, int] = {}
        self.eager_steps = 0
        self.replays = 0

    def get(self, key: Hashable):
        return self.entries.get(key)

    def want_capture(self, key: Hashable) -> bool:
        """Count one step of ``key`` (not yet captured); True when it should be captured
        now: warmed up, and a slot is free."""
        n = self.seen[key] = self.seen.get(key, 0) + 1
        return n > self.warmup and len(self.entries) < self.max_graphs

    def add(self, key: Hashable, entry) -> None:
        if len(self.entries) >= self.max_graphs:
            raise RuntimeError(f"graph cache full ({self.max_graphs} graphs)")
        self.entries[key] = entry

    def __len__(self) -> int:
        return len(self.entries)


class StaticBuffers:
    """Fixed tensors a graph reads (inputs) or writes (outputs); ``copy_in`` copies
    new values into them, one copy each (six small tensors a step, no allocation)."""

    def __init__(self, tensors: Sequence[Tensor]):
        self.tensors = [t.detach().clone() for t in tensors]

    def copy_in(self, tensors: Sequence[Tensor]) -> None:
        for dst, src in zip(self.tensors, tensors, strict=True):
            if dst.shape != src.shape:
                raise ValueError(f"static buffer of shape {tuple(dst.shape)} given {tuple(src.shape)}")
            dst.copy_(src, non_blocking=True)


def shape_key(tensors: Sequence[Tensor]) -> tuple:
    """The graph key: every input's shape and dtype (the sequence lengths of the
    training and the validation batch, the batch size)."""
    return tuple((tuple(t.shape), t.dtype) for t in tensors)


class CUDAGraphs:
    """Captures into torch.cuda.CUDAGraph objects that share one memory pool."""

    def __init__(self, device):
        self.device = torch.device(device)
        with torch.cuda.device(self.device):
            self.pool = torch.cuda.graph_pool_handle()
            self.stream = torch.cuda.Stream()

    def capture(self, fn: Callable[[], None]):
        graph = torch.cuda.CUDAGraph()
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream), torch.cuda.graph(graph, pool=self.pool, stream=self.stream):
            fn()
        torch.cuda.current_stream(self.device).wait_stream(self.stream)
        return graph


class _Recording:
    def __init__(self, fn):
        self.fn = fn
        self.replays = 0

    def replay(self) -> None:
        self.replays += 1
        self.fn()


class RecordedGraphs:
    """The CPU stand-in for :class:`CUDAGraphs`: "capture" records the function without
    running it (as a CUDA capture does not run the kernels), ``replay`` calls it on the
    same static buffers."""

    def __init__(self):
        self.captured = 0

    def capture(self, fn: Callable[[], None]) -> _Recording:
        self.captured += 1
        return _Recording(fn)


@dataclass
class _Entry:
    graph: object
    inputs: StaticBuffers
    outputs: list[Tensor]
    capture_seconds: float
    replays: int = field(default=0)


# -- the step -----------------------------------------------------------------------
class RNNSearchStep:
    def __init__(self, model, architect, optimizer, *, unrolled: bool, clip: float | None,
                 alpha: float = 0.0, beta: float = 1e-3, cuda_graph: bool = False,
                 max_graphs: int = 8, warmup: int = 2, graphs=None):
        self.model, self.architect, self.optimizer = model, architect, optimizer
        self.unrolled, self.clip = bool(unrolled), clip
        self.alpha, self.beta = float(alpha), float(beta)
        if not isinstance(architect, RNNArchitect):
            raise CaptureError("RNNSearchStep needs fastdarts.Architect in its RNN form")
        w = architect.w.data
        if cuda_graph and w.device.type != "cuda":
            raise CaptureError("CUDA-graph capture needs the model on a CUDA device; "
                               "use cuda_graph=False on the CPU")
        self._check(cuda_graph, graphs is not None)
        self.cache = GraphCache(max_graphs, warmup)
        if graphs is None and cuda_graph:
            graphs = CUDAGraphs(w.device)
        self.graphs = graphs  # None: always eager; RecordedGraphs: the CPU stand-in
        self._lr = torch.zeros((), dtype=w.dtype, device=w.device)
        # SGD without momentum through the flat sgd_step_: m is scratch (m <- 0 * m + d)
        self._m = torch.zeros_like(w)

    def _check(self, cuda_graph: bool, graphs: bool) -> None:
        if not isinstance(self.architect, RNNArchitect):
            raise CaptureError("RNNSearchStep needs fastdarts.Architect in its RNN form")
        opt = self.optimizer
        if type(opt) is not torch.optim.SGD or len(opt.param_groups) != 1:
            raise CaptureError("RNNSearchStep needs torch.optim.SGD with one parameter group "
                               f"(got {type(opt).__name__} with {len(opt.param_groups)} groups)")
        g = opt.param_groups[0]
        if g.get("momentum", 0) or g.get("dampening", 0) or g.get("nesterov") or g.get("maximize"):
            raise CaptureError("RNNSearchStep supports SGD without momentum, dampening, nesterov or "
                               "maximize (the original RNN search's optimizer)")
        if {id(p) for p in g["params"]} != {id(p) for p in self.architect.params}:
            raise CaptureError("the optimizer must hold exactly the model's weights (no alphas)")
        if cuda_graph and not self.architect.optimizer.defaults.get("capturable", False):
            raise CaptureError("build the Architect with capturable=True "
                               "(fastdarts.Architect(model, args, capturable=True)) to capture it")
        if (cuda_graph or graphs) and self.architect.reducer is not None:
            raise CaptureError("capture of a data-parallel RNN search step is not supported")

    # -- the math (eager and captured alike) ----------------------------------------------
    def _body(self, hidden: list[Tensor], data: Tensor, targets: Tensor, hidden_valid: list[Tensor],
              data_valid: Tensor, targets_valid: Tensor) -> list[Tensor]:
        """One search step on these tensors; returns [raw loss, *hidden_next,
        *hidden_valid_next, alpha grad norm].  Reads lr from ``self._lr``."""
        arch, model = self.architect, self.model
        hidden_valid_next, arch_grad_norm = arch.step(hidden, data, targets, hidden_valid, data_valid,
                                                      targets_valid, self.optimizer, self.unrolled,
                                                      eta=self._lr)
        model.train()
        log_prob, hidden_next, rnn_hs, dropped_rnn_hs = model(data, hidden, return_h=True)
        raw_loss = F.nll_loss(log_prob.view(-1, log_prob.size(2)), targets)
        loss = raw_loss
        if self.alpha > 0:
            loss = loss + sum(self.alpha * h.pow(2).mean() for h in dropped_rnn_hs[-1:])
        loss = loss + sum(self.beta * (h[1:] - h[:-1]).pow(2).mean() for h in rnn_hs[-1:])
        grads = torch.autograd.grad(loss, arch.params, allow_unused=True)
        if any(g is None for g in grads):
            arch.g.zero_()
            pairs = [(v, g) for v, g in zip(arch.g_views, grads) if g is not None]
            torch._foreach_copy_([p[0] for p in pairs], [p[1] for p in pairs])
        else:
            torch._foreach_copy_(arch.g_views, list(grads))
        scale = None
        if self.clip is not None:
            scale = torch.clamp(self.clip / (torch.linalg.vector_norm(arch.g) + 1e-6), max=1.0)
        wd = self.optimizer.param_groups[0]["weight_decay"]
        flat_ops.sgd_step_(arch.w.data, self._m, arch.g, self._lr, 0.0, wd, scale)
        return [raw_loss.detach(), *[h.detach() for h in hidden_next],
                *[h.detach() for h in hidden_valid_next], arch_grad_norm.detach()]

    # -- dispatch ----------------------------------------------------------------------
    def __call__(self, hidden, data, targets, hidden_valid, data_valid, targets_valid, lr):
        """-> (raw loss, hidden_next, hidden_valid_next, alpha grad norm); hidden lists as the
        model's.  ``lr``: the (sequence-length scaled) learning rate, a float."""
        nh = len(hidden)
        inputs = [*hidden, data, targets, *hidden_valid, data_valid, targets_valid]
        key = shape_key(inputs)
        entry = self.cache.get(key)
        self._lr.fill_(lr)
        if entry is None and self.graphs is not None and self.cache.want_capture(key):
            entry = self._capture(key, inputs, nh)
        elif entry is not None:
            entry.inputs.copy_in(inputs)
            entry.graph.replay()
            entry.replays += 1
            self.cache.replays += 1
        if entry is None:
            self.cache.eager_steps += 1
            out = self._body(*self._split(inputs, nh))
        else:
            out = entry.outputs
        return out[0], out[1:1 + nh], out[1 + nh:1 + 2 * nh], out[-1]

    @staticmethod
    def _split(inputs, nh):
        return (inputs[:nh], inputs[nh], inputs[nh + 1], inputs[nh + 2:2 * nh + 2], inputs[2 * nh + 2],
                inputs[2 * nh + 3])

    def _capture(self, key, inputs, nh) -> _Entry:
        static_in = StaticBuffers(inputs)
        # outputs live outside the graph pool: the graph copies its results into them
        probe = [torch.empty((), dtype=self._lr.dtype, device=self._lr.device)]
        static_out = (probe + [torch.empty_like(h) for h in inputs[:nh]]
                      + [torch.empty_like(h) for h in inputs[nh + 2:2 * nh + 2]] + [probe[0].clone()])

        def run():
            for dst, src in zip(static_out, self._body(*self._split(static_in.tensors, nh)), strict=True):
                dst.copy_(src)

        t0 = time.perf_counter()
        try:
            graph = self.graphs.capture(run)
        except RuntimeError as exc:
            raise CaptureError(f"CUDA-graph capture of the RNN search step failed ({exc}); something "
                               "in the model syncs with the host. Use cuda_graph=False.") from exc
        entry = _Entry(graph, static_in, static_out, time.perf_counter() - t0)
        self.cache.add(key, entry)
        # a capture records but does not run: run this step now
        graph.replay()
        entry.replays += 1
        self.cache.replays += 1
        return entry

    # -- what it holds -----------------------------------------------------------------
    def summary(self) -> dict:
        """Graphs captured, their keys' sequence lengths, capture times, replays and eager
        steps (host-side numbers; no sync)."""
        return {"graphs": len(self.cache), "max_graphs": self.cache.max_graphs,
                "capture_seconds": [e.capture_seconds for e in self.cache.entries.values()],
                "replays": self.cache.replays, "eager_steps": self.cache.eager_steps,
                "keys": list(self.cache.entries)}
