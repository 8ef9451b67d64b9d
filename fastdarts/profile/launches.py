"""Deterministic CPU count of the GPU kernel launches a block of PyTorch code would cost.

    from fastdarts.profile.launches import LaunchCounter
    with LaunchCounter() as c:
        loss = model._loss(x, y); loss.backward()
    c.launches, c.ops, c.syncs, c.by_op, c.top(10)

A :class:`~torch.utils._python_dispatch.TorchDispatchMode` records every ATen (and
custom) op dispatched inside the block, after autograd and composite decomposition,
i.e. the ops that reach a backend kernel, and gives each an *estimated* number of
CUDA kernel launches.  It runs on any device (the numbers are for a GPU run of the
same code, counted on the CPU), needs no profiler and is exactly repeatable, so a
test can hold a launch budget.  The rules:

* Views and metadata-only ops cost 0 and are not counted in ``ops``: every return
  carries an alias annotation and none is a write (``view``, ``reshape`` as a view,
  ``split``, ``select``, ``t``, ``expand``...), ops that return no tensor and write
  nothing (``sym_size``, ``is_same_size``...), and the allocation/metadata ops in
  :data:`ZERO_COST` (``empty*``, ``new_empty*``, ``lift_fresh``, ``detach``,
  ``_unsafe_view``, ``alias``, ``resize_``, ``set_``, in-place ``squeeze_``...).
* Every other op costs 1, in-place ones (an argument written: ``add_``, ``copy_``,
  ``out=`` forms) included, except:
* batch norm forward in training mode (``native_batch_norm``,
  ``_native_batch_norm_legit*``, ``_batch_norm_with_update``, ``cudnn_batch_norm``
  with training=True and running statistics) = 3 (statistics, running-statistics
  update, apply); training without running statistics = 2; eval mode = 1.  Batch
  norm backward = 2 (reduce + apply).  These are ESTIMATES of the CUDA/cuDNN
  implementations, not measured launch counts.
* ``convolution_backward`` = one per true entry of ``output_mask`` (grad input,
  grad weight, grad bias).
* ``_foreach_*`` ops: PyTorch's CUDA ``multi_tensor_apply`` launches per (device,
  dtype) group; one launch holds at most {1: 110, 2: 64, 3: 48, 4: 36, 5: 30}[depth]
  tensors and 320 chunks of 65536 elements, where depth = the number of tensor lists
  the kernel touches (the op's list arguments, plus the output list of an
  out-of-place op).  :func:`multi_tensor_apply_launches` replays its loop, so the
  count is at least ceil(n_tensors / cap[depth]) and ceil(total_numel / (65536*320)).
  ``_foreach_norm``/``_foreach_max`` add one clean-up (reduction) launch.  Lists
  whose tensors are not dense or do not share strides take the slow path: one launch
  per tensor.
* custom ops of the ``fastdarts`` namespace (``torch.ops.fastdarts.*``) are seen as
  one op each: the mode is switched off while an op runs, so the ATen ops inside
  (those of the reference backend on the CPU) are not counted; their launches on a
  GPU come from :data:`FASTDARTS_LAUNCHES` (read from csrc/cuda/*.cu and kernels/*.py),
  for the ``cuda`` backend (the one auto dispatch picks on a GPU with fastdarts._C
  built) or ``backend="triton"``.  A custom op (of any namespace other than aten's)
  not in that table counts 1 and is listed in ``unknown_custom_ops``.
* ops on tensors passed to :meth:`LaunchCounter.mark_host` (those that live on the host
  in a GPU run, e.g. a non-capturable Adam's ``step`` counters) are host work: no
  launch, no sync, counted in ``host_ops``.
* host synchronisations are counted separately in ``syncs``: ``_local_scalar_dense``
  (``.item()``, ``bool(t)``, ``float(t)``), ``equal``, ``nonzero``, ``masked_select``,
  ``unique``, ``repeat_interleave`` without ``output_size``, indexing with a bool
  mask, a copy from a CUDA tensor to the CPU.  ``_local_scalar_dense`` is a device-
  to-host copy, not a kernel: 0 launches, 1 sync.

What the estimate leaves out: the library-internal multi-kernel implementations
(cuBLAS/cuDNN algorithms that launch 2+ kernels, cub's scans), memcpy/memset calls,
and the host work between launches.  It is for comparing code paths, not a profiler.
Note that the code counted on a CPU takes the CPU's Python paths: optimizers pick
``foreach`` only for CUDA tensors unless told (``count_*_step`` passes foreach=True,
as a GPU run gets by default).

:func:`count_cnn_step` / :func:`count_rnn_step` build a whole search step (architect
step + weight step, as fastdarts/search/cnn.py and rnn.py run it) for ``impl``
"reference" or "fused" and return its counts, the bytes autograd saves for backward
over the step (fastdarts.nn.memory.SavedBytes) and the step's CPU wall time.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import Counter
from types import SimpleNamespace

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = ["LaunchCounter", "FASTDARTS_LAUNCHES", "ZERO_COST", "SYNC_OPS",
           "multi_tensor_apply_launches", "count_cnn_step", "count_rnn_step"]


# Allocation- and metadata-only ops: no kernel (their schemas do not say so generically).
ZERO_COST = frozenset({
    "aten::empty", "aten::empty_like", "aten::empty_strided", "aten::empty_permuted",
    "aten::new_empty", "aten::new_empty_strided", "aten::lift_fresh", "aten::lift",
    "aten::detach", "aten::detach_", "aten::_unsafe_view", "aten::alias", "aten::_reshape_alias",
    "aten::resize_", "aten::resize_as_", "aten::set_", "aten::as_strided_", "aten::squeeze_",
    "aten::unsqueeze_", "aten::t_", "aten::transpose_", "aten::swapdims_", "aten::swapaxes_",
    "aten::_coalesced_", "aten::record_stream", "aten::_version", "aten::requires_grad_",
    "aten::retain_grad", "aten::_propagate_xla_data", "aten::_assert_tensor_metadata",
    "aten::_resize_output_", "aten::_nested_tensor_size",
    "aten::is_pinned", "aten::_has_compatible_shallow_copy_type",
})

# op -> launches of its own (the sync is counted separately)
SYNC_OPS = {
    "aten::_local_scalar_dense": 0,   # .item(): a device-to-host copy, no kernel
    "aten::item": 0,
    "aten::is_nonzero": 0,
    "aten::equal": 2,                 # eq + all, then the host reads the result
    "aten::nonzero": 2,               # count + cub select; the host reads the count
    "aten::masked_select": 3,         # nonzero + index
    "aten::unique": 3, "aten::_unique": 3, "aten::_unique2": 3, "aten::unique_dim": 3,
    "aten::unique_consecutive": 3,
}

_BN_FORWARD = frozenset({"aten::native_batch_norm", "aten::_native_batch_norm_legit",
                         "aten::_native_batch_norm_legit_functional", "aten::cudnn_batch_norm",
                         "aten::miopen_batch_norm", "aten::_batch_norm_with_update",
                         "aten::_batch_norm_with_update_functional",
                         "aten::_native_batch_norm_legit_no_training", "aten::_batch_norm_no_update"})
_BN_BACKWARD = frozenset({"aten::native_batch_norm_backward", "aten::cudnn_batch_norm_backward",
                          "aten::miopen_batch_norm_backward", "aten::batch_norm_backward"})

# multi_tensor_apply (aten/src/ATen/native/cuda/MultiTensorApply.cuh)
_MTA_MAX_TENSORS = {1: 110, 2: 64, 3: 48, 4: 36, 5: 30}
_MTA_MAX_BLOCKS = 320
_MTA_CHUNK = 65536


def multi_tensor_apply_launches(numels: list[int], depth: int) -> int:
    """Kernel launches of CUDA's multi_tensor_apply over tensors of these sizes: its host
    loop replayed (a launch when ``cap[depth]`` tensors or 320 chunks of 65536 elements
    are gathered, or at the last chunk).  Empty tensors are skipped."""
    cap = _MTA_MAX_TENSORS[min(max(depth, 1), 5)]
    sizes = [n for n in numels if n > 0]
    launches = loc_tensor = loc_block = 0
    for t, n in enumerate(sizes):
        loc_tensor += 1
        chunks = -(-n // _MTA_CHUNK)
        for c in range(chunks):
            loc_block += 1
            last_chunk_of_tensor = c == chunks - 1
            tensors_full = loc_tensor == cap and last_chunk_of_tensor
            blocks_full = loc_block == _MTA_MAX_BLOCKS
            last = t == len(sizes) - 1 and last_chunk_of_tensor
            if tensors_full or blocks_full or last:
                launches += 1
                loc_block = 0
                loc_tensor = 0 if last_chunk_of_tensor else 1
    return launches


def _dense(t: torch.Tensor) -> bool:
    expected = 1
    for stride, size in sorted((st, sz) for sz, st in zip(t.shape, t.stride()) if sz != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _foreach_launches(func, args, kwargs) -> int:
    schema = func._schema
    lists = []
    for a, v in zip(schema.arguments, args):
        if isinstance(v, (list, tuple)) and v and all(isinstance(t, torch.Tensor) for t in v):
            if str(a.type) == "List[Tensor]":  # Tensor[] (not a Scalar[] list)
                lists.append(list(v))
    for v in kwargs.values():
        if isinstance(v, (list, tuple)) and v and all(isinstance(t, torch.Tensor) for t in v):
            lists.append(list(v))
    if not lists:
        return 0
    inplace = any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments)
    returns_list = any(str(r.type) == "List[Tensor]" for r in schema.returns)
    name = schema.name
    reduction = name in ("aten::_foreach_norm", "aten::_foreach_max")
    # a reduction writes per-chunk partials, not an output list, then one clean-up kernel
    depth = len(lists) + (1 if returns_list and not inplace and not reduction else 0)
    extra = 1 if reduction else 0
    first = lists[0]
    # the fast path needs every list's i-th tensor dense and with the same strides
    fast = all(_dense(t) for lst in lists for t in lst) and all(
        len(lst) == len(first) and all(t.stride() == u.stride() for t, u in zip(lst, first))
        for lst in lists[1:])
    groups: dict = {}
    for t in first:
        groups.setdefault((t.device, t.dtype), []).append(t.numel())
    if not fast:
        return sum(len(g) for g in groups.values()) * (1 + extra)
    return sum(multi_tensor_apply_launches(g, depth) + extra for g in groups.values())


# -- the fastdarts custom ops: launches per call on a GPU backend -------------------------
# CUDA C++ (csrc/cuda/mixed_sum_cuda.cu): kFwdInputs = 32 input pointers per forward launch,
# kBwdInputs = 16 per backward launch; the backward adds partial.sum(1).  Triton
# (kernels/mixed_sum.py): MAX_INPUTS = 8 per launch both ways, + partial.sum(dim=1).
_MIXED_SUM_PER_LAUNCH = {"cuda": (32, 16), "triton": (8, 8)}


def _outputs_copies(outputs) -> int:
    """fastdarts/ops/mixed_sum.py flat_layout: one .contiguous() copy per output unless
    all share one dense stride order."""
    from ..ops.mixed_sum import _is_dense, _strides_key

    key = _strides_key(outputs[0])
    if _is_dense(outputs[0]) and all(_strides_key(x) == key for x in outputs[1:]):
        return 0
    return sum(0 if x.is_contiguous() else 1 for x in outputs)


def _cast(t, dtype) -> int:
    return int(t.dtype != dtype)


def _acc(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _mixed_sum(args, backend):
    outputs, weights = args[0], args[1]
    per = _MIXED_SUM_PER_LAUNCH[backend][0]
    # + weights.to(acc dtype) when the weights are not in it (bf16 autocast keeps fp32 weights)
    return _outputs_copies(outputs) + _cast(weights, _acc(outputs[0].dtype)) + math.ceil(len(outputs) / per)


def _mixed_sum_backward(args, backend):
    grad, outputs, weights = args[0], args[1], args[2]
    per = _MIXED_SUM_PER_LAUNCH[backend][1]
    from ..ops.mixed_sum import _strides_key

    copies = _outputs_copies(outputs) + _cast(grad, outputs[0].dtype)
    copies += int(_strides_key(grad) != _strides_key(outputs[0]))  # _match_layout
    # kernels + partial-sum reduction (+ the grad_weights cast back to weights' dtype)
    return (copies + _cast(weights, _acc(outputs[0].dtype)) + math.ceil(len(outputs) / per) + 1
            + _cast(weights, _acc(outputs[0].dtype)))


def _rnn_node(args, backend):
    ch, states, probs = args[0], args[1], args[2]
    dtype = torch.promote_types(ch.dtype, states.dtype)
    # _common casts (fastdarts/ops/rnn_node.py), probs.to(acc).contiguous(), 1 kernel
    # (csrc/cuda/rnn_node_cuda.cu rnn_node_fwd_kernel / kernels/rnn_node.py rnn_node_fwd_kernel)
    p_copy = int(probs.dtype != _acc(dtype) or not probs.is_contiguous())
    if backend == "triton":
        p_copy = int(probs.dtype != _acc(dtype))  # the Triton kernel takes probs' strides
    return _cast(ch, dtype) + _cast(states, dtype) + p_copy + 1


def _rnn_node_backward(args, backend):
    grad, ch, states, probs = args[0], args[1], args[2], args[3]
    dtype = torch.promote_types(ch.dtype, states.dtype)
    p_copy = int(probs.dtype != _acc(dtype) or (backend == "cuda" and not probs.is_contiguous()))
    # casts in, 1 kernel (rnn_node_bwd_kernel) + partial.sum over blocks, casts back out
    return (_cast(ch, dtype) + _cast(states, dtype) + _cast(grad, dtype) + p_copy + 2
            + _cast(ch, dtype) + _cast(states, dtype) + _cast(probs, _acc(dtype)))


def _rnn_node_bn(args, backend):
    ch, states, probs = args[0], args[1], args[2]
    dtype = torch.promote_types(ch.dtype, states.dtype)
    # fastdarts/ops/rnn_node_bn.py: _common casts, probs.to(acc) (Triton takes its strides),
    # 1 kernel (kernels/rnn_node_bn.py rnn_node_bn_fwd_kernel; Triton on every backend)
    return _cast(ch, dtype) + _cast(states, dtype) + _cast(probs, _acc(dtype)) + 1


def _rnn_node_bn_backward(args, backend):
    grad_y, grad_ym, ch, states, probs = args[0], args[1], args[2], args[3], args[4]
    dtype = torch.promote_types(ch.dtype, states.dtype)
    casts = sum(_cast(g, dtype) for g in (grad_y, grad_ym) if g is not None)
    # casts in, 1 kernel (rnn_node_bn_bwd_kernel) + partial.sum over programs, casts out
    return (_cast(ch, dtype) + _cast(states, dtype) + casts + _cast(probs, _acc(dtype)) + 2
            + _cast(ch, dtype) + _cast(states, dtype) + _cast(probs, _acc(dtype)))


def _state_mixed_sum(args, backend, backward=False):
    # fastdarts/ops/state_sum.py + kernels/state_sum.py (Triton only: auto dispatch picks
    # Triton on CUDA whatever ``backend`` says; no CUDA C++ kernel yet): one launch per
    # (edge, chunk of MAX_INPUTS = 8 weight columns), E = weights.shape[0], K = sum(max(1,
    # blocks[i])); weights.to(acc).contiguous() copies unless already so; the backward adds
    # partial.sum(dim=2).
    inputs, blocks, weights = (args[1], args[2], args[3]) if backward else (args[0], args[1], args[2])
    E, K = weights.shape[0], sum(max(1, int(b)) for b in blocks)
    w_copy = int(weights.dtype != _acc(inputs[0].dtype) or not weights.is_contiguous())
    return w_copy + E * math.ceil(K / 8) + (1 if backward else 0)


FASTDARTS_LAUNCHES = {
    # fastdarts/ops/state_sum.py state_mixed_sum (see _state_mixed_sum): E * ceil(K / 8).
    "fastdarts::state_mixed_sum": _state_mixed_sum,
    # kernels/state_sum.py state_sum_backward: E * ceil(K / 8) + partial.sum.
    "fastdarts::state_mixed_sum_backward": lambda args, backend: _state_mixed_sum(args, backend, True),
    # csrc/cuda/mixed_sum_cuda.cu mixed_sum_forward_cuda: ceil(M / 32) launches of
    # mixed_sum_fwd_kernel (chunks accumulate in a scratch buffer); kernels/mixed_sum.py
    # mixed_sum_forward: ceil(M / 8).  Plus copies fastdarts/ops/mixed_sum.py may add.
    "fastdarts::mixed_sum": _mixed_sum,
    # csrc/cuda/mixed_sum_cuda.cu mixed_sum_backward_cuda: ceil(M / 16) launches of
    # mixed_sum_bwd_kernel + partial.sum(1); kernels/mixed_sum.py: ceil(M / 8) + 1.
    "fastdarts::mixed_sum_backward": _mixed_sum_backward,
    # csrc/cuda/rnn_node_cuda.cu rnn_node_forward_cuda / kernels/rnn_node.py: one kernel.
    "fastdarts::rnn_node": _rnn_node,
    # csrc/cuda/rnn_node_cuda.cu rnn_node_backward_cuda / kernels/rnn_node.py: one kernel
    # + the fixed-order partial.sum(0) of d probs.
    "fastdarts::rnn_node_backward": _rnn_node_backward,
    # kernels/rnn_node_bn.py rnn_node_bn_forward: one kernel (node + BN + running stats +
    # mask); no CUDA C++ kernel, auto dispatch picks Triton on a GPU.
    "fastdarts::rnn_node_bn": _rnn_node_bn,
    # kernels/rnn_node_bn.py rnn_node_bn_backward: one kernel + partial.sum(0).
    "fastdarts::rnn_node_bn_backward": _rnn_node_bn_backward,
    # csrc/cuda/flat_update_cuda.cu virtual_step_cuda / kernels/flat_update.py _virtual_step_kernel: 1.
    "fastdarts::virtual_step_": lambda args, backend: 1,
    # csrc/cuda/flat_update_cuda.cu perturb_cuda / kernels/flat_update.py _perturb_kernel: 1.
    "fastdarts::perturb_": lambda args, backend: 1,
    # csrc/cuda/flat_update_cuda.cu sgd_step_cuda / kernels/flat_update.py _sgd_step_kernel: 1.
    "fastdarts::sgd_step_": lambda args, backend: 1,
}


def _short(name: str) -> str:
    return name.replace("::", ".")


class LaunchCounter(TorchDispatchMode):
    """``with LaunchCounter() as c: ...``; then ``c.launches`` (estimated kernel
    launches), ``c.ops`` (dispatched ops other than views and metadata-only ops),
    ``c.syncs`` (host synchronisations), ``c.by_op`` ({op: launches}), ``c.calls``
    ({op: calls}), ``c.views`` (zero-cost ops seen), ``c.unknown_custom_ops``
    ({op: calls} of custom ops not in :data:`FASTDARTS_LAUNCHES`), ``c.top(n)``.

    ``backend``: which GPU backend's launch counts the fastdarts ops get, ``"cuda"``
    (default: what auto dispatch picks on a GPU with fastdarts._C built) or ``"triton"``.
    """

    def __init__(self, backend: str = "cuda"):
        super().__init__()
        if backend not in _MIXED_SUM_PER_LAUNCH:
            raise ValueError(f"backend must be 'cuda' or 'triton', got {backend!r}")
        self.backend = backend
        self.launches = 0
        self.ops = 0
        self.syncs = 0
        self.views = 0
        self.by_op: Counter = Counter()
        self.calls: Counter = Counter()
        self.syncs_by_op: Counter = Counter()
        self.unknown_custom_ops: Counter = Counter()
        self.host_ops = 0
        self._host: set = set()

    def mark_host(self, tensors) -> None:
        """Tensors that live on the host in a GPU run of the counted code (e.g. the
        ``step`` counters of a non-capturable Adam): ops on them (with at most 0-dim
        other tensors) are host work, 0 launches and no sync; they go to ``host_ops``."""
        for t in tensors:
            if isinstance(t, torch.Tensor):
                self._host.add(t.untyped_storage().data_ptr())

    def _is_host_op(self, args, kwargs) -> bool:
        if not self._host:
            return False
        tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        marked = [t.untyped_storage().data_ptr() in self._host for t in tensors]
        return any(marked) and all(m or t.dim() == 0 for m, t in zip(marked, tensors))

    # -- the rules ----------------------------------------------------------------------------
    def cost(self, func, args, kwargs) -> tuple[int, int]:
        """(launches, syncs) of one call; launches -1 marks a zero-cost (view/metadata) op."""
        schema = func._schema
        name = schema.name
        ns = name.split("::", 1)[0]
        if ns == "profiler":
            return -1, 0  # record_function markers (optimizer.step is wrapped in one)
        if ns not in ("aten", "prims", "_c10d_functional", "c10d"):
            rule = FASTDARTS_LAUNCHES.get(name)
            if rule is None:
                self.unknown_custom_ops[_short(name)] += 1
                return 1, 0
            return rule(args, self.backend), 0
        if name in SYNC_OPS:
            return SYNC_OPS[name], 1
        if name in ZERO_COST:
            return -1, 0
        writes = any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments)
        rets = schema.returns
        if not writes and rets and all(r.alias_info is not None and not r.alias_info.is_write
                                       for r in rets):
            return -1, 0  # a view
        if not writes and not any("Tensor" in str(r.type) for r in rets):
            return -1, 0  # metadata query (sizes, flags)
        if name.startswith("aten::_foreach_"):
            return _foreach_launches(func, args, kwargs), 0
        if name in _BN_FORWARD:
            return self._bn_forward(func, args, kwargs), 0
        if name in _BN_BACKWARD:
            return 2, 0
        if name == "aten::convolution_backward":
            mask = _arg(func, args, kwargs, "output_mask")
            return sum(bool(m) for m in mask), 0
        if name in ("aten::index", "aten::index_put", "aten::index_put_", "aten::_index_put_impl_"):
            indices = _arg(func, args, kwargs, "indices")
            if any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8)
                   for i in (indices or [])):
                return 3, 1  # nonzero (sync) + the index kernel
        if name == "aten::repeat_interleave" and _arg(func, args, kwargs, "output_size") is None \
                and isinstance(args[0], torch.Tensor) and len(args) == 1:
            return 2, 1
        if name == "aten::copy_" and len(args) > 1 and isinstance(args[1], torch.Tensor) \
                and args[1].device.type == "cuda" and args[0].device.type == "cpu":
            return 1, 1
        return 1, 0

    def _bn_forward(self, func, args, kwargs) -> int:
        name = func._schema.name
        if name in ("aten::_native_batch_norm_legit_no_training",):
            return 1
        running_mean = _arg(func, args, kwargs, "running_mean")
        training = _arg(func, args, kwargs, "training")
        if name == "aten::_batch_norm_no_update":
            training = running_mean is None
        if name.startswith("aten::_batch_norm_with_update"):
            training = True
        if not training:
            return 1
        return 3 if running_mean is not None else 2

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self._is_host_op(args, kwargs):
            self.host_ops += 1
            return func(*args, **kwargs)
        launches, syncs = self.cost(func, args, kwargs)
        key = _short(func._schema.name)
        if launches < 0:
            self.views += 1
        else:
            self.ops += 1
            self.launches += launches
            self.by_op[key] += launches
            self.calls[key] += 1
        if syncs:
            self.syncs += syncs
            self.syncs_by_op[key] += syncs
        return func(*args, **kwargs)

    def top(self, n: int = 10) -> list[tuple[str, int]]:
        """The ``n`` ops with the most launches, as (op, launches), most first."""
        return sorted(self.by_op.items(), key=lambda kv: (-kv[1], kv[0]))[:n]

    def summary(self) -> dict:
        return {"ops": self.ops, "launches": self.launches, "syncs": self.syncs,
                "top": self.top(10), "unknown_custom_ops": dict(self.unknown_custom_ops)}


def _arg(func, args, kwargs, name):
    for i, a in enumerate(func._schema.arguments):
        if a.name == name:
            if i < len(args):
                return args[i]
            return kwargs.get(name, a.default_value if a.has_default_value() else None)
    return kwargs.get(name)


# -- whole search steps ---------------------------------------------------------------------------
CNN_ARGS = SimpleNamespace(momentum=0.9, weight_decay=3e-4, arch_learning_rate=3e-4,
                           arch_weight_decay=1e-3)
RNN_ARGS = SimpleNamespace(wdecay=5e-7, clip=0.25, arch_lr=3e-3, arch_wdecay=1e-3)


def _gpu_default_foreach(architect) -> None:
    """Adam on alpha as a GPU run gets it (foreach; the CPU default is the per-tensor loop)."""
    for g in architect.optimizer.param_groups:
        g["foreach"] = True
    architect.optimizer.defaults["foreach"] = True


def _measure(step, model, architect, *, warmup: int, repeats: int, backend: str) -> dict:
    from ..nn.memory import SavedBytes

    for _ in range(warmup):
        step()
    with SavedBytes(model) as mem, LaunchCounter(backend) as c:
        # Adam on alpha (not capturable) keeps its step counters on the host on a GPU
        c.mark_host(st["step"] for st in architect.optimizer.state.values() if "step" in st)
        step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
    return {"ops": c.ops, "launches": c.launches, "syncs": c.syncs,
            "saved_bytes": mem.saved_bytes, "cpu_ms": statistics.median(times) if times else None,
            "host_ops": c.host_ops, "syncs_by_op": dict(c.syncs_by_op),
            "top": c.top(10), "by_op": dict(c.by_op), "calls": dict(c.calls),
            "unknown_custom_ops": dict(c.unknown_custom_ops)}


def _classes(space: str, impl: str):
    from ..search.models import model_classes

    if impl not in ("reference", "fused"):
        raise ValueError(f"impl must be 'reference' or 'fused', got {impl!r}")
    return model_classes(space, impl)


def count_cnn_step(impl: str, unrolled: bool, *, C: int = 16, layers: int = 8, batch: int = 2,
                   hw: int = 16, num_classes: int = 10, steps: int = 4, multiplier: int = 4,
                   memory: str | None = None, warmup: int = 2,
                   repeats: int = 3, backend: str = "cuda", seed: int = 0, method: str = "darts",
                   partial_channels: int = 4) -> dict:
    """Counts of one CNN search step (architect step + weight step: zero_grad, forward,
    loss, backward, clip_grad_norm_(5), SGD(0.025, momentum 0.9, wd 3e-4)) as
    fastdarts/search/cnn.py runs it, after ``warmup`` steps.  Returns a dict: ops,
    launches, syncs, saved_bytes (autograd's saved storages over the whole step,
    parameters of the model excluded), cpu_ms (median of ``repeats`` plain steps),
    top, by_op, calls, unknown_custom_ops.  ``method="pc-darts"``: PC-DARTS' supernet with
    K = ``partial_channels`` (reference: fastdarts.reference.cnn.pc_darts; fused:
    fastdarts.nn.pc_darts), the same step and Architect."""
    import torch.nn as nn

    Network, Architect = _classes("cnn", impl)
    torch.manual_seed(seed)
    if method == "pc-darts":
        if impl == "reference":
            from ..reference.cnn.pc_darts import Network
        else:
            from ..nn.pc_darts import Network
        kw = {"k": partial_channels}
    elif method == "darts":
        kw = {} if (impl == "reference" or memory is None) else {"memory": memory}
    else:
        raise ValueError(f"method must be 'darts' or 'pc-darts', got {method!r}")
    model = Network(C, num_classes, layers, nn.CrossEntropyLoss(), steps, multiplier, **kw)
    return _count_image_search_step(model, Architect, unrolled, batch=batch, hw=hw,
                                    num_classes=num_classes, warmup=warmup, repeats=repeats,
                                    backend=backend, seed=seed)


def _count_image_search_step(model, Architect, unrolled: bool, *, batch: int, hw: int,
                             num_classes: int, warmup: int, repeats: int, backend: str,
                             seed: int) -> dict:
    """The counts of one image search step of ``model`` (a CNN or NB201 supernet) as
    fastdarts/search/cnn.py runs it, on fixed random batches drawn from ``seed``."""
    import torch.nn as nn

    # foreach=True: what SGD picks by default for CUDA tensors
    optimizer = torch.optim.SGD(model.parameters(), 0.025, momentum=0.9, weight_decay=3e-4,
                                foreach=True)
    architect = Architect(model, CNN_ARGS)
    _gpu_default_foreach(architect)
    g = torch.Generator().manual_seed(seed)
    x, xv = torch.randn(batch, 3, hw, hw, generator=g), torch.randn(batch, 3, hw, hw, generator=g)
    y = torch.randint(0, num_classes, (batch,), generator=g)
    yv = torch.randint(0, num_classes, (batch,), generator=g)
    lr = 0.025

    def step():
        architect.step(x, y, xv, yv, lr, optimizer, unrolled)   # callbacks.ArchitectureUpdate
        model.train()                                             # CNNSearch.one_batch
        optimizer.zero_grad()
        logits = model(x)
        loss = model._criterion(logits, y)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)         # callbacks.GradClip
        optimizer.step()

    return _measure(step, model, architect, warmup=warmup, repeats=repeats, backend=backend)


def count_nb201_step(impl: str, unrolled: bool, *, C: int = 16, N: int = 5, batch: int = 2,
                     hw: int = 16, num_classes: int = 10, track_running_stats: bool = False,
                     warmup: int = 2, repeats: int = 3, backend: str = "cuda", seed: int = 0) -> dict:
    """Counts of one NAS-Bench-201 DARTS search step (``search cnn --space nb201``): the
    step of :func:`count_cnn_step` on NB201's supernet (C, N cells per stage, 4 nodes, its
    5 ops); ``impl`` reference (the plain-PyTorch port) or fused.  Returns the same dict."""
    import torch.nn as nn

    Network, Architect = _classes("nb201", impl)
    torch.manual_seed(seed)
    model = Network(C, N, 4, num_classes, nn.CrossEntropyLoss(),
                    track_running_stats=track_running_stats)
    return _count_image_search_step(model, Architect, unrolled, batch=batch, hw=hw,
                                    num_classes=num_classes, warmup=warmup, repeats=repeats,
                                    backend=backend, seed=seed)


def count_rnn_step(impl: str, unrolled: bool, *, emsize: int = 300, ntoken: int = 1000,
                   bptt: int = 35, batch: int = 4, warmup: int = 2, repeats: int = 3,
                   backend: str = "cuda", seed: int = 0, beta: float = 1e-3) -> dict:
    """Counts of one RNN search step as fastdarts/search/rnn.py runs it (full bptt):
    the architect step (hidden states detached, returns the next validation hidden),
    then zero_grad, forward with return_h, nll_loss + beta temporal regulariser,
    backward, clip_grad_norm_(0.25), SGD(lr 20, wd 5e-7, no momentum); emsize = nhid =
    nhidlast, the search defaults' dropouts.  Returns the dict of :func:`count_cnn_step`."""
    import torch.nn as nn
    import torch.nn.functional as F

    Model, Architect = _classes("rnn", impl)
    torch.manual_seed(seed)
    model = Model(ntoken, emsize, emsize, emsize, 0.75, 0.25, 0.75, 0.2, 0.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=20.0, weight_decay=5e-7, foreach=True)
    architect = Architect(model, RNN_ARGS)
    _gpu_default_foreach(architect)
    g = torch.Generator().manual_seed(seed)
    data = torch.randint(0, ntoken, (bptt, batch), generator=g)
    targets = torch.randint(0, ntoken, (bptt * batch,), generator=g)
    data_v = torch.randint(0, ntoken, (bptt, batch), generator=g)
    targets_v = torch.randint(0, ntoken, (bptt * batch,), generator=g)
    state = {"hidden": model.init_hidden(batch), "hidden_valid": model.init_hidden(batch)}

    def detach(h):
        return [v.detach() for v in h]

    def step():
        # RNNArchitectureUpdate.batch_begin
        state["hidden"] = detach(state["hidden"])
        state["hidden_valid"] = detach(state["hidden_valid"])
        state["hidden_valid"], _ = architect.step(state["hidden"], data, targets,
                                                  state["hidden_valid"], data_v, targets_v,
                                                  optimizer, unrolled)
        # RNNSearch.one_batch
        model.train()
        optimizer.zero_grad()
        state["hidden"] = detach(state["hidden"])
        log_prob, state["hidden"], rnn_hs, _ = model(data, state["hidden"], return_h=True)
        raw_loss = F.nll_loss(log_prob.view(-1, log_prob.size(2)), targets)
        loss = raw_loss + sum(beta * (h[1:] - h[:-1]).pow(2).mean() for h in rnn_hs[-1:])
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 0.25)         # callbacks.GradClip
        optimizer.step()

    return _measure(step, model, architect, warmup=warmup, repeats=repeats, backend=backend)
