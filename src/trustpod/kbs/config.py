"""``kbs-config.toml``: upstream's v0.21 shape (reference §3.1) read as-is, plus ``[trustpod]``.

Every section becomes a frozen dataclass; an unknown key anywhere is a ``ConfigError`` naming the
key and the file. HTTPS is the default: without ``insecure_http = true`` the server needs
``private_key`` and ``certificate``. trustpod-only settings live in ``[trustpod]``
(documented in docs/compat.md, KBS section).
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trustpod.attestation.ear import EarTokenSettings
from trustpod.errors import ConfigError
from trustpod.kbs._toml import Problems, Table
from trustpod.kbs.config_admin import AdminConfig, parse_admin
from trustpod.kbs.config_secrets import ResourceBackend, parse_resource_plugin
from trustpod.kbs.config_storage import StorageConfig, parse_storage

__all__ = [
    "DEFAULT_MAX_RESOURCE_PATH_LABELS",
    "AdminConfig",
    "AttestationServiceConfig",
    "AttestationTokenConfig",
    "HttpServerConfig",
    "KbsConfig",
    "StorageConfig",
    "TrustpodSettings",
    "load_config",
    "parse_config",
]

_log = logging.getLogger(__name__)

DEFAULT_MAX_RESOURCE_PATH_LABELS = 256
_AS_TYPES = {"coco_as_builtin": "coco_as_builtin", "CoCoASBuiltIn": "coco_as_builtin"}
_AS_UNSUPPORTED = {"coco_as_grpc", "CoCoASGrpc", "intel_ta", "IntelTA"}


@dataclass(frozen=True, slots=True)
class HttpServerConfig:
    sockets: tuple[str, ...] = ("127.0.0.1:8080",)
    insecure_http: bool = False
    private_key: Path | None = None
    certificate: Path | None = None
    payload_request_size: int = 2  # MiB
    worker_count: int | None = None
    tls_profile: str | None = None
    tls_min_version: str | None = None
    tls_max_version: str | None = None
    tls_ciphers: str | None = None
    tls_groups: str | None = None

    @property
    def max_body_bytes(self) -> int:
        return self.payload_request_size * 1024 * 1024


@dataclass(frozen=True, slots=True)
class AttestationTokenConfig:
    trusted_jwk_sets: tuple[str, ...] = ()
    trusted_certs_paths: tuple[str, ...] = ()
    extra_teekey_paths: tuple[str, ...] = ()
    insecure_header_jwk: bool = False


@dataclass(frozen=True, slots=True)
class AttestationServiceConfig:
    type: str = "coco_as_builtin"
    timeout: int = 5  # minutes: RCAR session lifetime
    attestation_token_broker: EarTokenSettings = field(default_factory=EarTokenSettings)
    rvps_type: str = "BuiltIn"
    verifier_config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TrustpodSettings:
    """trustpod-only settings (``[trustpod]``), documented in docs/compat.md, KBS section."""

    upstream_status_codes: bool = False
    max_resource_path_labels: int = DEFAULT_MAX_RESOURCE_PATH_LABELS
    insecure_emulated_roots: tuple[Path, ...] = ()
    insecure_allow_rsa1_5: bool = False
    collateral_dir: Path | None = None
    audit_max_entries: int = 10_000
    verifier_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    # security limits and at-rest encryption (docs/compat.md, KBS section; ADR 0302)
    at_rest_key_file: Path | None = None
    at_rest_key_env: str | None = None
    max_extra_params_bytes: int = 4096
    max_sessions: int = 50_000
    max_json_depth: int = 64
    request_body_timeout_s: int = 30
    max_resource_path_label_chars: int = 128
    log_format: str = "text"


@dataclass(frozen=True, slots=True)
class KbsConfig:
    source: Path
    http_server: HttpServerConfig = HttpServerConfig()
    attestation_token: AttestationTokenConfig = AttestationTokenConfig()
    attestation_service: AttestationServiceConfig = AttestationServiceConfig()
    admin: AdminConfig | None = None
    storage_backend: StorageConfig = field(default_factory=StorageConfig)
    plugins: tuple[str, ...] = ("resource",)
    trustpod: TrustpodSettings = TrustpodSettings()
    resource_backend: ResourceBackend | None = None  # None: [storage_backend] (kvstorage)


def load_config(path: str | Path) -> KbsConfig:
    """Read and validate ``path`` (TOML). Errors name the key and the file."""
    source = Path(path)
    try:
        raw = tomllib.loads(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(
            f"cannot read KBS config {source}: {exc.strerror}",
            reason="config.read",
            fix="pass --config with the path of an existing kbs-config.toml "
            "(or create one with `trustpod kbs init`)",
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}", reason="config.toml") from exc
    return parse_config(raw, source.resolve())


def parse_config(raw: dict[str, Any], source: Path) -> KbsConfig:
    """Validate every section; all problems are reported together (``_toml.Problems``)."""
    problems = Problems(source)
    top = Table(raw, "", source, problems)
    guard = problems.guard
    http = guard(HttpServerConfig(), _http, top.table("http_server"))
    token = guard(AttestationTokenConfig(), _token, top.table("attestation_token"))
    aservice = guard(
        AttestationServiceConfig(), _attestation_service, top.table("attestation_service")
    )
    admin_t = top.table("admin")
    admin = guard(None, parse_admin, admin_t) if admin_t is not None else None
    storage = guard(
        StorageConfig(),
        parse_storage,
        top.table("storage_backend"),
        top.text("session_storage_type"),
    )
    parsed = [p for p in (guard(None, _plugin, t) for t in top.tables("plugins")) if p]
    plugins = tuple(name for name, _ in parsed) or ("resource",)
    resource_backend = next((b for _, b in parsed if b is not None), None)
    settings = guard(TrustpodSettings(), _trustpod, top.table("trustpod"))
    top.done()
    bad_http_flag = any("http_server.insecure_http" in e.message for e in problems.errors)
    tls_missing = http.private_key is None or http.certificate is None
    if not http.insecure_http and tls_missing and not bad_http_flag:
        problems.add(
            ConfigError(
                f"{source}: HTTPS is the default and needs http_server.private_key and "
                "http_server.certificate",
                reason="config.tls_required",
                fix="set both to PEM files, or set http_server.insecure_http = true for local "
                "testing",
            )
        )
    problems.raise_if_any()
    return KbsConfig(
        source, http, token, aservice, admin, storage, plugins, settings, resource_backend
    )


def _http(t: Table | None) -> HttpServerConfig:
    if t is None:
        return HttpServerConfig()
    d = HttpServerConfig()
    cfg = HttpServerConfig(
        sockets=t.texts("sockets") or d.sockets,
        insecure_http=t.flag("insecure_http", False),
        private_key=t.path("private_key"),
        certificate=t.path("certificate"),
        payload_request_size=t.integer("payload_request_size", 2, minimum=1) or 2,
        worker_count=t.integer("worker_count", None, minimum=1),
        tls_profile=t.text("tls_profile"),
        tls_min_version=t.text("tls_min_version"),
        tls_max_version=t.text("tls_max_version"),
        tls_ciphers=t.text("tls_ciphers"),
        tls_groups=t.text("tls_groups"),
    )
    t.done()
    return cfg


def _token(t: Table | None) -> AttestationTokenConfig:
    if t is None:
        return AttestationTokenConfig()
    cfg = AttestationTokenConfig(
        trusted_jwk_sets=t.texts("trusted_jwk_sets"),
        trusted_certs_paths=t.texts("trusted_certs_paths"),
        extra_teekey_paths=t.texts("extra_teekey_paths"),
        insecure_header_jwk=t.flag("insecure_header_jwk", False),
    )
    t.done()
    return cfg


def _attestation_service(t: Table | None) -> AttestationServiceConfig:
    if t is None:
        return AttestationServiceConfig()
    kind = t.text("type", "coco_as_builtin") or "coco_as_builtin"
    if kind in _AS_UNSUPPORTED or kind not in _AS_TYPES:
        raise ConfigError(
            f"{t.source}: attestation_service.type = {kind!r} is not supported",
            reason="config.unsupported",
            fix='use type = "coco_as_builtin" (trustpod has the attestation service built in)',
        )
    timeout = t.integer("timeout", 5, minimum=1) or 5
    broker_t = t.table("attestation_token_broker")
    broker = EarTokenSettings()  # the attestation service's own settings type and defaults
    if broker_t is not None:
        signer_t = broker_t.table("signer")
        key_path = cert_path = cert_url = None
        if signer_t is not None:
            key_path, cert_path = signer_t.path("key_path"), signer_t.path("cert_path")
            cert_url = signer_t.text("cert_url")
            signer_t.done()
        broker_t.text("type")  # legacy "Ear" accepted and ignored
        broker = EarTokenSettings(
            duration_min=broker_t.integer("duration_min", broker.duration_min, minimum=1)
            or broker.duration_min,
            issuer_name=broker_t.text("issuer_name", broker.issuer_name) or broker.issuer_name,
            developer_name=broker_t.text("developer_name", broker.developer_name) or "",
            build_name=broker_t.text("build_name", broker.build_name) or "",
            profile_name=broker_t.text("profile_name", broker.profile_name) or "",
            verbose_token=broker_t.flag("verbose_token", broker.verbose_token),
            signer_key_path=key_path,
            signer_cert_path=cert_path,
            signer_cert_url=cert_url,
        )
        broker_t.done()
    rvps_type = "BuiltIn"
    rvps_t = t.table("rvps_config")
    if rvps_t is not None:
        rvps_type = rvps_t.text("type", "BuiltIn") or "BuiltIn"
        if rvps_type != "BuiltIn":
            raise ConfigError(
                f"{t.source}: attestation_service.rvps_config.type = {rvps_type!r} is not "
                "supported",
                reason="config.unsupported",
                fix='use type = "BuiltIn"',
            )
        rvps_t.raw("extractors")
        rvps_t.text("storage_type")
        rvps_t.done()
    vc_t = t.table("verifier_config")
    verifier_config: dict[str, Any] = {}
    if vc_t is not None:
        for name in ("snp_verifier", "dcap_verifier", "tpm_verifier", "nvidia_verifier"):
            value = vc_t.raw(name)
            if value is not None:
                verifier_config[name] = value
        vc_t.done()
    t.text("storage_type")  # AS storage override: trustpod uses the one storage backend
    t.done()
    return AttestationServiceConfig("coco_as_builtin", timeout, broker, rvps_type, verifier_config)


def _plugin(t: Table) -> tuple[str, ResourceBackend | None]:
    name = t.text("name")
    if name != "resource":
        raise ConfigError(
            f"{t.source}: plugin {name!r} is not supported",
            reason="config.unsupported",
            fix='use [[plugins]] name = "resource" (storage_backend_type "kvstorage", "Vault" '
            'or "AzureKeyVault")',
        )
    return name, parse_resource_plugin(t)


def _trustpod(t: Table | None) -> TrustpodSettings:
    if t is None:
        return TrustpodSettings()
    d = TrustpodSettings()
    roots = t.paths("insecure_emulated_roots")
    cfg = TrustpodSettings(
        upstream_status_codes=t.flag("upstream_status_codes", False),
        max_resource_path_labels=t.integer(
            "max_resource_path_labels", d.max_resource_path_labels, minimum=0
        )
        or 0,
        insecure_emulated_roots=roots,
        insecure_allow_rsa1_5=t.flag("insecure_allow_rsa1_5", False),
        collateral_dir=t.path("collateral_dir"),
        audit_max_entries=t.integer("audit_max_entries", d.audit_max_entries, minimum=1)
        or d.audit_max_entries,
        verifier_options=_verifier_options(t.table("verifier_options")),
        at_rest_key_file=t.path("at_rest_key_file"),
        at_rest_key_env=t.text("at_rest_key_env"),
        max_extra_params_bytes=_limit(t, "max_extra_params_bytes", d.max_extra_params_bytes),
        max_sessions=_limit(t, "max_sessions", d.max_sessions),
        max_json_depth=_limit(t, "max_json_depth", d.max_json_depth),
        request_body_timeout_s=_limit(t, "request_body_timeout_s", d.request_body_timeout_s),
        max_resource_path_label_chars=_limit(
            t, "max_resource_path_label_chars", d.max_resource_path_label_chars
        ),
        log_format=_log_format(t),
    )
    t.done()
    return cfg


def _limit(t: Table, key: str, default: int) -> int:
    return t.integer(key, default, minimum=1) or default


def _log_format(t: Table) -> str:
    value = t.text("log_format", "text") or "text"
    if value not in ("text", "json"):
        raise ConfigError(
            f"{t.source}: [trustpod] log_format = {value!r} is not supported",
            reason="config.log_format",
            fix='use "text" (default) or "json" (one JSON object per line)',
        )
    return value


def _verifier_options(t: Table | None) -> dict[str, dict[str, Any]]:
    """``[trustpod.verifier_options.<tee>]`` tables (each verifier validates its own keys)."""
    if t is None:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for tee in list(t.keys()):
        sub = t.table(tee)
        assert sub is not None
        out[tee] = sub.take_all()
    t.done()
    return out
