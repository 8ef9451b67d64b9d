"""What an exact resume needs, in every loop: the random states, seeding, and
checkpoint files written atomically and read with a clear error.

A write goes to a temporary file in the same directory and is renamed over the
old one (``os.replace`` is atomic on POSIX and Windows), so a crash or a full disk
mid-write leaves the previous checkpoint intact.  A read checks the format tag
before anything else uses the file and says which file is wrong and why.

Loading a checkpoint runs no code.  Checkpoints are shared (a search resumed on
another machine, a trained cell downloaded to test), and a full unpickle of a file
can call anything, so a checkpoint holds only tensors and plain containers (dicts,
lists, tuples, str, numbers, None) and is read with ``torch.load(weights_only=True)``
and torch's default allowlist, nothing added.  The RNG states are stored that way
(numpy's as a tuple of ints), and :func:`atomic_save` refuses to write anything that
would need more.  A file that needs more (a foreign one, or one written by a
fastdarts older than this format, whose numpy RNG state was an ndarray) is refused
in one line naming what it asked for; ``trust=True`` (the CLI's
``--trust_checkpoint``) loads it with full pickle, for files the user trusts.
"""

from __future__ import annotations

import os
import pickletools
import random
import re
import warnings

import numpy as np
import torch

from .. import distributed


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the run that reads it."""


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's (CPU and every GPU) generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def torch_rng_states() -> dict:
    """torch's CPU and CUDA RNG states: what differs between the ranks of a
    data-parallel run (python's and numpy's are seeded alike on every rank)."""
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_torch_rng_states(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def numpy_rng_state() -> tuple:
    """numpy's global RNG state as plain data: np.random.get_state() holds its 624 key
    words in an ndarray, which only a full unpickle can rebuild; a list of ints
    loads with weights_only=True and gives the same words back."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return (name, keys.tolist(), int(pos), int(has_gauss), float(gauss))


def set_numpy_rng_state(s) -> None:
    """The inverse of :func:`numpy_rng_state`; also takes get_state()'s own tuple (the
    ndarray form of checkpoints written before the plain format, loaded with trust)."""
    name, keys, pos, has_gauss, gauss = s
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))


def rng_states() -> dict:
    """python's state is already plain (a tuple of ints); numpy's is made plain."""
    return {"python": random.getstate(), "numpy": numpy_rng_state(), **torch_rng_states()}


def rank_rng_states() -> list | None:
    """Every rank's torch RNG states, gathered (a collective: every rank calls it);
    None in a single process.  A data-parallel run draws different dropout masks
    on each rank, so an exact resume needs them all."""
    if distributed.world()[1] == 1:
        return None
    return distributed.gather_objects(torch_rng_states())


def set_rng_states(s: dict) -> None:
    random.setstate(s["python"])
    set_numpy_rng_state(s["numpy"])
    set_torch_rng_states(s)


def atomic_save(obj, path: str) -> None:
    """torch.save to a temporary file beside ``path``, then rename: a crash mid-write
    leaves the previous checkpoint untouched.  CheckpointError, and the previous file
    kept, when ``obj`` holds anything but tensors and plain containers: such a file
    could only be loaded back with full pickle (:func:`read_checkpoint` refuses it),
    so the mistake shows at the first save, not at the resume."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        torch.save(obj, tmp)
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(tmp)
        if unsafe:
            raise CheckpointError(f"not writing {path!r}: it would hold {', '.join(sorted(unsafe))}, "
                                  "which only a full unpickle can load; store tensors, dicts, lists, "
                                  "tuples, str, numbers and None only")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


TRUST_FLAG = "--trust_checkpoint"


def _one_line(exc: Exception) -> str:
    """An exception's message on one line; of torch's weights-only refusal (a page of
    advice) only the part that says what was refused."""
    text = str(exc)
    m = re.search(r"WeightsUnpickler error:(.*?)(?:Check the documentation|$)", text, re.S)
    return " ".join((m.group(1) if m else text).split())


def _pickle_globals(path: str) -> list[str]:
    """The globals a bare pickle (not a torch.save file) names, read opcode by opcode
    with pickletools (nothing is run).  Only a file that starts as a pickle of
    protocol 2+ is read, so random bytes are not taken for opcodes; STACK_GLOBAL's
    names are the last two strings pushed (how pickle writes them)."""
    found, strings = [], []
    try:
        with open(path, "rb") as f:
            if f.read(1) != b"\x80":
                return []
            f.seek(0)
            for op, arg, _ in pickletools.genops(f):
                if op.name in ("GLOBAL", "INST"):
                    found.append(arg.replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(".".join(strings[-2:]))
                if isinstance(arg, str):
                    strings.append(arg)
    except Exception:  # a truncated or malformed pickle: what was read so far
        pass
    return sorted(set(found))


def _asked_for(path: str, exc: Exception) -> list[str]:
    """The globals (callables, classes) a file refused by the weights-only unpickler
    asks for: all the refused ones of a zip checkpoint (read by torch, nothing run),
    the one torch's refusal names for the legacy format, every one of a bare pickle;
    [] when it was refused for another reason (truncated, garbage)."""
    try:
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # not a zip checkpoint
        pass
    return re.findall(r"GLOBAL ([\w.]+)", str(exc))[:1] or _pickle_globals(path)


def read_checkpoint(path: str, fmt: str, *, what: str, start_afresh: str, write_one: str = "",
                    trust: bool = False) -> dict:
    """The checkpoint dict at ``path`` (tensors on the CPU) if it carries the format
    tag ``fmt``; else a CheckpointError naming the file: missing, unreadable
    (``start_afresh`` says what to do instead), needing code to load, or not
    ``what`` (``write_one`` says how to make one).

    Read with ``weights_only=True``: tensors and plain containers only, so a
    malicious file cannot run code.  ``trust=True`` unpickles fully, which can run
    anything the file says: only for files the user trusts (a checkpoint of an older
    fastdarts, whose numpy RNG state was an ndarray)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path!r}")
    try:
        with warnings.catch_warnings():  # torch's note on a bare pickle's protocol: noise here
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(path, map_location="cpu", weights_only=not trust)
    except Exception as exc:
        asked = [] if trust else _asked_for(path, exc)
        if asked:
            raise CheckpointError(
                f"{path!r} asks to load {', '.join(asked)}: refused, a checkpoint is loaded as tensors "
                "and plain data only (unpickling anything more can run code); if you trust this file "
                f"(e.g. one written by an older fastdarts), pass {TRUST_FLAG} (trust=True in the API) "
                "to load it fully") from exc
        raise CheckpointError(f"{path!r} is not a readable checkpoint ({type(exc).__name__}: "
                              f"{_one_line(exc)}); it may be truncated: use an earlier one or "
                              f"{start_afresh}") from exc
    if not isinstance(state, dict) or state.get("format") != fmt:
        raise CheckpointError(f"{path!r} is not a {what} ({fmt}){write_one}")
    return state
