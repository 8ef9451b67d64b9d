"""NAS-Bench-201: the op-set registry, architecture strings, the reference cell against a
float64 transcription of NB201's math, the fused supernet against the reference, the
skeleton's shapes, and both Architects on it.  Tiny shapes, float64."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fastdarts import architect as A
from fastdarts.reference import cnn as ref_cnn
from fastdarts.reference.cnn import nb201 as R
from fastdarts.space import OPS, PRIMITIVES, get_op_set, op_set_names, op_sets, register_op_set
from fastdarts.space import nb201 as S

from .helpers import assert_close, cnn_args, one_thread  # noqa: F401  (autouse fixture)

F64 = torch.float64
FUSED = pytest.importorskip("fastdarts.nn.nb201")
ARCH = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|avg_pool_3x3~1|skip_connect~2|"


# ----------------------------------------------------------------------- op sets
def test_builtin_op_sets_keep_their_column_order():
    assert op_set_names()[:2] == ["darts", "nb201"]
    assert list(get_op_set("darts")) == PRIMITIVES
    assert all(get_op_set("darts")[p] is OPS[p] for p in PRIMITIVES)
    assert list(get_op_set("nb201")) == ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3",
                                         "avg_pool_3x3"]


def test_unknown_op_set_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown op set 'nope'; known: darts, nb201"):
        get_op_set("nope")


@pytest.fixture
def tiny_set():
    """A user set without 'none': identity and a plain 3x3 conv + BN."""
    name = "test-tiny"
    register_op_set(name, {
        "skip_connect": OPS["skip_connect"],
        "conv3": lambda C, stride, affine: nn.Sequential(
            nn.Conv2d(C, C, 3, stride, 1, bias=False), nn.BatchNorm2d(C, affine=affine)),
    })
    yield name
    del op_sets._OP_SETS[name]


def test_register_op_set_refuses_bad_sets(tiny_set):
    with pytest.raises(ValueError, match="already registered"):
        register_op_set(tiny_set, {"a": OPS["none"], "b": OPS["skip_connect"]})
    with pytest.raises(ValueError, match="only 'none'"):
        register_op_set("x1", {"none": OPS["none"]})
    with pytest.raises(ValueError, match="not callable"):
        register_op_set("x2", {"conv": 3})
    with pytest.raises(ValueError, match="non-empty mapping"):
        register_op_set("x3", {})
    assert "x1" not in op_set_names() and "x2" not in op_set_names()


# ----------------------------------------------------------------------- arch strings
def test_arch_string_round_trips():
    nodes = S.parse_arch(ARCH)
    assert nodes == [[("nor_conv_3x3", 0)], [("skip_connect", 0), ("nor_conv_1x1", 1)],
                     [("none", 0), ("avg_pool_3x3", 1), ("skip_connect", 2)]]
    assert S.arch_str(nodes) == ARCH
    assert S.from_dict(S.to_dict(ARCH)) == ARCH
    # inputs given out of order come back sorted (NB201's canonical form)
    assert S.arch_str(S.parse_arch("|none~0|+|none~1|none~0|+|none~2|none~0|none~1|")) == \
        "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


def test_derive_arch_takes_the_argmax_of_every_edge_none_included():
    w = torch.zeros(6, 5)
    wanted = {"1<-0": 3, "2<-0": 1, "2<-1": 2, "3<-0": 0, "3<-1": 4, "3<-2": 1}
    for r, key in enumerate(S.edge_keys()):
        w[r, wanted[key]] = 1.0
    assert S.derive_arch(w, S.NB201_OPS) == ARCH
    with pytest.raises(ValueError, match="do not fit a cell of 4 nodes"):
        S.derive_arch(torch.zeros(6, 4), S.NB201_OPS)


@pytest.mark.parametrize("bad, part", [
    ("|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|", "has 2 node"),
    ("|nor_conv_9x9~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown op 'nor_conv_9x9'"),
    ("|none~0|+|none~0|+|none~0|none~1|none~2|", r"node 2 reads inputs \[0\]"),
    ("|none~0|+|none~0|none~0|+|none~0|none~1|none~2|", r"node 2 reads inputs \[0, 0\]"),
    ("|none0|+|none~0|none~1|+|none~0|none~1|none~2|", "'none0' is not op~input"),
    ("none~0+|none~0|none~1|+|none~0|none~1|none~2|", "node 1 .* is 'none~0'"),
])
def test_bad_arch_strings_name_the_bad_part(bad, part):
    with pytest.raises(ValueError, match=part):
        S.parse_arch(bad)


def test_image_size_check():
    S.check_image_size(16, 32)
    for h, w in ((18, 16), (16, 6), (2, 2)):
        with pytest.raises(ValueError, match="multiples of 4"):
            S.check_image_size(h, w)


# ------------------------------------------------- the reference cell vs NB201's math
ROW = {(1, 0): 0, (2, 0): 1, (2, 1): 2, (3, 0): 3, (3, 1): 4, (3, 2): 5}  # sorted "i<-j" keys


def nb201_cell_oracle(x, alpha, convs):
    """One NB201 search cell written from the paper/code, in float64: node i = sum over
    j < i, ops k of softmax(alpha[edge])_k * op_k(node j); none = 0, skip = identity,
    nor_conv_kxk = BN(conv_k(ReLU(x))) with batch statistics and no affine,
    avg_pool_3x3 without padded zeros.  convs[(i, j)] = (w_1x1, w_3x3)."""
    p = torch.softmax(alpha, dim=-1)
    nodes = [x]
    for i in (1, 2, 3):
        total = torch.zeros_like(x)
        for j in range(i):
            h, pe = nodes[j], p[ROW[(i, j)]]
            w1, w3 = convs[(i, j)]
            bn = lambda t: F.batch_norm(t, None, None, training=True, eps=1e-5)  # noqa: E731
            total = (total + pe[1] * h + pe[2] * bn(F.conv2d(h.relu(), w1))
                     + pe[3] * bn(F.conv2d(h.relu(), w3, padding=1))
                     + pe[4] * F.avg_pool2d(h, 3, 1, 1, count_include_pad=False))
        nodes.append(total)
    return nodes[3]


@pytest.mark.parametrize("track", [False, True])
def test_reference_cell_matches_the_transcription(track):
    torch.manual_seed(1)
    cell = R.SearchCell(4, 4, 1, 4, "nb201", affine=False, track_running_stats=track).to(F64)
    alpha = torch.randn(6, 5, dtype=F64, requires_grad=True)
    x = torch.randn(3, 4, 8, 8, dtype=F64)
    convs = {(i, j): (cell.edges[f"{i}<-{j}"][2].op[1].weight, cell.edges[f"{i}<-{j}"][3].op[1].weight)
             for (i, j) in ROW}
    out = cell(x, torch.softmax(alpha, -1))
    want = nb201_cell_oracle(x, alpha, convs)
    assert_close(out, want, 1e-10, 1e-12, "cell output")
    g = torch.randn_like(out)
    weights = [w for pair in convs.values() for w in pair]
    got = torch.autograd.grad((out * g).sum(), [alpha, *weights])
    exp = torch.autograd.grad((want * g).sum(), [alpha, *weights])
    assert_close(got[0], exp[0], 1e-10, 1e-12, "d alpha")
    for k, (a, b) in enumerate(zip(got[1:], exp[1:])):
        assert_close(a, b, 1e-10, 1e-12, f"d conv weight {k}")
    assert (exp[0].abs() > 1e-6).any()  # the check has something to compare


# ----------------------------------------------------------- fused vs reference networks
def _pair(track=False, search_space="nb201", C=4, N=1, num_classes=5, seed=0):
    nets = []
    for cls in (R.TinyNetworkDarts, FUSED.TinyNetworkDarts):
        torch.manual_seed(seed)
        nets.append(cls(C, N, 4, num_classes, nn.CrossEntropyLoss(), search_space,
                        track_running_stats=track).to(F64))
    ref, fused = nets
    with torch.no_grad():
        ref.alphas.normal_(0, 0.7)
        fused.alphas.copy_(ref.alphas)
    return ref, fused


def _forward_backward(model, x, y):
    model.zero_grad()
    model.alphas.grad = None
    logits = model(x)
    loss = model._loss(x, y) if not model.training else model._criterion(logits, y)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    grads["alphas"] = model.alphas.grad.clone()
    return logits.detach(), loss.detach(), grads


@pytest.mark.parametrize("track", [False, True])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_fused_network_matches_the_reference(track, mode):
    ref, fused = _pair(track)
    assert list(ref.state_dict()) == list(fused.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), fused.state_dict().values()))
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 3, 8, 8, generator=g, dtype=F64)
    y = torch.randint(0, 5, (3,), generator=g)
    if mode == "eval":  # running statistics away from their initial values first
        for m in (ref, fused):
            m.train()
            with torch.no_grad():
                m(x + 0.5)
    for m in (ref, fused):
        m.train(mode == "train")
    lr, Lr, gr = _forward_backward(ref, x, y)
    lf, Lf, gf = _forward_backward(fused, x, y)
    assert_close(lf, lr, 1e-10, 1e-12, "logits")
    assert_close(Lf, Lr, 1e-10, 1e-12, "loss")
    assert gr.keys() == gf.keys()
    for k in gr:
        assert_close(gf[k], gr[k], 1e-10, 1e-12, k)
    assert gr["alphas"].abs().max() > 1e-8
    for (k, a), b in zip(ref.state_dict().items(), fused.state_dict().values()):
        assert_close(b, a, 1e-10, 1e-12, k)  # running statistics move the same way
    assert fused.genotype() == ref.genotype() == S.derive_arch(ref.alphas, S.NB201_OPS)


def test_fused_cell_runs_one_mixed_sum_per_node_and_never_none(monkeypatch):
    _, fused = _pair()
    calls = []
    real = torch.ops.fastdarts.mixed_sum

    class Spy:
        def __call__(self, outputs, weights):
            calls.append((len(outputs), tuple(weights.shape)))
            return real(outputs, weights)

    monkeypatch.setattr(FUSED.torch.ops.fastdarts, "mixed_sum", Spy(), raising=False)
    zero_calls = []
    for m in fused.modules():
        if isinstance(m, S.Zero):
            m.register_forward_hook(lambda *a: zero_calls.append(1))
    fused(torch.randn(2, 3, 8, 8, dtype=F64))
    # 3 cells (N=1 per stage) x nodes 1, 2, 3 with i edges x 4 non-none ops
    assert calls == [(4, (1, 4)), (8, (2, 4)), (12, (3, 4))] * 3 and not zero_calls


def test_a_user_op_set_runs_in_the_nb201_cell(tiny_set):
    ref, fused = _pair(search_space=tiny_set)
    assert tuple(ref.alphas.shape) == (6, 2) and ref.op_names == ["skip_connect", "conv3"]
    x = torch.randn(2, 3, 8, 8, dtype=F64)
    y = torch.tensor([0, 4])
    lr, Lr, gr = _forward_backward(ref, x, y)
    lf, Lf, gf = _forward_backward(fused, x, y)
    assert_close(Lf, Lr, 1e-10, 1e-12, "loss")
    for k in gr:
        assert_close(gf[k], gr[k], 1e-10, 1e-12, k)
    S.validate_arch(fused.genotype(), fused.op_names)


@pytest.mark.parametrize("hw, classes", [(32, 10), (32, 100), (16, 120)])
def test_skeleton_shapes_for_the_three_datasets(hw, classes):
    torch.manual_seed(0)
    model = FUSED.TinyNetworkDarts(2, 1, 4, classes, nn.CrossEntropyLoss())
    assert [type(c).__name__ for c in model.cells] == ["SearchCell", "ResNetBasicblock", "SearchCell",
                                                       "ResNetBasicblock", "SearchCell"]
    assert [c.out_dim for c in model.cells] == [2, 4, 4, 8, 8]
    assert model.classifier.in_features == 8
    assert model(torch.randn(2, 3, hw, hw)).shape == (2, classes)
    assert S.DATASETS["cifar100"].num_classes == 100 and S.DATASETS["ImageNet16-120"].image_size == 16
    assert len(S.layer_plan(16, 5)) == 17  # NB201's 5 + 1 + 5 + 1 + 5 layers
    with pytest.raises(ValueError, match="multiples of 4"):
        model(torch.randn(2, 3, 18, 18))


def test_bad_alphas_and_inputs_are_refused():
    ref, _ = _pair()
    with pytest.raises(ValueError, match=r"expected images of shape \[N, 3, H, W\]"):
        ref(torch.randn(2, 1, 8, 8, dtype=F64))
    ref.alphas.data = torch.zeros(6, 4, dtype=F64)
    with pytest.raises(ValueError, match=r"needs \[6, 5\]"):
        ref(torch.randn(2, 3, 8, 8, dtype=F64))


# --------------------------------------------------------------------------- Architects
@pytest.mark.parametrize("unrolled", [False, True])
def test_both_architects_step_the_nb201_supernet_alike(unrolled):
    ref, fused = _pair(track=True)
    g = torch.Generator().manual_seed(5)
    xt, xv = (torch.randn(4, 3, 8, 8, generator=g, dtype=F64) for _ in range(2))
    yt, yv = (torch.randint(0, 5, (4,), generator=g) for _ in range(2))
    opts = []
    for m in (ref, fused):  # one weight step first, so the momentum term is in play
        opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=3e-4)
        m._loss(xt, yt).backward()
        opt.step()
        opt.zero_grad()
        opts.append(opt)
    before = copy.deepcopy(fused.state_dict())
    a_ref = ref_cnn.Architect(ref, cnn_args())
    a_fused = A.Architect(fused, cnn_args())
    a_ref.step(xt, yt, xv, yv, 0.05, opts[0], unrolled)
    a_fused.step(xt, yt, xv, yv, 0.05, opts[1], unrolled)
    assert ref.alphas.grad.abs().max() > 1e-8
    assert_close(fused.alphas.grad, ref.alphas.grad, 1e-8, 1e-12, "alpha grad")
    assert_close(fused.alphas.detach(), ref.alphas.detach(), 1e-10, 1e-12, "alphas after Adam")
    for k, v in fused.state_dict().items():
        if "running" in k or "num_batches" in k:
            assert_close(v, ref.state_dict()[k], 1e-10, 1e-12, k)
        else:
            assert torch.equal(v, before[k]), k  # the weights, bit for bit


# ------------------------------------------------------------------ launches of a step
def test_fused_nb201_step_launches_fewer_kernels_and_never_syncs():
    from fastdarts.profile.launches import count_nb201_step

    kw = dict(C=2, N=1, batch=2, hw=8, warmup=1, repeats=0)
    ref = count_nb201_step("reference", False, **kw)
    fused = count_nb201_step("fused", False, **kw)
    assert fused["syncs"] == 0 and not fused["unknown_custom_ops"]
    # per cell forward: 3 shared ReLUs + 3 mixed sums instead of 18 ReLUs and 60 mul/adds
    assert fused["launches"] < 0.7 * ref["launches"], (fused["launches"], ref["launches"])
    assert fused["calls"]["fastdarts.mixed_sum"] == 3 * 3 * 2  # 3 nodes x 3 cells, 2 forwards
