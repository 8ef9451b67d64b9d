"""fastdarts.Architect: the DARTS bilevel step, in place, on flat buffers.

A drop-in for the original's Architect (CNN and RNN forms, chosen from the
``args`` it is given) that never copies the model:

1. g = dL_train(w)/dw is gathered into a flat buffer; w' = w - eta (momentum m +
   s g + wd w) overwrites the weights in one launch while w goes to a backup.
2. The validation pass runs on the model itself at w'; its BatchNorm running
   statistics are saved and restored around it (one copy per buffer dtype), so
   they end as the original leaves them (its validation pass ran on a throw-away
   copy).  v = dL_val(w')/dw lands in a flat buffer.
3. R = r / ||v|| stays on the device; w+ = backup + R v and w- = backup - R v are
   one launch each; the restore is a copy of the backup: bit-exact.
4. alpha.grad = dL_val/dalpha - eta * c * (g+ - g-) / (2R), c = 1 (CNN) or the
   RNN's raw clip coefficient.  A non-finite loss or a zero/non-finite ||v|| is
   detected on the device and the finite-difference term is skipped for that
   step (``stats.fd_ok`` is False); the weights are restored all the same.

No host synchronisation happens inside a step.  Options beyond the original:
``r`` (finite-difference radius), ``hvp="exact"`` (double backward, for small
models and checking), ``micro_batches`` (gradient accumulation; note that
BatchNorm then normalises each micro-batch separately), ``capturable`` (Adam on
alpha with capturable=True, for CUDA-graph capture of the step); for the RNN,
``tied_embedding_step`` (the original's unrolled model keeps the tied embedding
un-stepped, reproduced by default; "consistent" steps it; see RNNArchitect).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from . import ops as _ops  # noqa: F401  (registers torch.ops.fastdarts.*)
from .flat_buffers import FlatBufferGroups, FlatTensors
from .ops import flat_update as flat_ops


@dataclass
class StepStats:
    """Device tensors describing the last architect step (read them only when
    you want a host sync, e.g. for logging)."""

    loss_val: Tensor | None = None
    v_norm: Tensor | None = None
    R: Tensor | None = None
    fd_ok: Tensor | None = None
    alpha_grad_norm: Tensor | None = None


class _Bilevel:
    """Shared machinery of both Architect forms."""

    def __init__(self, model, *, r: float = 1e-2, hvp: str = "finite_difference",
                 micro_batches: int = 1):
        if not callable(getattr(model, "arch_parameters", None)):
            raise TypeError(f"{type(model).__name__} has no arch_parameters(); the Architect needs a "
                            "model with parameters(), arch_parameters() and _loss(...)")
        if not callable(getattr(model, "_loss", None)):
            raise TypeError(f"{type(model).__name__} has no _loss(...) method")
        if hvp not in ("finite_difference", "exact"):
            raise ValueError(f"hvp must be 'finite_difference' or 'exact', got {hvp!r}")
        if int(micro_batches) < 1:
            raise ValueError(f"micro_batches must be >= 1, got {micro_batches}")
        self.model = model
        self.r = float(r)
        self.hvp = hvp
        self.micro_batches = int(micro_batches)
        self.alphas = list(model.arch_parameters())
        for i, a in enumerate(self.alphas):
            if not isinstance(a, Tensor) or not a.is_leaf or not a.requires_grad:
                raise ValueError(f"arch_parameters()[{i}] must be a leaf tensor with requires_grad=True "
                                 "(create it with torch.zeros(...).requires_grad_(), not from another "
                                 "tensor's computation)")
        self.stats = StepStats()
        self._momentum_for = None
        # Data parallelism (fastdarts.distributed): averages each gradient over the
        # process group, one collective per flat quantity.  None: single process.
        self.reducer = None
        self._build()

    # -- flat buffers --------------------------------------------------------------
    def _build(self):
        alpha_ids = {id(a) for a in self.alphas}
        self.params = [p for p in self.model.parameters() if p.requires_grad and id(p) not in alpha_ids]
        self.w = FlatTensors(self.params, "parameters")
        self.buffers = FlatBufferGroups(self.model)
        data = self.w.data
        self.backup = torch.empty_like(data)
        self.g = torch.zeros_like(data)
        self.v = torch.zeros_like(data)
        self.g_views = self.w.views(self.g)
        self.v_views = self.w.views(self.v)
        self.eta = torch.zeros((), dtype=data.dtype, device=data.device)
        self.m = None
        self._momentum_for = None

    def _ensure_flat(self):
        if not (self.w.intact() and self.buffers.intact()):
            self._build()  # the model was moved or its storage replaced: gather again

    def _momentum(self, optimizer) -> Tensor | None:
        """The optimizer's momentum buffers as one flat tensor (their storage is
        moved into it once; SGD updates them in place afterwards).  None unless
        every parameter has one: the original's all-or-nothing rule."""
        if self._momentum_for is optimizer and self.m is not None:
            st0 = optimizer.state.get(self.params[0], {}).get("momentum_buffer")
            st1 = optimizer.state.get(self.params[-1], {}).get("momentum_buffer")
            if st0 is self._m_views[0] and st1 is self._m_views[-1]:
                return self.m
        bufs = [optimizer.state.get(p, {}).get("momentum_buffer") for p in self.params]
        if any(b is None for b in bufs):
            return None
        self.m = torch.empty_like(self.w.data)
        self._m_views = self.w.views(self.m)
        with torch.no_grad():
            for p, b, view in zip(self.params, bufs, self._m_views):
                view.copy_(b)
                optimizer.state[p]["momentum_buffer"] = view
        self._momentum_for = optimizer
        return self.m

    # -- gradients -----------------------------------------------------------------
    def _grads(self, closures, alphas: bool, w_views: list[Tensor] | None, flat: Tensor | None):
        """Run each closure -> (loss, aux); sum the gradients of the losses w.r.t. the
        alphas (returned) and the weights (written into ``flat`` through ``w_views``)."""
        targets = (self.alphas if alphas else []) + (self.params if w_views is not None else [])
        na = len(self.alphas) if alphas else 0
        alpha_grads, losses, auxes = None, [], []
        for i, fn in enumerate(closures):
            loss, aux = fn()
            grads = torch.autograd.grad(loss, targets, allow_unused=True)
            losses.append(loss.detach())
            auxes.append(aux)
            if na:
                ga = [torch.zeros_like(a) if g is None else g for a, g in zip(self.alphas, grads[:na])]
                alpha_grads = ga if alpha_grads is None else torch._foreach_add(alpha_grads, ga)
            if w_views is not None:
                gw = grads[na:]
                if any(g is None for g in gw):  # unused parameters get zero gradient
                    if i == 0:
                        flat.zero_()
                    pairs = [(v, g) for v, g in zip(w_views, gw) if g is not None]
                    if pairs:
                        dst, src = zip(*pairs)
                        (torch._foreach_copy_ if i == 0 else torch._foreach_add_)(list(dst), list(src))
                elif i == 0:
                    torch._foreach_copy_(w_views, list(gw))
                else:
                    torch._foreach_add_(w_views, list(gw))
        loss = losses[0] if len(losses) == 1 else torch.stack(losses).sum()
        if self.reducer is not None:
            alpha_grads, loss = self.reducer(alpha_grads, flat if w_views is not None else None, loss)
        return alpha_grads, loss, auxes

    def _set_alpha_grads(self, grads):
        for a, g in zip(self.alphas, grads):
            if a.grad is None:
                a.grad = g.detach().clone()
            else:
                a.grad.copy_(g)
        self.stats.alpha_grad_norm = torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(g) for g in grads]))

    # -- the two orders ------------------------------------------------------------
    def _first_order(self, val_closures):
        dalpha, loss_v, aux = self._grads(val_closures, True, None, None)
        self.stats = StepStats(loss_val=loss_v)
        self._set_alpha_grads(dalpha)
        return aux

    def _second_order(self, train_closures, val_closures, eta, m, momentum, wd, clip=None):
        self._ensure_flat()
        w = self.w.data
        self.eta.fill_(eta)
        # 1. g at w, then w <- w' in place (w kept in the backup)
        _, loss_t, _ = self._grads(train_closures, False, self.g_views, self.g)
        clip_coef = g_scale = None
        if clip is not None:
            clip_coef = clip / (torch.linalg.vector_norm(self.g) + 1e-6)
            g_scale = torch.clamp(clip_coef, max=1.0)
        self._virtual_step(w, m, momentum, wd, g_scale)
        # 2. validation at w' (running statistics left as they were)
        self.buffers.save()
        dalpha, loss_v, aux = self._grads(val_closures, True, self.v_views, self.v)
        self.buffers.restore()
        if clip is not None:
            self.v.mul_(torch.clamp(clip / (torch.linalg.vector_norm(self.v) + 1e-6), max=1.0))
        v_norm = torch.linalg.vector_norm(self.v)
        ok = torch.isfinite(v_norm) & (v_norm > 0) & torch.isfinite(loss_v) & torch.isfinite(loss_t)
        scale = self.eta if clip_coef is None else self.eta * clip_coef
        if self.hvp == "exact":
            w.copy_(self.backup)
            hvp = self._exact_hvp(train_closures)
            R = torch.zeros_like(v_norm)
        else:
            # 3. central finite difference; R stays on the device
            R = torch.where(ok, self.r / v_norm, torch.zeros_like(v_norm))
            flat_ops.perturb_(w, self.backup, self.v, R, 1.0)
            g_pos, _, _ = self._grads(train_closures, True, None, None)
            flat_ops.perturb_(w, self.backup, self.v, R, -1.0)
            g_neg, _, _ = self._grads(train_closures, True, None, None)
            w.copy_(self.backup)  # bit-exact restore
            hvp = [(x - y) / (2 * R) for x, y in zip(g_pos, g_neg)]
        grads = [torch.where(ok, d - scale * h, d) for d, h in zip(dalpha, hvp)]
        self.stats = StepStats(loss_val=loss_v, v_norm=v_norm, R=R, fd_ok=ok)
        self._set_alpha_grads(grads)
        return aux

    def _virtual_step(self, w, m, momentum, wd, g_scale):
        """backup <- w; w <- w' (one launch)."""
        flat_ops.virtual_step_(w, self.backup, self.g, m, self.eta, momentum, wd, g_scale)

    def _exact_hvp(self, train_closures):
        """d/dalpha <dL_train(w)/dw, v> by double backward (memory ~2x a backward)."""
        total = None
        for fn in train_closures:
            loss, _ = fn()
            gw = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)
            dot = sum((g * v).sum() for g, v in zip(gw, self.v_views) if g is not None)
            ga = torch.autograd.grad(dot, self.alphas, allow_unused=True)
            ga = [torch.zeros_like(a) if g is None else g for a, g in zip(self.alphas, ga)]
            total = ga if total is None else torch._foreach_add(total, ga)
        return total

    def _chunks(self, n: int) -> list[slice]:
        k = min(self.micro_batches, n)
        bounds = [round(i * n / k) for i in range(k + 1)]
        return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


class CNNArchitect(_Bilevel):
    """The CNN form: momentum and weight decay in the virtual step; Adam (0.5, 0.999)
    (beta1 from ``args.arch_beta1`` when given: FairDARTS uses 0.9)."""

    def __init__(self, model, args, *, r=1e-2, hvp="finite_difference", micro_batches=1,
                 capturable=False):
        super().__init__(model, r=r, hvp=hvp, micro_batches=micro_batches)
        self.network_momentum = args.momentum
        self.network_weight_decay = args.weight_decay
        beta1 = getattr(args, "arch_beta1", 0.5)
        self.optimizer = torch.optim.Adam(self.alphas, lr=args.arch_learning_rate, betas=(beta1, 0.999),
                                          weight_decay=args.arch_weight_decay, capturable=capturable)

    def _closures(self, x, y):
        n = x.shape[0]
        if self.micro_batches == 1:
            return [lambda: (self.model._loss(x, y), None)]
        return [lambda s=s: (self.model._loss(x[s], y[s]) * ((s.stop - s.start) / n), None)
                for s in self._chunks(n)]

    def step(self, input_train, target_train, input_valid, target_valid, eta, network_optimizer,
             unrolled):
        if unrolled:
            self._ensure_flat()
            m = self._momentum(network_optimizer)
            self._second_order(self._closures(input_train, target_train),
                               self._closures(input_valid, target_valid), eta, m,
                               self.network_momentum, self.network_weight_decay)
        else:
            self._first_order(self._closures(input_valid, target_valid))
        self.optimizer.step()


TIED_EMBEDDING_STEPS = ("original", "consistent")


def _merge(ranges):
    out = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


class RNNArchitect(_Bilevel):
    """The RNN form: clipped gradients, raw clip coefficient on the Hessian term,
    no momentum; Adam with default betas.  ``step`` returns (hidden_next,
    grad_norm) with grad_norm the L2 norm of the new alpha gradient (a device
    tensor; the original returned None there).

    ``tied_embedding_step``: what the second-order virtual step does to a weight the
    model ties under two names (the RNN's ``decoder.weight`` is ``encoder.weight``).

    * ``"original"`` (default): it is *not* stepped.  The original builds its
      unrolled model by loading ``state_dict()`` updated with the stepped tensors of
      ``named_parameters()``, which lists a tied weight once; its second name keeps
      the un-stepped tensor and is loaded last, so the original's w' steps every
      weight but the embedding.  Here the virtual step leaves the embedding's slice
      of the flat buffer alone (w' = w there; the backup still gets it).  v, its
      clipping and the +-R v finite difference cover every weight, embedding
      included, as in the original.  One launch more than the consistent step:
      the virtual step over the rest of the buffer, then one copy of the held slice
      into the backup.
    * ``"consistent"``: every weight is stepped (the plain DARTS formula).

    First order is the same in both (no virtual step).
    """

    def __init__(self, model, args, *, r=1e-2, hvp="finite_difference", micro_batches=1,
                 capturable=False, tied_embedding_step: str = "original"):
        if tied_embedding_step not in TIED_EMBEDDING_STEPS:
            raise ValueError(f"tied_embedding_step must be 'original' (the original's unrolled model "
                             f"keeps the tied embedding un-stepped) or 'consistent' (it is stepped), "
                             f"got {tied_embedding_step!r}")
        self.tied_embedding_step = tied_embedding_step
        super().__init__(model, r=r, hvp=hvp, micro_batches=micro_batches)
        self.network_weight_decay = args.wdecay
        self.network_clip = args.clip
        self.optimizer = torch.optim.Adam(self.alphas, lr=args.arch_lr, weight_decay=args.arch_wdecay,
                                          capturable=capturable)

    def _build(self):
        super()._build()
        # Flat ranges of the weights the model ties under several names; in "original"
        # mode the virtual step holds them (see the class docstring).
        names: dict[int, int] = {}
        for _, p in self.model.named_parameters(remove_duplicate=False):
            names[id(p)] = names.get(id(p), 0) + 1
        held = []
        if self.tied_embedding_step == "original":
            held = _merge((a, b) for p, a, b in zip(self.params, self.w.offsets, self.w.offsets[1:])
                          if names.get(id(p), 0) > 1)
        self.held_ranges = held
        bounds = [0] + [x for r in held for x in r] + [self.w.offsets[-1]]
        stepped = [(a, b) for a, b in zip(bounds[::2], bounds[1::2]) if b > a]
        w, bk, g = self.w.data, self.backup, self.g
        # views made once: a step slices nothing
        self._held_views = [(w[a:b], bk[a:b]) for a, b in held]
        self._stepped_views = [(w[a:b], bk[a:b], g[a:b]) for a, b in stepped]

    def _virtual_step(self, w, m, momentum, wd, g_scale):
        if not self._held_views:
            return super()._virtual_step(w, m, momentum, wd, g_scale)
        assert m is None  # the RNN step has no momentum
        for ws, bs, gs in self._stepped_views:
            flat_ops.virtual_step_(ws, bs, gs, None, self.eta, momentum, wd, g_scale)
        for ws, bs in self._held_views:  # w' = w on the tied embedding; the backup still gets it
            bs.copy_(ws)

    def _closures(self, hidden, x, y):
        B = x.shape[1]
        if self.micro_batches == 1:
            return [lambda: self.model._loss(hidden, x, y)]
        T = x.shape[0]
        y2 = y.view(T, B)
        out = []
        for s in self._chunks(B):
            def fn(s=s):
                loss, h = self.model._loss([h_[:, s] for h_ in hidden], x[:, s], y2[:, s].reshape(-1))
                return loss * ((s.stop - s.start) / B), h
            out.append(fn)
        return out

    @staticmethod
    def _join_hidden(auxes):
        if len(auxes) == 1:
            return auxes[0]
        return [torch.cat([a[i] for a in auxes], dim=1) for i in range(len(auxes[0]))]

    def step(self, hidden_train, input_train, target_train, hidden_valid, input_valid, target_valid,
             network_optimizer, unrolled, *, eta=None):
        """``eta``: the virtual step's learning rate; default the weight optimizer's lr (as
        the original); a device scalar keeps it out of a captured graph's constants."""
        if eta is None:
            eta = network_optimizer.param_groups[0]["lr"]
        if unrolled:
            aux = self._second_order(self._closures(hidden_train, input_train, target_train),
                                     self._closures(hidden_valid, input_valid, target_valid), eta,
                                     None, 0.0, self.network_weight_decay, clip=self.network_clip)
        else:
            aux = self._first_order(self._closures(hidden_valid, input_valid, target_valid))
        self.optimizer.step()
        return self._join_hidden(aux), self.stats.alpha_grad_norm


def Architect(model, args, **options):
    """The drop-in Architect: the RNN form when ``args`` has ``wdecay``/``clip``/``arch_lr``
    (the original rnn/train_search.py flags), else the CNN form (``momentum``,
    ``weight_decay``, ``arch_learning_rate``, ``arch_weight_decay``)."""
    if all(hasattr(args, k) for k in ("wdecay", "clip", "arch_lr", "arch_wdecay")):
        return RNNArchitect(model, args, **options)
    missing = [k for k in ("momentum", "weight_decay", "arch_learning_rate", "arch_weight_decay")
               if not hasattr(args, k)]
    if missing:
        raise TypeError(f"args lacks {', '.join(missing)}: pass the original train_search.py "
                        "arguments (CNN: momentum, weight_decay, arch_learning_rate, "
                        "arch_weight_decay; RNN: wdecay, clip, arch_lr, arch_wdecay)")
    return CNNArchitect(model, args, **options)
