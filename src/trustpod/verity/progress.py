"""A one-line progress bar on stderr, shown only when stderr is a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["TerminalProgress", "terminal_progress"]


class TerminalProgress:
    """Callable ``(done, total)`` drawing ``label [#####.....]  42%  512 MiB/s``."""

    def __init__(self, label: str, stream: TextIO, *, width: int = 30, interval_s: float = 0.1):
        self._label = label
        self._stream = stream
        self._width = width
        self._interval = interval_s
        self._start = time.monotonic()
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last < self._interval:
            return
        self._last = now
        frac = done / total if total else 1.0
        filled = int(frac * self._width)
        rate = done / max(now - self._start, 1e-6) / 2**20
        bar = "#" * filled + "." * (self._width - filled)
        self._stream.write(f"\r{self._label} [{bar}] {frac:4.0%} {rate:7.0f} MiB/s")
        if done >= total:
            self._stream.write("\n")
        self._stream.flush()


def terminal_progress(label: str, stream: TextIO | None = None) -> TerminalProgress | None:
    """A progress bar on ``stream`` (stderr) if it is a terminal, else ``None``."""
    out = stream if stream is not None else sys.stderr
    return TerminalProgress(label, out) if out.isatty() else None
