"""Admin API authentication and authorization (upstream v0.21 ``kbs/src/admin/*``, §2.2).

* no ``[admin]`` section: DENY (upstream allows all; docs/compat.md);
* ``InsecureAllowAll``: allow, with a warning on every admin request;
* ``DenyAll``: deny;
* ``AuthenticatedAuthorization``: ``Authorization: Bearer <JWT>`` verified against each identity
  provider in turn (PEM key or JWKS by ``kid``), then ``iss``/``aud`` when configured; ``exp``
  and a string ``role`` are required; the role's regex ACLs must match path + query.
Keys are parsed once at construction.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature

from trustpod._internal.b64 import b64url_decode
from trustpod._internal.clock import Clock
from trustpod._internal.json_limits import loads as limited_loads
from trustpod.errors import AuthenticationError, ConfigError, EvidenceError, PolicyDenied
from trustpod.kbs.config_admin import AdminConfig, IdentityProvider
from trustpod.kbs.jwks import PublicKey, jwk_to_key, load_public_pem, verify_jws_signature

__all__ = ["AdminAuthorizer", "AdminIdentity"]

_log = logging.getLogger(__name__)
_ALGS = ("EdDSA", "ES256", "ES384", "RS256", "RS384", "RS512")
LEEWAY_S = 60


@dataclass(frozen=True, slots=True)
class AdminIdentity:
    role: str
    subject: str | None


@dataclass(frozen=True, slots=True)
class _Provider:
    spec: IdentityProvider
    key: PublicKey | None
    kids: Mapping[str, PublicKey]


def _deny(message: str, reason: str, fix: str | None = None) -> AuthenticationError:
    return AuthenticationError(message, reason=reason, fix=fix)


class AdminAuthorizer:
    """Decides every admin request; ``check`` returns the identity or raises."""

    def __init__(self, config: AdminConfig | None, clock: Clock) -> None:
        self._config = config
        self._clock = clock
        self._providers = [self._load(p) for p in config.identity_providers] if config else []
        if config is None:
            _log.warning("no [admin] section: the admin API is disabled (every call is denied)")
        elif config.authorization_mode == "InsecureAllowAll":
            _log.warning("admin.authorization_mode = InsecureAllowAll: anyone can administer")

    @staticmethod
    def _load(p: IdentityProvider) -> _Provider:
        key = None
        kids: dict[str, PublicKey] = {}
        try:
            if p.public_key_uri is not None:
                key = load_public_pem(p.public_key_uri.read_bytes())
            if p.jwk_set_uri is not None:
                doc = json.loads(p.jwk_set_uri.read_text())
                for jwk in doc.get("keys", []):
                    if isinstance(jwk, dict) and isinstance(jwk.get("kid"), str):
                        kids[jwk["kid"]] = jwk_to_key(jwk)
        except (OSError, ValueError, AttributeError) as exc:
            raise ConfigError(
                f"cannot load admin identity provider key: {exc}",
                reason="config.admin_key",
                fix="check public_key_uri / jwk_set_uri in [admin.authentication.bearer_jwt]",
            ) from exc
        return _Provider(p, key, kids)

    def check(self, authorization: str | None, path_and_query: str) -> AdminIdentity:
        cfg = self._config
        if cfg is None:
            raise _deny(
                "the admin API is disabled on this KBS",
                "kbs.admin_disabled",
                "add an [admin] section (e.g. from `trustpod kbs init`) to kbs-config.toml",
            )
        if cfg.authorization_mode == "InsecureAllowAll":
            _log.warning("admin request %s allowed by InsecureAllowAll", path_and_query[:200])
            return AdminIdentity("InsecureAllowAll", None)
        if cfg.authorization_mode == "DenyAll":
            raise _deny("the admin API is set to DenyAll", "kbs.admin_denyall")
        if not authorization or not authorization.startswith("Bearer "):
            raise _deny(
                "admin request without a Bearer token",
                "kbs.admin_no_token",
                "pass --token-file with the admin token (trustpod kbs init writes D/admin-token)",
            )
        claims = self._verify(authorization[len("Bearer ") :].strip())
        role = claims.get("role")
        if not isinstance(role, str):
            raise _deny("admin token has no 'role' claim", "kbs.admin_no_role")
        # (3) Regex ACLs for the role, matched against path + query (request.uri()).
        for acl in cfg.acls:
            if acl.role == role and acl.pattern.fullmatch(path_and_query):
                sub = claims.get("sub")
                return AdminIdentity(role, sub if isinstance(sub, str) else None)
        raise PolicyDenied(
            f"admin role {role[:64]!r} may not call {path_and_query[:200]}",
            reason="kbs.admin_forbidden",
        )

    def _verify(self, token: str) -> dict[str, Any]:
        parts = token.split(".")
        try:
            if len(parts) != 3:
                raise ValueError("not a compact JWS")
            header = limited_loads(b64url_decode(parts[0], field="admin token header"))
            claims = limited_loads(b64url_decode(parts[1], field="admin token claims"))
            sig = b64url_decode(parts[2], field="admin token signature")
            if not isinstance(header, dict) or not isinstance(claims, dict):
                raise ValueError("not objects")
        except (EvidenceError, ValueError, UnicodeDecodeError) as exc:
            raise _deny("admin token is malformed", "kbs.admin_token_malformed") from exc
        alg = header.get("alg")
        if alg not in _ALGS:
            raise _deny(f"admin token alg {str(alg)[:16]!r} not allowed", "kbs.admin_alg")
        signing_input = f"{parts[0]}.{parts[1]}".encode()
        # (1) Try each identity provider in turn: signature, then iss/aud when configured.
        for prov in self._providers:
            keys = [prov.key] if prov.key is not None else []
            kid = header.get("kid")
            if isinstance(kid, str) and kid in prov.kids:
                keys.append(prov.kids[kid])
            for key in keys:
                try:
                    verify_jws_signature(key, str(alg), signing_input, sig)
                except (InvalidSignature, ValueError):
                    continue
                self._check_claims(prov.spec, claims)
                return claims
        raise _deny("admin token is not signed by a trusted identity provider", "kbs.admin_sig")

    def _check_claims(self, spec: IdentityProvider, claims: Mapping[str, Any]) -> None:
        if spec.issuer is not None and claims.get("iss") != spec.issuer:
            raise _deny("admin token issuer mismatch", "kbs.admin_iss")
        if spec.audience:
            aud = claims.get("aud")
            auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
            if not any(a in spec.audience for a in auds):
                raise _deny("admin token audience mismatch", "kbs.admin_aud")
        # (2) exp is required (jsonwebtoken default validation), 60 s leeway.
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise _deny("admin token has no exp claim", "kbs.admin_exp")
        if exp + LEEWAY_S < self._clock.time():
            raise _deny("admin token expired", "kbs.admin_expired", "issue a new admin token")
