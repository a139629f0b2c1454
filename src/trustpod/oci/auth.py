"""Registry auth formats (pure): ``WWW-Authenticate`` challenges and ``auth.json``.

* Challenge (distribution token auth spec): ``Bearer realm="…",service="…",scope="…"`` or
  ``Basic realm="…"``; parameters are quoted strings (backslash escapes) or tokens.
* ``auth.json`` (containers-auth.json(5), what ``authenticated_registry_credentials_uri`` names):
  ``{"auths": {"<registry>[/<namespace>]": {"auth": base64("user:password")}}}``; lookup
  is the most specific key first (``host/ns/repo``, ``host/ns``, ``host``), a ``https://`` prefix
  and ``/v1/`` or ``/v2/`` suffix on keys are tolerated (docker's legacy spellings).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass

from trustpod.errors import ConfigError, EvidenceError
from trustpod.oci.reference import DEFAULT_REGISTRY, ImageReference

__all__ = ["Challenge", "Credentials", "parse_auth_json", "parse_challenge"]

_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]+))\s*(?:,|$)')


@dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str  # "bearer" or "basic", lowercase
    params: dict[str, str]


def parse_challenge(header: str) -> Challenge:
    """Parse one ``WWW-Authenticate`` value; ``EvidenceError`` ``image.auth_challenge``."""
    header = header.strip()
    scheme, _, rest = header.partition(" ")
    scheme = scheme.lower()
    if scheme not in ("bearer", "basic"):
        raise EvidenceError(
            f"unsupported registry auth challenge {scheme!r}", reason="image.auth_challenge"
        )
    params: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        if m is None:
            raise EvidenceError(
                f"malformed WWW-Authenticate header near {rest[pos : pos + 20]!r}",
                reason="image.auth_challenge",
            )
        value = m.group(2) if m.group(2) is not None else m.group(3)
        params[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
        pos = m.end()
    if scheme == "bearer" and not params.get("realm", "").startswith(("https://", "http://")):
        raise EvidenceError(
            "Bearer challenge without an http(s) realm", reason="image.auth_challenge"
        )
    return Challenge(scheme, params)


@dataclass(frozen=True, slots=True)
class Credentials:
    """Registry key → (user, password); never logged."""

    entries: dict[str, tuple[str, str]]

    def __repr__(self) -> str:
        return f"Credentials(<{len(self.entries)} registries>)"

    def lookup(self, image: ImageReference) -> tuple[str, str] | None:
        name = image.name
        while True:
            if name in self.entries:
                return self.entries[name]
            if "/" not in name:
                break
            name = name.rsplit("/", 1)[0]
        if image.registry == DEFAULT_REGISTRY:
            for alias in ("index.docker.io", "registry-1.docker.io"):
                if alias in self.entries:
                    return self.entries[alias]
        return None


def _normalize_key(key: str) -> str:
    for prefix in ("https://", "http://"):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    for suffix in ("/v1/", "/v2/", "/v1", "/v2"):
        if key.endswith(suffix):
            key = key[: -len(suffix)]
    return key.rstrip("/")


def parse_auth_json(raw: bytes, source: str = "auth.json") -> Credentials:
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source} is not JSON", reason="image.auth_json") from exc
    auths = doc.get("auths") if isinstance(doc, dict) else None
    if not isinstance(auths, dict):
        raise ConfigError(f"{source} has no 'auths' object", reason="image.auth_json")
    entries: dict[str, tuple[str, str]] = {}
    for key, entry in auths.items():
        if not isinstance(entry, dict):
            raise ConfigError(
                f"{source}: auths[{key!r}] is not an object", reason="image.auth_json"
            )
        user, password = entry.get("username"), entry.get("password")
        if isinstance(entry.get("auth"), str) and entry["auth"]:
            try:
                decoded = base64.b64decode(entry["auth"], validate=True).decode()
            except (binascii.Error, ValueError) as exc:
                raise ConfigError(
                    f"{source}: auths[{key!r}].auth is not base64 user:password",
                    reason="image.auth_json",
                ) from exc
            user, sep, password = decoded.partition(":")
            if not sep:
                raise ConfigError(
                    f"{source}: auths[{key!r}].auth has no ':'", reason="image.auth_json"
                )
        if isinstance(user, str) and isinstance(password, str):
            entries[_normalize_key(key)] = (user, password)
    return Credentials(entries)
