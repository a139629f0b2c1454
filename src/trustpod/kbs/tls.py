"""The KBS's server TLS context from ``[http_server]``: ``tls_profile``, ``tls_min_version``,
``tls_max_version``, ``tls_ciphers``, ``tls_groups`` (upstream names, reference §3.1).

Profiles follow Mozilla's server-side TLS recommendations, as upstream's ``tls_profile``:

* ``intermediate`` (the default): TLS 1.2 and 1.3; TLS 1.2 suites are ECDHE/DHE with AES-GCM or
  ChaCha20-Poly1305 only (no CBC, no RSA key exchange, no SHA-1).
* ``modern``: TLS 1.3 only.
* ``custom``: ``tls_min_version`` (default 1.2), ``tls_max_version`` (default 1.3) and
  ``tls_ciphers`` (default: the intermediate list).
* ``old`` (TLS 1.0/1.1 and CBC suites) is refused.

Explicit ``tls_min_version``/``tls_max_version``/``tls_ciphers`` override the profile's values.
``tls_groups`` is a colon-separated list; Python 3.11's ``ssl`` can set exactly one group
(``set_ecdh_curve``), so a longer list is refused at start rather than silently ignored (a
Python with ``SSLContext.set_groups`` applies the whole list).
"""

from __future__ import annotations

import ssl
import sys
from typing import Any

import uvicorn

from trustpod.errors import ConfigError
from trustpod.kbs.config import HttpServerConfig

__all__ = ["INTERMEDIATE_CIPHERS", "KbsUvicornConfig", "server_context"]

INTERMEDIATE_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-CHACHA20-POLY1305",
    )
)
_VERSIONS = {
    "1.2": ssl.TLSVersion.TLSv1_2,
    "tlsv1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
    "tlsv1.3": ssl.TLSVersion.TLSv1_3,
}
_PROFILES: dict[str, tuple[ssl.TLSVersion, ssl.TLSVersion]] = {
    "intermediate": (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3),
    "modern": (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_3),
    "custom": (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3),
}
# IANA / RFC names to OpenSSL's short names
_GROUP_ALIASES = {
    "p-256": "prime256v1",
    "secp256r1": "prime256v1",
    "p-384": "secp384r1",
    "p-521": "secp521r1",
    "x25519": "X25519",
}


def _bad(message: str, fix: str) -> ConfigError:
    return ConfigError(f"http_server.{message}", reason="config.tls", fix=fix)


def _version(name: str, value: str) -> ssl.TLSVersion:
    v = _VERSIONS.get(value.strip().lower())
    if v is None:
        raise _bad(
            f"{name} = {value!r} cannot be applied",
            'use "1.2" or "1.3" (TLS 1.0 and 1.1 are not served)',
        )
    return v


def _groups(ctx: ssl.SSLContext, text: str) -> None:
    names = [_GROUP_ALIASES.get(g.strip().lower(), g.strip()) for g in text.split(":") if g]
    if not names:
        raise _bad("tls_groups is empty", "name one group, e.g. X25519, or remove the setting")
    setter = getattr(ctx, "set_groups", None)
    if setter is not None:  # pragma: no cover - Python versions with SSLContext.set_groups
        try:
            setter(":".join(names))
        except (ssl.SSLError, ValueError) as exc:
            raise _bad(
                f"tls_groups = {text!r} cannot be applied: {exc}", "name known groups"
            ) from exc
        return
    if len(names) > 1:
        raise _bad(
            f"tls_groups = {text!r}: Python {sys.version_info.major}.{sys.version_info.minor}'s "
            "ssl module can restrict the key exchange to one group only",
            "name a single group (X25519, prime256v1, secp384r1) or remove tls_groups",
        )
    try:
        ctx.set_ecdh_curve(names[0])
    except (ssl.SSLError, ValueError) as exc:
        raise _bad(
            f"tls_groups = {text!r} is not supported by {ssl.OPENSSL_VERSION}",
            "use X25519, prime256v1, secp384r1 or secp521r1",
        ) from exc


def server_context(http: HttpServerConfig) -> ssl.SSLContext:
    """The server ``SSLContext`` for ``http`` (raises ``ConfigError`` for what cannot apply)."""
    profile = (http.tls_profile or "intermediate").strip().lower()
    if profile == "old":
        raise _bad(
            'tls_profile = "old" (TLS 1.0/1.1, CBC suites) is not served by trustpod',
            'use "intermediate" (TLS 1.2+, the default) or "modern" (TLS 1.3)',
        )
    if profile not in _PROFILES:
        raise _bad(
            f"tls_profile = {http.tls_profile!r} is unknown",
            'use "intermediate", "modern" or "custom"',
        )
    lo, hi = _PROFILES[profile]
    if http.tls_min_version:
        lo = _version("tls_min_version", http.tls_min_version)
    if http.tls_max_version:
        hi = _version("tls_max_version", http.tls_max_version)
    if lo > hi:
        raise _bad("tls_min_version is above tls_max_version", "swap or remove them")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version, ctx.maximum_version = lo, hi
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        ctx.set_ciphers(http.tls_ciphers or INTERMEDIATE_CIPHERS)
    except ssl.SSLError as exc:
        raise _bad(
            f"tls_ciphers = {http.tls_ciphers!r} selects no cipher", "use an OpenSSL cipher list"
        ) from exc
    if http.tls_groups:
        _groups(ctx, http.tls_groups)
    if http.private_key is not None and http.certificate is not None:
        try:
            ctx.load_cert_chain(str(http.certificate), str(http.private_key))
        except (OSError, ssl.SSLError) as exc:
            raise _bad(
                f"certificate/private_key cannot be loaded: {exc}",
                "point them at a matching PEM certificate chain and key",
            ) from exc
    return ctx


class KbsUvicornConfig(uvicorn.Config):
    """``uvicorn.Config`` whose TLS context is ``server_context(http)`` (uvicorn alone has no
    minimum/maximum version or group settings). Picklable: worker processes rebuild it."""

    def __init__(self, app: Any, *, http: HttpServerConfig | None = None, **kwargs: Any) -> None:
        try:  # uvicorn[standard]: httptools, one send() per response (trustpod.kbs.http_protocol)
            from trustpod.kbs.http_protocol import CoalescingHttpToolsProtocol

            kwargs.setdefault("http", CoalescingHttpToolsProtocol)
        except ImportError:  # pragma: no cover - uvicorn without httptools: its h11 protocol
            pass
        super().__init__(app, **kwargs)
        self.trustpod_http = http

    def load(self) -> None:
        super().load()
        http = self.trustpod_http
        if http is not None and not http.insecure_http and self.is_ssl:
            self.ssl = server_context(http)
