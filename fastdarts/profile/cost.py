"""SearchCost: what a running search costs, in device-hours, as it goes.

    from fastdarts.profile import SearchCost
    engine = search_cnn(cfg, callbacks=[SearchCost()])
    engine.search_cost   # {"device_hours": ..., "device_days": ..., "unit": "GPU", ...}

Per epoch (rank 0 prints)::

    cost: epoch 3/50 0.0153 GPU-hours so far, projected 0.255 GPU-hours (0.0106 GPU-days), ETA 1:02:10

and at the end::

    search cost: 0.061 GPU-days on NVIDIA H100 80GB HBM3 (1.46 GPU-hours, 1 process)

Cost is wall-clock time x the number of processes (torch.distributed world size,
1 without it): the device-time a search holds, which is what GPU-days count.
Nothing runs per batch; at each epoch end one ``synchronize`` (CUDA) makes the
clock reading include the epoch's queued work (validation has synchronised there
already).  The projection is elapsed / epochs done x epochs of this run; a
resumed search counts from its resume (earlier runs' cost is not in the
checkpoint).
"""

from __future__ import annotations

import datetime
import sys
import time

import torch

from .. import distributed
from ..loop.engine import Callback
from .profiler import device_name


class SearchCost(Callback):
    """Device-hours so far, the projected total and the ETA at each epoch end; a final
    ``search cost:`` line.  ``clock``: seconds (default ``time.perf_counter``; tests pass
    a fake one); ``stream``: where lines go (default stdout); ``quiet``: print nothing
    (``engine.search_cost`` and ``self.rows`` are still filled)."""

    order = 25  # after Logger (20): the cost line follows the epoch's log line

    def __init__(self, *, clock=None, stream=None, quiet: bool = False):
        self.clock = clock or time.perf_counter
        self.stream = stream
        self.quiet = quiet
        self.rows: list[dict] = []
        self.result: dict | None = None

    def _print(self, msg: str) -> None:
        if not self.quiet and distributed.is_rank0():
            print(msg, file=self.stream or sys.stdout, flush=True)

    def _now(self, e) -> float:
        if e.device.type == "cuda":
            torch.cuda.synchronize(e.device)
        return self.clock()

    def search_begin(self, e):
        self.unit = "GPU" if e.device.type == "cuda" else "CPU"
        self.device = device_name(e.device)
        self.world = distributed.world()[1]
        self.first_epoch = int(e.start_epoch)
        self.t0 = self._now(e)

    def _hours(self, seconds: float) -> float:
        return seconds * self.world / 3600.0

    def epoch_end(self, e):
        elapsed = self._now(e) - self.t0
        done = e.epoch - self.first_epoch + 1
        total_epochs = e.epochs - self.first_epoch
        per_epoch = elapsed / max(done, 1)
        eta = per_epoch * max(total_epochs - done, 0)
        row = {"epoch": e.epoch, "seconds": elapsed, "device_hours": self._hours(elapsed),
               "projected_device_hours": self._hours(per_epoch * total_epochs), "eta_seconds": eta}
        self.rows.append(row)
        u = self.unit
        self._print(f"cost: epoch {e.epoch + 1}/{e.epochs} {row['device_hours']:.3g} {u}-hours so far, "
                    f"projected {row['projected_device_hours']:.3g} {u}-hours "
                    f"({row['projected_device_hours'] / 24:.3g} {u}-days), "
                    f"ETA {datetime.timedelta(seconds=round(eta))}")

    def search_end(self, e):
        elapsed = self._now(e) - self.t0
        hours = self._hours(elapsed)
        self.result = {"seconds": elapsed, "device_hours": hours, "device_days": hours / 24,
                       "unit": self.unit, "device": self.device, "world_size": self.world,
                       "epochs": len(self.rows)}
        e.search_cost = self.result
        procs = f"{self.world} process{'es' if self.world > 1 else ''}"
        self._print(f"search cost: {hours / 24:.3g} {self.unit}-days on {self.device} "
                    f"({hours:.3g} {self.unit}-hours, {procs})")
