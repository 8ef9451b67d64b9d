"""A per-epoch progress bar on a terminal: tqdm when installed, else a small one."""

from __future__ import annotations


def _tqdm():
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm


class Bar:
    """A minimal progress bar on a terminal (used when tqdm is not installed)."""

    def __init__(self, total: int, desc: str, stream):
        self.total, self.desc, self.stream, self.n = max(total, 1), desc, stream, 0

    def update(self, k: int = 1) -> None:
        self.n += k
        width = 30
        bar = "#" * int(width * min(self.n, self.total) / self.total)
        print(f"\r{self.desc} [{bar:<{width}}] {self.n}/{self.total}", end="", file=self.stream,
              flush=True)

    def write(self, text: str, file=None) -> None:  # tqdm.write's signature
        print("\r" + " " * (len(self.desc) + 45) + "\r" + text, file=self.stream, flush=True)

    def close(self) -> None:
        print("\r" + " " * (len(self.desc) + 45) + "\r", end="", file=self.stream, flush=True)


def progress_bar(total: int, desc: str, stream):
    """A bar of ``total`` steps on ``stream`` if it is a terminal, else None (logs to a
    file or a pipe keep their plain lines)."""
    if not (hasattr(stream, "isatty") and stream.isatty()):
        return None
    tqdm = _tqdm()
    if tqdm is not None:
        return tqdm(total=total, desc=desc, leave=False, file=stream, dynamic_ncols=True)
    return Bar(total, desc, stream)
