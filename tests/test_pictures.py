"""The pictures a new user gets (issue 17): alphas.png on one colour scale, the cost
bar chart's legend off the bars, and one line when graphviz's dot is missing."""

from __future__ import annotations

import types

import pytest

from fastdarts.profile import PHASES, write_png
from fastdarts.search import outputs
from fastdarts.space import genotypes as G


@pytest.fixture
def figures(monkeypatch):
    """The matplotlib figures a call saves, kept open for inspection."""
    plt = pytest.importorskip("matplotlib.pyplot")
    kept = []
    monkeypatch.setattr(plt, "close", lambda fig=None: kept.append(fig))
    yield kept
    monkeypatch.undo()
    plt.close("all")


def _history(epochs: int = 3):
    rows = []
    for ep in range(epochs):
        normal = [[0.125] * 8 for _ in range(14)]
        normal[2] = [0.05] * 7 + [0.65]  # edge 2: dil_conv_5x5 leads, clearly
        normal[2][7] = 0.125 + ep * 0.2
        rows.append({"epoch": ep, "alphas": {"normal": normal, "reduce": [[0.125] * 8] * 14}})
    return rows


def test_alphas_png_is_a_heatmap_on_one_scale(tmp_path, figures):
    e = types.SimpleNamespace(history=_history())
    outputs.AlphaPlot(str(tmp_path)).search_end(e)
    assert (tmp_path / "alphas.png").read_bytes()[:4] == b"\x89PNG"
    (fig,) = figures
    images = [im for ax in fig.axes for im in ax.images]
    assert len(images) == 2 * 3  # normal and reduce x first, middle, last epoch
    clims = {im.get_clim() for im in images}
    assert len(clims) == 1 and clims.pop() == (0.0, pytest.approx(0.525))  # one scale, from 0
    last_normal = fig.axes[2]
    boxes = [(p.get_x() + 0.5, p.get_y() + 0.5) for p in last_normal.patches]
    assert (G.PRIMITIVES.index("dil_conv_5x5"), 2) in boxes  # the leading op is outlined
    assert len(last_normal.texts) == 14 * 8  # values written in the last epoch's panel


def test_cost_png_legend_covers_no_bar(tmp_path, figures):
    rows = [{"name": n, "phases": {p: {"median_ms": 10.0 + i} for i, p in enumerate(PHASES)}}
            for n in ("reference", "fused")]
    report = {"variants": rows, "space": "cnn", "order": "first", "device": {"name": "CPU"}}
    assert write_png(report, str(tmp_path / "cost.png"))
    (fig,) = figures
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (ax,) = fig.axes
    legend = ax.get_legend().get_window_extent(renderer)
    for bar in ax.patches:
        assert not legend.overlaps(bar.get_window_extent(renderer))


def test_missing_dot_is_said_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(outputs.shutil, "which", lambda name: None)
    e = types.SimpleNamespace(model=types.SimpleNamespace(genotype=lambda: G.DARTS_V2))
    outputs.CellDrawing(str(tmp_path)).search_end(e)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "graphviz's dot is not installed" in err[0] and "dot -Tpng" in err[0]
    assert (tmp_path / "normal.dot").exists() and not (tmp_path / "normal.png").exists()
    outputs.CellDrawing(str(tmp_path), quiet=True).search_end(e)
    assert capsys.readouterr().err == ""
