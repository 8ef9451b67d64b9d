"""Reference models: the original's structure and keys, genotype rules, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from fastdarts.reference import cnn, rnn
from fastdarts.space import genotypes as G
from tests.helpers import tiny_cnn, tiny_rnn


# ----------------------------------------------------------------- structure
def test_cnn_state_dict_keys_and_shapes_match_the_original_layout():
    model = cnn.Network(16, 10, 8, nn.CrossEntropyLoss())
    sd = model.state_dict()
    # a few keys of the original model_search.Network, with their shapes
    expected = {
        "stem.0.weight": (48, 3, 3, 3),
        "stem.1.weight": (48,),
        "cells.0.preprocess0.op.1.weight": (16, 48, 1, 1),
        "cells.0._ops.0._ops.1.1.running_mean": (16,),      # max_pool + BN(affine=False)
        "cells.0._ops.0._ops.4.op.1.weight": (16, 1, 3, 3),  # sep_conv_3x3 depthwise
        "cells.0._ops.0._ops.4.op.6.weight": (16, 16, 1, 1),
        "cells.0._ops.0._ops.7.op.1.weight": (16, 1, 5, 5),  # dil_conv_5x5
        "cells.2._ops.0._ops.3.conv_1.weight": (16, 32, 1, 1),  # reduction: FactorizedReduce skip
        "cells.3.preprocess0.conv_1.weight": (16, 64, 1, 1),  # after a reduction: C_pp=64 -> 32
        "classifier.weight": (10, 256),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert not any("alphas" in k for k in sd)  # alphas live outside the state_dict
    assert not any(k.endswith(".weight") and "op.3" in k for k in sd)  # BN affine=False
    assert len(model.cells) == 8 and [c.reduction for c in model.cells].count(True) == 2
    assert model.alphas_normal.shape == (14, 8) and model.alphas_reduce.shape == (14, 8)
    ids = {id(p) for p in model.parameters()}
    assert all(id(a) not in ids for a in model.arch_parameters())


def test_rnn_state_dict_keys_and_tied_decoder():
    model = rnn.RNNModelSearch(100, 300, 300, 300, 0.75, 0.25, 0.75, 0.2, 0.0)
    sd = model.state_dict()
    assert list(sd) == ["encoder.weight", "rnns.0._W0"] + [f"rnns.0._Ws.{i}" for i in range(8)] + [
        "rnns.0.bn.running_mean", "rnns.0.bn.running_var", "rnns.0.bn.num_batches_tracked",
        "decoder.weight", "decoder.bias"]
    assert sd["rnns.0._W0"].shape == (600, 600) and sd["rnns.0._Ws.3"].shape == (300, 600)
    assert model.decoder.weight is model.encoder.weight
    assert model.weights.shape == (36, 5) and model.rnns[0].weights is model.weights
    assert model.rnns[0].bn.affine is False


def test_alphas_follow_the_model_and_keep_identity():
    model = tiny_cnn(dtype=torch.float32)
    a = model.alphas_normal
    opt = torch.optim.Adam(model.arch_parameters())
    model.double()
    assert model.alphas_normal is a and a.dtype == torch.float64
    assert opt.param_groups[0]["params"][0] is a
    r = tiny_rnn(dtype=torch.float32).double()
    assert r.weights.dtype == torch.float64 and r.rnns[0].weights is r.weights


def test_original_checkpoint_round_trip():
    a = tiny_cnn(seed=0)
    b = tiny_cnn(seed=1)
    b.load_state_dict(a.state_dict())
    for x, y in zip(b.arch_parameters(), a.arch_parameters()):
        x.data.copy_(y.data)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    a.eval(), b.eval()
    assert torch.equal(a(x), b(x))


def test_none_op_contributes_zero_and_reduces_shape():
    z = cnn.Zero(2)
    out = z(torch.randn(2, 4, 8, 8))
    assert out.shape == (2, 4, 4, 4) and not out.any()


def test_avg_pool_excludes_padding():
    op = cnn.OPS["avg_pool_3x3"](1, 1, False)
    x = torch.ones(1, 1, 4, 4)
    assert torch.equal(op(x), x)  # count_include_pad=False keeps corners at 1


# ----------------------------------------------------------------- genotypes
def _softmax_input(weights):
    """Logits whose softmax is proportional to `weights` (for hand-made alphas)."""
    return torch.log(torch.as_tensor(weights, dtype=torch.float64))


def test_cnn_genotype_picks_top2_non_none_edges_and_best_op():
    P = G.PRIMITIVES
    w = np.full((14, 8), 0.1)
    w[:, 0] = 5.0  # 'none' dominates everywhere: must be ignored
    # node 0 (edges 0,1): edge 1 sep_conv_5x5 strong, edge 0 max_pool weaker
    w[0, P.index("max_pool_3x3")] = 0.3
    w[1, P.index("sep_conv_5x5")] = 0.9
    # node 1 (edges 2,3,4): edges 4 and 2 win, edge 3 loses
    w[2, P.index("dil_conv_3x3")] = 0.5
    w[3, P.index("skip_connect")] = 0.2
    w[4, P.index("avg_pool_3x3")] = 0.8
    # node 2 (edges 5..8): a tie between edges 6 and 8 on the same value -> lower index
    w[6, P.index("sep_conv_3x3")] = 0.7
    w[8, P.index("sep_conv_3x3")] = 0.7
    # node 3 (edges 9..13): tie between two ops on edge 13 -> lower op index
    w[13, P.index("sep_conv_3x3")] = 0.6
    w[13, P.index("dil_conv_5x5")] = 0.6
    w[10, P.index("max_pool_3x3")] = 0.4
    gene = cnn.parse_cnn(w / w.sum(1, keepdims=True))
    assert gene == [("sep_conv_5x5", 1), ("max_pool_3x3", 0),
                    ("avg_pool_3x3", 2), ("dil_conv_3x3", 0),
                    ("sep_conv_3x3", 1), ("sep_conv_3x3", 3),
                    ("sep_conv_3x3", 4), ("max_pool_3x3", 1)]
    model = tiny_cnn()
    with torch.no_grad():
        model.alphas_normal.copy_(_softmax_input(w))
        model.alphas_reduce.copy_(_softmax_input(w))
    g = model.genotype()
    assert g.normal == gene and g.reduce == gene and list(g.normal_concat) == [2, 3, 4, 5]


def test_rnn_genotype_picks_top1_edge_and_best_op():
    P = G.RNN_PRIMITIVES
    w = np.full((36, 5), 0.1)
    w[:, 0] = 9.0  # none ignored
    start = 0
    want = []
    for i in range(8):
        j = (i * 5) % (i + 1)  # some earlier state
        op = P[1 + i % 4]
        w[start + j, P.index(op)] = 0.8
        want.append((op, j))
        start += i + 1
    # a tie on node 7 between states 2 and 5 -> the lower index
    s7 = sum(range(1, 8))
    w[s7:s7 + 8, 1:] = 0.1
    w[s7 + 5, P.index("relu")] = 0.9
    w[s7 + 2, P.index("tanh")] = 0.9
    want[7] = ("tanh", 2)
    assert rnn.parse_rnn(w) == want
    model = tiny_rnn()
    with torch.no_grad():
        model.weights.copy_(_softmax_input(w))
    g = model.genotype()
    assert g.recurrent == want and list(g.concat) == list(range(1, 9))


def test_published_genotypes_validate_and_round_trip_json(tmp_path):
    for g in [G.DARTS_V1, G.DARTS_V2, G.RNN_DARTS_V1, G.RNN_DARTS_V2]:
        G.validate(g)
        path = tmp_path / "g.json"
        G.save_json(g, path)
        back = G.load_json(path)
        assert G.to_dict(back) == G.to_dict(g)
        assert type(back).__name__ == "Genotype"
    assert G.resolve("DARTS_V2") is G.DARTS_V2
    assert G.resolve("DARTS_V1", space="rnn") is G.RNN_DARTS_V1


# ----------------------------------------------------------------- bad input
def test_genotype_with_unknown_op_is_rejected(tmp_path):
    bad = G.to_dict(G.DARTS_V2)
    bad["normal"][3][0] = "sep_conv_9x9"
    with pytest.raises(G.GenotypeError, match="unknown op 'sep_conv_9x9'.*known ops"):
        G.from_dict(bad)
    bad = G.to_dict(G.DARTS_V2)
    bad["reduce"][0][1] = 7
    with pytest.raises(G.GenotypeError, match="reads input 7"):
        G.from_dict(bad)
    p = tmp_path / "broken.json"
    p.write_text("{not json")
    with pytest.raises(G.GenotypeError, match="not valid JSON"):
        G.load_json(p)
    p.write_text(json.dumps({"normal": []}))
    with pytest.raises(G.GenotypeError, match="not a genotype"):
        G.load_json(p)
    with pytest.raises(G.GenotypeError, match="neither a published genotype"):
        G.resolve("DARTS_V9")


def test_alphas_of_the_wrong_shape_are_rejected():
    model = tiny_cnn()
    model.alphas_normal.data = torch.zeros(14, 7, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"alphas_normal has shape \(14, 7\).*\[14, 8\]"):
        model(torch.randn(2, 3, 8, 8, dtype=torch.float64))
    r = tiny_rnn()
    r.weights.data = torch.zeros(35, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"\[36, 5\]"):
        r(torch.zeros(3, 2, dtype=torch.long), r.init_hidden(2))
    with pytest.raises(ValueError, match="MixedOp has 8 ops"):
        cnn.MixedOp(2, 1)(torch.randn(1, 2, 4, 4), torch.ones(5))
    with pytest.raises(ValueError, match="do not fit"):
        cnn.parse_cnn(np.ones((10, 8)))


def test_model_and_data_on_different_devices_are_rejected():
    model = tiny_cnn()
    x = torch.empty(2, 3, 8, 8, dtype=torch.float64, device="meta")
    with pytest.raises(ValueError, match="input is on meta but the model is on cpu"):
        model(x)
    r = tiny_rnn()
    with pytest.raises(ValueError, match="input is on meta but the model is on cpu"):
        r(torch.empty(3, 2, dtype=torch.long, device="meta"), r.init_hidden(2))
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        model(torch.randn(3, 8, 8, dtype=torch.float64))
