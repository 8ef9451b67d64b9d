"""The files a search writes: ``genotypes.jsonl`` and ``genotype.json``, the cells
as Graphviz DOT (PNG and SVG when ``dot`` is installed), and ``alphas.png``."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys

import torch

from .. import distributed
from ..config import refuse_overwrite
from ..loop.engine import Callback
from ..space import genotypes as G


def check_save_dir(cfg) -> None:
    """A new search (no --resume) into a directory that holds an earlier search's
    results (its checkpoint or final genotype) is refused unless --overwrite: the
    search would replace genotype.json, genotypes.jsonl and the pictures.  Checked
    before anything is written."""
    if not cfg.resume and not cfg.overwrite:
        refuse_overwrite(cfg.save, ("checkpoint.pt", "genotype.json"), "search",
                         f"--resume {os.path.join(cfg.save, 'checkpoint.pt')}")


class GenotypeLog(Callback):
    """<save>/genotypes.jsonl: one line per epoch; <save>/genotype.json: the final one.

    At the start the file is rewritten to hold exactly the epochs before
    ``start_epoch`` (none for a fresh search; on a resume the lines already there,
    else those of ``engine.history``), so a rerun in the same directory or a resume
    after a crash never leaves stale or doubled lines."""

    order = 30

    def __init__(self, save_dir: str):
        self.save_dir = save_dir

    @property
    def path(self) -> str:
        return os.path.join(self.save_dir, "genotypes.jsonl")

    def search_begin(self, e):
        if not distributed.is_rank0():
            return
        os.makedirs(self.save_dir, exist_ok=True)
        kept = {}
        if e.start_epoch and os.path.isfile(self.path):
            with open(self.path) as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue  # a line cut short by a crash
                    if isinstance(rec, dict) and isinstance(rec.get("epoch"), int):
                        kept[rec["epoch"]] = rec
        for row in e.history:
            if "genotype" in row and row["epoch"] not in kept:
                kept[row["epoch"]] = {"epoch": row["epoch"], **row["genotype"]}
        with open(self.path, "w") as f:
            for epoch in sorted(k for k in kept if k < e.start_epoch):
                f.write(json.dumps(kept[epoch]) + "\n")

    def epoch_end(self, e):
        if distributed.is_rank0():
            with open(self.path, "a") as f:
                f.write(json.dumps({"epoch": e.epoch, **_genotype_dict(e.model)}) + "\n")

    def search_end(self, e):
        if distributed.is_rank0():
            genotype = final_genotype(e)
            if isinstance(genotype, str):  # NB201: the architecture string, also as arch.txt
                _write_json(_genotype_dict(e.model, genotype), os.path.join(self.save_dir, "genotype.json"))
                with open(os.path.join(self.save_dir, "arch.txt"), "w") as f:
                    f.write(genotype + "\n")
            else:
                G.save_json(genotype, os.path.join(self.save_dir, "genotype.json"))


def _genotype_dict(model, genotype=None) -> dict:
    genotype = model.genotype() if genotype is None else genotype
    return G.to_dict(genotype, getattr(model, "op_names", None))


def _write_json(d: dict, path: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(d, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def nb201_dot(arch: str) -> str:
    """Graphviz DOT text of an NB201 cell from its architecture string: node 0 the
    input, node 3 the output; 'none' edges are left out."""
    from ..space import nb201

    lines = ["digraph cell {", "  rankdir=LR;", '  node [shape=box, style="rounded,filled"];',
             '  "0" [fillcolor=darkseagreen2];', '  "1" [fillcolor=lightblue]; "2" [fillcolor=lightblue];',
             '  "3" [fillcolor=palegoldenrod];']
    for i, node in enumerate(nb201.parse_arch(arch, ops=_any_ops(arch)), start=1):
        for op, j in node:
            if op != "none":
                lines.append(f'  "{j}" -> "{i}" [label="{op}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _any_ops(arch: str) -> list[str]:
    """The op names an architecture string uses (drawing needs no op set)."""
    return sorted({item.partition("~")[0] for part in arch.split("+") for item in part.strip("|").split("|")})


def final_genotype(e):
    """The search's result: ``e.final_genotype`` when a callback chose one (DARTS-ES: the
    genotype of the epoch it stopped at), else the model's genotype now."""
    chosen = getattr(e, "final_genotype", None)
    return chosen if chosen is not None else e.model.genotype()


def genotype_dot(genotype, kind: str) -> str:
    """Graphviz DOT text of one cell of a CNN genotype (``kind`` normal/reduce)."""
    gene = getattr(genotype, kind)
    concat = getattr(genotype, kind + "_concat")
    lines = [f'digraph {kind} {{', "  rankdir=LR;", '  node [shape=box, style="rounded,filled"];',
             '  "c_{k-2}" [fillcolor=darkseagreen2]; "c_{k-1}" [fillcolor=darkseagreen2];',
             '  "c_{k}" [fillcolor=palegoldenrod];']
    names = ["c_{k-2}", "c_{k-1}"] + [str(i) for i in range(len(gene) // 2)]
    for i in range(len(gene) // 2):
        lines.append(f'  "{i}" [fillcolor=lightblue];')
    for e, (op, j) in enumerate(gene):
        lines.append(f'  "{names[j]}" -> "{e // 2}" [label="{op}"];')
    for c in concat:
        lines.append(f'  "{names[c]}" -> "c_{{k}}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


def rnn_genotype_dot(genotype) -> str:
    """Graphviz DOT text of a recurrent cell: node 0 from (x_t, h_{t-1}), node i+1 from
    its chosen predecessor, h_t the mean of the concat nodes."""
    lines = ["digraph recurrent {", "  rankdir=LR;", '  node [shape=box, style="rounded,filled"];',
             '  "x_{t}" [fillcolor=darkseagreen2]; "h_{t-1}" [fillcolor=darkseagreen2];',
             '  "h_{t}" [fillcolor=palegoldenrod];', '  "0" [fillcolor=lightblue];',
             '  "x_{t}" -> "0"; "h_{t-1}" -> "0";']
    for i, (op, j) in enumerate(genotype.recurrent):
        lines.append(f'  "{i + 1}" [fillcolor=lightblue];')
        lines.append(f'  "{j}" -> "{i + 1}" [label="{op}"];')
    for c in genotype.concat:
        lines.append(f'  "{c}" -> "h_{{t}}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


class CellDrawing(Callback):
    """The final cells as DOT files; PNG and SVG too when graphviz's ``dot`` is installed."""

    order = 40

    def __init__(self, save_dir: str, quiet: bool = False):
        self.save_dir = save_dir
        self.quiet = quiet

    def search_end(self, e):
        if not distributed.is_rank0():
            return
        genotype = final_genotype(e)
        if isinstance(genotype, str):
            texts = {"cell": nb201_dot(genotype)}
        elif hasattr(genotype, "normal"):
            texts = {kind: genotype_dot(genotype, kind) for kind in ("normal", "reduce")}
        else:
            texts = {"recurrent": rnn_genotype_dot(genotype)}
        dot = shutil.which("dot")
        if not dot and not self.quiet:
            cells = f"{', '.join(texts)} cell{'s' if len(texts) > 1 else ''}"
            print(f"info: {cells} written as DOT only: graphviz's dot is not installed "
                  f"(apt install graphviz, or conda install graphviz); then dot -Tpng "
                  f"{os.path.join(self.save_dir, next(iter(texts)))}.dot -o "
                  f"{os.path.join(self.save_dir, next(iter(texts)))}.png", file=sys.stderr)
        os.makedirs(self.save_dir, exist_ok=True)
        for kind, text in texts.items():
            path = os.path.join(self.save_dir, f"{kind}.dot")
            with open(path, "w") as f:
                f.write(text)
            if dot:
                for fmt in ("png", "svg"):
                    subprocess.run([dot, f"-T{fmt}", path, "-o", path[:-4] + "." + fmt], check=False)


def edge_names(kind: str, n_edges: int) -> list[str]:
    """'from -> to' for each alpha row: CNN cells (inputs c_{k-2}, c_{k-1}, nodes 0..3,
    node i has 2 + i edges) or the recurrent cell (node 0 from x and h, node i from 0..i-1)."""
    if kind == "nb201":  # NB201's rows: sorted "i<-j" keys
        from ..space import nb201

        keys = nb201.edge_keys(next(m for m in range(2, 64) if m * (m - 1) // 2 >= n_edges))
        return [f"{k.split('<-')[1]} -> {k.split('<-')[0]}" for k in keys][:n_edges]
    names, node = [], 0
    inputs = ["c_{k-2}", "c_{k-1}"] if kind in ("normal", "reduce") else []
    while len(names) < n_edges:
        preds = inputs + [str(j) for j in range(node + (0 if inputs else 1))]
        names += [f"{p} -> {node if inputs else node + 1}" for p in preds]
        node += 1
    return names[:n_edges]


class AlphaPlot(Callback):
    """<save>/alphas.png: softmax(alpha) as heatmaps of edges (rows) by ops (columns),
    one row of panels per cell kind at the first, middle and last epoch, all on one
    colour scale (0 to the largest probability) with the values written in the last
    panel and the leading op of each edge outlined.  One scale is the point: per-panel
    axes over 0.124..0.126 made noise look like a decision (needs matplotlib;
    otherwise one info line)."""

    order = 50

    def __init__(self, save_dir: str, quiet: bool = False):
        self.save_dir = save_dir
        self.quiet = quiet

    def search_end(self, e):
        if not distributed.is_rank0() or not e.history:
            return
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
            from matplotlib.patches import Rectangle
        except ImportError:
            if not self.quiet:
                print("info: alphas.png not written: matplotlib is not installed "
                      "(pip install matplotlib, or pip install 'fastdarts[viz]')", file=sys.stderr)
            return
        kinds = list(e.history[0]["alphas"])
        prims = (list(e.model.op_names) if getattr(e.model, "op_names", None) is not None
                 else G.PRIMITIVES if "normal" in kinds else G.RNN_PRIMITIVES)
        n = len(e.history)
        shown = sorted({0, n // 2, n - 1})  # first, middle and last epoch (fewer when short)
        series = {k: torch.tensor([r["alphas"][k] for r in e.history]) for k in kinds}  # [ep, edges, ops]
        top = max(float(s.max()) for s in series.values())
        n_edges = max(s.shape[1] for s in series.values())
        fig, axes = plt.subplots(len(kinds), len(shown), squeeze=False, layout="constrained",
                                 figsize=(3.4 * len(shown) + 1.2, 0.28 * n_edges * len(kinds) + 1.6))
        for r, kind in enumerate(kinds):
            names = edge_names(kind, series[kind].shape[1])
            for c, ep in enumerate(shown):
                ax = axes[r, c]
                grid = series[kind][ep]
                image = ax.imshow(grid.numpy(), vmin=0.0, vmax=top, cmap="viridis", aspect="auto")
                ax.set_xticks(range(len(prims)), prims, rotation=60, ha="right", fontsize=6)
                ax.set_yticks(range(len(names)), names if c == 0 else [""] * len(names), fontsize=6)
                ax.set_title(f"{kind}, epoch {e.history[ep]['epoch'] + 1}", fontsize=8)
                for edge, k in enumerate(grid.argmax(1).tolist()):
                    if float(grid[edge].max() - grid[edge].min()) < 1e-3:
                        continue  # a flat row has no leader to show
                    ax.add_patch(Rectangle((k - 0.5, edge - 0.5), 1, 1, fill=False, ec="red", lw=1))
                if ep == n - 1:
                    for (edge, k), p in zip(itertools.product(*map(range, grid.shape)), grid.flatten()):
                        ax.text(k, edge, f"{p:.2f}", ha="center", va="center", fontsize=4.5,
                                color="black" if p > 0.6 * top else "white")
        fig.colorbar(image, ax=axes, shrink=0.8, label=f"softmax(alpha); uniform = {1 / len(prims):.3f}")
        fig.suptitle("softmax(alpha): edges x ops, one colour scale (red: the leading op of each edge)",
                     fontsize=9)
        fig.savefig(os.path.join(self.save_dir, "alphas.png"), dpi=110, bbox_inches="tight")
        plt.close(fig)


# what each output is and how to look at it, for the summary a search ends with
_VIEW = {
    "genotype.json": "the final genotype; train it: fastdarts train {space} --arch {path}",
    "arch.txt": "the NAS-Bench-201 architecture string; look it up in the benchmark (nas_201_api)",
    "cell.png": "the NB201 cell (cell.svg, cell.dot alongside)",
    "genotypes.jsonl": "the genotype after each epoch, one JSON line each",
    "alphas.png": "softmax(alpha) of every edge over the epochs; open it in an image viewer",
    "normal.png": "the normal cell (normal.svg, normal.dot alongside)",
    "reduce.png": "the reduction cell (reduce.svg, reduce.dot alongside)",
    "recurrent.png": "the recurrent cell (recurrent.svg, recurrent.dot alongside)",
    "checkpoint.pt": "resume or extend: fastdarts search {space} --resume {path} --epochs N",
    "tb": "TensorBoard scalars: tensorboard --logdir {path}",
}


def summary(engine, save: str, space: str) -> str:
    """The lines a search ends with: steps and time per step, the final validation
    metric and how far softmax(alpha) moved from uniform, the genotype, and each output
    with what it is and how to view it (DOT cells without ``dot``: how to render them)."""
    history = engine.history
    run_epochs = [r for r in history if r["epoch"] >= engine.start_epoch]
    seconds = sum(r.get("seconds", 0.0) for r in run_epochs)
    done = max(len(run_epochs) * getattr(engine, "steps_per_epoch", 1), 1)
    lines = [f"summary: {len(history)} epochs x {getattr(engine, 'steps_per_epoch', '?')} steps, "
             f"{engine.wall_seconds:.1f} s wall; {seconds / done:.3f} s per step (validation included)"]
    if history:
        last = history[-1]
        metric = next((f"{k}={last[k]:.4f}" for k in ("valid_acc", "valid_ppl") if k in last), None)
        probs = [p for rows in last["alphas"].values() for row in rows for p in row]
        n_ops = len(next(iter(last["alphas"].values()))[0])
        if metric:
            classes = getattr(engine, "num_classes", None)
            chance = f" (chance {1 / classes:.2f})" if classes and "valid_acc" in last else ""
            name = getattr(getattr(engine, "model", None), "arch_weights_name", "softmax(alpha)")
            ref = f" (uniform {1 / n_ops:.3f})" if name == "softmax(alpha)" else ""
            lines.append(f"final {metric}{chance}; {name} spans {min(probs):.3f} to "
                         f"{max(probs):.3f}{ref}")
    lines.append(f"genotype = {engine.genotype}")
    lines.append(f"outputs in {save}/:")
    for name, text in _VIEW.items():
        path = os.path.join(save, name)
        if name == "genotype.json" and isinstance(getattr(engine, "genotype", None), str):
            text = "the final NAS-Bench-201 architecture string as JSON (key \"nb201\")"
        if os.path.exists(path):
            lines.append(f"  {path}: {text.format(space=space, path=path)}")
    dots = [n for n in ("normal.dot", "reduce.dot", "recurrent.dot", "cell.dot")
            if os.path.exists(os.path.join(save, n))
            and not os.path.exists(os.path.join(save, n[:-4] + ".png"))]
    if dots:
        first = os.path.join(save, dots[0])
        lines.append(f"  {', '.join(os.path.join(save, d) for d in dots)}: the cells as Graphviz DOT (no "
                     f"PNG: graphviz's dot is not installed; with it: dot -Tpng {first} -o "
                     f"{first[:-4]}.png)")
    return "\n".join(lines)
