"""SearchStep: one whole DARTS search step, eager or captured in a CUDA graph.

    step = SearchStep(model, architect, optimizer, unrolled=True, grad_clip=5.0,
                      cuda_graph=True)
    for x, y in train:                       # fixed batch shape
        xv, yv = next(valid)
        loss, logits = step(x, y, xv, yv, lr)

A step is the original's inner loop body: the architect update on (train,
valid) with eta = lr, then the weight update on the train batch (forward,
backward, gradient clipping, SGD with momentum).

Eager mode calls ``architect.step`` and the user's optimizer as the original
loop does.  Captured mode (``cuda_graph=True``, CUDA only) runs ``warmup``
eager steps (the optimizer creates its momentum buffers; cuDNN picks its
algorithms), then records one step in a CUDA graph and replays it: the inputs
are copied into static buffers, ``lr`` into a device scalar, and the weight
update is the fused flat ``sgd_step_`` (clip scale folded in) on the
Architect's flat buffers, so nothing in the step reads a value on the host.
The returned ``loss``/``logits`` are the graph's static outputs: they are
overwritten by the next call (clone them to keep them).

Capture needs: a fastdarts Architect built with ``capturable=True``; a
``torch.optim.SGD`` weight optimizer with one parameter group, dampening 0, no
nesterov/maximize; fixed input shapes (a batch of another shape runs eagerly).
Anything else raises :class:`CaptureError` saying what to change.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .architect import CNNArchitect
from .ops import flat_update as flat_ops


class CaptureError(RuntimeError):
    """The step cannot be captured in a CUDA graph (the message says why and what to do)."""


def fused_sgd_step_(arch, loss, m, lr, momentum: float, weight_decay: float, clip) -> None:
    """The weight step of a captured search step, with no host reads: the gradient of
    ``loss`` into the Architect's flat buffer ``arch.g`` (zeros for weights it does
    not reach), the clipping scale min(1, clip / (||g|| + 1e-6)) as a device tensor
    (none when ``clip`` is None), then one fused SGD update of ``arch.w`` with
    momentum buffer ``m``.  ``lr`` is a one-element device tensor."""
    grads = torch.autograd.grad(loss, arch.params, allow_unused=True)
    if any(g is None for g in grads):
        arch.g.zero_()
        pairs = [(v, g) for v, g in zip(arch.g_views, grads) if g is not None]
        torch._foreach_copy_([p[0] for p in pairs], [p[1] for p in pairs])
    else:
        torch._foreach_copy_(arch.g_views, list(grads))
    scale = None
    if clip is not None:
        scale = torch.clamp(clip / (torch.linalg.vector_norm(arch.g) + 1e-6), max=1.0)
    flat_ops.sgd_step_(arch.w.data, m, arch.g, lr, momentum, weight_decay, scale)


class SearchStep:
    def __init__(self, model, architect, optimizer, *, unrolled: bool, grad_clip: float | None = 5.0,
                 cuda_graph: bool = False, warmup: int = 3, fused_weight_step: bool | None = None):
        self.model = model
        self.architect = architect
        self.optimizer = optimizer
        self.unrolled = bool(unrolled)
        self.grad_clip = grad_clip
        self.cuda_graph = bool(cuda_graph)
        self.warmup = max(1, int(warmup))
        # the fused flat weight update is what capture uses; it can be asked for
        # eagerly too (tests compare it with the optimizer's own step)
        self.fused_weight_step = self.cuda_graph if fused_weight_step is None else fused_weight_step
        self.calls = 0
        self._graph = None
        self._static = None
        self._lr = None
        if self.cuda_graph or self.fused_weight_step:
            self._check_fusable()

    # -- checks ----------------------------------------------------------------------
    def _check_fusable(self):
        if not isinstance(self.architect, CNNArchitect):
            raise CaptureError("the captured/fused step supports fastdarts.Architect in its CNN form; "
                               "use cuda_graph=False for this architect")
        opt = self.optimizer
        if type(opt) is not torch.optim.SGD or len(opt.param_groups) != 1:
            raise CaptureError("the captured/fused step needs torch.optim.SGD with one parameter group "
                               f"(got {type(opt).__name__} with {len(opt.param_groups)} groups); "
                               "use cuda_graph=False")
        g = opt.param_groups[0]
        if g.get("dampening", 0) != 0 or g.get("nesterov") or g.get("maximize"):
            raise CaptureError("the captured/fused step supports SGD without dampening, nesterov or "
                               "maximize; use cuda_graph=False")
        ids = {id(p) for p in g["params"]}
        if ids != {id(p) for p in self.architect.params}:
            raise CaptureError("the optimizer must hold exactly the model's weights (no alphas)")
        if self.cuda_graph:
            if self.architect.w.data.device.type != "cuda":
                raise CaptureError("CUDA-graph capture needs the model on a CUDA device; "
                                   "use cuda_graph=False on the CPU")
            if not self.architect.optimizer.defaults.get("capturable", False):
                raise CaptureError("build the Architect with capturable=True "
                                   "(fastdarts.Architect(model, args, capturable=True)) to capture it")

    # -- the step --------------------------------------------------------------------
    def __call__(self, input_train, target_train, input_valid, target_valid, lr):
        self.calls += 1
        shapes = (input_train.shape, target_train.shape, input_valid.shape, target_valid.shape)
        if not self.cuda_graph:
            return self._eager(input_train, target_train, input_valid, target_valid, float(lr))
        if self._graph is not None and shapes == self._static["shapes"]:
            s = self._static
            for dst, src in zip(s["inputs"], (input_train, target_train, input_valid, target_valid)):
                dst.copy_(src, non_blocking=True)
            self._lr.fill_(lr)
            self._graph.replay()
            return s["loss"], s["logits"]
        if self.calls <= self.warmup or self._graph is not None:
            # warm-up (or a batch of another shape, e.g. the last one of an epoch)
            return self._eager(input_train, target_train, input_valid, target_valid, float(lr))
        return self._capture(input_train, target_train, input_valid, target_valid, lr, shapes)

    def _eager(self, xt, yt, xv, yv, lr):
        self.architect.step(xt, yt, xv, yv, lr, self.optimizer, self.unrolled)
        if self.fused_weight_step and self._momentum() is not None:
            if self._lr is None:
                self._lr = torch.zeros((), dtype=self.architect.w.data.dtype,
                                       device=self.architect.w.data.device)
            self._lr.fill_(lr)
            return self._fused_weight_step(xt, yt)
        self.optimizer.zero_grad()
        logits = self.model(xt)
        loss = self.model._criterion(logits, yt)
        loss.backward()
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        return loss.detach(), logits.detach()

    def _momentum(self):
        return self.architect._momentum(self.optimizer)

    def _fused_weight_step(self, xt, yt):
        """forward, backward into the flat gradient, clip, fused SGD: no host reads."""
        arch = self.architect
        logits = self.model(xt)
        loss = self.model._criterion(logits, yt)
        g = self.optimizer.param_groups[0]
        fused_sgd_step_(arch, loss, arch.m, self._lr, g["momentum"], g["weight_decay"], self.grad_clip)
        return loss.detach(), logits.detach()

    def _capture(self, xt, yt, xv, yv, lr, shapes):
        if self._momentum() is None:
            raise CaptureError("the optimizer has no momentum buffers yet; run at least one eager "
                               "step (warmup >= 1) with momentum > 0 before capture")
        inputs = [t.clone() for t in (xt, yt, xv, yv)]
        self._lr = torch.full((), float(lr), dtype=self.architect.w.data.dtype,
                              device=self.architect.w.data.device)
        # the architect reads eta from this device scalar inside the graph
        eta = self._lr
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.stream(stream), torch.cuda.graph(graph, stream=stream):
                self.architect.step(*inputs, eta, self.optimizer, self.unrolled)
                loss, logits = self._fused_weight_step(inputs[0], inputs[1])
        except RuntimeError as exc:
            raise CaptureError(f"CUDA-graph capture of the search step failed ({exc}); something in "
                               "the model syncs with the host or changes shape. Use cuda_graph=False.") \
                from exc
        torch.cuda.current_stream().wait_stream(stream)
        self._graph = graph
        self._static = {"inputs": inputs, "loss": loss, "logits": logits, "shapes": shapes}
        # capture records but does not run: run the step now for this batch
        graph.replay()
        return loss, logits
