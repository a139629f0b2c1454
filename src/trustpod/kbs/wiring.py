"""Builds a KBS from its config: storage, built-in attestation service + RVPS, token verifier,
admin authorizer, resource policy, metrics, audit, and the Starlette app.

Collaborators can be injected (tests, demo); otherwise they are created from the config.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from starlette.applications import Starlette

from trustpod._internal.b64 import b64url_encode
from trustpod._internal.clock import Clock, SystemClock
from trustpod.errors import ConfigError
from trustpod.kbs.admin_auth import AdminAuthorizer
from trustpod.kbs.app import create_app
from trustpod.kbs.audit import AuditLog
from trustpod.kbs.config import KbsConfig, StorageConfig
from trustpod.kbs.core import KbsCore
from trustpod.kbs.metrics import KbsMetrics
from trustpod.kbs.ports import AttestationPort, RvpsPort
from trustpod.kbs.resource_policy import ResourcePolicy
from trustpod.kbs.session_limits import SessionAdmission
from trustpod.kbs.sessions import SessionStore
from trustpod.kbs.tokens import build_token_verifier
from trustpod.storage.port import KeyValueStore

__all__ = ["build_app", "build_core", "open_store", "with_resource_backend"]

_log = logging.getLogger(__name__)


def open_store(cfg: StorageConfig, kind: str | None = None) -> KeyValueStore:
    kind = kind or cfg.storage_type
    if kind == "Sqlite":
        from trustpod.storage.sqlite import SqliteStore

        assert cfg.sqlite_path is not None  # checked by the config parser
        return SqliteStore(cfg.sqlite_path)
    if kind == "Postgres":
        from trustpod.storage.postgres import PostgresStore

        assert cfg.postgres_conninfo is not None
        return PostgresStore(cfg.postgres_conninfo)
    if kind == "Redis":
        from trustpod.storage.redis import RedisStore

        assert cfg.redis_url is not None
        return RedisStore(cfg.redis_url)
    from trustpod.storage.memory import MemoryStore

    return MemoryStore()


def with_resource_backend(config: KbsConfig, store: KeyValueStore) -> KeyValueStore:
    """``store`` with the ``repository`` namespace sent to the ``[[plugins]]`` resource backend
    (HashiCorp Vault, Azure Key Vault) when one is configured (at-rest sealing sits on top)."""
    backend = config.resource_backend
    if backend is None:
        return store
    from trustpod.storage.routed import RoutedStore
    from trustpod.storage.secret_settings import VaultConfig

    resources: KeyValueStore
    if isinstance(backend, VaultConfig):
        from trustpod.storage.vault import VaultKvStore

        resources = VaultKvStore(backend)
    else:
        from trustpod.storage.azure_keyvault import AzureKeyVaultStore

        resources = AzureKeyVaultStore(backend)
    _log.info("resources are stored in %r", backend)
    return RoutedStore(store, {"repository": resources})


def _emulated_roots(paths: tuple[Path, ...]) -> tuple[bytes, ...]:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    out: list[bytes] = []
    for p in paths:
        try:
            certs = x509.load_pem_x509_certificates(p.read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot read [trustpod] insecure_emulated_roots entry {p}: {exc}",
                reason="config.emulated_roots",
            ) from exc
        out.extend(c.public_bytes(Encoding.DER) for c in certs)
    if out:
        _log.warning(
            "[trustpod] insecure_emulated_roots: %d EMULATED vendor root(s) trusted. "
            "Evidence from emulated TEEs will verify. Never use this in production.",
            len(out),
        )
    return tuple(out)


def _builtin_services(
    config: KbsConfig, store: KeyValueStore, clock: Clock
) -> tuple[AttestationPort, RvpsPort, list[dict[str, Any]]]:
    """The built-in attestation service and RVPS over the shared store."""
    from trustpod.attestation.service import AttestationService
    from trustpod.collateral.wiring import build_verifiers
    from trustpod.kbs.verifier_config import verifier_settings
    from trustpod.rvps import ReferenceValueStore

    ts = config.trustpod
    settings = verifier_settings(
        config.source,
        config.attestation_service.verifier_config,
        collateral_dir=ts.collateral_dir,
        emulated_roots=_emulated_roots(ts.insecure_emulated_roots),
        max_evidence_bytes=config.http_server.max_body_bytes,
        options=ts.verifier_options,
    )
    verifiers = build_verifiers(settings)
    rvps = ReferenceValueStore(store, clock)
    token_settings = config.attestation_service.attestation_token_broker
    service = AttestationService(store, verifiers, token_settings, clock, rvps=rvps)
    return service, rvps, [service.public_jwk()]


def _signer_jwk(config: KbsConfig) -> list[dict[str, Any]]:
    """The configured AS signer's public JWK: tokens it signs are trusted automatically."""
    key_path = config.attestation_service.attestation_token_broker.signer_key_path
    if key_path is None:
        return []
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"{config.source}: cannot read the token signer key {key_path}: {exc}",
            reason="config.signer_key",
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ConfigError(
            f"{config.source}: the token signer key must be EC P-256 (ES256)",
            reason="config.signer_key",
        )
    nums = key.public_key().public_numbers()
    return [
        {
            "kty": "EC",
            "crv": "P-256",
            "alg": "ES256",
            "x": b64url_encode(nums.x.to_bytes(32, "big")),
            "y": b64url_encode(nums.y.to_bytes(32, "big")),
        }
    ]


def _at_rest(config: KbsConfig, store: KeyValueStore) -> KeyValueStore:
    """``store`` wrapped in at-rest encryption when ``[trustpod]`` names a key (ADR 0302)."""
    from trustpod.storage.at_rest import EncryptedStore, load_local_kek

    ts = config.trustpod
    kek = load_local_kek(key_file=ts.at_rest_key_file, key_env=ts.at_rest_key_env)
    if kek is None:
        if config.storage_backend.storage_type != "Memory":
            _log.warning(
                "[trustpod] at_rest_key_file is not set: resources and keys are stored in "
                "plain text in the %s storage",
                config.storage_backend.storage_type,
            )
        return store
    return EncryptedStore(store, kek)


def build_core(
    config: KbsConfig,
    *,
    store: KeyValueStore | None = None,
    clock: Clock | None = None,
    attestation: AttestationPort | None = None,
    rvps: RvpsPort | None = None,
    own_jwks: list[dict[str, Any]] | None = None,
) -> tuple[KbsCore, AdminAuthorizer]:
    clock = clock or SystemClock()
    store = _at_rest(
        config, with_resource_backend(config, store or open_store(config.storage_backend))
    )
    session_kind = config.storage_backend.session_storage_type
    session_store = store
    if session_kind is not None and session_kind != config.storage_backend.storage_type:
        session_store = open_store(config.storage_backend, session_kind)
    own: list[dict[str, Any]] = list(own_jwks or []) + _signer_jwk(config)
    if attestation is None or rvps is None:
        built_as, built_rvps, built_own = _builtin_services(config, store, clock)
        attestation = attestation or built_as
        rvps = rvps or built_rvps
        own.extend(built_own)
    tc = config.attestation_token
    tokens = build_token_verifier(
        clock,
        own_keys=own,
        trusted_jwk_sets=tc.trusted_jwk_sets,
        trusted_certs_paths=tc.trusted_certs_paths,
        insecure_header_jwk=tc.insecure_header_jwk,
    )
    policy = ResourcePolicy(store)
    policy.install_default()
    metrics = KbsMetrics(
        config.trustpod.max_resource_path_labels, config.trustpod.max_resource_path_label_chars
    )
    audit = AuditLog(store, clock, config.trustpod.audit_max_entries)
    sessions = SessionStore(session_store, clock, config.attestation_service.timeout)
    ts = config.trustpod
    admission = SessionAdmission(
        session_store,
        max_sessions=ts.max_sessions,
        max_extra_params_bytes=ts.max_extra_params_bytes,
    )
    core = KbsCore(
        config,
        store,
        sessions,
        clock,
        attestation,
        rvps,
        tokens,
        policy,
        metrics,
        audit,
        admission=admission,
    )
    return core, AdminAuthorizer(config.admin, clock)


def build_app(config: KbsConfig, **kwargs: Any) -> Starlette:
    core, admin = build_core(config, **kwargs)
    return create_app(core, admin)
