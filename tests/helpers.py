"""Small builders shared by the tests: tiny search models and their arguments."""

from __future__ import annotations

import os
import pickle
import shlex
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from fastdarts.data import DeviceLoader, ImageData, search_split
from fastdarts.loop import callbacks as loop_cb
from fastdarts.loop.engine import Callback, CancelSearch
from fastdarts.loop.state import seed_everything
from fastdarts.reference import cnn, rnn
from fastdarts.search import callbacks as cb
from fastdarts.search import outputs
from fastdarts.search.checkpoint import Checkpoint
from fastdarts.search.cnn import CNNSearch
from fastdarts.search.models import model_classes


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is faster, and immune to a busy machine (measured on
    2 shared cores: a depthwise conv 0.3 ms on 1 thread, 35 ms on 2; a profiled step
    0.4 s vs 30 s).  Autouse in every module that imports it."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class StopAfter(Callback):
    """Cancel the search/training after ``epochs`` epochs, after that epoch's checkpoint."""

    order = 100

    def __init__(self, epochs):
        self.epochs = epochs

    def epoch_end(self, e):
        if e.epoch + 1 == self.epochs:
            raise CancelSearch


def cnn_args(**kw):
    base = dict(momentum=0.9, weight_decay=3e-4, arch_learning_rate=3e-4, arch_weight_decay=1e-3)
    base.update(kw)
    return SimpleNamespace(**base)


def rnn_args(**kw):
    base = dict(wdecay=5e-7, clip=0.25, arch_lr=3e-3, arch_wdecay=1e-3)
    base.update(kw)
    return SimpleNamespace(**base)


def tiny_cnn(seed=0, C=2, layers=3, num_classes=3, dtype=torch.float64):
    torch.manual_seed(seed)
    model = cnn.Network(C, num_classes, layers, nn.CrossEntropyLoss()).to(dtype)
    with torch.no_grad():  # alphas away from uniform so every term of the gradient matters
        for a in model.arch_parameters():
            a.normal_(0, 0.5)
    return model


def cnn_batch(seed, n=4, hw=8, num_classes=3, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, hw, hw, generator=g, dtype=dtype)
    y = torch.randint(0, num_classes, (n,), generator=g)
    return x, y


def tiny_rnn(seed=0, ntoken=20, nhid=6, dropout=0.0, dtype=torch.float64):
    torch.manual_seed(seed)
    model = rnn.RNNModelSearch(ntoken, nhid, nhid, nhid, dropout, dropout, dropout, dropout,
                               dropout).to(dtype)
    with torch.no_grad():
        model.weights.normal_(0, 0.5)
    return model


def rnn_batch(seed, T=4, B=3, ntoken=20, nhid=6, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, ntoken, (T, B), generator=g)
    y = torch.randint(0, ntoken, (T * B,), generator=g)
    h = [0.1 * torch.randn(1, B, nhid, generator=g, dtype=dtype)]
    return h, x, y


def snapshot(model):
    """Every weight and buffer, cloned (to check bit-exact restores)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def smooth_(model):
    """Swap ReLU for Softplus and max-pool for avg-pool, in place.

    The finite-difference Hessian-vector product of DARTS differentiates the
    gradient along R v; in a ReLU/max-pool net a step of R crosses kinks unless R
    is tiny, and then the O(R^2) shrinking cannot be seen before round-off.  The
    smooth twin keeps the Architect's arithmetic identical and makes the
    truncation error visible.
    """
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(parent, name, nn.Softplus(beta=2.0))
            elif isinstance(child, nn.MaxPool2d):
                setattr(parent, name, nn.AvgPool2d(3, stride=child.stride, padding=1,
                                                   count_include_pad=False))
    return model


# -- tiny CNN searches on random images (engine, callbacks, checkpoints) ---------------
ARGS = dict(momentum=0.9, weight_decay=3e-4, arch_learning_rate=3e-4, arch_weight_decay=1e-3)


def tiny_data(n: int = 64, size: int = 8, num_classes: int = 3, seed: int = 0) -> ImageData:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    return ImageData(images, labels, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), num_classes, "tiny")


def tiny_parts(seed: int = 2, impl: str = "reference", C: int = 2, layers: int = 3, batch: int = 8,
               num_classes: int = 3, n: int = 64):
    """(model, architect, optimizer, train loader, valid loader, eval loader), seeded."""
    seed_everything(seed)
    w_half, a_half = search_split(tiny_data(n=n, num_classes=num_classes), 0.5)
    train = DeviceLoader(w_half, batch, "cpu", augment=True, seed=seed)
    valid = DeviceLoader(a_half, batch, "cpu", augment=True, seed=seed + 1)
    evaluate = DeviceLoader(a_half, 64, "cpu", augment=False, shuffle=False)
    Network, Architect = model_classes("cnn", impl)
    model = Network(C, num_classes, layers, nn.CrossEntropyLoss())
    optimizer = torch.optim.SGD(model.parameters(), 0.025, momentum=0.9, weight_decay=3e-4)
    architect = Architect(model, SimpleNamespace(**ARGS))
    return model, architect, optimizer, train, valid, evaluate


def tiny_engine(save=None, *, epochs: int = 2, unrolled: bool = False, impl: str = "reference",
                callbacks=(), standard: bool = True, max_steps=None, grad_clip: float = 5.0, **kw):
    """A CNNSearch with the standard callbacks (those of build()) plus ``callbacks``."""
    model, architect, optimizer, train, valid, evaluate = tiny_parts(impl=impl, **kw)
    cbs = [loop_cb.CosineLR(0.025, 0.001, epochs), cb.ArchitectureUpdate(), loop_cb.GradClip(grad_clip)]
    if standard:
        cbs += [loop_cb.TrainMetrics(), loop_cb.Validation(evaluate), cb.Logger(quiet=True)]
    if save is not None:
        cbs += [outputs.GenotypeLog(str(save)), outputs.CellDrawing(str(save)), Checkpoint(str(save))]
    engine = CNNSearch(model, architect, optimizer, train, valid, epochs=epochs, unrolled=unrolled,
                       device="cpu", callbacks=[*cbs, *callbacks], lr=0.025, max_steps_per_epoch=max_steps)
    engine.config_key = {"impl": impl, "unrolled": unrolled, "C": kw.get("C", 2),
                         "layers": kw.get("layers", 3)}
    return engine


def params_equal(m1, m2) -> bool:
    """Weights, buffers (BatchNorm running statistics) and alphas all bitwise equal."""
    s1, s2 = m1.state_dict(), m2.state_dict()
    return (s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)
            and all(torch.equal(a, b) for a, b in zip(m1.arch_parameters(), m2.arch_parameters())))


BATCH_EVENTS = ["batch_begin", "after_arch_step", "after_backward", "after_weight_step", "batch_end"]


class Recorder(Callback):
    order = -1000  # first: sees every event before anything can cancel

    def __init__(self):
        self.events = []

    def __call__(self, event, engine):
        self.events.append((event, engine.epoch, engine.step))


# -- the float64 oracle of one RNN search-cell node (fastdarts::rnn_node, rnn_node_bn) ----
RNN_PRIMITIVES = ["none", "tanh", "relu", "sigmoid", "identity"]
RNN_ACTS = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid, "identity": lambda x: x}


def oracle(ch, states, probs):
    """The reference cell's node in float64: ch [n, B, 2H], states [n, B, H], probs [n, 5]."""
    H = states.shape[-1]
    c, h = torch.split(ch, H, dim=-1)
    c = c.sigmoid()
    s = torch.zeros_like(states[0])
    for k, name in enumerate(RNN_PRIMITIVES):
        if name == "none":
            continue
        unweighted = states + c * (RNN_ACTS[name](h) - states)
        s = s + torch.sum(probs[:, k].unsqueeze(-1).unsqueeze(-1) * unweighted, dim=0)
    return s


def make_inputs(n, B, H, dtype, device="cpu", seed=0, layout="contiguous"):
    """Fresh random ch, states, grad (in ``dtype``) and softmax probs."""
    g = torch.Generator().manual_seed(seed)
    if layout == "noncontiguous":
        # ch: every other column of a wider tensor; states: a transposed buffer.
        ch = torch.randn(n, B, 4 * H, generator=g)[..., ::2]
        states = torch.randn(n, H, B, generator=g).transpose(1, 2)
    else:
        ch = torch.randn(n, B, 2 * H, generator=g)
        states = torch.randn(n, B, H, generator=g)
    # .to keeps the strides (a view stays a strided tensor); 1.5: h spans relu's kink
    # and tanh's tails.
    ch = ch.to(device=device, dtype=dtype).mul_(1.5)
    states = states.to(device=device, dtype=dtype)
    # float64 probs with float64 inputs (a float64 model); float32 otherwise (alpha stays
    # float32 under bfloat16 autocast).
    probs_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    probs = torch.randn(n, 5, generator=g).softmax(-1).to(device, probs_dtype)
    grad = torch.randn(B, H, generator=g).to(device=device, dtype=dtype)
    return ch, states, probs, grad


def assert_close(actual, expected, rtol, atol, what):
    err = (actual.double() - expected).abs()
    bound = atol + rtol * (expected.abs() + expected.abs().max())
    bad = err > bound
    worst = (err - bound).argmax()
    assert not bad.any(), (f"{what}: {int(bad.sum())} of {bad.numel()} elements off; worst error "
                           f"{err.flatten()[worst].item():.3g} vs bound "
                           f"{bound.flatten()[worst].item():.3g}")


ARCH_NAMES = ("alphas_normal", "alphas_reduce", "betas_normal", "betas_reduce")  # PC-DARTS: all 4


def cnn_loss_and_grads(model, x, y):
    """(logits, loss, {name: grad}) of one forward and backward of a CNN search model,
    from zeroed gradients; its arch parameters' gradients under ARCH_NAMES ('alphas_normal',
    'alphas_reduce', and PC-DARTS' 'betas_normal', 'betas_reduce')."""
    model.zero_grad()
    params = model.arch_parameters()
    for a in params:
        a.grad = None
    logits = model(x)
    loss = model._criterion(logits, y)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    for n, a in zip(ARCH_NAMES[:len(params)], params, strict=True):
        grads[n] = a.grad.clone()
    return logits, loss, grads


@pytest.fixture(scope="module")
def one_thread_per_module():
    """Tiny shapes gain nothing from intra-op threads, and on a loaded 2-core machine
    OpenMP barriers stall (7 s instead of 1 s per model test); restored afterwards.
    Module-scoped: a module opts in with an autouse fixture that requests it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- files from an attacker

class RunsCode:
    """Unpickled in full, it runs a shell command that creates ``marker``: what an
    attacker puts in a shared checkpoint or batch file.  A loader that refuses it
    leaves no marker."""

    def __init__(self, marker):
        self.marker = os.fspath(marker)

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.marker)}",)


FORMS = ("zip", "legacy", "pickle")  # torch.save's format, its pre-1.6 format, a bare pickle


def malicious_checkpoint(path, marker, form: str = "zip", fmt: str = "fastdarts-search-checkpoint-v1"):
    """A file that looks like a fastdarts checkpoint (format tag, a weight) but whose
    RNG state runs a shell command when unpickled, in one of :data:`FORMS`."""
    obj = {"format": fmt, "model": {"w": torch.zeros(2)}, "rng": RunsCode(marker)}
    if form == "pickle":
        with open(path, "wb") as f:
            pickle.dump(obj, f)
    else:
        torch.save(obj, path, _use_new_zipfile_serialization=form == "zip")
    return os.fspath(path)


def assert_refused_in_one_line(message: str, path, marker) -> str:
    """``message`` is one line that names the file and the call it refused (os.system:
    posix.system, nt.system on Windows), and no code ran (no marker)."""
    lines = message.strip().splitlines()
    assert len(lines) == 1, message
    assert os.fspath(path) in lines[0] and "system" in lines[0], lines[0]
    assert not os.path.exists(marker), "the file's code ran"
    return lines[0]


# -- ranks of the data-parallel tests --------------------------------------------------
# Each spawned rank is a fresh interpreter that imports torch, torch._dynamo (the first
# optimizer imports it) and fastdarts again: about 6 s of CPU before its first step on
# the 2-core CI machine (measured 2026-12-01, torch 2.13.0+cpu), and these tests start
# 17 ranks.  A forkserver imports them once per pytest worker and forks each rank from
# that single-threaded server, which is as safe as spawning; the ranks still share
# nothing but the imported modules.
RANK_PRELOAD = ["torch", "torch._dynamo", "torch.distributed", "fastdarts", "fastdarts.distributed",
                "tests.helpers"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the ranks' MASTER_PORT)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_context(preload=()):
    """The forkserver context the ranks start from, its server importing ``RANK_PRELOAD``
    and ``preload`` (the test module holding the rank's function) once."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([*RANK_PRELOAD, *preload])
    return ctx


def start_ranks(fn, args, nprocs: int, preload=()):
    """torch.multiprocessing.start_processes(fn, args, nprocs) from :func:`rank_context`.
    Raises, as start_processes does, when a rank fails."""
    import torch.multiprocessing as mp

    rank_context(preload)  # start_processes takes the same (process-wide) forkserver context
    return mp.start_processes(fn, args=args, nprocs=nprocs, start_method="forkserver")


def _cli_rank(rank: int, argv: list, world: int, port: int, out_dir: str) -> None:
    import contextlib
    import sys

    from fastdarts import cli

    # what torchrun gives each worker (torch.distributed.run, a single node)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), GROUP_RANK="0", ROLE_RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world), ROLE_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)  # a fresh process would take OMP_NUM_THREADS; a forked one has begun
    with open(os.path.join(out_dir, f"stdout{rank}.txt"), "w") as out, \
            contextlib.redirect_stdout(out):
        code = cli.main(list(argv))
        sys.stdout.flush()
    if code:
        raise SystemExit(code)


def cli_ranks(argv: list, world: int, out_dir) -> str:
    """``torchrun --nproc_per_node=world -m fastdarts *argv`` with the ranks forked from the
    preloaded forkserver (:func:`start_ranks`) instead of fresh interpreters: each rank
    gets torchrun's environment and runs ``fastdarts.cli.main(argv)``.  Returns what the
    ranks printed, rank 0 first.  The tests that check the launcher itself still go
    through torchrun."""
    os.makedirs(out_dir, exist_ok=True)
    start_ranks(_cli_rank, (list(argv), world, free_port(), str(out_dir)), world)
    return "".join(open(os.path.join(out_dir, f"stdout{r}.txt")).read() for r in range(world))
