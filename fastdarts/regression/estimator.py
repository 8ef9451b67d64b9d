"""DARTSRegressor: equation discovery with DARTS, as a scikit-learn estimator.

API-compatible with AutoRA's ``autora.theorist.darts.DARTSRegressor`` (same
constructor parameters, primitive names and output types), with defaults chosen
to recover equations, and these additions: ``random_state``, ``device``,
``validation_fraction`` (the architecture step sees held-out data),
``second_order`` (fastdarts.Architect's unrolled step), ``inner_coefficients``,
``restarts``, ``candidates_per_edge``/``max_candidates``/``complexity_penalty``/
``noise_tolerance`` (the discrete candidates read off the search and how one is
chosen), ``node_types`` (product nodes beside AutoRA's sum nodes), ``verbose``
and ``fused``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from . import report
from .network import NODE_TYPES, OUTPUT_TYPES, EquationGraph, output_function
from .primitives import DEFAULT_PRIMITIVES, check_primitives
from .search import CandidateSelector, candidate_architectures, darts_search, fit_coefficients

try:  # sklearn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older sklearn
    def _validate_data(est, X, y="no_validation", reset=True, **kw):
        return est._validate_data(X, y, reset=reset, **kw)

DARTS_TYPES = ("original", "fair")
SAMPLING_STRATEGIES = ("max", "sample")


def _choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; choose one of: " + ", ".join(map(repr, choices)))


class _Progress:
    """tqdm when installed, else a line every 10% on stderr."""

    def __init__(self, label: str):
        self.label = label

    def __call__(self, it):
        try:
            from tqdm.auto import tqdm
            return tqdm(it, desc=self.label)
        except ImportError:
            return self._plain(it)

    def _plain(self, it):
        n = len(it)
        for i, v in enumerate(it):
            if n and (i + 1) % max(1, n // 10) == 0:
                print(f"{self.label}: epoch {i + 1}/{n}", file=sys.stderr)
            yield v


class _OutputFunction(torch.nn.Module):
    def __init__(self, output_type: str):
        super().__init__()
        self.output_type = output_type

    def forward(self, out):
        return output_function(self.output_type, out)


class DARTSRegressor(RegressorMixin, BaseEstimator):
    """Differentiable architecture search for equations.

    The model is a small graph: inputs x1..xd, ``num_graph_nodes`` hidden nodes
    k_i = sum (or, for a product node, product) of one edge function of every
    earlier input/node, outputs y = out(W k + c).  Each edge function is a
    softmax mixture of ``primitives`` during the search, and each node's type a
    softmax mixture of ``node_types``; the fitted model keeps one of each.

    AutoRA's parameters keep their names and meanings (see AutoRA's docs):
    ``batch_size, num_graph_nodes, output_type, classifier_weight_decay,
    darts_type, init_weights_function, param_updates_per_epoch,
    param_updates_for_sampled_model`` (here: L-BFGS iterations of the final
    coefficient fit), ``param_learning_rate_max/min, param_momentum,
    param_weight_decay, arch_updates_per_epoch, arch_learning_rate_max,
    arch_weight_decay, arch_weight_decay_df, arch_weight_decay_base,
    arch_momentum`` (Adam beta1 of alpha), ``fair_darts_loss_weight,
    max_epochs, grad_clip, primitives, train_classifier_coefficients,
    train_classifier_bias, execution_monitor`` (called each epoch with
    network=, architect=, epoch=, loss=, lr=), ``sampling_strategy``.

    Additions:
        random_state: int/None; seeds initialisation, split, batches, sampling.
        device: "auto" (CUDA when available), "cpu", "cuda", or a torch.device.
        validation_fraction: share of the data the architecture step is
            evaluated on (the coefficients never see it during the search).
        second_order: the unrolled (second-order) architecture gradient.
        inner_coefficients: logistic/exp/sin/cos/tanh learn f(a x) (AutoRA: f(x)).
        restarts: independent searches; their candidates compete.
        candidates_per_edge, max_candidates: discrete graphs read off alpha
            (with "max": each edge's leading primitives, combined best-first).
        complexity_penalty: candidates are scored BIC-style on the validation
            split, n log(MSE / Var(y)) + penalty * dof * log(n), dof = 1 +
            #coefficients per used edge; the lowest wins (1.0: BIC), but see
            noise_tolerance.
        noise_tolerance: candidates whose validation MSE is within
            max(best, 1e-10 Var(y)) * (1 + noise_tolerance * sqrt(2 / n_val))
            count as equally good, and the one whose equation shows the fewest
            constants wins (1.0: the one-standard-error rule; 0: the score
            alone).  Before that, terms that are constant over the training
            inputs are pruned from the leading candidates and folded into the
            offset.  MSE-type outputs only (not "class",
            "probability_distribution").
        node_types: the node types the search may choose from: "sum"
            (AutoRA's) and "product" (its edge functions multiplied, "none"
            being the factor 1: x1 / (x2 + 0.5) or x1 exp(-2 x2) is one node).
        local_search: how many candidates have all their single changes (an
            edge's primitive, a node's type) fitted and scored, best first, the
            second the best with other node types than the first, graphs that
            fit to the same validation loss as an expanded one passed over;
            0 disables.
        verbose: 0 (default) silent; >= 1 a progress bar (tqdm) or a line per
            10% of each search's epochs on stderr.
        fused: use fastdarts' fused mixed-sum op (None: on CUDA only).

    Refit: with ``max_epochs=0`` a fitted estimator keeps its graph and refits
    only the coefficients (a changed feature count, primitive list, node count
    or output type is an error); with ``max_epochs > 0`` every fit searches anew.

    Attributes (after fit): ``model_`` (Sequential(graph, output function)),
    ``network_`` (the search graph that won), ``architecture_`` (primitive name
    per edge), ``node_types_`` (type per node), ``candidates_`` (list of
    (score, val_loss, dof, architecture, node_types), lowest score first),
    ``n_features_in_``, ``n_outputs_``, ``classes_`` (output_type="class").
    """

    def __init__(self, batch_size: int = 64, num_graph_nodes: int = 1, output_type: str = "real",
                 classifier_weight_decay: float = 0.0, darts_type: str = "original",
                 init_weights_function: Callable | None = None, param_updates_per_epoch: int = 5,
                 param_updates_for_sampled_model: int = 200, param_learning_rate_max: float = 2.5e-2,
                 param_learning_rate_min: float = 1e-3, param_momentum: float = 0.9,
                 param_weight_decay: float = 0.0, arch_updates_per_epoch: int = 1,
                 arch_learning_rate_max: float = 3e-2, arch_weight_decay: float = 1e-4,
                 arch_weight_decay_df: float = 3e-4, arch_weight_decay_base: float = 0.0,
                 arch_momentum: float = 0.5, fair_darts_loss_weight: float = 1, max_epochs: int = 150,
                 grad_clip: float = 5, primitives: Sequence[str] = DEFAULT_PRIMITIVES,
                 train_classifier_coefficients: bool = True, train_classifier_bias: bool = True,
                 execution_monitor: Callable | None = None, sampling_strategy: str = "max",
                 random_state: int | None = None, device="auto", validation_fraction: float = 0.2,
                 second_order: bool = False, inner_coefficients: bool = True, restarts: int = 2,
                 candidates_per_edge: int = 2, max_candidates: int = 16, complexity_penalty: float = 1.0,
                 local_search: int = 5, noise_tolerance: float = 1.0,
                 node_types: Sequence[str] = NODE_TYPES, verbose: int = 0, fused: bool | None = None):
        self.batch_size = batch_size
        self.num_graph_nodes = num_graph_nodes
        self.output_type = output_type
        self.classifier_weight_decay = classifier_weight_decay
        self.darts_type = darts_type
        self.init_weights_function = init_weights_function
        self.param_updates_per_epoch = param_updates_per_epoch
        self.param_updates_for_sampled_model = param_updates_for_sampled_model
        self.param_learning_rate_max = param_learning_rate_max
        self.param_learning_rate_min = param_learning_rate_min
        self.param_momentum = param_momentum
        self.param_weight_decay = param_weight_decay
        self.arch_updates_per_epoch = arch_updates_per_epoch
        self.arch_learning_rate_max = arch_learning_rate_max
        self.arch_weight_decay = arch_weight_decay
        self.arch_weight_decay_df = arch_weight_decay_df
        self.arch_weight_decay_base = arch_weight_decay_base
        self.arch_momentum = arch_momentum
        self.fair_darts_loss_weight = fair_darts_loss_weight
        self.max_epochs = max_epochs
        self.grad_clip = grad_clip
        self.primitives = primitives
        self.train_classifier_coefficients = train_classifier_coefficients
        self.train_classifier_bias = train_classifier_bias
        self.execution_monitor = execution_monitor
        self.sampling_strategy = sampling_strategy
        self.random_state = random_state
        self.device = device
        self.validation_fraction = validation_fraction
        self.second_order = second_order
        self.inner_coefficients = inner_coefficients
        self.restarts = restarts
        self.candidates_per_edge = candidates_per_edge
        self.max_candidates = max_candidates
        self.complexity_penalty = complexity_penalty
        self.local_search = local_search
        self.noise_tolerance = noise_tolerance
        self.node_types = node_types
        self.verbose = verbose
        self.fused = fused

    # -- sklearn plumbing --------------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        tags.non_deterministic = self.random_state is None
        return tags

    def _more_tags(self):  # sklearn < 1.6
        return {"multioutput": True}

    def _check_params(self) -> tuple[str, ...]:
        _choice("output_type", self.output_type, OUTPUT_TYPES)
        _choice("darts_type", self.darts_type, DARTS_TYPES)
        _choice("sampling_strategy", self.sampling_strategy, SAMPLING_STRATEGIES)
        prims = check_primitives(self.primitives)
        for name, low in (("batch_size", 1), ("num_graph_nodes", 1), ("param_updates_per_epoch", 0),
                          ("param_updates_for_sampled_model", 0), ("arch_updates_per_epoch", 0),
                          ("max_epochs", 0), ("restarts", 1), ("candidates_per_edge", 1),
                          ("max_candidates", 1), ("local_search", 0)):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
        if not 0.0 <= float(self.validation_fraction) < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction!r}")
        tol = self.noise_tolerance
        if isinstance(tol, bool) or not isinstance(tol, (int, float, np.number)) or not 0 <= tol < math.inf:
            raise ValueError(f"noise_tolerance must be a finite number >= 0, got {tol!r}")
        self._node_types()
        return prims

    def _node_types(self) -> tuple[str, ...]:
        types = self.node_types
        if isinstance(types, str):
            raise ValueError(f"node_types must be a sequence of names, not the string {types!r}")
        types = tuple(types)
        if not types or len(set(types)) != len(types) or not set(types) <= set(NODE_TYPES):
            raise ValueError(f"node_types must be distinct names from {NODE_TYPES}, got {list(types)}")
        return types

    def _device(self) -> torch.device:
        if self.device is None or self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def _targets(self, y: np.ndarray, reset: bool):
        """y as float [n, O] (or class ids [n] for output_type="class")."""
        if self.output_type == "class":
            if y.ndim != 1:
                raise ValueError(f"output_type='class' needs a 1-D y of labels, got shape {y.shape}")
            if reset:
                self.classes_ = np.unique(y)
            elif not np.isin(y, self.classes_).all():
                raise ValueError(f"y has labels outside the fitted classes {list(self.classes_)}")
            return np.searchsorted(self.classes_, y), len(self.classes_)
        y2 = np.asarray(y, dtype=np.float64)
        y2 = y2.reshape(-1, 1) if y2.ndim == 1 else y2
        if y2.ndim != 2:
            raise ValueError(f"y must be 1-D or 2-D, got shape {np.shape(y)}")
        return y2, y2.shape[1]

    # -- fit ---------------------------------------------------------------------------
    def fit(self, X, y):
        """Search an equation graph for y ~ X and fit its coefficients.

        X: [n_samples, n_features] finite numbers; y: [n_samples] or
        [n_samples, n_outputs] (class labels for output_type="class").
        Returns self."""
        prims = self._check_params()
        refit = self.max_epochs == 0 and hasattr(self, "model_")
        if refit:
            self._check_refit(X, prims)
        X_, y_ = _validate_data(self, X, y, multi_output=True, y_numeric=self.output_type != "class",
                                dtype=np.float64, reset=not refit)
        targets, n_out = self._targets(y_, reset=not refit)
        if refit and n_out != self.n_outputs_:
            raise ValueError(f"refit with max_epochs=0 keeps the fitted graph with {self.n_outputs_} "
                             f"output(s); this y has {n_out}. Set max_epochs > 0 to search anew.")
        if self.max_epochs == 0 and not refit:
            raise ValueError("max_epochs=0 refits the coefficients of an already fitted graph, but this "
                             "estimator is not fitted yet; fit it with max_epochs > 0 first")
        self.X_, self.y_ = X, y  # kept for labels (DataFrame columns, Series name), as AutoRA does
        self.y_1d_ = y_.ndim == 1
        self.n_outputs_ = n_out
        device = self._device()
        seed = np.random.SeedSequence(self.random_state).generate_state(1)[0] \
            if self.random_state is not None else np.random.SeedSequence().generate_state(1)[0]
        gen = torch.Generator().manual_seed(int(seed))
        n = X_.shape[0]
        perm = torch.randperm(n, generator=gen).numpy()
        n_val = int(round(self.validation_fraction * n))
        n_val = n_val if 0 < n_val < n else 0
        val_idx, tr_idx = perm[:n_val], perm[n_val:]
        if n_val == 0:  # too little data to hold any out: validate on the training data
            val_idx = tr_idx
        y_dtype = torch.long if self.output_type == "class" else None

        def tensors(dtype, idx):
            x = torch.as_tensor(X_[idx], dtype=dtype, device=device)
            t = torch.as_tensor(targets[idx], dtype=y_dtype or dtype, device=device)
            return x, t

        if self.output_type == "class" or self.output_type == "probability_distribution":
            y_scale = np.ones(n_out)
        else:
            y_scale = np.var(targets[tr_idx], axis=0)
            y_scale = np.where(y_scale > 1e-12 * (1 + np.mean(targets ** 2, axis=0)), y_scale, 1.0)
        if refit:
            self._refit_coefficients(tensors(torch.float64, np.arange(n)), y_scale)
            return self
        self._search(prims, tensors, tr_idx, val_idx, y_scale, n_out, gen, device)
        return self

    def _check_refit(self, X, prims) -> None:
        d = np.shape(X)[1] if np.ndim(X) == 2 else None
        changed = []
        if d is not None and d != self.n_features_in_:
            changed.append(f"the number of features ({self.n_features_in_} -> {d})")
        if prims != self.primitives_:
            changed.append(f"primitives ({list(self.primitives_)} -> {list(prims)})")
        if self.num_graph_nodes != self.model_[0].num_nodes:
            changed.append(f"num_graph_nodes ({self.model_[0].num_nodes} -> {self.num_graph_nodes})")
        if self._node_types() != self.model_[0].node_types:
            changed.append(f"node_types ({list(self.model_[0].node_types)} -> {list(self._node_types())})")
        if self.output_type != self.model_[0].output_type:
            changed.append(f"output_type ({self.model_[0].output_type!r} -> {self.output_type!r})")
        if changed:
            raise ValueError("refit with max_epochs=0 keeps the fitted graph, but " + " and ".join(changed)
                             + " changed; set max_epochs > 0 to search a new graph")

    def _new_graph(self, prims, n_in, n_out, gen, device, dtype=torch.float32) -> EquationGraph:
        net = EquationGraph(n_in, n_out, int(self.num_graph_nodes), prims, output_type=self.output_type,
                            darts_type=self.darts_type, inner_coefficients=bool(self.inner_coefficients),
                            train_classifier_coefficients=bool(self.train_classifier_coefficients),
                            train_classifier_bias=bool(self.train_classifier_bias),
                            fair_darts_loss_weight=self.fair_darts_loss_weight, fused=self.fused,
                            node_types=self._node_types(), generator=gen, dtype=dtype, device=device)
        if self.init_weights_function is not None:
            net.apply(self.init_weights_function)
        return net

    def _search(self, prims, tensors, tr_idx, val_idx, y_scale, n_out, gen, device) -> None:
        n_in = self.n_features_in_
        train32, valid32 = tensors(torch.float32, tr_idx), tensors(torch.float32, val_idx)
        train64, valid64 = tensors(torch.float64, tr_idx), tensors(torch.float64, val_idx)
        all64 = tensors(torch.float64, np.concatenate([tr_idx, val_idx]) if len(val_idx) and
                        not np.array_equal(val_idx, tr_idx) else tr_idx)
        cfg = self._search_config()
        monitor = None
        if self.execution_monitor is not None:
            def monitor(**kw):
                kw["architect"].current_loss = float(kw["loss"]) if kw["loss"] is not None else math.nan
                self.execution_monitor(**kw)
        # Screening fits stop at 60 L-BFGS iterations (exact fits converge well
        # before; 3x less time on x1*x2); the winner then gets the full count.
        selector = CandidateSelector(self._discrete_from, train64, valid64,
                                     min(60, int(self.param_updates_for_sampled_model)),
                                     float(self.complexity_penalty), float(self.noise_tolerance),
                                     report.constants)
        sources = {}
        for r in range(int(self.restarts)):
            net = self._new_graph(prims, n_in, n_out, gen, device)
            net.y_scale.copy_(torch.as_tensor(y_scale))
            progress = _Progress(f"DARTS search {r + 1}/{self.restarts}") if self.verbose else None
            darts_search(net, train32, valid32, cfg, gen, monitor=monitor, progress=progress)
            for choice in candidate_architectures(net.alphas, prims, self.sampling_strategy,
                                                  int(self.candidates_per_edge), int(self.max_candidates),
                                                  gen, self.darts_type, net.node_alphas, net.num_nodes):
                selector.evaluate(net, choice)
                sources.setdefault(choice, net)
        if self.local_search:
            selector.local_search(sources, int(self.local_search))
        if self.noise_tolerance:
            # the contenders and the three lowest scores, without their constant terms
            order = sorted(selector.results, key=lambda c: selector.results[c][0])
            selector.prune(sources, dict.fromkeys(selector.contenders() + order[:3]))
        best = selector.best()
        model = selector.results[best][3].canonicalize_node_types()
        # final fit on every sample, with the full iteration count
        fit_coefficients(model, *all64, int(self.param_updates_for_sampled_model))
        self.network_ = sources.get(best, sources[min(sources, key=lambda c: selector.results[c][0])])
        self._set_model(model, prims)
        E = len(model.fixed)
        self.candidates_ = sorted(((sc, v, d, tuple(prims[k] for k in c[:E]),
                                    tuple(model.node_types[t] for t in c[E:]))
                                   for c, (sc, v, d, _) in selector.results.items()), key=lambda t: t[0])

    def _search_config(self):
        from types import SimpleNamespace
        names = ("batch_size", "param_learning_rate_max", "param_learning_rate_min", "param_momentum",
                 "param_weight_decay", "arch_learning_rate_max", "arch_weight_decay", "arch_weight_decay_df",
                 "arch_weight_decay_base", "arch_momentum", "max_epochs", "param_updates_per_epoch",
                 "arch_updates_per_epoch", "grad_clip", "classifier_weight_decay")
        cfg = SimpleNamespace(**{k: getattr(self, k) for k in names})
        cfg.unrolled, cfg.hvp = bool(self.second_order), "finite_difference"
        return cfg

    def _discrete_from(self, net: EquationGraph, choice) -> EquationGraph:
        """A float64 discrete graph with ``choice`` and ``net``'s coefficients."""
        cand = self._new_graph(net.primitives, net.n_inputs, net.n_outputs, None, net.alphas.device,
                               torch.float64)
        cand.load_state_dict({k: v.double() for k, v in net.state_dict().items()})
        with torch.no_grad():
            for mine, theirs in zip(cand.arch_parameters(), net.arch_parameters()):
                mine.copy_(theirs)
        return cand.fix(choice)

    def _set_model(self, model: EquationGraph, prims) -> None:
        self.primitives_ = prims
        self.model_ = torch.nn.Sequential(model, _OutputFunction(self.output_type))
        self.architecture_ = tuple(prims[int(k)] for k in model.fixed)
        self.node_types_ = tuple(model.node_kind(i) for i in range(model.num_nodes))

    def _refit_coefficients(self, data, y_scale) -> None:
        model = self.model_[0]
        model.y_scale.copy_(torch.as_tensor(y_scale))
        fit_coefficients(model, *data, int(self.param_updates_for_sampled_model))

    # -- predict -----------------------------------------------------------------------
    def _raw_output(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        X_ = _validate_data(self, X, reset=False, dtype=np.float64)
        model = self.model_
        device = next(model.parameters()).device
        with torch.no_grad():
            out = model(torch.as_tensor(X_, dtype=torch.float64, device=device))
        return out.cpu().numpy()

    def predict(self, X) -> np.ndarray:
        """Predictions [n] (one output) or [n, O]; class labels for output_type="class"."""
        out = self._raw_output(X)
        if self.output_type == "class":
            return self.classes_[np.argmax(out, axis=1)]
        return out[:, 0] if out.shape[1] == 1 and self.y_1d_ else out

    def _has_proba(self) -> bool:
        return self.output_type in ("class", "probability_distribution")

    @available_if(_has_proba)
    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities [n, C] (only for output_type "class" or "probability_distribution")."""
        return self._raw_output(X)

    # -- reading the equation off --------------------------------------------------------
    def _input_labels(self, input_labels=None):
        if input_labels is not None:
            labels = tuple(input_labels)
            if len(labels) != self.n_features_in_:
                raise ValueError(f"{len(labels)} input labels for {self.n_features_in_} features")
            return labels
        if hasattr(self, "feature_names_in_"):
            return tuple(str(c) for c in self.feature_names_in_)
        return tuple(f"x{i + 1}" for i in range(self.n_features_in_))

    def _output_labels(self, output_labels=None):
        if output_labels is not None:
            return tuple(output_labels)
        if hasattr(self.y_, "columns"):
            return tuple(str(c) for c in self.y_.columns)
        if getattr(self.y_, "name", None) is not None and self.y_1d_:
            return (str(self.y_.name),)
        if self.n_outputs_ == 1:
            return ("y",)
        return tuple(f"y{i + 1}" for i in range(self.n_outputs_))

    def model_repr(self, input_labels: Sequence[str] | None = None,
                   output_labels: Sequence[str] | None = None, output_function_label: str | None = None,
                   decimals_to_display: int = 2, output_format: str = "console") -> str:
        """The fitted graph as equations, one line per hidden node and per output
        ("console" text or "latex"); constants rounded to ``decimals_to_display``.
        ``output_function_label`` None names the output type's function (Sigmoid,
        Softmax); "" hides it."""
        check_is_fitted(self, "model_")
        lines = report.model_lines(self.model_[0], self._input_labels(input_labels),
                                   self._output_labels(output_labels), output_function_label,
                                   decimals_to_display, output_format, self.output_type)
        return "\n".join(["Model:"] + lines)

    def equation(self, decimals: int = 2, output_format: str = "console", input_labels=None,
                 output_labels=None, simplify: bool = True) -> str:
        """The whole model as one formula per output (nodes substituted, expanded),
        e.g. ``y = 2.0*x1 + exp(5.0*x2)``."""
        check_is_fitted(self, "model_")
        from .symbolic import render
        exprs = self.sympy(input_labels=input_labels, simplify=simplify)
        labels = self._output_labels(output_labels)
        return "\n".join(f"{lab} = {render(e, decimals, output_format)}" for lab, e in zip(labels, exprs))

    def sympy(self, input_labels=None, simplify: bool = True) -> list:
        """One sympy expression per output, with full-precision constants."""
        check_is_fitted(self, "model_")
        return report.equations(self.model_[0], self._input_labels(input_labels), self.output_type, simplify)

    def _graph(self, input_labels=None, decimals: int = 2):
        check_is_fitted(self, "model_")
        return report.graph_spec(self.model_[0], self._input_labels(input_labels), self._output_labels(),
                                 self.output_type, decimals)

    def visualize_model(self, input_labels: Sequence[str] | None = None):
        """The fitted graph as a ``graphviz.Digraph`` (edges labelled with their
        functions).  Needs the graphviz package: without it this raises
        ImportError saying ``pip install graphviz``; ``dot_source()`` gives the
        same graph as DOT text with no dependency."""
        return report.digraph(*self._graph(input_labels))

    def dot_source(self, input_labels: Sequence[str] | None = None) -> str:
        """The fitted graph as Graphviz DOT text."""
        return report.dot_source(*self._graph(input_labels))
