"""``[admin]`` in upstream's v0.21 shape (reference §2.2), tagged by ``authorization_mode``.

``InsecureAllowAll`` | ``DenyAll`` | ``AuthenticatedAuthorization`` with
``[admin.authentication.bearer_jwt] identity_providers = [{issuer?, audience?, public_key_uri? |
jwk_set_uri?}]`` and ``[admin.authorization.regex_acl] acls = [{role, allowed_endpoints}]``.
The legacy keys (``insecure_api``, ``type = "Simple"``, personas) are rejected with a fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from trustpod.errors import ConfigError
from trustpod.kbs._toml import Table

__all__ = ["AclEntry", "AdminConfig", "IdentityProvider", "parse_admin"]

_MODES = ("InsecureAllowAll", "DenyAll", "AuthenticatedAuthorization")


@dataclass(frozen=True, slots=True)
class IdentityProvider:
    issuer: str | None = None
    audience: tuple[str, ...] = ()
    public_key_uri: Path | None = None
    jwk_set_uri: Path | None = None


@dataclass(frozen=True, slots=True)
class AclEntry:
    role: str
    allowed_endpoints: str
    pattern: re.Pattern[str]


@dataclass(frozen=True, slots=True)
class AdminConfig:
    authorization_mode: str = "DenyAll"
    identity_providers: tuple[IdentityProvider, ...] = ()
    acls: tuple[AclEntry, ...] = ()


def _uri_path(value: str | None, source: Path) -> Path | None:
    if value is None:
        return None
    if value.startswith("file://"):
        value = value[len("file://") :]
    elif "://" in value:
        raise ConfigError(
            f"{source}: remote key URI {value!r} is not supported for admin identity providers",
            reason="config.unsupported",
            fix="download the key or JWKS to a local file and point at its path",
        )
    p = Path(value)
    return p if p.is_absolute() else source.parent / p


def parse_admin(t: Table) -> AdminConfig:
    for legacy in ("insecure_api", "auth_public_key", "type", "personas", "roles"):
        if t.has(legacy):
            raise ConfigError(
                f"{t.source}: admin.{legacy} is a pre-v0.21 admin setting",
                reason="config.legacy_admin",
                fix='use authorization_mode = "AuthenticatedAuthorization" with '
                "[admin.authentication.bearer_jwt] and [admin.authorization.regex_acl]",
            )
    mode = t.text("authorization_mode", "InsecureAllowAll") or "InsecureAllowAll"
    if mode not in _MODES:
        raise ConfigError(
            f"{t.source}: admin.authorization_mode = {mode!r} is unknown",
            reason="config.admin_mode",
            fix=f"use one of {', '.join(_MODES)}",
        )
    providers: list[IdentityProvider] = []
    acls: list[AclEntry] = []
    authn = t.table("authentication")
    authz = t.table("authorization")
    if mode == "AuthenticatedAuthorization":
        if authn is None or authz is None:
            raise ConfigError(
                f"{t.source}: AuthenticatedAuthorization needs [admin.authentication.bearer_jwt] "
                "and [admin.authorization.regex_acl]",
                reason="config.missing",
                fix="run `trustpod kbs init` to see a working example",
            )
        jwt_t = authn.table("bearer_jwt")
        if jwt_t is None:
            raise ConfigError(f"{t.source}: missing admin.authentication.bearer_jwt")
        for p in jwt_t.tables("identity_providers"):
            aud = p.raw("audience")
            audience = (aud,) if isinstance(aud, str) else tuple(aud or ())
            if not all(isinstance(a, str) for a in audience):
                raise ConfigError(f"{p.source}: {p.where}.audience must be a string or a list")
            idp = IdentityProvider(
                issuer=p.text("issuer"),
                audience=tuple(str(a) for a in audience),
                public_key_uri=_uri_path(p.text("public_key_uri"), t.source),
                jwk_set_uri=_uri_path(p.text("jwk_set_uri"), t.source),
            )
            p.done()
            if idp.public_key_uri is None and idp.jwk_set_uri is None:
                raise ConfigError(
                    f"{p.source}: {p.where} needs public_key_uri or jwk_set_uri",
                    reason="config.missing",
                )
            providers.append(idp)
        jwt_t.done()
        authn.done()
        acl_t = authz.table("regex_acl")
        if acl_t is None:
            raise ConfigError(f"{t.source}: missing admin.authorization.regex_acl")
        for a in acl_t.tables("acls"):
            role, pattern = a.text("role"), a.text("allowed_endpoints")
            a.done()
            if (
                not role
                or not pattern
                or not pattern.startswith("^/kbs")
                or not pattern.endswith("$")
            ):
                raise ConfigError(
                    f"{a.source}: {a.where} needs role and allowed_endpoints starting with "
                    "'^/kbs' and ending with '$'",
                    reason="config.acl",
                    fix='e.g. {role = "admin", allowed_endpoints = "^/kbs/.+$"}',
                )
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"{a.source}: {a.where}: bad regex: {exc}") from exc
            acls.append(AclEntry(role, pattern, compiled))
        acl_t.done()
        authz.done()
        if not providers:
            raise ConfigError(
                f"{t.source}: admin.authentication.bearer_jwt.identity_providers is empty",
                reason="config.missing",
            )
    elif authn is not None or authz is not None:
        raise ConfigError(
            f"{t.source}: admin.authentication/authorization only apply to "
            'authorization_mode = "AuthenticatedAuthorization"',
            reason="config.unknown_key",
        )
    t.done()
    return AdminConfig(mode, tuple(providers), tuple(acls))
