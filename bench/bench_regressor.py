"""Equation recovery of fastdarts.regression.DARTSRegressor on eight known laws.

For each problem and seed: the recovered formula, R^2 on 500 fresh noise-free
points of the same domain, the number of constants the printed formula shows,
the wall and process CPU time of fit(), and whether the law was recovered
(right functional form, checked symbolically, and R^2 >= 0.999).

The last four laws are fitted as a scientist would first try: estimator
defaults on a 10x10 grid on [0, 1]^2.  Two are products/ratios of one input
and a function of the other (ratio, decay), two are short laws that an
equation with more constants fits as well (quad, sqrt).

    python bench/bench_regressor.py                 # seeds 0-3, markdown table
    python bench/bench_regressor.py --seeds 0 --problems doc --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import sympy as sp
import torch
from sklearn.metrics import r2_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import device_name, versions  # noqa: E402
from fastdarts.regression import DARTSRegressor  # noqa: E402
from fastdarts.regression.symbolic import count_constants, logistic, round_constants  # noqa: E402

x1, x2 = sp.symbols("x1 x2")
DOC_PRIMITIVES = ("none", "add", "subtract", "mult", "logistic", "exp", "relu")


def _doc(rng):
    g = np.linspace(0, 1, 10)
    X = np.array([[a, b] for a in g for b in g])
    return X, (0.0, 1.0)


def _uniform(lo, hi, d, n=100):
    return lambda rng: (rng.uniform(lo, hi, (n, d)), (lo, hi))


# name -> (law as numpy function, sympy form, X sampler, noise share of std(y), estimator kwargs)
PROBLEMS = {
    "doc": (lambda X: 2 * X[:, 0] + np.exp(5 * X[:, 1]), 2 * x1 + sp.exp(5 * x2), _doc, 0.0,
            dict(num_graph_nodes=1, primitives=DOC_PRIMITIVES)),
    "sigmoid": (lambda X: 1 / (1 + np.exp(-(3 * X[:, 0] - 2))), logistic(3 * x1 - 2), _uniform(-1, 2, 1),
                0.0, dict()),
    "product": (lambda X: X[:, 0] * X[:, 1], x1 * x2, _uniform(0.5, 2, 2), 0.0,
                dict(num_graph_nodes=2, primitives=("none", "add", "ln", "exp"), local_search=20)),
    "sin": (lambda X: 3 * np.sin(2 * X[:, 0]) + 1, 3 * sp.sin(2 * x1) + 1, _uniform(-2, 2, 1), 0.01, dict()),
    "ratio": (lambda X: X[:, 0] / (X[:, 1] + 0.5), x1 / (x2 + sp.Rational(1, 2)), _doc, 0.0, dict()),
    "decay": (lambda X: 2 * X[:, 0] * np.exp(-2 * X[:, 1]), 2 * x1 * sp.exp(-2 * x2), _doc, 0.0, dict()),
    "quad": (lambda X: 3 * X[:, 0] ** 2 + 0.5, 3 * x1 ** 2 + sp.Rational(1, 2), _doc, 0.0, dict()),
    "sqrt": (lambda X: 2 * np.sqrt(X[:, 0]) + X[:, 1], 2 * x1 ** sp.Rational(1, 2) + x2, _doc, 0.0, dict()),
}
LABELS = {"doc": "2 x1 + exp(5 x2), 10x10 grid on [0,1]^2 (AutoRA docs)",
          "sigmoid": "sigmoid(3 x1 - 2), 100 points on [-1, 2]",
          "product": "x1 x2, 100 points on [0.5, 2]^2",
          "sin": "3 sin(2 x1) + 1, 100 points on [-2, 2], noise 1% of std(y)",
          "ratio": "x1 / (x2 + 0.5), 10x10 grid on [0,1]^2, defaults",
          "decay": "2 x1 exp(-2 x2), 10x10 grid on [0,1]^2, defaults",
          "quad": "3 x1^2 + 0.5, 10x10 grid on [0,1]^2, defaults",
          "sqrt": "2 sqrt(x1) + x2, 10x10 grid on [0,1]^2, defaults"}


def signature(expr):
    """The functional form of ``expr``: constants rounded to 2 decimals (tiny terms
    vanish, coefficients of exactly +-1 disappear), then every other number replaced
    by one symbol C.  2.99*sin(2.0*x1) + 1 and 3*sin(2*x1) + 1 both give
    C*sin(C*x1) + C; exp(1.08*x1) + exp(5*x2) - 0.83 does not match 2*x1 + exp(5*x2)."""
    e = round_constants(expr, 2)
    C = sp.Symbol("C")
    return e.xreplace({n: C for n in e.atoms(sp.Number) if n not in (1, -1)})


def run(name: str, seed: int, device: str) -> dict:
    law, form, sampler, noise, kw = PROBLEMS[name]
    rng = np.random.default_rng(seed)
    X, (lo, hi) = sampler(rng)
    y = law(X)
    if noise:
        y = y + noise * np.std(y) * rng.standard_normal(len(y))
    est = DARTSRegressor(random_state=seed, device=device, **kw)
    t0, c0 = time.perf_counter(), time.process_time()
    est.fit(X, y)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    Xt = np.random.default_rng(10_000 + seed).uniform(lo, hi, (500, X.shape[1]))
    r2 = r2_score(law(Xt), est.predict(Xt))
    form_ok = signature(est.sympy()[0]) == signature(form)
    return dict(problem=name, seed=seed, formula=est.equation(), architecture=est.architecture_,
                node_types=est.node_types_, r2=r2, constants=count_constants(est.sympy()[0], 2),
                wall_s=wall, cpu_s=cpu, form_ok=bool(form_ok), recovered=bool(form_ok and r2 >= 0.999))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (1: these tensors are tiny; more threads only add overhead)")
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    print(f"# {device_name(dev)}; {versions()}; DARTSRegressor defaults unless stated\n")
    rows = []
    print("| problem | seed | recovered formula | R^2 held-out | constants | fit wall (s) | fit CPU (s) "
          "| recovered |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.problems:
        for seed in args.seeds:
            r = run(name, seed, args.device)
            rows.append(r)
            print(f"| {name} | {seed} | `{r['formula']}` | {r['r2']:.6f} | {r['constants']} | "
                  f"{r['wall_s']:.1f} | {r['cpu_s']:.1f} | {'yes' if r['recovered'] else 'no'} |", flush=True)
    print()
    for name in args.problems:
        rs = [r for r in rows if r["problem"] == name]
        print(f"- {name} ({LABELS[name]}): recovered {sum(r['recovered'] for r in rs)}/{len(rs)}, "
              f"constants {min(r['constants'] for r in rs)}-{max(r['constants'] for r in rs)}, "
              f"max fit {max(r['wall_s'] for r in rs):.1f} s wall, {max(r['cpu_s'] for r in rs):.1f} s CPU")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
