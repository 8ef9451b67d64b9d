"""``fastdarts train cnn|rnn``: train a genotype from scratch, with the original
train.py flags and defaults (plugged into fastdarts.cli through PLUGINS).

Data parallel: ``torchrun --nproc_per_node=N -m fastdarts train cnn|rnn ...`` (N
ranks, --batch_size per rank, gradients averaged; rank 0 prints and writes)."""

from __future__ import annotations

import argparse
import os


def _cnn_parser(sub):
    p = sub.add_parser("cnn", help="train a CNN genotype (CIFAR-10, or the embedded digits without --data)",
                       description="The original cnn/train.py. The paper's run: --data DIR (auxiliary "
                       "head and cutout are on by default; --no-auxiliary / --no-cutout turn them off).")
    p.add_argument("--genotype", "--arch", dest="genotype", default="DARTS_V2",
                   help="published name (DARTS_V1, DARTS_V2, DARTS) or a genotype JSON file")
    p.add_argument("--data", default=None, help="CIFAR-10 root (holding cifar-10-batches-py)")
    p.add_argument("--batch_size", type=int, default=None, help="96 (96 on the embedded default)")
    p.add_argument("--learning_rate", type=float, default=0.025)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight_decay", type=float, default=3e-4)
    p.add_argument("--report_freq", type=int, default=50, help="unused (one line per epoch)")
    p.add_argument("--gpu", type=int, default=None, help="GPU index (the original's flag)")
    p.add_argument("--epochs", type=int, default=None, help="600 (3 on the embedded default)")
    p.add_argument("--init_channels", type=int, default=None, help="36 (8 on the embedded default)")
    p.add_argument("--layers", type=int, default=None, help="20 (5 on the embedded default)")
    p.add_argument("--model_path", default="saved_models", help="unused (the original's flag)")
    p.add_argument("--auxiliary", action=argparse.BooleanOptionalAction, default=None,
                   help="auxiliary tower (default on; off on the embedded 16x16 digits, where "
                        "--auxiliary loads them at 32x32)")
    p.add_argument("--auxiliary_weight", type=float, default=0.4)
    p.add_argument("--cutout", action=argparse.BooleanOptionalAction, default=True,
                   help="Cutout augmentation (default on)")
    p.add_argument("--cutout_length", type=int, default=None, help="16 (8 on the embedded default)")
    p.add_argument("--drop_path_prob", type=float, default=0.2)
    p.add_argument("--save", default="eval-cnn", help="output directory (checkpoint.pt)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grad_clip", type=float, default=5.0)
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    p.add_argument("--channels_last", action="store_true")
    p.add_argument("--resume", default=None, help="checkpoint.pt to resume from")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    p.add_argument("--max_steps_per_epoch", type=int, default=None, help="cut epochs short")
    p.add_argument("--quiet", action="store_true")
    return p


def _rank(device: str | None) -> int:
    """Join torchrun's process group when launched by it; this process's rank."""
    from .common import pick_device, setup_distributed

    return setup_distributed(pick_device(device))[1]


def run_train_cnn(a) -> int:
    from ..space import genotypes as G
    from .cnn import DIGITS_DEFAULTS, CNNTrainConfig, train_cnn

    G.resolve(a.genotype, "cnn")  # a bad name or file fails before any work
    small = a.data is None
    defaults = {"batch_size": 96, "epochs": 600, "init_channels": 36, "layers": 20, "auxiliary": True,
                "cutout_length": 16}
    if small:
        defaults.update(DIGITS_DEFAULTS)
    chosen = {k: getattr(a, k) if getattr(a, k) is not None else v for k, v in defaults.items()}
    cfg = CNNTrainConfig(
        genotype=a.genotype, data=a.data, learning_rate=a.learning_rate, momentum=a.momentum,
        weight_decay=a.weight_decay, auxiliary_weight=a.auxiliary_weight, cutout=a.cutout,
        drop_path_prob=a.drop_path_prob, save=a.save, seed=a.seed, grad_clip=a.grad_clip, bf16=a.bf16,
        channels_last=a.channels_last, resume=a.resume, quiet=a.quiet,
        device=a.device if a.device else (f"cuda:{a.gpu}" if a.gpu is not None else None),
        max_steps_per_epoch=a.max_steps_per_epoch, **chosen)
    rank = _rank(cfg.device)
    if small and not a.quiet and rank == 0:
        size = 32 if cfg.auxiliary else 16
        print(f"no --data given: training on the embedded default (scikit-learn digits, {size}x{size}, "
              f"80% train / 20% held out) with C={cfg.init_channels}, {cfg.layers} layers, batch "
              f"{cfg.batch_size}, {cfg.epochs} epochs, auxiliary {'on' if cfg.auxiliary else 'off'}")
    engine = train_cnn(cfg)
    if rank != 0:  # the ranks are checked identical at every epoch end; rank 0 reports
        return 0
    last = engine.history[-1] if engine.history else {}
    print(f"param size = {engine.params_M:.6f} MB; final test_acc "
          f"{100 * last.get('test_acc', float('nan')):.2f}%; wall time {engine.wall_seconds:.1f} s")
    print(f"checkpoint: {os.path.join(cfg.save, 'checkpoint.pt')} "
          f"(fastdarts test cnn --checkpoint {os.path.join(cfg.save, 'checkpoint.pt')})")
    return 0


def _rnn_parser(sub):
    p = sub.add_parser("rnn", help="train a recurrent genotype (PTB, or Python's help texts without --data)",
                       description="The original rnn/train.py.")
    p.add_argument("--genotype", "--arch", dest="genotype", default="DARTS_V2",
                   help="published name (DARTS_V1, DARTS_V2, DARTS) or a genotype JSON file")
    p.add_argument("--data", default=None, help="directory with ptb.train.txt, ptb.valid.txt, ptb.test.txt")
    for name, default, small in (("emsize", 850, 32), ("nhid", 850, 32), ("nhidlast", 850, 32),
                                 ("epochs", 8000, 3), ("batch_size", 64, 32), ("bptt", 35, 20)):
        p.add_argument(f"--{name}", type=int, default=None,
                       help=f"{default} ({small} on the embedded default)")
    p.add_argument("--lr", type=float, default=20.0)
    p.add_argument("--clip", type=float, default=0.25)
    p.add_argument("--dropout", type=float, default=0.75)
    p.add_argument("--dropouth", type=float, default=0.25)
    p.add_argument("--dropoutx", type=float, default=0.75)
    p.add_argument("--dropouti", type=float, default=0.2)
    p.add_argument("--dropoute", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=1267)
    p.add_argument("--nonmono", type=int, default=5)
    p.add_argument("--log-interval", dest="log_interval", type=int, default=200)
    p.add_argument("--save", default="eval-rnn", help="output directory (checkpoint.pt, best.pt)")
    p.add_argument("--alpha", type=float, default=0.0, help="activation regularisation")
    p.add_argument("--beta", type=float, default=1e-3, help="temporal activation regularisation")
    p.add_argument("--wdecay", type=float, default=8e-7)
    p.add_argument("--continue_train", action="store_true", help="resume from <save>/checkpoint.pt")
    p.add_argument("--small_batch_size", type=int, default=-1)
    p.add_argument("--max_seq_len_delta", type=int, default=20)
    p.add_argument("--gpu", type=int, default=None, help="GPU index (the original's flag)")
    p.add_argument("--eval_batch_size", type=int, default=10)
    p.add_argument("--test_batch_size", type=int, default=None, help="1 (10 on the embedded default)")
    p.add_argument("--resume", default=None, help="checkpoint.pt to resume from")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    p.add_argument("--max_steps_per_epoch", type=int, default=None,
                   help="cut epochs short (25 on the embedded default)")
    p.add_argument("--quiet", action="store_true")
    return p


def run_train_rnn(a) -> int:
    from ..space import genotypes as G
    from .rnn import PYDOC_DEFAULTS, RNNTrainConfig, train_rnn

    G.resolve(a.genotype, "rnn")  # a bad name or file fails before any work
    small = a.data is None
    sized = ("emsize", "nhid", "nhidlast", "epochs", "batch_size", "bptt", "max_steps_per_epoch",
             "test_batch_size")
    defaults = {"emsize": 850, "nhid": 850, "nhidlast": 850, "epochs": 8000, "batch_size": 64, "bptt": 35,
                "max_steps_per_epoch": None, "test_batch_size": 1}
    if small:
        defaults.update(PYDOC_DEFAULTS)
    chosen = {k: getattr(a, k) if getattr(a, k) is not None else defaults[k] for k in sized}
    resume = a.resume or (os.path.join(a.save, "checkpoint.pt") if a.continue_train else None)
    cfg = RNNTrainConfig(
        genotype=a.genotype, data=a.data, lr=a.lr, clip=a.clip, dropout=a.dropout, dropouth=a.dropouth,
        dropoutx=a.dropoutx, dropouti=a.dropouti, dropoute=a.dropoute, seed=a.seed, nonmono=a.nonmono,
        log_interval=a.log_interval, save=a.save, alpha=a.alpha, beta=a.beta, wdecay=a.wdecay,
        small_batch_size=a.small_batch_size, max_seq_len_delta=a.max_seq_len_delta,
        eval_batch_size=a.eval_batch_size, resume=resume,
        device=a.device if a.device else (f"cuda:{a.gpu}" if a.gpu is not None else None),
        quiet=a.quiet, **chosen)
    rank = _rank(cfg.device)
    if small and not a.quiet and rank == 0:
        print("no --data given: training on the embedded default (Python's help texts) with "
              f"emsize=nhid={cfg.nhid}, batch {cfg.batch_size}, bptt {cfg.bptt}, {cfg.epochs} epochs "
              f"of {cfg.max_steps_per_epoch} steps")
    engine = train_rnn(cfg)
    if rank != 0:  # the ranks are checked identical at every epoch end; rank 0 reports
        return 0
    print(f"param size: {engine.params_M:.6f} M; test loss {engine.test_loss:.4f} | "
          f"test ppl {engine.test_ppl:.2f} (best model, test batch {cfg.test_batch_size}); "
          f"wall time {engine.wall_seconds:.1f} s")
    print(f"outputs in {cfg.save}/ (checkpoint.pt, best.pt)")
    return 0


def add_parser(top) -> None:
    train = top.add_parser("train", help="train a genotype from scratch (evaluation)")
    sub = train.add_subparsers(dest="space", required=True)
    _cnn_parser(sub).set_defaults(run=run_train_cnn)
    _rnn_parser(sub).set_defaults(run=run_train_rnn)
