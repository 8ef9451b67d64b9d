"""fastdarts.profile.launches: the counter's rules on hand-made cases, and the launch
budget of a fused search step (CNN and RNN, both orders) at a small shape."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import fastdarts  # noqa: F401  (registers torch.ops.fastdarts.*)
from fastdarts.profile.launches import (
    LaunchCounter,
    count_cnn_step,
    count_rnn_step,
    multi_tensor_apply_launches,
)


# -- the rules --------------------------------------------------------------------------------
def test_views_cost_nothing():
    x = torch.randn(4, 6)
    with LaunchCounter() as c:
        x.view(24)
        x.t()
        x[1:, ::2]
        x.unsqueeze(0).expand(3, 4, 6)
        x.detach()
        torch.empty(5)
    assert (c.launches, c.ops) == (0, 0)
    assert c.views >= 6


def test_inplace_add_costs_one():
    x = torch.randn(4, 6)
    with LaunchCounter() as c:
        x.add_(1.0)
    assert c.launches == 1 and c.ops == 1 and c.by_op == {"aten.add_": 1}


def test_batch_norm_training_three_eval_one_backward_two():
    bn = nn.BatchNorm2d(4)
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    with LaunchCounter() as c:
        y = bn(x)
    assert c.by_op["aten.native_batch_norm"] == 3
    assert c.by_op["aten.add_"] == 1  # num_batches_tracked += 1
    g = torch.randn_like(y)
    with LaunchCounter() as c:
        y.backward(g)
    assert c.by_op["aten.native_batch_norm_backward"] == 2
    bn.eval()
    with LaunchCounter() as c, torch.no_grad():
        bn(x)
    assert c.launches == 1 and c.ops == 1


def test_convolution_backward_one_per_gradient():
    conv = nn.Conv2d(3, 4, 3, bias=False)
    for needs_input_grad, expected in ((True, 2), (False, 1)):
        x = torch.randn(2, 3, 6, 6, requires_grad=needs_input_grad)
        y = conv(x)
        with LaunchCounter() as c:
            y.backward(torch.randn_like(y))
        assert c.by_op["aten.convolution_backward"] == expected
        assert c.calls["aten.convolution_backward"] == 1


@pytest.mark.parametrize("backend, fwd, bwd", [("cuda", 1, 2), ("triton", 2, 3)])
def test_mixed_sum_counts_its_gpu_launches_not_its_cpu_ops(backend, fwd, bwd):
    # 9 inputs: CUDA 32 per forward launch, 16 per backward launch (+ the partial sum);
    # Triton 8 per launch both ways (+ the partial sum)
    outs = [torch.randn(2, 3, 4, requires_grad=True) for _ in range(9)]
    w = torch.randn(9, requires_grad=True)
    with LaunchCounter(backend) as c:
        y = torch.ops.fastdarts.mixed_sum(outs, w)
    # on the CPU the reference backend runs several aten ops inside: none is seen
    assert dict(c.calls) == {"fastdarts.mixed_sum": 1}
    assert c.launches == fwd
    g = torch.randn_like(y)  # dense, so no layout copy
    with LaunchCounter(backend) as c:
        torch.autograd.grad(y, [*outs, w], g)
    assert dict(c.calls) == {"fastdarts.mixed_sum_backward": 1}
    assert c.launches == bwd


def test_foreach_launches_follow_multi_tensor_apply():
    ts = [torch.randn(3) for _ in range(200)]
    with LaunchCounter() as c:
        torch._foreach_mul_(ts, 2.0)       # depth 1: 110 tensors per launch
    assert c.launches == 2
    with LaunchCounter() as c:
        torch._foreach_add_(ts, ts)        # depth 2: 64 per launch
    assert c.launches == 4
    with LaunchCounter() as c:
        torch._foreach_add(ts, ts)         # out-of-place: depth 3, 48 per launch
    assert c.launches == 5
    with LaunchCounter() as c:
        torch._foreach_norm(ts)            # depth 1 + one clean-up reduction
    assert c.launches == 3
    # big tensors: at most 320 chunks of 65536 elements per launch
    assert multi_tensor_apply_launches([65536 * 320 * 2 + 1], 1) == 3
    assert multi_tensor_apply_launches([65536 * 200] * 3, 2) == 2
    assert multi_tensor_apply_launches([], 1) == 0


def test_item_is_a_host_sync():
    x = torch.randn(5)
    with LaunchCounter() as c:
        x.sum().item()
    assert c.syncs == 1
    assert c.launches == 1  # the sum; the read itself is a copy, not a kernel
    with LaunchCounter() as c:
        x.sum()
    assert c.syncs == 0


def test_unknown_custom_op_counts_one_and_is_listed():
    @torch.library.custom_op("launchtest::double", mutates_args=())
    def double(x: torch.Tensor) -> torch.Tensor:
        return x * 2 + 0

    x = torch.randn(3)
    with LaunchCounter() as c:
        double(x)
    assert c.launches == 1 and c.unknown_custom_ops == {"launchtest.double": 1}


def test_top_orders_by_launches():
    x = torch.randn(3)
    with LaunchCounter() as c:
        for _ in range(3):
            x.add_(1)
        x.mul(2)
    assert c.top(1) == [("aten.add_", 3)]
    assert c.top(5) == [("aten.add_", 3), ("aten.mul", 1)]


# -- the launch budget ------------------------------------------------------------------------
# Small shapes (counts do not depend on the batch, image size or emsize; they depend on
# the CNN's layers and the RNN's bptt).
CNN_SHAPE = dict(C=4, layers=3, batch=2, hw=8, steps=2, multiplier=2)
RNN_SHAPE = dict(emsize=8, ntoken=50, bptt=3, batch=2)
# Estimated launches of one fused step, today's count + ~2 %.  A change that adds launches
# fails here.  When a change removes launches on purpose, set MEASURED to the new counts
# (the failing-or-not numbers: count_cnn_step / count_rnn_step("fused", ...) with the
# shapes above), BUDGET to MEASURED + ~2 % (rounded up) and RATIO to the new
# fused/reference ratios (rounded up to 3 decimals), in the same commit.
# Measured 2026-11-30 (working tree with the batched CNN supernet in progress):
# reference launches cnn 5,372 / 15,208, rnn 4,993 / 11,940 (first / second order).
MEASURED = {("cnn", False): 1736, ("cnn", True): 4391, ("rnn", False): 672, ("rnn", True): 1685}
BUDGET = {("cnn", False): 1771, ("cnn", True): 4479, ("rnn", False): 686, ("rnn", True): 1719}
RATIO = {("cnn", False): 0.324, ("cnn", True): 0.289, ("rnn", False): 0.135, ("rnn", True): 0.142}


def _count(space, impl, unrolled):
    # the reference has no one-time set-up after its first step (the fused Architect moves
    # the momentum buffers into its flat buffer at the second): 1 warm-up is enough there
    warmup = 2 if impl == "fused" else 1
    if space == "cnn":
        return count_cnn_step(impl, unrolled, repeats=0, warmup=warmup, **CNN_SHAPE)
    return count_rnn_step(impl, unrolled, repeats=0, warmup=warmup, **RNN_SHAPE)


@pytest.mark.parametrize("space", ["cnn", "rnn"])
@pytest.mark.parametrize("unrolled", [False, True], ids=["first", "second"])
def test_fused_step_launch_budget(space, unrolled):
    fused = _count(space, "fused", unrolled)
    ref = _count(space, "reference", unrolled)
    key = (space, unrolled)
    assert fused["unknown_custom_ops"] == {}
    assert fused["syncs"] == 0
    assert fused["launches"] <= BUDGET[key], (
        f"{space} {'second' if unrolled else 'first'} order: {fused['launches']} launches > budget "
        f"{BUDGET[key]}; top ops: {fused['top']}")
    ratio = fused["launches"] / ref["launches"]
    assert ratio < RATIO[key] + 0.02, (ratio, fused["launches"], ref["launches"])
