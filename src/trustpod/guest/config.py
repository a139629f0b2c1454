"""Guest configs in upstream's shape: ``aa.toml`` (§2.4), ``cdh.toml`` (§3.6), plus ``guest.toml``.

Each file is parsed once into frozen dataclasses. Unknown keys are errors (``ConfigError`` naming
the key and the file), so a typo never silently falls back to a default. ``guest.toml`` holds the
few trustpod-only settings of ``trustpod guest run`` (attester, API listen address, key directory).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trustpod.errors import ConfigError
from trustpod.oci.config import parse_image_section
from trustpod.sealed.resource_uri import ResourceUri

__all__ = [
    "DEFAULT_API_LISTEN",
    "DEFAULT_CDH_SOCKET",
    "DEFAULT_KEY_DIR",
    "TEE_KEY_ALGORITHMS",
    "AaConfig",
    "CdhConfig",
    "Credential",
    "GuestSettings",
    "KbcConfig",
    "KbsTokenConfig",
    "load_toml",
    "parse_aa",
    "parse_cdh",
    "parse_guest",
]

DEFAULT_CDH_SOCKET = "unix:///run/confidential-containers/cdh.sock"
DEFAULT_AA_SOCKET = "unix:///run/confidential-containers/attestation-agent/attestation-agent.sock"
#: Upstream's local sealed-secret key directory (kid = file name under it).
DEFAULT_KEY_DIR = "/run/confidential-containers/cdh/sealed-secret"
#: api-server-rest's address.
DEFAULT_API_LISTEN = "127.0.0.1:8006"
TEE_KEY_ALGORITHMS = ("ECDH-ES+A256KW-P256", "ECDH-ES+A256KW-P521", "RSA-OAEP-256")
_LOG_LEVELS = ("trace", "debug", "info", "warn", "warning", "error", "off")


class _Table:
    """A TOML table that remembers which keys were read, so leftovers can be reported."""

    def __init__(self, data: Mapping[str, Any], where: str, source: str) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where} must be a table in {source}", reason="config.type")
        self._data, self._where, self._source = data, where, source
        self._seen: set[str] = set()

    def _name(self, key: str) -> str:
        return f"{self._where}.{key}" if self._where else key

    def _get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        self._seen.add(key)
        value = self._data.get(key, default)
        if value is not None and not isinstance(value, kind):
            raise ConfigError(
                f"{self._name(key)} in {self._source} has the wrong type", reason="config.type"
            )
        return value

    def s(self, key: str, default: str | None = None) -> str | None:
        return self._get(key, str, default)  # type: ignore[no-any-return]

    def b(self, key: str, default: bool) -> bool:
        return self._get(key, bool, default)  # type: ignore[no-any-return]

    def i(self, key: str, default: int) -> int:
        value = self._get(key, int, default)
        if isinstance(value, bool):
            raise ConfigError(f"{self._name(key)} in {self._source} must be an integer")
        return value  # type: ignore[no-any-return]

    def table(self, key: str) -> _Table | None:
        value = self._get(key, dict, None)
        return None if value is None else _Table(value, self._name(key), self._source)

    def raw(self, key: str, kind: type | tuple[type, ...]) -> Any:
        return self._get(key, kind, None)

    def done(self) -> None:
        extra = sorted(set(self._data) - self._seen)
        if extra:
            raise ConfigError(
                f"unknown key {self._name(extra[0])!r} in {self._source}",
                reason="config.unknown_key",
                fix="check the spelling against upstream's config (guest-and-control-plane.md)",
            )


def load_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}", reason="config.toml") from exc


def _level(t: _Table | None, source: str) -> str:
    if t is None:
        return "info"
    level = (t.s("level", "info") or "info").lower()
    t.done()
    if level not in _LOG_LEVELS:
        raise ConfigError(f"log.level {level!r} in {source} is unknown", reason="config.value")
    return level


@dataclass(frozen=True, slots=True)
class KbsTokenConfig:
    url: str
    cert: str | None = None
    tee_key_algorithm: str = "ECDH-ES+A256KW-P256"


@dataclass(frozen=True, slots=True)
class AaConfig:
    """``aa.toml``: ``[token_configs.kbs|coco_as]``, ``[eventlog_config]``, ``[log]``."""

    kbs: KbsTokenConfig | None = None
    coco_as_url: str | None = None
    eventlog_init_pcr: int = 17
    eventlog_enabled: bool = False
    eventlog_algorithm: str = "sha384"
    log_level: str = "info"


def _url(value: str | None, key: str, source: str) -> str:
    if not value or not value.startswith(("http://", "https://")):
        raise ConfigError(f"{key} in {source} must be an http(s) URL", reason="config.value")
    return value.rstrip("/")


def parse_aa(text: str, source: str = "aa.toml") -> AaConfig:
    top = _Table(load_toml(text, source), "", source)
    kbs: KbsTokenConfig | None = None
    coco_as: str | None = None
    tokens = top.table("token_configs")
    if tokens is not None:
        if (k := tokens.table("kbs")) is not None:
            alg = k.s("tee_key_algorithm", TEE_KEY_ALGORITHMS[0]) or TEE_KEY_ALGORITHMS[0]
            if alg not in TEE_KEY_ALGORITHMS:
                raise ConfigError(
                    f"token_configs.kbs.tee_key_algorithm {alg!r} in {source} is not one of "
                    f"{', '.join(TEE_KEY_ALGORITHMS)}",
                    reason="config.value",
                )
            kbs = KbsTokenConfig(
                _url(k.s("url"), "token_configs.kbs.url", source), k.s("cert"), alg
            )
            k.done()
        if (c := tokens.table("coco_as")) is not None:
            coco_as = _url(c.s("url"), "token_configs.coco_as.url", source)
            c.done()
        tokens.done()
    ev = top.table("eventlog_config")
    init_pcr, enabled, ev_alg = 17, False, "sha384"
    if ev is not None:
        init_pcr, enabled = ev.i("init_pcr", 17), ev.b("enable_eventlog", False)
        ev_alg = ev.s("eventlog_algorithm", "sha384") or "sha384"
        ev.done()
        if not 0 <= init_pcr <= 23:
            raise ConfigError(f"eventlog_config.init_pcr in {source} must be 0..23")
    level = _level(top.table("log"), source)
    top.done()
    return AaConfig(kbs, coco_as, init_pcr, enabled, ev_alg, level)


@dataclass(frozen=True, slots=True)
class KbcConfig:
    name: str
    url: str
    kbs_cert: str | None = None


@dataclass(frozen=True, slots=True)
class Credential:
    resource_uri: ResourceUri
    path: str


@dataclass(frozen=True, slots=True)
class CdhConfig:
    """``cdh.toml``: socket, skip_sealed_secret_verification, [aa], [kbc], [[credentials]], ..."""

    kbc: KbcConfig
    socket: str = DEFAULT_CDH_SOCKET
    aa_socket: str = DEFAULT_AA_SOCKET
    skip_sealed_secret_verification: bool = False
    credentials: tuple[Credential, ...] = ()
    image: Mapping[str, Any] = field(default_factory=dict)
    log_level: str = "info"


def parse_cdh(text: str, source: str = "cdh.toml") -> CdhConfig:
    top = _Table(load_toml(text, source), "", source)
    socket = top.s("socket", DEFAULT_CDH_SOCKET) or DEFAULT_CDH_SOCKET
    skip = top.b("skip_sealed_secret_verification", False)
    aa_socket = DEFAULT_AA_SOCKET
    if (aa := top.table("aa")) is not None:
        aa_socket = aa.s("aa_socket", DEFAULT_AA_SOCKET) or DEFAULT_AA_SOCKET
        aa.done()
    kbc_t = top.table("kbc")
    if kbc_t is None:
        raise ConfigError(
            f"[kbc] is missing in {source}",
            reason="config.missing",
            fix="add [kbc] with name = 'cc_kbc' and url = '<KBS URL>'",
        )
    name = kbc_t.s("name", "cc_kbc") or "cc_kbc"
    if name != "cc_kbc":
        raise ConfigError(
            f"kbc.name {name!r} in {source} is not supported (only cc_kbc)", reason="config.value"
        )
    kbc = KbcConfig(name, _url(kbc_t.s("url"), "kbc.url", source), kbc_t.s("kbs_cert"))
    kbc_t.done()
    creds: list[Credential] = []
    for i, item in enumerate(top.raw("credentials", list) or []):
        c = _Table(item, f"credentials[{i}]", source)
        uri, path = c.s("resource_uri"), c.s("path")
        c.done()
        if not uri or not path:
            raise ConfigError(f"credentials[{i}] in {source} needs resource_uri and path")
        creds.append(Credential(ResourceUri.parse(uri), path))
    image = top.raw("image", dict) or {}
    parse_image_section(image, source)  # validated now; trustpod.oci.guest uses it at pull time
    level = _level(top.table("log"), source)
    top.done()
    return CdhConfig(kbc, socket, aa_socket, skip, tuple(creds), image, level)


@dataclass(frozen=True, slots=True)
class GuestSettings:
    """``guest.toml`` (trustpod only): how ``trustpod guest run`` wires the pieces."""

    attester: str = "auto"
    attester_settings: Mapping[str, Any] = field(default_factory=dict)
    api_listen: str = DEFAULT_API_LISTEN
    key_dir: str = DEFAULT_KEY_DIR
    token_refresh_margin_s: int = 60
    #: RCAR attempts and the pause between them (upstream: 5 attempts, 1 s apart).
    kbs_max_retries: int = 5
    kbs_retry_delay_ms: int = 1000


def parse_guest(text: str, source: str = "guest.toml") -> GuestSettings:
    top = _Table(load_toml(text, source), "", source)
    attester = top.s("attester", "auto") or "auto"
    settings = top.raw("attester_settings", dict) or {}
    listen = top.s("api_listen", DEFAULT_API_LISTEN) or DEFAULT_API_LISTEN
    key_dir = top.s("key_dir", DEFAULT_KEY_DIR) or DEFAULT_KEY_DIR
    margin = top.i("token_refresh_margin_s", 60)
    retries = top.i("kbs_max_retries", 5)
    delay = top.i("kbs_retry_delay_ms", 1000)
    top.done()
    if not 1 <= retries <= 100 or not 0 <= delay <= 60_000 or margin < 0:
        raise ConfigError(
            f"{source}: kbs_max_retries must be 1..100, kbs_retry_delay_ms 0..60000 and "
            "token_refresh_margin_s >= 0",
            reason="config.value",
        )
    return GuestSettings(attester, settings, listen, key_dir, margin, retries, delay)


def read_optional(directory: Path, name: str) -> str | None:
    """The text of ``directory/name`` or None when absent."""
    path = directory / name
    return path.read_text(encoding="utf-8") if path.is_file() else None
