"""Injected time: verifiers and services take a ``Clock`` (or a ``now``), never read the clock."""

from __future__ import annotations

import datetime as _dt
import time
from typing import Protocol

__all__ = ["Clock", "FixedClock", "SystemClock", "utc"]

utc = _dt.UTC


class Clock(Protocol):
    """Port: the current time as an aware UTC datetime and as epoch seconds."""

    def now(self) -> _dt.datetime: ...

    def time(self) -> float: ...


class SystemClock:
    """The real clock."""

    def now(self) -> _dt.datetime:
        return _dt.datetime.now(utc)

    def time(self) -> float:
        return time.time()


class FixedClock:
    """A settable clock for tests and offline verification (``--now``)."""

    def __init__(self, at: _dt.datetime | float) -> None:
        self._t = at.timestamp() if isinstance(at, _dt.datetime) else float(at)

    def now(self) -> _dt.datetime:
        return _dt.datetime.fromtimestamp(self._t, utc)

    def time(self) -> float:
        return self._t

    def advance(self, seconds: float) -> None:
        self._t += seconds

    def set(self, at: _dt.datetime | float) -> None:
        self._t = at.timestamp() if isinstance(at, _dt.datetime) else float(at)
