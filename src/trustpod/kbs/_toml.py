"""A strict reader over one parsed TOML table: typed getters, and unknown keys are errors.

Every getter consumes the key; ``done()`` then reports every key nobody asked for, with its table
and the file (upstream's ``deny_unknown_fields`` behaviour, everywhere).

Problems are collected, not raised one at a time: a ``Table`` made with a ``Problems`` collector
(as ``parse_config`` does) records a wrongly typed value and carries on with the default, and
``Problems.guard`` records the ``ConfigError`` of a whole section and carries on with the next
one, so one run reports everything wrong with a config (``trustpod kbs config check``).
``Problems.raise_if_any`` then raises the single problem as it is, or ``ConfigProblems`` listing
all of them. Without a collector a ``Table`` raises at the first problem.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from trustpod.errors import ConfigError

__all__ = ["ConfigProblems", "Problems", "Table"]

_T = TypeVar("_T")


class ConfigProblems(ConfigError):
    """Several problems in one config file; ``problems`` holds each one's own error."""

    default_reason = "config.problems"

    def __init__(self, source: Path, problems: list[ConfigError]) -> None:
        super().__init__(
            f"{source}: {len(problems)} problems",
            reason="config.problems",
            fix="fix them all, then run `trustpod kbs config check FILE` again",
        )
        self.problems = list(problems)

    def diagnostics(self) -> str:
        """The count, then each problem with its reason code and fix, then the overall fix."""
        lines = [f"{self.message} [{self.reason}]"]
        for i, p in enumerate(self.problems, 1):
            lines.append(f"  {i}. {p.message} [{p.reason}]")
            if p.fix:
                lines.append(f"     fix: {p.fix}")
        lines.append(f"  fix: {self.fix}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.diagnostics()


class Problems:
    """Collects the ``ConfigError``s found while reading one file."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.errors: list[ConfigError] = []

    def add(self, error: ConfigError) -> None:
        self.errors.append(error)

    def guard(self, default: _T, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)``; on ``ConfigError`` record it and return ``default``."""
        try:
            return fn(*args)
        except ConfigProblems as many:
            self.errors.extend(many.problems)
        except ConfigError as exc:
            self.add(exc)
        return default

    def raise_if_any(self) -> None:
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise ConfigProblems(self.source, self.errors)


class Table:
    """Typed, consuming view of one TOML table at dotted location ``where`` in ``source``."""

    def __init__(
        self, data: Any, where: str, source: Path, problems: Problems | None = None
    ) -> None:
        if not isinstance(data, dict):
            raise _not_a_table(where, source)
        self._data: dict[str, Any] = dict(data)
        self.where = where
        self.source = source
        self.problems = problems

    def _key(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def _bad(self, key: str, want: str) -> ConfigError:
        return ConfigError(
            f"{self.source}: {self._key(key)} must be {want}",
            reason="config.type",
            fix=f"fix {self._key(key)} in {self.source}",
        )

    def _fail(self, error: ConfigError, default: _T) -> _T:
        """Record ``error`` and go on with ``default`` when collecting, else raise it."""
        if self.problems is None:
            raise error
        self.problems.add(error)
        return default

    def has(self, key: str) -> bool:
        return key in self._data

    def raw(self, key: str, default: Any = None) -> Any:
        return self._data.pop(key, default)

    def text(self, key: str, default: str | None = None) -> str | None:
        value = self._data.pop(key, default)
        if value is not None and not isinstance(value, str):
            return self._fail(self._bad(key, "a string"), default)
        return value

    def path(self, key: str) -> Path | None:
        value = self.text(key)
        if value is None:
            return None
        return self._resolve(value)

    def paths(self, key: str) -> tuple[Path, ...]:
        """A list of paths, each relative to the config file's directory unless absolute."""
        return tuple(self._resolve(v) for v in self.texts(key))

    def _resolve(self, value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() else (self.source.parent / p)

    def flag(self, key: str, default: bool) -> bool:
        value = self._data.pop(key, default)
        if not isinstance(value, bool):
            return self._fail(self._bad(key, "true or false"), default)
        return value

    def integer(self, key: str, default: int | None, *, minimum: int = 0) -> int | None:
        value = self._data.pop(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            return self._fail(self._bad(key, f"an integer >= {minimum}"), default)
        return value

    def texts(self, key: str) -> tuple[str, ...]:
        value = self._data.pop(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return self._fail(self._bad(key, "a list of strings"), ())
        return tuple(value)

    def table(self, key: str) -> Table | None:
        if key not in self._data:
            return None
        value = self._data.pop(key)
        if not isinstance(value, dict):
            return self._fail(_not_a_table(self._key(key), self.source), None)
        return Table(value, self._key(key), self.source, self.problems)

    def tables(self, key: str) -> list[Table]:
        value = self._data.pop(key, [])
        if not isinstance(value, list):
            return self._fail(self._bad(key, "an array of tables"), [])
        out: list[Table] = []
        for i, v in enumerate(value):
            where = f"{self._key(key)}[{i}]"
            if not isinstance(v, dict):
                self._fail(_not_a_table(where, self.source), None)
                continue
            out.append(Table(v, where, self.source, self.problems))
        return out

    def keys(self) -> list[str]:
        return list(self._data)

    def take_all(self) -> dict[str, Any]:
        """Every remaining key, unvalidated (for tables another component validates)."""
        out, self._data = self._data, {}
        return out

    def done(self) -> None:
        """Every key left over is unknown: raise for the first, or record them all."""
        for key in list(self._data):
            self._fail(
                ConfigError(
                    f"{self.source}: unknown key {self._key(key)!r}",
                    reason="config.unknown_key",
                    fix=f"remove or correct {self._key(key)!r} in {self.source} "
                    "(upstream's v0.21 kbs-config.toml shape; see docs/compat.md, KBS section)",
                ),
                None,
            )
        self._data.clear()


def _not_a_table(where: str, source: Path) -> ConfigError:
    return ConfigError(
        f"{source}: [{where}] must be a table", reason="config.type", fix=_fix(where)
    )


def _fix(where: str) -> str:
    return f"make [{where}] a TOML table"
