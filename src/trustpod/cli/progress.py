"""Step progress for ``trustpod pod``: plain timed lines, plus a live line on a terminal.

``StepProgress`` is the renderer; its clock and writer are ports (``Clock``, ``Writer``), so tests
drive it with a fake clock and a fake terminal. Not a terminal (pipes, CI, tests) or
``--no-progress``: exactly the plain lines (``  <ms> ms  <label>``), no escape codes. On a
terminal, ``begin(label)`` shows the running step as one line redrawn in place (``\\r`` + ANSI
erase-line ``ESC[K``) with a spinner and the elapsed time, ``tick()`` redraws it (a ``Ticker``
thread calls it every ``interval_s``), and ``done(label, seconds)`` erases it and prints the
step's final plain line.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

__all__ = [
    "CLEAR_LINE",
    "SPINNER",
    "Clock",
    "StepProgress",
    "Ticker",
    "Writer",
    "plain_line",
    "running_line",
]

#: carriage return + ANSI "erase in line" (to its end): the live line is redrawn in place.
CLEAR_LINE = "\r\x1b[K"
SPINNER = "|/-\\"

Clock = Callable[[], float]


class Writer(Protocol):
    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...

    def isatty(self) -> bool: ...


def plain_line(label: str, seconds: float) -> str:
    """A finished step as every consumer (pipes, CI, the demo) sees it."""
    if seconds:
        return f"  {seconds * 1000:8.0f} ms  {label}\n"
    return f"               {label}\n"


def running_line(label: str, elapsed_s: float, frame: int, width: int = 100) -> str:
    """The live line of the running step (no newline; cut to ``width`` columns)."""
    text = f"  {SPINNER[frame % len(SPINNER)]} {elapsed_s:7.1f} s  {label} …"
    return text[:width]


class StepProgress:
    """Prints steps to ``writer``; ``live`` (default: ``writer.isatty()``) adds the live line."""

    def __init__(self, writer: Writer, clock: Clock, *, live: bool | None = None) -> None:
        self._w = writer
        self._clock = clock
        self.live = writer.isatty() if live is None else live
        self._lock = threading.Lock()
        self._label: str | None = None
        self._started = 0.0
        self._frame = 0

    def begin(self, label: str) -> None:
        """A step starts: on a terminal it is shown at once and redrawn by ``tick``."""
        if not self.live:
            return
        with self._lock:
            self._label, self._started, self._frame = label, self._clock(), 0
            self._draw()

    def tick(self) -> None:
        """Redraw the running step with the next spinner frame and the elapsed time."""
        with self._lock:
            if self._label is None:
                return
            self._frame += 1
            self._draw()

    def done(self, label: str, seconds: float) -> None:
        """A step finished (or an event, ``seconds == 0``): its plain line replaces the live one."""
        with self._lock:
            clear = self._label is not None
            if seconds or label == self._label:
                self._label = None
            self._w.write((CLEAR_LINE if clear else "") + plain_line(label, seconds))
            if self._label is not None:
                self._draw()  # an event inside a running step: the live line comes back
            self._w.flush()

    def clear(self) -> None:
        """Erase the live line (on failure or Ctrl-C, before the error is printed)."""
        with self._lock:
            if self._label is not None:
                self._w.write(CLEAR_LINE)
                self._w.flush()
            self._label = None

    def _draw(self) -> None:
        assert self._label is not None
        elapsed = self._clock() - self._started
        self._w.write(CLEAR_LINE + running_line(self._label, elapsed, self._frame))
        self._w.flush()


class Ticker:
    """A daemon thread calling ``progress.tick()`` every ``interval_s`` (only when live)."""

    def __init__(self, progress: StepProgress, interval_s: float = 0.1) -> None:
        self._progress = progress
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Ticker:
        if self._progress.live:
            self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._progress.clear()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._progress.tick()
