"""DARTSRegressor: AutoRA API compatibility, refit semantics, determinism, printing,
equation recovery, input validation and scikit-learn conformance (CPU, small)."""

from __future__ import annotations

import inspect
import re

import numpy as np
import pytest
import sympy as sp
import torch
from sklearn.base import clone
from sklearn.metrics import r2_score

from fastdarts.regression import ALL_PRIMITIVE_NAMES, DARTSRegressor
from fastdarts.regression.network import OUTPUT_TYPES, edge_count

# AutoRA's constructor parameters (autora-theorist-darts 1.1.0) and names
AUTORA_PARAMS = (
    "batch_size", "num_graph_nodes", "output_type", "classifier_weight_decay", "darts_type",
    "init_weights_function", "param_updates_per_epoch", "param_updates_for_sampled_model",
    "param_learning_rate_max", "param_learning_rate_min", "param_momentum", "param_weight_decay",
    "arch_updates_per_epoch", "arch_learning_rate_max", "arch_weight_decay", "arch_weight_decay_df",
    "arch_weight_decay_base", "arch_momentum", "fair_darts_loss_weight", "max_epochs", "grad_clip",
    "primitives", "train_classifier_coefficients", "train_classifier_bias", "execution_monitor",
    "sampling_strategy")
AUTORA_PRIMITIVE_NAMES = (
    "none", "add", "subtract", "mult", "linear", "relu", "linear_relu", "logistic", "linear_logistic",
    "exp", "linear_exp", "sin", "linear_sin", "cos", "linear_cos", "tanh", "linear_tanh", "reciprocal",
    "linear_reciprocal", "ln", "linear_ln", "softplus", "linear_softplus", "softminus", "linear_softminus")

# Small settings: a fit takes well under a second on a 2-core CPU.
FAST = dict(max_epochs=4, param_updates_per_epoch=2, param_updates_for_sampled_model=20, restarts=1,
            candidates_per_edge=1, max_candidates=2, local_search=0, verbose=False, random_state=0)


def _data(n=40, d=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(0.5, 2.0, (n, d))
    return X, 1.5 * X[:, 0] - 0.5 * X[:, -1] + 0.25


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny tensors: threads only add contention on a shared 2-core machine
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# -- API compatibility -------------------------------------------------------------------
def test_every_autora_parameter_is_accepted_by_name():
    sig = inspect.signature(DARTSRegressor.__init__).parameters
    missing = [p for p in AUTORA_PARAMS if p not in sig]
    assert not missing, missing
    values = dict(batch_size=16, num_graph_nodes=2, output_type="real", classifier_weight_decay=1e-2,
                  darts_type="fair", init_weights_function=lambda m: None, param_updates_per_epoch=2,
                  param_updates_for_sampled_model=10, param_learning_rate_max=0.02,
                  param_learning_rate_min=0.01, param_momentum=0.8, param_weight_decay=1e-4,
                  arch_updates_per_epoch=2, arch_learning_rate_max=1e-2, arch_weight_decay=1e-4,
                  arch_weight_decay_df=1e-3, arch_weight_decay_base=1e-3, arch_momentum=0.9,
                  fair_darts_loss_weight=2, max_epochs=3, grad_clip=1.0, primitives=("none", "add", "exp"),
                  train_classifier_coefficients=False, train_classifier_bias=False,
                  execution_monitor=None, sampling_strategy="sample")
    est = DARTSRegressor(**values, verbose=False, random_state=0, restarts=1, local_search=0)
    assert {k: est.get_params()[k] for k in values} == values
    X, y = _data()
    est.fit(X, y)
    assert est.predict(X).shape == (len(X),)
    # read-out fixed at weight 1, bias 0 when not trained (AutoRA's default behaviour)
    assert torch.all(est.model_[0].weight == 1) and torch.all(est.model_[0].bias == 0)


def test_every_primitive_name_is_accepted():
    assert set(AUTORA_PRIMITIVE_NAMES) <= set(ALL_PRIMITIVE_NAMES)
    X, y = _data()
    est = DARTSRegressor(primitives=AUTORA_PRIMITIVE_NAMES, **FAST).fit(X, y)
    assert np.isfinite(est.predict(X)).all()


@pytest.mark.parametrize("output_type", OUTPUT_TYPES)
def test_every_output_type(output_type):
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (40, 2))
    logits = np.stack([2 * X[:, 0], -X[:, 1], X[:, 0] * 0], 1)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = {"real": X[:, 0] * 2, "sigmoid": 1 / (1 + np.exp(-3 * X[:, 0])),
         "probability": 1 / (1 + np.exp(-3 * X[:, 0])), "probability_sample": (X[:, 0] > 0).astype(float),
         "probability_distribution": p, "class": np.array(["a", "b", "c"])[p.argmax(1)]}[output_type]
    est = DARTSRegressor(output_type=output_type, **FAST).fit(X, y)
    pred = est.predict(X)
    if output_type == "class":
        assert set(pred) <= {"a", "b", "c"}
        assert np.allclose(est.predict_proba(X).sum(1), 1)
    elif output_type == "probability_distribution":
        assert pred.shape == (40, 3) and np.allclose(pred.sum(1), 1)
    else:
        assert pred.shape == (40,)
        if output_type != "real":
            assert ((pred >= 0) & (pred <= 1)).all()
    assert "Model:" in est.model_repr()


@pytest.mark.parametrize("param, value, valid", [
    ("output_type", "complex", "probability_distribution"), ("darts_type", "unfair", "fair"),
    ("sampling_strategy", "argmax", "sample"), ("primitives", ("none", "sqrt"), "linear_softminus"),
    ("max_epochs", -1, ">= 0"), ("validation_fraction", 1.0, "[0, 1)")])
def test_unknown_choices_name_the_valid_ones(param, value, valid):
    X, y = _data()
    est = DARTSRegressor(**{**FAST, param: value})  # constructing never raises (sklearn rule)
    with pytest.raises(ValueError, match=re.escape(valid)):
        est.fit(X, y)


# -- refit semantics, determinism ----------------------------------------------------------
def test_refit_with_zero_epochs_keeps_the_graph_and_refits_coefficients():
    X, y = _data()
    est = DARTSRegressor(**{**FAST, "max_epochs": 20}).fit(X, y)
    arch = est.architecture_
    y2 = 3 * y + 1  # same law family, other constants: the kept graph fits it exactly
    est.set_params(max_epochs=0, param_updates_for_sampled_model=200).fit(X, y2)
    assert est.architecture_ == arch
    assert r2_score(y2, est.predict(X)) > 0.999
    with pytest.raises(ValueError, match="primitives"):
        est.set_params(primitives=("none", "add")).fit(X, y2)
    est.set_params(primitives=FAST.get("primitives", DARTSRegressor().primitives))
    with pytest.raises(ValueError, match="number of features"):
        est.fit(np.hstack([X, X]), y2)
    with pytest.raises(ValueError, match="not fitted yet"):
        DARTSRegressor(**{**FAST, "max_epochs": 0}).fit(X, y)


def test_same_random_state_same_model_and_max_is_deterministic():
    X, y = _data()
    kw = {**FAST, "max_epochs": 8, "restarts": 2, "batch_size": 8}
    a, b = DARTSRegressor(**kw).fit(X, y), DARTSRegressor(**kw).fit(X, y)
    assert a.architecture_ == b.architecture_
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    assert a.equation(decimals=6) == b.equation(decimals=6)
    c = DARTSRegressor(**{**kw, "random_state": 1}).fit(X, y)
    assert not np.array_equal(torch.softmax(a.network_.alphas, -1).detach().numpy(),
                              torch.softmax(c.network_.alphas, -1).detach().numpy())


# -- printing -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", AUTORA_PRIMITIVE_NAMES)
def test_every_primitive_prints(name):
    X, y = _data(d=2)
    est = DARTSRegressor(primitives=AUTORA_PRIMITIVE_NAMES, **FAST).fit(X, y)
    net = est.model_[0]
    k = net.primitives.index(name)
    net.fix([k] * edge_count(2, net.num_nodes))
    text, latex = est.model_repr(), est.model_repr(output_format="latex", decimals_to_display=3)
    eq = est.equation()
    assert text.startswith("Model:") and "k1 =" in text and "y =" in text
    assert "k_{1} =" in latex
    for s in (text, latex, eq):
        assert "nan" not in s and "+ -" not in s
    head = name.removeprefix("linear_")
    label = {"none": "k1 = 0", "add": "x1", "subtract": "-", "mult": "x1", "linear": "x1", "relu": "ReLU",
             "logistic": "logistic", "ln": "log", "reciprocal": "/",
             "softminus": "- softplus"}.get(head, head)
    assert label in text, text
    assert "digraph" in est.dot_source()


def test_printing_multiple_outputs_rounding_and_graph():
    X, y = _data()
    Y = np.stack([y, -2 * y], 1)
    est = DARTSRegressor(**{**FAST, "num_graph_nodes": 2}).fit(X, Y)
    assert est.predict(X).shape == (len(X), 2)
    text = est.model_repr(input_labels=["u", "v"], output_labels=["p", "q"], decimals_to_display=1)
    assert re.search(r"^p = ", text, re.M) and re.search(r"^q = ", text, re.M)
    assert "k2 =" in text and all(len(m) <= 1 for m in re.findall(r"\.(\d+)", text)), text
    assert est.equation().count("\n") == 1
    try:
        import graphviz  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install graphviz"):
            est.visualize_model()
    else:
        assert "digraph" in est.visualize_model().source


# -- equation quality (a regression here fails CI) -------------------------------------------
def test_recovers_a_linear_law():
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, (60, 2))
    est = DARTSRegressor(random_state=0, verbose=False, max_epochs=40, restarts=1).fit(
        X, 3 * X[:, 0] - 2 * X[:, 1] + 0.5)
    Xt = rng.uniform(-2, 2, (200, 2))
    assert r2_score(3 * Xt[:, 0] - 2 * Xt[:, 1] + 0.5, est.predict(Xt)) > 0.99999
    x1, x2 = sp.symbols("x1 x2")
    poly = sp.Poly(sp.expand(est.sympy()[0]), x1, x2)  # fails if any nonlinear term survived
    assert poly.total_degree() == 1
    coeffs = {m: float(c) for m, c in zip(poly.monoms(), poly.coeffs())}
    assert coeffs.keys() == {(1, 0), (0, 1), (0, 0)}
    np.testing.assert_allclose([coeffs[(1, 0)], coeffs[(0, 1)], coeffs[(0, 0)]], [3, -2, 0.5], atol=1e-4)


# -- input validation ------------------------------------------------------------------------
@pytest.mark.parametrize("case, match", [
    ("nan_X", "NaN"), ("inf_y", "infinity|NaN"), ("lengths", "inconsistent numbers of samples"),
    ("empty", "0 sample"), ("X_1d", "Expected 2D array"), ("X_3d", "dim 3|3-dimensional|Expected 2D"),
    ("y_3d", "y")])
def test_bad_input_gets_a_clear_error(case, match):
    X, y = _data()
    X_bad, y_bad = X.copy(), y.copy()
    if case == "nan_X":
        X_bad[3, 1] = np.nan
    elif case == "inf_y":
        y_bad[5] = np.inf
    elif case == "lengths":
        y_bad = y[:-1]
    elif case == "empty":
        X_bad, y_bad = X[:0], y[:0]
    elif case == "X_1d":
        X_bad = X[:, 0]
    elif case == "X_3d":
        X_bad = X[:, :, None]
    elif case == "y_3d":
        y_bad = y[:, None, None]
    with pytest.raises(ValueError, match=match):
        DARTSRegressor(**FAST).fit(X_bad, y_bad)


def test_predict_checks_features():
    X, y = _data()
    est = DARTSRegressor(**FAST).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        est.predict(X[:, :1])
    with pytest.raises(ValueError, match="NaN"):
        est.predict(np.full_like(X, np.nan))


# -- scikit-learn conformance ------------------------------------------------------------------
def test_get_set_params_clone():
    est = DARTSRegressor(max_epochs=7, primitives=("none", "add"))
    c = clone(est)
    assert c.get_params() == est.get_params() and c is not est
    assert c.set_params(max_epochs=3).max_epochs == 3 and est.max_epochs == 7


def _sklearn_checks():
    from sklearn.utils.estimator_checks import parametrize_with_checks
    est = DARTSRegressor(**{**FAST, "max_epochs": 3, "param_updates_for_sampled_model": 10})
    # Every applicable check passes.  Those about sample_weight do not apply (fit
    # takes none) and sklearn skips them itself; nothing is marked as failing.
    expected = {}
    return parametrize_with_checks([est], expected_failed_checks=lambda e: expected)


@_sklearn_checks()
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# -- GPU ---------------------------------------------------------------------------------------
@pytest.mark.gpu
def test_cuda_fused_path_recovers_the_law():
    X, y = _data(n=60)
    est = DARTSRegressor(**{**FAST, "max_epochs": 30, "device": "cuda", "local_search": 1,
                            "candidates_per_edge": 2, "max_candidates": 8}).fit(X, y)
    assert est.model_[0].weight.is_cuda
    assert r2_score(y, est.predict(X)) > 0.9999
