"""Architect step and whole search step: reference vs fastdarts, eager vs captured.

GPU (the paper's shapes by default): C=16, 8 layers, batch 64, 32x32, 10 classes.
CPU (small shapes): python bench/bench_architect.py --device cpu --C 4 --layers 5
--batch 8 --hw 16.  Prints one row per path with the device, versions, median
ms, ratio to the reference, GPU-busy ms, kernels per step and peak memory.
"""

from __future__ import annotations

import argparse
import copy
import sys

import torch
import torch.nn as nn

sys.path.insert(0, __file__.rsplit("/", 2)[0])
import fastdarts  # noqa: E402
from bench.common import (  # noqa: E402
    CNN_ARCH_ARGS,
    add_search_shape_args,
    device_name,
    dump_json,
    gpu_busy,
    peak_mib,
    print_table,
    time_ms,
    versions,
)
from fastdarts.reference import cnn  # noqa: E402

ARGS = CNN_ARCH_ARGS


def main(argv=None):
    ap = argparse.ArgumentParser()
    add_search_shape_args(ap)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--fused-model", action="store_true", help="use fastdarts.nn.Network for the fused rows")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    dev = torch.device(a.device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    base = cnn.Network(a.C, 10, a.layers, nn.CrossEntropyLoss()).to(dev)
    x = torch.randn(a.batch, 3, a.hw, a.hw, device=dev)
    y = torch.randint(0, 10, (a.batch,), device=dev)
    xv = torch.randn_like(x)
    yv = torch.randint(0, 10, (a.batch,), device=dev)

    def setup(fused, capturable=False, model_cls=None):
        model = copy.deepcopy(base)
        if model_cls is not None:
            m2 = model_cls(a.C, 10, a.layers, nn.CrossEntropyLoss()).to(dev)
            m2.load_state_dict(model.state_dict())
            for p, q in zip(m2.arch_parameters(), model.arch_parameters()):
                p.data.copy_(q.data)
            model = m2
        opt = torch.optim.SGD(model.parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
        model._loss(x, y).backward()
        opt.step()
        opt.zero_grad()
        arch = (fastdarts.Architect(model, ARGS, capturable=capturable) if fused
                else cnn.Architect(model, ARGS))
        return model, opt, arch

    rows = []
    common = {"device": device_name(dev), "versions": versions(),
              "shape": f"C={a.C} L={a.layers} B={a.batch} {a.hw}x{a.hw}"}
    fused_cls = None
    if a.fused_model:
        from fastdarts.nn import Network as fused_cls  # noqa: N813
    for unrolled in (True, False):
        order = "2nd" if unrolled else "1st"
        m_ref, o_ref, a_ref = setup(False)
        m_f, o_f, a_f = setup(True, model_cls=fused_cls)

        def ref_arch():
            a_ref.step(x, y, xv, yv, 0.025, o_ref, unrolled)

        def fused_arch():
            a_f.step(x, y, xv, yv, 0.025, o_f, unrolled)

        base_t = None
        for name, fn in (("reference Architect", ref_arch),
                         ("fastdarts Architect", fused_arch)):
            t = time_ms(fn, dev, reps=a.reps)
            base_t = base_t or t["median_ms"]
            rows.append({**common, "what": f"architect step {order}", "path": name, **t,
                         "ratio_vs_ref": base_t / t["median_ms"], **gpu_busy(fn, dev),
                         "peak_MiB": peak_mib(fn, dev)})
        # whole search step: eager reference loop, fastdarts eager, fastdarts captured
        m_e, o_e, a_e = setup(True, model_cls=fused_cls)
        steps = [("fastdarts eager", fastdarts.SearchStep(m_e, a_e, o_e, unrolled=unrolled,
                                                          fused_weight_step=True))]
        if dev.type == "cuda":
            m_g, o_g, a_g = setup(True, capturable=True, model_cls=fused_cls)
            steps.append(("fastdarts captured",
                          fastdarts.SearchStep(m_g, a_g, o_g, unrolled=unrolled, cuda_graph=True)))

        def ref_step():
            a_ref.step(x, y, xv, yv, 0.025, o_ref, unrolled)
            o_ref.zero_grad()
            loss = m_ref._loss(x, y)
            loss.backward()
            nn.utils.clip_grad_norm_(m_ref.parameters(), 5.0)
            o_ref.step()

        t = time_ms(ref_step, dev, reps=a.reps)
        base_t = t["median_ms"]
        rows.append({**common, "what": f"search step {order}", "path": "reference loop", **t,
                     "ratio_vs_ref": 1.0, **gpu_busy(ref_step, dev), "peak_MiB": peak_mib(ref_step, dev)})
        for name, step in steps:
            def fn(step=step):
                step(x, y, xv, yv, 0.025)
            t = time_ms(fn, dev, reps=a.reps)
            rows.append({**common, "what": f"search step {order}", "path": name, **t,
                         "ratio_vs_ref": base_t / t["median_ms"], **gpu_busy(fn, dev),
                         "peak_MiB": peak_mib(fn, dev)})
    print(f"# {common['device']} | {common['versions']} | {common['shape']}")
    print_table(rows, ["what", "path", "median_ms", "q1_ms", "q3_ms", "ratio_vs_ref", "gpu_busy_ms",
                       "kernels", "peak_MiB"])
    dump_json(rows, a.json)


if __name__ == "__main__":
    main()
