"""DARTSRegressor, issue 18: product nodes, the square and power primitives, pruning
of constant terms, the fewest-constants rule among equally good candidates, and the
quiet default (verbose=0).  CPU, small; every test well under 20 s on a 2-core CPU."""

from __future__ import annotations

import math
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import sympy as sp
import torch
from sklearn.metrics import r2_score

from fastdarts.regression import DARTSRegressor
from fastdarts.regression.network import EquationGraph, edge_count
from fastdarts.regression.primitives import PRIMITIVES
from fastdarts.regression.report import constants, equations
from fastdarts.regression.search import (
    EXACT,
    CandidateSelector,
    candidate_architectures,
    fit_coefficients,
    least_squares_readout,
    prune_constant_terms,
)
from fastdarts.regression.symbolic import count_constants, round_constants

from .helpers import one_thread  # noqa: F401  (autouse fixture)

# primitives whose sympy forms numpy can evaluate (no ReLU/logistic classes)
PRIMS = ("none", "add", "subtract", "mult", "linear", "linear_exp", "linear_sin", "ln", "reciprocal",
         "square", "power", "shifted_power")


def _graph(n_in, num_nodes, seed, prims=PRIMS, node_types=("sum", "product")):
    gen = torch.Generator().manual_seed(seed)
    net = EquationGraph(n_in, 1, num_nodes, prims, node_types=node_types, generator=gen, dtype=torch.float64)
    with torch.no_grad():  # random coefficients well away from the defaults
        net.a.copy_(torch.empty_like(net.a).uniform_(-1.5, 1.5, generator=gen))
        net.b.copy_(torch.empty_like(net.b).uniform_(0.2, 1.0, generator=gen))
        net.beta.copy_(torch.empty_like(net.beta).uniform_(-2.0, 2.0, generator=gen))
        net.weight.copy_(torch.empty_like(net.weight).uniform_(0.5, 2.0, generator=gen))
        net.bias.copy_(torch.empty_like(net.bias).uniform_(-1.0, 1.0, generator=gen))
    return net


def _sympy_values(net, X):
    labels = [f"x{j + 1}" for j in range(net.n_inputs)]
    expr = equations(net, labels, "real", simplify=False)[0]
    f = sp.lambdify(sp.symbols(labels), expr, "numpy")
    return np.broadcast_to(np.asarray(f(*X.T), dtype=float), (len(X),))


# -- primitives ------------------------------------------------------------------------------
@pytest.mark.parametrize("power", ["power", "shifted_power"])
def test_square_and_power_values_and_guards(power):
    rng = np.random.default_rng()
    z = torch.tensor(rng.uniform(-3, 3, 200))
    k = torch.tensor(rng.uniform(-2.5, 2.5, 200), requires_grad=True)
    np.testing.assert_allclose(PRIMITIVES["square"].fn(z, None).numpy(), z.numpy() ** 2)
    out = PRIMITIVES[power].fn(z, k)
    pos = z.numpy() > 0
    np.testing.assert_allclose(out.detach().numpy()[pos], z.numpy()[pos] ** k.detach().numpy()[pos],
                               rtol=1e-12)
    assert (out.detach().numpy()[~pos] == 0).all()  # z <= 0 -> 0, as ln does
    out.sum().backward()
    assert torch.isfinite(k.grad).all()
    # a negative exponent at a tiny argument stays finite (exp clamped at 30)
    tiny = PRIMITIVES[power].fn(torch.tensor([1e-300, 0.0]), torch.tensor(-5.0))
    assert torch.isfinite(tiny).all() and tiny[1] == 0


# -- product nodes: forward, relaxation, printing --------------------------------------------
@pytest.mark.parametrize("seed", range(3))
def test_product_node_is_the_product_of_its_terms_and_none_is_the_factor_one(seed):
    rng = np.random.default_rng(seed)
    net = _graph(3, 1, seed)
    P = len(PRIMS)
    choice = [int(c) for c in rng.integers(1, P, 3)]
    choice[int(rng.integers(3))] = 0  # one none edge
    net.fix(choice + [1])
    assert net.node_kind(0) == "product"
    x = torch.tensor(rng.uniform(0.1, 2, (50, 3)))
    terms, nodes = net.edge_terms(x)
    assert sum(t is None for t in terms) == 1
    expected = torch.ones(50, dtype=torch.float64)
    for t in terms:
        if t is not None:
            expected = expected * t
    torch.testing.assert_close(nodes[:, 0], expected)
    net.fix([0, 0, 0, 1])  # an empty product is 1, an empty sum 0
    torch.testing.assert_close(net.node_values(x)[:, 0], torch.ones(50, dtype=torch.float64))
    net.fix([0, 0, 0, 0])
    torch.testing.assert_close(net.node_values(x)[:, 0], torch.zeros(50, dtype=torch.float64))


@pytest.mark.parametrize("seed", range(4))
def test_relaxed_graph_with_one_hot_weights_equals_the_discrete_graph(seed):
    rng = np.random.default_rng(seed)
    net = _graph(2, 2, seed)
    E, P = edge_count(2, 2), len(PRIMS)
    choice = [int(c) for c in rng.integers(0, P, E)] + [int(c) for c in rng.integers(0, 2, 2)]
    with torch.no_grad():  # softmax of these is one-hot to float64 precision
        net.alphas.fill_(-1e3)
        net.alphas[torch.arange(E), torch.tensor(choice[:E])] = 0.0
        net.node_alphas.fill_(-1e3)
        net.node_alphas[torch.arange(2), torch.tensor(choice[E:])] = 0.0
    x = torch.tensor(rng.uniform(0.1, 1.5, (40, 2)))
    relaxed = net(x)
    torch.testing.assert_close(relaxed, net.fix(choice)(x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("seed", range(4))
def test_printed_equation_evaluates_to_the_model(seed):
    """The sympy form of random graphs mixing sum and product nodes, square and
    power, computes what the model computes (where every power's argument is > 0)."""
    rng = np.random.default_rng(100 + seed)
    net = _graph(2, 2, seed)
    E, P = edge_count(2, 2), len(PRIMS)
    choice = [int(c) for c in rng.integers(0, P, E)] + [int(c) for c in rng.integers(0, 2, 2)]
    # reciprocal is regularised (z / (z^2 + 1e-8)), so it is not 1/z to 1e-8 near 0
    choice = [PRIMS.index("mult") if c == PRIMS.index("reciprocal") else c for c in choice[:E]] + choice[E:]
    for name in ("power", "shifted_power", "square"):
        choice[int(rng.integers(E))] = PRIMS.index(name)
    net.fix(choice)
    X = rng.uniform(0.2, 1.2, (60, 2))
    with torch.no_grad():
        model = net(torch.tensor(X))[:, 0].numpy()
        terms, _ = net.edge_terms(torch.tensor(X))
    # compare only where the guarded forms (ln, power: 0 for z <= 0) agree with sympy's
    ok = np.ones(len(X), bool)
    for e, t in enumerate(terms):
        name = PRIMS[choice[e]]
        if t is not None and name in ("power", "shifted_power", "ln"):
            ok &= t.numpy() != 0
    assert ok.sum() >= 10, "this random graph's powers are 0 almost everywhere: pick other seeds"
    np.testing.assert_allclose(_sympy_values(net, X)[ok], model[ok], rtol=1e-8, atol=1e-8)


def test_printing_of_product_nodes():
    net = EquationGraph(2, 1, 1, PRIMS, node_types=("sum", "product"), dtype=torch.float64)
    with torch.no_grad():
        net.b.fill_(0.5)
        net.beta.fill_(-1.0)
        net.weight.fill_(1.0)
        net.bias.zero_()
    net.fix([PRIMS.index("add"), PRIMS.index("shifted_power"), 1])
    x1, x2 = sp.symbols("x1 x2")
    expr = round_constants(equations(net, ["x1", "x2"], "real")[0], 6)  # exponent 1.0 -> 1
    assert sp.simplify(expr - x1 / (x2 + sp.Float(0.5))) == 0, expr
    from fastdarts.regression.report import graph_spec, model_lines
    lines = model_lines(net, ["x1", "x2"], ["y"], None, 2, "console", "real")
    assert lines[0] == "k1 = x1/(x2 + 0.5)", lines
    nodes, _ = graph_spec(net, ["x1", "x2"], ["y"], "real")
    assert ("k0", "k1 (product)", "hidden") in nodes


# -- reading candidates off the search --------------------------------------------------------
def test_candidates_keep_every_node_type_even_with_one_primitive_per_edge():
    gen = torch.Generator().manual_seed(0)
    alphas = torch.randn(5, 4, generator=gen)
    node_alphas = torch.tensor([[2.0, -2.0], [-1.0, 1.0]])  # sum for node 0, product for node 1
    cands = candidate_architectures(alphas, ("a", "b", "c", "d"), "max", 1, 8, gen, node_alphas=node_alphas,
                                    num_nodes=2)
    assert len(cands) == 4 and all(len(c) == 7 for c in cands)
    assert cands[0][5:] == (0, 1)  # the argmax first
    assert {c[5:] for c in cands} == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert len({c[:5] for c in cands}) == 1  # per_edge = 1: one primitive per edge
    plain = candidate_architectures(alphas, ("a", "b", "c", "d"), "max", 2, 3, gen, num_nodes=2)
    assert all(c[5:] == (0, 0) for c in plain)
    sampled = candidate_architectures(alphas, ("a", "b", "c", "d"), "sample", 1, 3, gen,
                                      node_alphas=node_alphas, num_nodes=2)
    assert all(len(c) == 7 and set(c[5:]) <= {0, 1} for c in sampled)


# -- pruning constant terms ------------------------------------------------------------------
def _fit(net, x, y, iters=200):
    net.y_scale.fill_(float(y.var()))
    fit_coefficients(net, x, y[:, None], iters)
    return net


def test_a_dead_relu_is_pruned_and_folded_into_the_offset():
    rng = np.random.default_rng()
    prims = ("none", "add", "linear_relu", "linear_sin")
    X = rng.uniform(0, 1, (60, 2))
    y = np.sin(1.3 * X[:, 0]) + 0.7
    x, t = torch.tensor(X), torch.tensor(y)
    net = EquationGraph(2, 1, 1, prims, dtype=torch.float64).fix([3, 2])
    with torch.no_grad():  # ReLU(0.4 x2 - 0.9 + 0.1 u) is 0 on [0, 1]: dead, as in the issue
        net.a[1, 2], net.b[1, 2] = 0.4, -0.9 + 0.1 * float(rng.uniform())
    _fit(net, x, t)
    before = net(x).detach()
    pruned = prune_constant_terms(net, x, EXACT)
    assert pruned is not None and pruned.fixed.tolist() == [3, 0]
    torch.testing.assert_close(pruned(x).detach(), before, rtol=0, atol=1e-12)
    assert constants(pruned) < constants(net)


def test_a_constant_factor_of_a_product_node_is_folded_into_the_weight():
    rng = np.random.default_rng()
    prims = ("none", "add", "linear_exp", "square")
    X = rng.uniform(0.1, 1, (60, 2))
    x = torch.tensor(X)
    net = EquationGraph(2, 1, 1, prims, node_types=("sum", "product"), dtype=torch.float64).fix([3, 2, 1])
    c = float(rng.uniform(0.5, 2))
    with torch.no_grad():  # exp(0 * x2 + ln c) = c: a constant factor
        net.a[1, 2], net.b[1, 2] = 0.0, math.log(c)
        net.weight.fill_(float(rng.uniform(1, 3)))
    before = net(x).detach()
    pruned = prune_constant_terms(net, x, EXACT)
    assert pruned.fixed.tolist() == [3, 0] and pruned.node_kind(0) == "product"
    torch.testing.assert_close(pruned(x).detach(), before, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pruned.weight, net.weight * c)


def test_terms_that_vary_are_not_pruned():
    rng = np.random.default_rng()
    X = rng.uniform(0, 1, (60, 2))
    net = _graph(2, 1, 0).fix([PRIMS.index("square"), PRIMS.index("linear_sin"), 0])
    # even a small but real term stays: it changes the read-out far above the limit
    with torch.no_grad():
        net.a[1, PRIMS.index("linear_sin")] = 0.05
    assert prune_constant_terms(net, torch.tensor(X), EXACT) is None


def test_a_frozen_readout_is_not_changed_by_pruning():
    X = np.random.default_rng().uniform(0, 1, (40, 2))
    net = EquationGraph(2, 1, 1, ("none", "add", "linear_relu"), train_classifier_bias=False,
                        dtype=torch.float64).fix([1, 2])
    with torch.no_grad():
        net.a[1, 2], net.b[1, 2] = 0.0, 0.75  # ReLU(0.75) = 0.75: constant, but the bias is frozen
    assert prune_constant_terms(net, torch.tensor(X), EXACT) is None


def test_least_squares_readout_matches_numpy_and_respects_frozen_parameters():
    rng = np.random.default_rng()
    X = rng.uniform(0.1, 2, (50, 2))
    Y = rng.normal(size=(50, 2))
    x, t = torch.tensor(X), torch.tensor(Y)
    net = EquationGraph(2, 2, 2, PRIMS, dtype=torch.float64).fix([PRIMS.index("square"), PRIMS.index("ln"),
                                                                  PRIMS.index("add"), 0,
                                                                  PRIMS.index("linear_exp")])
    least_squares_readout(net, x, t)
    nodes = net.node_values(x).detach().numpy()
    A = np.hstack([nodes, np.ones((50, 1))])
    ref = np.linalg.lstsq(A, Y, rcond=None)[0]
    np.testing.assert_allclose(net.weight.detach().numpy(), ref[:2].T, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(net.bias.detach().numpy(), ref[2], rtol=1e-7, atol=1e-9)
    # a node that is 0 everywhere (an all-none node) makes the system singular: still solved
    net.fix([0, 0, PRIMS.index("add"), 0, PRIMS.index("linear_exp")])
    least_squares_readout(net, x, t)
    assert torch.isfinite(net.weight).all() and torch.isfinite(net.bias).all()
    # frozen weights: only the bias moves, to the mean residual
    frozen = EquationGraph(2, 1, 1, PRIMS, train_classifier_coefficients=False, dtype=torch.float64)
    frozen.fix([PRIMS.index("add"), PRIMS.index("square")])
    least_squares_readout(frozen, x, t[:, :1])
    assert torch.all(frozen.weight == 1)
    resid = Y[:, 0] - (X[:, 0] + X[:, 1] ** 2)
    np.testing.assert_allclose(frozen.bias.item(), resid.mean(), rtol=1e-9)


# -- the fewest constants among equally good candidates ----------------------------------------
def test_count_constants():
    x1, x2 = sp.symbols("x1 x2")
    from fastdarts.regression.symbolic import relu
    issue = (sp.Float(51.0) * relu(sp.Float(0.34) * x2 - sp.Float(0.65))
             + sp.Float(51.0) * sp.sin(sp.Float(0.35) * x1 - sp.Float(1.57)) + sp.Float(51.5))
    assert count_constants(issue, 2) == 7  # the issue's count: 51.0 twice
    assert count_constants(sp.Float(3.0) * x1 ** 2 + sp.Float(0.5), 2) == 2
    exact_one = sp.Float(1.0000000001) * x1 / (x2 + sp.Float(0.5)) ** sp.Float(1.0) + sp.Float(2e-13)
    assert count_constants(exact_one, 2) == 1
    assert count_constants(exact_one) == 2  # unrounded: 2e-13 is a constant, 1.0000000001 is not
    assert count_constants(sp.Float(0.004) * x1, 2) == 0 and count_constants(sp.Float(0.004) * x1) == 1


def _selector(losses_constants, n_val=25, tol=1.0, output_type="real"):
    """A selector with made-up results: {choice: (val_loss, constants, dof)}."""
    x = torch.zeros(n_val, 1)
    sel = CandidateSelector(None, (x, x), (x, x), 10, 1.0, tol,
                            constants=lambda g: g.n_constants)
    for choice, (loss, n_const, dof) in losses_constants.items():
        g = SimpleNamespace(output_type=output_type, n_constants=n_const)
        score = n_val * math.log(max(loss, EXACT)) + dof * math.log(n_val)
        sel.results[choice] = (score, loss, dof, g)
    return sel


def test_fewest_constants_wins_within_noise_and_only_there():
    rng = np.random.default_rng()
    n = int(rng.integers(20, 200))
    se = math.sqrt(2 / n)
    base = float(10 ** rng.uniform(-6, -2))
    cands = {(0,): (base, 7, 4),                          # best score and loss, 7 constants
             (1,): (base * (1 + 0.8 * se), 2, 4),          # within one standard error, 2 constants
             (2,): (base * (1 + 3 * se), 1, 2)}            # simpler still, but clearly worse
    assert _selector(cands, n).best() == (1,)
    assert _selector(cands, n, tol=0).best() == (0,)     # 0: the score alone
    assert _selector(cands, n, output_type="class").best() == (0,)  # cross-entropy: score alone
    # exact fits of noise-free data all tie at the floor: the fewest constants wins
    exact = {(0,): (1e-25, 5, 6), (1,): (3e-11, 2, 6), (2,): (1e-3, 1, 1)}
    assert _selector(exact, n).best() == (1,)


class _FakeSelector(CandidateSelector):
    """Local search over made-up losses: ``loss_of(choice)``; records the expansions."""

    def __init__(self, loss_of, dof_of=lambda c: 2, n_val=20):
        x = torch.zeros(n_val, 1)
        super().__init__(None, (x, x), (x, x), 10, 1.0, 1.0, constants=lambda g: 0)
        self.loss_of, self.dof_of, self.starts = loss_of, dof_of, []

    def evaluate(self, source, choice, init=None):
        if init is not None and (not self.starts or self.starts[-1] != init.choice):
            self.starts.append(init.choice)
        if choice not in self.results:
            loss, dof = self.loss_of(choice), self.dof_of(choice)
            score = 20 * math.log(max(loss, EXACT)) + dof * math.log(20)
            self.results[choice] = (score, loss, dof, SimpleNamespace(choice=choice, output_type="real"))
        return self.results[choice][0]


def _fake_sources(node_types):
    return {(): SimpleNamespace(edge_sources=lambda: [(0, 0), (0, 1)], primitives=("a", "b", "c", "d"),
                                node_types=node_types, num_nodes=1)}


def test_local_search_stops_once_an_exact_best_was_expanded():
    # two exact graphs, the second one change from the first and simpler (edge 1: none)
    exact = {(2, 1, 1): 1e-20, (2, 0, 1): 1e-25}

    def loss_of(c):
        return exact.get(c, 0.1 + 0.001 * (8 * c[0] + 2 * c[1] + c[2]))

    sel = _FakeSelector(loss_of, dof_of=lambda c: 1 if c == (2, 0, 1) else 2)
    sel.evaluate(None, (1, 1, 0))
    best = sel.local_search(_fake_sources(("sum", "product")), 20)
    assert best in exact
    # (1, 1, 0); the best product graph (1, 1, 1), which finds (2, 1, 1); it, which
    # finds (2, 0, 1); and (2, 0, 1): then every exact best has been expanded
    assert sel.starts == [(1, 1, 0), (1, 1, 1), (2, 1, 1), (2, 0, 1)]


def test_local_search_expands_one_of_graphs_that_fit_alike():
    def loss_of(c):  # a and b on edge 0 fit alike (a sign the read-out absorbs, say)
        return 0.1 + (0.0 if c[0] in (0, 1) else 0.01 * c[0]) + 0.001 * c[1]

    sel = _FakeSelector(loss_of)
    for c in ((0, 0, 0), (1, 0, 0), (2, 0, 0)):
        sel.evaluate(None, c)
    sel.local_search(_fake_sources(("sum",)), 2)
    assert sel.starts[0] == (0, 0, 0) and sel.starts[1] != (1, 0, 0)
    assert len(sel.starts) == 2


# -- the estimator ---------------------------------------------------------------------------
# Shorter searches over fewer primitives than the defaults, so that a fit takes a
# few seconds; bench/bench_regressor.py runs the same laws with the defaults.
QUICK = dict(max_epochs=30, restarts=1, local_search=3, random_state=0)
RATIO_PRIMS = ("none", "add", "mult", "linear", "linear_exp", "shifted_power", "ln")


def _grid(n=10):
    g = np.linspace(0, 1, n)
    return np.array([[a, b] for a in g for b in g])


@pytest.mark.parametrize("law, form", [
    (lambda X: X[:, 0] / (X[:, 1] + 0.5), "x1/(x2 + 0.5)"),
    (lambda X: 2 * X[:, 0] * np.exp(-2 * X[:, 1]), "2.0*x1*exp(-2.0*x2)")])
def test_products_and_ratios_of_inputs_are_recovered(law, form):
    X = _grid()
    est = DARTSRegressor(**QUICK, primitives=RATIO_PRIMS).fit(X, law(X))
    Xt = np.random.default_rng().uniform(0, 1, (300, 2))
    assert r2_score(law(Xt), est.predict(Xt)) > 0.99999, est.equation()
    assert est.node_types_ == ("product",)
    assert est.equation() == f"y = {form}"
    again = pickle.loads(pickle.dumps(est))  # the cached evaluation plan is not pickled
    np.testing.assert_array_equal(again.predict(Xt), est.predict(Xt))


def test_a_quadratic_comes_out_with_its_two_constants():
    X = _grid()
    y = 3 * X[:, 0] ** 2 + 0.5
    # sin and ReLU can approximate it too (the issue's 7-constant equation)
    est = DARTSRegressor(**QUICK, primitives=("none", "add", "mult", "linear_sin", "linear_relu",
                                              "square")).fit(X, y)
    expr = est.sympy()[0]
    assert count_constants(expr, 2) == 2, est.equation()
    x1, x2 = sp.symbols("x1 x2")
    poly = sp.Poly(sp.expand(expr), x1, x2)
    coeffs = {m: float(c) for m, c in zip(poly.monoms(), poly.coeffs())}
    assert coeffs.keys() == {(2, 0), (0, 0)}
    np.testing.assert_allclose([coeffs[(2, 0)], coeffs[(0, 0)]], [3, 0.5], atol=1e-6)


def test_no_fitted_term_is_constant_over_the_training_inputs():
    """Without square, the quadratic is approximated; whatever is chosen, no edge of
    the fitted model may be constant (zero or otherwise) over the training inputs."""
    X = _grid()
    y = 3 * X[:, 0] ** 2 + 0.5
    est = DARTSRegressor(**QUICK, primitives=("none", "add", "mult", "linear_sin", "linear_relu",
                                              "linear_logistic")).fit(X, y)
    net = est.model_[0]
    with torch.no_grad():
        terms, _ = net.edge_terms(torch.tensor(X))
    scale = float(np.std(y))
    for e, t in enumerate(terms):
        if t is not None:
            i = net.edge_sources()[e][0]
            assert float(t.std()) * abs(net.weight[0, i].item()) > 1e-4 * scale, (e, est.equation())


def test_new_parameters_are_validated_and_kept_on_refit():
    X = _grid(5)
    y = X[:, 0] * X[:, 1]
    fast = dict(max_epochs=3, restarts=1, local_search=0, max_candidates=2, random_state=0)
    for bad, match in ((dict(node_types="sum"), "node_types must be a sequence"),
                       (dict(node_types=("sum", "ratio")), "node_types must be distinct names"),
                       (dict(node_types=()), "node_types must be distinct names"),
                       (dict(node_types=("sum", "sum")), "node_types must be distinct names"),
                       (dict(noise_tolerance=-1.0), "noise_tolerance must be a finite number"),
                       (dict(noise_tolerance=float("nan")), "noise_tolerance must be a finite number")):
        with pytest.raises(ValueError, match=match) as err:
            DARTSRegressor(**fast, **bad).fit(X, y)
        assert "\n" not in str(err.value)
    est = DARTSRegressor(**fast, node_types=("product",)).fit(X, y)
    assert est.node_types_ == ("product",)
    with pytest.raises(ValueError, match="node_types"):
        est.set_params(max_epochs=0, node_types=("sum", "product")).fit(X, y)


def test_quiet_by_default_and_progress_with_verbose(capfd):
    assert DARTSRegressor().verbose == 0 and DARTSRegressor().get_params()["verbose"] == 0
    X = _grid(5)
    y = X[:, 0] + X[:, 1]
    fast = dict(max_epochs=10, restarts=2, local_search=0, max_candidates=2, random_state=0,
                primitives=("none", "add", "mult"))
    DARTSRegressor(**fast).fit(X, y)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    DARTSRegressor(**fast, verbose=1).fit(X, y)
    out, err = capfd.readouterr()
    assert "DARTS search 1/2" in out + err and "DARTS search 2/2" in out + err


@pytest.mark.parametrize("kw", [dict(second_order=True), dict(darts_type="fair"),
                                dict(sampling_strategy="sample"), dict(num_graph_nodes=2)])
def test_product_nodes_work_with_every_search_option(kw):
    rng = np.random.default_rng()
    X = rng.uniform(0.2, 1, (40, 2))
    Y = np.stack([X[:, 0] * X[:, 1], X[:, 0] + X[:, 1]], 1)  # two outputs
    est = DARTSRegressor(max_epochs=6, restarts=1, local_search=1, max_candidates=4, random_state=0,
                         primitives=("none", "add", "mult", "linear_exp"), **kw).fit(X, Y)
    net = est.network_
    assert net.node_alphas is not None and torch.isfinite(net.node_alphas).all()
    assert len(est.node_types_) == est.num_graph_nodes and set(est.node_types_) <= {"sum", "product"}
    assert all(len(c) == 5 and len(c[4]) == est.num_graph_nodes and set(c[4]) <= {"sum", "product"}
               for c in est.candidates_)
    pred = est.predict(X)
    assert pred.shape == (40, 2) and np.isfinite(pred).all()
    assert est.equation().count("\n") == 1


def test_a_node_with_one_term_is_reported_as_a_sum():
    rng = np.random.default_rng()
    X = rng.uniform(-2, 2, (60, 1))
    y = 3 * np.sin(2 * X[:, 0]) + 1
    for seed in range(3):
        est = DARTSRegressor(max_epochs=20, restarts=1, local_search=1, random_state=seed,
                             primitives=("none", "add", "linear_sin")).fit(X, y)
        assert est.architecture_ == ("linear_sin",) and est.node_types_ == ("sum",)
    net = EquationGraph(2, 1, 1, ("none", "add"), node_types=("sum", "product")).fix([1, 0, 1])
    x = torch.rand(10, 2)
    before = net(x)
    assert net.canonicalize_node_types().node_kind(0) == "sum"
    torch.testing.assert_close(net(x), before)
    net.fix([1, 1, 1])  # two factors: a real product stays one
    assert net.canonicalize_node_types().node_kind(0) == "product"
