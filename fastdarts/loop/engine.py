"""A small search engine with events and callbacks (the fastai pattern, no fastai).

The engine owns the loop and the state; everything the original train_search.py
does inline (the architecture update, the learning-rate schedule, gradient
clipping, validation, logging, checkpointing) is a :class:`Callback`, so a user
adds behaviour without touching the loop::

    class PrintLoss(Callback):
        def batch_end(self, e):
            if e.step % 100 == 0:
                print(e.loss.item())

    search = CNNSearch(..., callbacks=[PrintLoss()])

Events, in order: ``search_begin``, per epoch ``epoch_begin``, per batch
``batch_begin``, ``after_arch_step``, ``after_backward``, ``after_weight_step``,
``batch_end``, then ``epoch_end``, and finally ``search_end``.  A callback may
raise :class:`CancelBatch`, :class:`CancelEpoch` or :class:`CancelSearch`, or set
``engine.stop = True`` to end the search after the current batch (``epoch_end``
and ``search_end`` still fire).  Callbacks run in ascending ``order`` (stable:
equal orders keep the order they were given in).

State a callback may read: ``epoch``, ``step`` (batch index in the epoch),
``global_step``, ``batch``, ``loss``/``logits`` (after the weight step),
``metrics`` (this epoch's), ``history`` (one dict per finished epoch), ``stop``;
subclasses add the model, optimizers and loaders.
"""

from __future__ import annotations

EVENTS = ("search_begin", "epoch_begin", "batch_begin", "after_arch_step", "after_backward",
          "after_weight_step", "batch_end", "epoch_end", "search_end")


class CancelBatch(Exception):
    """Skip the rest of this batch."""


class CancelEpoch(Exception):
    """Skip the rest of this epoch (epoch_end still fires)."""


class CancelSearch(Exception):
    """Stop the search (search_end still fires)."""


class Callback:
    order = 0

    def __call__(self, event: str, engine) -> None:
        handler = getattr(self, event, None)
        if handler is not None:
            handler(engine)


class Engine:
    """The loop: ``run()`` goes over epochs ``start_epoch..epochs-1`` and the batches
    of ``train_batches()``; subclasses implement ``one_batch``."""

    def __init__(self, epochs: int, callbacks=()):
        self.epochs = int(epochs)
        self.callbacks = sorted(callbacks, key=lambda c: getattr(c, "order", 0))
        self.epoch = 0
        self.start_epoch = 0
        self.step = 0          # batches done in this epoch
        self.global_step = 0   # batches done in the whole search
        self.history: list[dict] = []
        self.metrics: dict = {}
        self.batch = None
        self.loss = None
        self.stop = False      # set by a callback: end the search after this batch
        self.stopped = False   # True when the search ended early (stop or CancelSearch)
        self.epoch_complete = True

    def add_callback(self, cb: Callback) -> None:
        self.callbacks = sorted([*self.callbacks, cb], key=lambda c: getattr(c, "order", 0))

    def get_callback(self, cls):
        return next((c for c in self.callbacks if isinstance(c, cls)), None)

    def remove_callback(self, cb: Callback) -> None:
        self.callbacks = [c for c in self.callbacks if c is not cb]

    def fire(self, event: str) -> None:
        for cb in self.callbacks:
            cb(event, self)

    def train_batches(self):
        raise NotImplementedError

    def one_batch(self, batch) -> None:
        raise NotImplementedError

    def run(self):
        self.fire("search_begin")
        try:
            for epoch in range(self.start_epoch, self.epochs):
                self.epoch = epoch
                self.step = 0
                self.metrics = {}
                self.epoch_complete = True  # False when ``stop`` ends the epoch early
                self.fire("epoch_begin")
                try:
                    for batch in self.train_batches():
                        self.batch = batch
                        try:
                            self.fire("batch_begin")
                            self.one_batch(batch)
                            self.fire("batch_end")
                        except CancelBatch:
                            pass
                        self.step += 1
                        self.global_step += 1
                        if self.stop:
                            self.epoch_complete = False
                            break
                except CancelEpoch:
                    pass
                self.fire("epoch_end")
                if self.stop:
                    raise CancelSearch
        except CancelSearch:
            self.stopped = True
        except KeyboardInterrupt as exc:
            # the command line turns Ctrl-C into one line saying where the run stopped;
            # it needs the engine, which only this frame holds
            exc.engine = self
            self.stopped = True
            raise
        self.fire("search_end")
        return self
