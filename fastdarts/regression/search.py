"""The three stages of a fit: the DARTS search, the discrete candidates read off
its architecture weights, and the coefficient fit of a discrete graph.

1. ``darts_search``: each epoch makes ``arch_updates_per_epoch`` architecture
   steps (fastdarts.Architect, first or second order, weights on the training
   split, architecture on the validation split) and ``param_updates_per_epoch``
   SGD steps on the coefficients, every epoch (AutoRA skips them whenever the
   leading primitive of every edge is parameter-free, which is how its
   documentation example ends with exp(x1) + exp(x2)).
2. ``candidate_architectures``: the leading primitive per edge ("max"), plus
   the next-ranked alternatives of a beam over the edges, or samples from the
   softmax ("sample").
3. ``fit_coefficients``: full-batch L-BFGS in float64 on a discrete graph.
   DARTS's mixture only ranks primitives; the equation's constants come from
   this exact least-squares fit (SGD on a mixture leaves R^2 around 0.99).
"""

from __future__ import annotations

import copy
import heapq
import math
from types import SimpleNamespace

import torch
from torch import Tensor

from ..architect import CNNArchitect
from .network import EquationGraph
from .primitives import PRIMITIVES


class _Batches:
    """Endless shuffled mini-batches of (x, y) from a seeded generator."""

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, generator: torch.Generator):
        self.x, self.y, self.gen = x, y, generator
        self.n = x.shape[0]
        self.bs = max(1, min(int(batch_size), self.n))
        self.perm, self.pos = None, self.n

    def next(self) -> tuple[Tensor, Tensor]:
        if self.bs == self.n:  # full batch: no indexing copy
            return self.x, self.y
        if self.pos + self.bs > self.n:
            self.perm = torch.randperm(self.n, generator=self.gen).to(self.x.device)
            self.pos = 0
        idx = self.perm[self.pos:self.pos + self.bs]
        self.pos += self.bs
        return self.x[idx], self.y[idx]


def _decay_weights(net: EquationGraph, df: float, base: float, inner: bool) -> Tensor:
    """AutoRA's simplicity decay per primitive: (1 + #params) * df + base * N for
    every primitive but none (0)."""
    vals = []
    for p in net.primitives:
        spec = PRIMITIVES[p]
        vals.append(0.0 if spec.zero else (1 + spec.n_params(inner)) * df + base * net.num_nodes)
    return torch.tensor(vals, dtype=net.alphas.dtype, device=net.alphas.device)


def _sanitize_grads(params) -> None:
    # A single exp overflow in a mixture must not poison the coefficients: NaN/inf
    # gradients become 0 (no host sync, unlike a finiteness test).
    for p in params:
        if p.grad is not None:
            torch.nan_to_num_(p.grad, nan=0.0, posinf=0.0, neginf=0.0)


def darts_search(net: EquationGraph, train: tuple[Tensor, Tensor], valid: tuple[Tensor, Tensor], cfg,
                 generator: torch.Generator, monitor=None, progress=None) -> EquationGraph:
    """Run the bilevel DARTS search on ``net`` in place (see module docstring).
    ``cfg`` carries the estimator's hyper-parameters by their AutoRA names."""
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=cfg.param_learning_rate_max, momentum=cfg.param_momentum,
                          weight_decay=cfg.param_weight_decay)
    args = SimpleNamespace(momentum=cfg.param_momentum, weight_decay=cfg.param_weight_decay,
                           arch_learning_rate=cfg.arch_learning_rate_max,
                           arch_weight_decay=cfg.arch_weight_decay)
    architect = CNNArchitect(net, args, hvp=cfg.hvp)
    # AutoRA documents arch_momentum as the Adam momentum of alpha: that is beta1
    architect.optimizer.param_groups[0]["betas"] = (cfg.arch_momentum, 0.999)
    decay = _decay_weights(net, cfg.arch_weight_decay_df, cfg.arch_weight_decay_base, net.inner_coefficients)
    tr = _Batches(*train, cfg.batch_size, generator)
    va = _Batches(*valid, cfg.batch_size, generator)
    total = max(1, cfg.max_epochs * cfg.param_updates_per_epoch)
    step = 0
    lr = cfg.param_learning_rate_max
    epochs = range(cfg.max_epochs) if progress is None else progress(range(cfg.max_epochs))
    for epoch in epochs:
        for _ in range(cfg.arch_updates_per_epoch):
            xt, yt = tr.next()
            xv, yv = va.next()
            architect.step(xt, yt, xv, yv, lr, opt, cfg.unrolled)
            with torch.no_grad():
                for alphas in net.arch_parameters():
                    torch.nan_to_num_(alphas, nan=0.0)
                # the simplicity decay is per primitive; the node types cost the same
                net.alphas.sub_(decay * cfg.arch_learning_rate_max)
        loss = None
        for _ in range(cfg.param_updates_per_epoch):
            # cosine annealing over the whole search, max -> min
            lr_lo, lr_hi = cfg.param_learning_rate_min, cfg.param_learning_rate_max
            lr = lr_lo + 0.5 * (lr_hi - lr_lo) * (1 + math.cos(math.pi * step / total))
            for g in opt.param_groups:
                g["lr"] = lr
            xb, yb = tr.next()
            opt.zero_grad(set_to_none=False)
            loss = net._loss(xb, yb)
            loss.backward()
            _sanitize_grads(params)
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            with torch.no_grad():
                if net.weight.requires_grad or net.bias.requires_grad:
                    for p in (net.weight, net.bias):
                        if p.requires_grad:
                            p.mul_(1 - cfg.classifier_weight_decay * lr)
            step += 1
        if monitor is not None:
            monitor(network=net, architect=architect, epoch=epoch, loss=loss, lr=lr)
    return net


def _log_weights(alphas: Tensor, darts_type: str) -> Tensor:
    a = alphas.detach().double().cpu()
    if darts_type == "fair":
        return torch.nn.functional.logsigmoid(a)
    return torch.log_softmax(a, dim=-1)


def candidate_architectures(alphas: Tensor, primitives: tuple[str, ...], strategy: str, per_edge: int,
                            max_candidates: int, generator: torch.Generator,
                            darts_type: str = "original", node_alphas: Tensor | None = None,
                            num_nodes: int = 0) -> list[tuple[int, ...]]:
    """Discrete architectures, best first: one primitive index per edge, then one
    node-type index per node (``node_alphas`` [N, T]; None: ``num_nodes`` zeros).

    "max": the argmax per edge and node first (ties -> lowest index:
    deterministic), then the best-scoring combinations of each edge's
    ``per_edge`` leading primitives and every node type (score = sum of log
    mixing weights), at most ``max_candidates``.  "sample": the first is drawn from each softmax, then
    further draws.
    """
    positions = [_log_weights(alphas, darts_type)]
    if node_alphas is not None:
        positions.append(_log_weights(node_alphas, darts_type))
    fixed_tail = () if node_alphas is not None else (0,) * num_nodes
    if strategy == "sample":
        seen, out = set(), []
        for _ in range(4 * max_candidates):
            c = ()
            for logp in positions:
                probs = logp.exp()
                probs = probs / probs.sum(-1, keepdim=True)
                c += tuple(int(i) for i in torch.multinomial(probs, 1, generator=generator).squeeze(1))
            c += fixed_tail
            if c not in seen:
                seen.add(c)
                out.append(c)
            if len(out) >= max_candidates:
                break
        return out
    beam: list[tuple[float, tuple[int, ...]]] = [(0.0, ())]
    for pos, logp in enumerate(positions):
        # every node type stays in the beam: a few epochs can tip a node's type
        # weights either way, and the other type is then never fitted at all
        order = torch.argsort(-logp, dim=-1, stable=True)[:, :max(1, per_edge) if pos == 0 else None]
        for e in range(logp.shape[0]):
            grown = [(s - float(logp[e, k]), c + (int(k),)) for s, c in beam for k in order[e]]
            beam = heapq.nsmallest(max_candidates, grown)
    return [c + fixed_tail for _, c in beam]


def complexity(net: EquationGraph) -> int:
    """Degrees of freedom of a discrete graph: 1 + #coefficients per used edge."""
    return sum(0 if PRIMITIVES[net.primitives[k]].zero else 1 + PRIMITIVES[net.primitives[k]].n_params(
        net.inner_coefficients) for k in net.fixed.tolist())


def fit_coefficients(net: EquationGraph, x: Tensor, y: Tensor, max_iter: int) -> float:
    """L-BFGS (strong Wolfe) on all trainable coefficients of the discrete graph
    ``net`` in place, full batch; keeps the best finite state.  Returns its loss."""
    params = [p for p in net.parameters() if p.requires_grad]

    def loss_now() -> float:
        with torch.no_grad():
            v = float(net._loss(x, y))
        return v if math.isfinite(v) else math.inf

    best = loss_now()
    if not params or max_iter <= 0:
        return best
    best_state = copy.deepcopy(net.state_dict())
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=20, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-12, tolerance_change=1e-15)

    def closure():
        opt.zero_grad()
        loss = net._loss(x, y)
        loss.backward()
        _sanitize_grads(params)
        return loss

    for _ in range(max(1, max_iter // 20)):
        try:
            opt.step(closure)
        except RuntimeError:  # a line search into a non-finite region
            break
        now = loss_now()
        if now < best - 1e-15 * abs(best):
            best, best_state = now, copy.deepcopy(net.state_dict())
        elif now >= best:
            break
    net.load_state_dict(best_state)
    return best


@torch.no_grad()
def least_squares_readout(net: EquationGraph, x: Tensor, y: Tensor) -> None:
    """Set the trainable read-out (W, c) of a discrete real-output graph to its
    least-squares optimum for the current node values.

    A candidate starts from coefficients fitted for another graph, with a
    read-out that can be worse than predicting the mean; then L-BFGS's first
    line search may step where an edge is 0 on every sample (a power whose
    x + b < 0, a ReLU below its knee), the loss is the mean's and every gradient
    through that edge is 0: x1 (x2 + 0.5)^-1 was fitted as a constant from both
    starts.  From the least-squares read-out the loss starts at most at the
    mean's."""
    if net.output_type != "real" or not (net.weight.requires_grad or net.bias.requires_grad):
        return
    nodes = net.node_values(x)
    if not torch.isfinite(nodes).all():
        return
    target = y - (0 if net.weight.requires_grad else nodes @ net.weight.t()) \
        - (0 if net.bias.requires_grad else net.bias)
    cols = ([nodes] if net.weight.requires_grad else []) + ([torch.ones_like(nodes[:, :1])]
                                                            if net.bias.requires_grad else [])
    A = torch.cat(cols, 1)  # [n, m], m <= num_nodes + 1
    # Normal equations from elementwise products and sums, solved in Python: the
    # fit must be bitwise reproducible, and torch.linalg.lstsq was not (its last
    # bits varied from call to call on the same inputs, 2-core x86 CPU).
    gram = (A[:, :, None] * A[:, None, :]).sum(0).tolist()
    rhs = (A[:, :, None] * target[:, None, :]).sum(0).tolist()
    sol = _solve_normal_equations(gram, rhs)
    if sol is None:
        return
    sol = torch.tensor(sol, dtype=A.dtype, device=A.device)  # [m, O]
    if net.weight.requires_grad:
        net.weight.copy_(sol[:net.num_nodes].t())
    if net.bias.requires_grad:
        net.bias.copy_(sol[-1])


def _solve_normal_equations(gram: list, rhs: list) -> list | None:
    """Solve (G + ridge) X = R for symmetric positive semi-definite G (m x m, m
    small) by Cholesky; the ridge (1e-12 of G's mean diagonal) keeps an all-zero or
    collinear node column from making it singular.  None when not finite."""
    m = len(gram)
    ridge = 1e-12 * sum(gram[i][i] for i in range(m)) / max(m, 1) + 1e-300
    L = [[0.0] * m for _ in range(m)]
    for i in range(m):
        for j in range(i + 1):
            acc = gram[i][j] + (ridge if i == j else 0.0) - sum(L[i][k] * L[j][k] for k in range(j))
            if i == j:
                if not acc > 0:
                    return None
                L[i][i] = math.sqrt(acc)
            else:
                L[i][j] = acc / L[j][j]
    out = []
    for col in zip(*rhs):
        z = [0.0] * m
        for i in range(m):  # L z = r
            z[i] = (col[i] - sum(L[i][k] * z[k] for k in range(i))) / L[i][i]
        xs = [0.0] * m
        for i in reversed(range(m)):  # L^T x = z
            xs[i] = (z[i] - sum(L[k][i] * xs[k] for k in range(i + 1, m))) / L[i][i]
        out.append(xs)
    if not all(math.isfinite(v) for xs in out for v in xs):
        return None
    return [list(r) for r in zip(*out)]


SAME_LOSS = 1e-7  # relative difference of validation losses below which two graphs fit alike
EXACT = 1e-10  # MSE / Var(y) below which a fit counts as exact (float64 rounding level)


def selection_score(net: EquationGraph, loss: float, n: int, dof: int, penalty: float) -> float:
    """BIC-style score of a discrete graph on ``n`` held-out samples (lower wins).

    MSE-type outputs: n log(max(MSE/Var(y), 1e-10)) + penalty * dof * log(n); the
    floor makes all exact fits of noise-free data tie so that the simpler one wins
    instead of the one with the smaller rounding error.  Cross-entropy outputs:
    2 n CE + penalty * dof * log(n)."""
    if not math.isfinite(loss):
        return math.inf
    log_n = math.log(max(n, 2))
    if net.output_type in ("class", "probability_distribution"):
        return 2 * n * loss + penalty * dof * log_n
    return n * math.log(max(loss, EXACT)) + penalty * dof * log_n


# A term whose replacement by its mean changes the read-out by at most this share
# of the candidate's own training error (or by EXACT) counts as constant.
PRUNE_SHARE = 1e-2


@torch.no_grad()
def prune_constant_terms(net: EquationGraph, x: Tensor, limit: float) -> EquationGraph | None:
    """A copy of the discrete graph ``net`` in which the nodes and edge terms that
    are constant over the inputs ``x`` are replaced by ``none`` (the neutral
    element: 0 in a sum node, the factor 1 in a product node), their value folded
    into what reads them: the read-out bias (or weight, for a factor) and the b
    (or a) of later edges.  None when nothing is constant, or the primitive set
    has no ``none``.

    Constant means: replacing the term by its mean over ``x`` changes the read-out
    by at most ``limit`` (mean square / Var(y)); terms are taken greedily, nodes
    first, each only if all taken so far still change it by at most ``limit``.
    Where the fold cannot be exact (a later edge without a learned b, say) it is
    left to the caller's refit."""
    nones = [k for k, p in enumerate(net.primitives) if PRIMITIVES[p].zero]
    if not nones:
        return None
    terms, nodes = net.edge_terms(x)
    base = net.readout(nodes)

    def change(edges: dict, node_vals: dict) -> float:
        out = net.readout(net.edge_terms(x, edges, node_vals)[1])
        return float((((out - base) ** 2).mean(0) / net.y_scale).mean())

    # a fold into a read-out parameter the user froze would change the model
    shift_ok, scale_ok = net.bias.requires_grad, net.weight.requires_grad
    sources = net.edge_sources()
    edges_of = [[e for e, (i, _) in enumerate(sources) if i == n] for n in range(net.num_nodes)]
    take_edges: dict[int, float] = {}
    take_nodes: dict[int, float] = {}
    for i in range(net.num_nodes):
        if not any(terms[e] is not None for e in edges_of[i]):
            continue
        c = float(nodes[:, i].mean())
        neutral = 1.0 if net.node_kind(i) == "product" else 0.0
        if (shift_ok or c == neutral) and change(take_edges, {**take_nodes, i: c}) <= limit:
            take_nodes[i] = c
    for e, t in enumerate(terms):
        i = sources[e][0]
        if t is None or i in take_nodes:
            continue
        c = float(t.mean())
        product = net.node_kind(i) == "product"
        if (scale_ok or c == 1.0) if product else (shift_ok or c == 0.0):
            if change({**take_edges, e: c}, take_nodes) <= limit:
                take_edges[e] = c
    if not take_edges and not take_nodes:
        return None
    out = copy.deepcopy(net)
    fixed = out.fixed.clone()
    for i, c in take_nodes.items():
        fixed[edges_of[i]] = nones[0]
        _fold(out, i, shift=c - (1.0 if net.node_kind(i) == "product" else 0.0))
    for e, c in take_edges.items():
        fixed[e] = nones[0]
        if net.node_kind(sources[e][0]) == "product":
            _fold(out, sources[e][0], scale=c)
        else:
            _fold(out, sources[e][0], shift=c)
    out.fixed = fixed
    return out


def _fold(net: EquationGraph, i: int, shift: float = 0.0, scale: float = 1.0) -> None:
    """Node i lost ``shift`` (node_new = node_old - shift) or a constant factor
    ``scale`` (node_new = node_old / scale): give it back where node i is read."""
    state = net.n_inputs + i
    net.bias += net.weight[:, i] * shift
    net.weight[:, i] *= scale
    a_eff, _ = net._coefficients()
    for e, (_, j) in enumerate(net.edge_sources()):
        k = int(net.fixed[e])
        if j != state or PRIMITIVES[net.primitives[k]].zero:
            continue
        if net.learn_b[k] > 0:
            net.b[e, k] += a_eff[e, k] * shift
        if net.learn_a[k] > 0:
            net.a[e, k] *= scale


class CandidateSelector:
    """Fits discrete graphs on the training split and scores them on the validation
    split, caching by architecture (primitive per edge, then type per node);
    ``local_search`` then improves the best one by single changes (each edge tried
    with every other primitive, each node with every other type).

    ``best()``: the lowest score, except that among the candidates whose validation
    error is within noise of the lowest (see ``noise_band``) the one with the
    fewest constants (``constants(graph)``, counted in its equation) wins."""

    def __init__(self, make_discrete, train, valid, max_iter: int, penalty: float,
                 noise_tolerance: float = 0.0, constants=None):
        self.make_discrete, self.train, self.valid = make_discrete, train, valid
        self.max_iter, self.penalty = max_iter, penalty
        self.noise_tolerance, self.constants = float(noise_tolerance), constants
        self.results: dict[tuple[int, ...], tuple[float, float, int, EquationGraph]] = {}
        self._n_constants: dict[tuple[int, ...], int] = {}

    def evaluate(self, source: EquationGraph, choice: tuple[int, ...], init: EquationGraph | None = None):
        """Score of ``choice`` (coefficients from ``source``, overridden by ``init``'s
        on the edges where ``init`` uses the same primitive)."""
        if choice in self.results:
            return self.results[choice][0]
        cand = self.make_discrete(source, choice)
        if init is not None:
            with torch.no_grad():
                for e, (k_new, k_old) in enumerate(zip(cand.fixed.tolist(), init.fixed.tolist())):
                    if k_new == k_old:
                        for name in ("a", "b", "beta"):
                            getattr(cand, name)[e, k_new] = getattr(init, name)[e, k_old]
                cand.weight.copy_(init.weight)
                cand.bias.copy_(init.bias)
        least_squares_readout(cand, *self.train)
        train_loss = fit_coefficients(cand, *self.train, self.max_iter)
        if not train_loss < 1e-8:
            # The inherited coefficients can sit in a poor basin (exp(a k) fitted
            # with a = -0.12 where a = 1 is exact; a power (x + b)^k whose b < -1
            # is 0 on all of [0, 1]); retry from the primitives' natural scale
            # (a = 1, b = 0, k = 1; least-squares read-out) and keep the better.
            alt = self.make_discrete(source, choice)
            with torch.no_grad():
                alt.a.fill_(1.0)
                alt.b.zero_()
                alt.beta.fill_(1.0)
            least_squares_readout(alt, *self.train)
            if fit_coefficients(alt, *self.train, self.max_iter) < train_loss:
                cand = alt
        return self._record(choice, cand)

    def _record(self, choice: tuple[int, ...], cand: EquationGraph) -> float:
        """Score fitted ``cand`` on the validation split; keep it unless ``choice``
        already has a better-scoring fit."""
        with torch.no_grad():
            loss = float(cand._loss(*self.valid))
        dof = complexity(cand)
        score = selection_score(cand, loss, self.valid[0].shape[0], dof, self.penalty)
        if choice not in self.results or score < self.results[choice][0]:
            self.results[choice] = (score, loss, dof, cand)
            self._n_constants.pop(choice, None)
        return self.results[choice][0]

    def _order(self) -> list[tuple[int, ...]]:
        return sorted(self.results, key=lambda c: (self.results[c][0], self.results[c][2]))

    def noise_band(self) -> float:
        """The validation error up to which a candidate is as good as the best:
        max(min error, EXACT) * (1 + tol * sqrt(2 / n_val)).  sqrt(2 / n) is the
        relative standard error of a mean square of n Gaussian residuals, so tol = 1
        is the one-standard-error rule.  -inf (no band) for cross-entropy outputs
        and tol = 0."""
        first = next(iter(self.results.values()))[3]
        if self.noise_tolerance <= 0 or self.constants is None \
                or first.output_type in ("class", "probability_distribution"):
            return -math.inf
        floor = min(max(r[1], EXACT) for r in self.results.values())
        return floor * (1 + self.noise_tolerance * math.sqrt(2 / max(self.valid[0].shape[0], 1)))

    def contenders(self) -> list[tuple[int, ...]]:
        """The lowest-scoring candidate and every candidate within the noise band."""
        order, band = self._order(), self.noise_band()
        return order[:1] + [c for c in order[1:] if max(self.results[c][1], EXACT) <= band]

    def n_constants(self, choice: tuple[int, ...]) -> int:
        if choice not in self._n_constants:
            self._n_constants[choice] = self.constants(self.results[choice][3])
        return self._n_constants[choice]

    def best(self) -> tuple[int, ...]:
        pool = self.contenders()
        if len(pool) == 1:
            return pool[0]
        return min(pool, key=lambda c: (self.n_constants(c), self.results[c][0], self.results[c][2]))

    def prune(self, sources: dict, choices) -> None:
        """Add, for each of ``choices``, the graph without its terms that are
        constant over the training inputs (``prune_constant_terms``), refitted
        from the folded coefficients."""
        for c in list(choices):
            cand = self.results[c][3]
            with torch.no_grad():
                train_loss = float(cand._loss(*self.train))
            pruned = prune_constant_terms(cand, self.train[0], max(EXACT, PRUNE_SHARE * train_loss))
            if pruned is None:
                continue
            fit_coefficients(pruned, *self.train, self.max_iter)
            new = pruned.choice()
            self._record(new, pruned)
            sources.setdefault(new, sources.get(c) or next(iter(sources.values())))

    def local_search(self, sources: dict, expansions: int) -> tuple[int, ...]:
        """Expand, best first, up to ``expansions`` not yet expanded candidates:
        every single change of one (an edge's primitive or a node's type) is
        fitted and scored.  Expanding beyond the best alone matters:
        exp(ln x1 + ln x2) is two changes away from the best 4-edge graph but one
        from the third best (x1 * x2, seed 3)."""
        expanded: set = set()
        net = next(iter(sources.values()))
        E = len(net.edge_sources())
        options = [len(net.primitives)] * E + [len(net.node_types)] * net.num_nodes

        def fresh(c) -> bool:
            # Not expanded, nor the same function as an expanded graph: x1 * f(x2),
            # -x1 * f(x2) and 0.7 x1 * f(x2) fit to the same loss (the read-out
            # weight takes the sign and scale), and their single changes repeat each
            # other's, so expanding all three spent the budget on one neighbourhood.
            # Exact fits all have the same loss and are told apart by structure.
            loss = self.results[c][1]
            return c not in expanded and (loss <= EXACT or not any(
                c[E:] == x[E:] and abs(loss - self.results[x][1]) <= SAME_LOSS * loss for x in expanded))

        for r in range(expansions):
            order = self._order()
            start = next((c for c in order if fresh(c)), None)
            if r == 1:
                # Once, the best graph with other node types than the first expansion:
                # the discrete product candidates read off a mixture are poor (the
                # mixture, not one primitive, shaped the factor), so x1 (x2 + 0.5)^-1
                # is one change from the best product graph but never from the best
                # sum graph.
                first = next(iter(expanded))[E:]
                start = next((c for c in order if c[E:] != first), start)
            if start is None or (order[0] in expanded and self.results[order[0]][1] <= EXACT):
                # an exact fit whose single-edge simplifications were all tried: done
                break
            expanded.add(start)
            src = sources.get(start) or next(iter(sources.values()))
            for e, n_opt in enumerate(options):
                for k in range(n_opt):
                    if k != start[e]:
                        choice = start[:e] + (k,) + start[e + 1:]
                        self.evaluate(src, choice, init=self.results[start][3])
                        sources.setdefault(choice, src)
        return self.best()
