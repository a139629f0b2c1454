"""A strict reader over one parsed TOML table: typed getters, and unknown keys are errors.

Every getter consumes the key; ``done()`` then raises ``ConfigError`` naming the first key nobody
asked for, its table and the file (upstream's ``deny_unknown_fields`` behaviour, everywhere).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trustpod.errors import ConfigError

__all__ = ["Table"]


class Table:
    """Typed, consuming view of one TOML table at dotted location ``where`` in ``source``."""

    def __init__(self, data: Any, where: str, source: Path) -> None:
        if not isinstance(data, dict):
            raise ConfigError(
                f"{source}: [{where}] must be a table", reason="config.type", fix=_fix(where)
            )
        self._data: dict[str, Any] = dict(data)
        self.where = where
        self.source = source

    def _key(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def _bad(self, key: str, want: str) -> ConfigError:
        return ConfigError(
            f"{self.source}: {self._key(key)} must be {want}",
            reason="config.type",
            fix=f"fix {self._key(key)} in {self.source}",
        )

    def has(self, key: str) -> bool:
        return key in self._data

    def raw(self, key: str, default: Any = None) -> Any:
        return self._data.pop(key, default)

    def text(self, key: str, default: str | None = None) -> str | None:
        value = self._data.pop(key, default)
        if value is not None and not isinstance(value, str):
            raise self._bad(key, "a string")
        return value

    def path(self, key: str) -> Path | None:
        value = self.text(key)
        if value is None:
            return None
        p = Path(value)
        return p if p.is_absolute() else (self.source.parent / p)

    def flag(self, key: str, default: bool) -> bool:
        value = self._data.pop(key, default)
        if not isinstance(value, bool):
            raise self._bad(key, "true or false")
        return value

    def integer(self, key: str, default: int | None, *, minimum: int = 0) -> int | None:
        value = self._data.pop(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self._bad(key, f"an integer >= {minimum}")
        return value

    def texts(self, key: str) -> tuple[str, ...]:
        value = self._data.pop(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._bad(key, "a list of strings")
        return tuple(value)

    def table(self, key: str) -> Table | None:
        if key not in self._data:
            return None
        return Table(self._data.pop(key), self._key(key), self.source)

    def tables(self, key: str) -> list[Table]:
        value = self._data.pop(key, [])
        if not isinstance(value, list):
            raise self._bad(key, "an array of tables")
        return [Table(v, f"{self._key(key)}[{i}]", self.source) for i, v in enumerate(value)]

    def keys(self) -> list[str]:
        return list(self._data)

    def take_all(self) -> dict[str, Any]:
        """Every remaining key, unvalidated (for tables another component validates)."""
        out, self._data = self._data, {}
        return out

    def done(self) -> None:
        for key in self._data:
            raise ConfigError(
                f"{self.source}: unknown key {self._key(key)!r}",
                reason="config.unknown_key",
                fix=f"remove or correct {self._key(key)!r} in {self.source} "
                "(upstream's v0.21 kbs-config.toml shape; see docs/compat.md, KBS section)",
            )


def _fix(where: str) -> str:
    return f"make [{where}] a TOML table"
