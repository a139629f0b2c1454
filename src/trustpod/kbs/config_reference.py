"""docs/config-reference.md, generated from the config parser itself.

The schema of ``kbs-config.toml`` is what ``trustpod.kbs.config.parse_config`` asks for: every
typed getter of ``trustpod.kbs._toml.Table`` names a table, a key, a type and a default. This
module parses a probe config that opens every table while recording those calls, joins them with
the one-line descriptions below, and renders Markdown. A key the parser reads but this file does
not describe makes generation fail (so the reference cannot fall behind the parser);
tests/test_config_reference.py checks that the committed document is current.

``python -m trustpod.kbs.config_reference > docs/config-reference.md``
"""

from __future__ import annotations

import contextlib
import os
import re
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustpod.kbs._toml import Table

__all__ = ["DESCRIPTIONS", "Entry", "collect", "main", "render"]

_PROBE = """
session_storage_type = "Redis"
[http_server]
sockets = ["127.0.0.1:8080"]
private_key = "k.pem"
certificate = "c.pem"
[attestation_token]
[attestation_service]
[attestation_service.attestation_token_broker]
[attestation_service.attestation_token_broker.signer]
[attestation_service.rvps_config]
[attestation_service.verifier_config]
[admin]
authorization_mode = "AuthenticatedAuthorization"
[[admin.authentication.bearer_jwt.identity_providers]]
issuer = "i"
public_key_uri = "p.pem"
[[admin.authorization.regex_acl.acls]]
role = "admin"
allowed_endpoints = "^/kbs/.+$"
[storage_backend]
storage_type = "Sqlite"
[storage_backend.backends.sqlite]
path = "kbs.sqlite"
[storage_backend.backends.postgres]
[storage_backend.backends.redis]
[[plugins]]
name = "resource"
[[plugins]]
name = "resource"
storage_backend_type = "Vault"
vault_url = "https://vault:8200"
token = "t"
[[plugins]]
name = "resource"
storage_backend_type = "AzureKeyVault"
vault_url = "https://v.vault.azure.net"
[trustpod]
[trustpod.verifier_options]
"""
_PLUGIN_KINDS = {
    0: "",
    1: ' (storage_backend_type = "Vault")',
    2: ' (storage_backend_type = "AzureKeyVault")',
}

# "table.key": description. Tables: "" is the top level, "plugins" every [[plugins]] entry,
# array-of-table entries without their index.
DESCRIPTIONS: dict[str, str] = {
    ".session_storage_type": "storage type of RCAR sessions when it differs from "
    "`[storage_backend]` (upstream's top-level key)",
    "http_server.sockets": 'listen addresses `"HOST:PORT"` (default `["127.0.0.1:8080"]`)',
    "http_server.insecure_http": "serve plain HTTP (testing only; warns)",
    "http_server.private_key": "TLS private key (PEM); required unless `insecure_http`",
    "http_server.certificate": "TLS certificate chain (PEM); required unless `insecure_http`",
    "http_server.payload_request_size": "largest request body, MiB",
    "http_server.worker_count": "uvicorn worker processes (default: CPUs on shared storage, "
    "else 1)",
    "http_server.tls_profile": "TLS profile (see docs/compat.md)",
    "http_server.tls_min_version": "lowest TLS version accepted",
    "http_server.tls_max_version": "highest TLS version accepted",
    "http_server.tls_ciphers": "OpenSSL cipher string (TLS 1.2)",
    "http_server.tls_groups": "key exchange groups",
    "attestation_token.trusted_jwk_sets": "JWKS files whose keys may sign attestation tokens",
    "attestation_token.trusted_certs_paths": "CA certificates for tokens with a header `x5c`",
    "attestation_token.extra_teekey_paths": "more JSON pointers to the tee-pubkey in a token",
    "attestation_token.insecure_header_jwk": "trust any header `jwk` (testing only)",
    "attestation_service.type": '`"coco_as_builtin"` (the only type: the AS is built in)',
    "attestation_service.timeout": "RCAR session lifetime, minutes",
    "attestation_service.storage_type": "accepted and ignored (one storage backend)",
    "attestation_service.attestation_token_broker.type": 'legacy `"Ear"`, accepted and ignored',
    "attestation_service.attestation_token_broker.duration_min": "token lifetime, minutes",
    "attestation_service.attestation_token_broker.issuer_name": "EAR `iss`",
    "attestation_service.attestation_token_broker.developer_name": "EAR verifier developer",
    "attestation_service.attestation_token_broker.build_name": "EAR verifier build",
    "attestation_service.attestation_token_broker.profile_name": "EAR profile",
    "attestation_service.attestation_token_broker.verbose_token": "include the annotated "
    "evidence in tokens",
    "attestation_service.attestation_token_broker.signer.key_path": "token signer key (EC "
    "P-256 PEM); absent: a key created once in the store, shared by all replicas",
    "attestation_service.attestation_token_broker.signer.cert_path": "signer certificate "
    "chain (PEM) -> header `x5c`",
    "attestation_service.attestation_token_broker.signer.cert_url": "-> header `x5u`",
    "attestation_service.rvps_config.type": '`"BuiltIn"` (the only type)',
    "attestation_service.rvps_config.extractors": "accepted and ignored",
    "attestation_service.rvps_config.storage_type": "accepted and ignored",
    "attestation_service.verifier_config.snp_verifier": "SNP collateral sources (KDS, "
    "OfflineStore)",
    "attestation_service.verifier_config.dcap_verifier": "TDX/SGX collateral service",
    "attestation_service.verifier_config.tpm_verifier": "TPM verifier options",
    "attestation_service.verifier_config.nvidia_verifier": "NVIDIA verifier options",
    "admin.authorization_mode": '`"DenyAll"`, `"InsecureAllowAll"` (default, warns) or '
    '`"AuthenticatedAuthorization"`',
    "admin.authentication.bearer_jwt.identity_providers.issuer": "required `iss`",
    "admin.authentication.bearer_jwt.identity_providers.audience": "accepted `aud` values",
    "admin.authentication.bearer_jwt.identity_providers.public_key_uri": "issuer public key "
    "(PEM file)",
    "admin.authentication.bearer_jwt.identity_providers.jwk_set_uri": "issuer JWKS (file)",
    "admin.authorization.regex_acl.acls.role": "the token's `role` claim",
    "admin.authorization.regex_acl.acls.allowed_endpoints": "regular expression over the path",
    "storage_backend.storage_type": '`"Sqlite"`, `"Postgres"`, `"Redis"` or `"Memory"`',
    "storage_backend.backends.sqlite.path": "SQLite file (created 0600)",
    "storage_backend.backends.postgres.host": "PostgreSQL host (env `POSTGRES_URL` overrides "
    "the whole table)",
    "storage_backend.backends.postgres.port": "PostgreSQL port",
    "storage_backend.backends.postgres.db": "database",
    "storage_backend.backends.postgres.username": "user",
    "storage_backend.backends.postgres.password": "password (prefer `POSTGRES_URL` from a secret)",
    "storage_backend.backends.redis.url": "`redis://HOST:PORT/DB` (env `REDIS_URL` overrides)",
    "storage_backend.backends.local_fs": "upstream's LocalFs: refused with a fix",
    "storage_backend.backends.local_json": "upstream's LocalJson: refused with a fix",
    "plugins.name": '`"resource"`',
    "plugins.storage_backend_type": '`"kvstorage"` (`[storage_backend]`), `"Vault"` or '
    '`"AzureKeyVault"`',
    "plugins.vault_url": "Vault: server URL / Azure: `https://NAME.vault.azure.net`",
    "plugins.token": "Vault token (prefer `token_env`)",
    "plugins.token_env": "environment variable holding the Vault token",
    "plugins.mount_path": "Vault KV mount",
    "plugins.kv_version": "Vault KV engine version, 1 or 2 (upstream: 1 only)",
    "plugins.verify_ssl": "verify the Vault certificate (upstream default: false)",
    "plugins.ca_certs": "extra CA certificates (PEM files) for the backend's TLS",
    "plugins.timeout": "backend request timeout, seconds",
    "plugins.credential": 'Azure: `"default"` (DefaultAzureCredential) or `"client_secret"`',
    "plugins.tenant_id": "Azure: directory (tenant) id",
    "plugins.client_id": "Azure: application (client) id",
    "plugins.client_secret_env": "Azure: environment variable holding the client secret",
    "plugins.authority_host": "Azure: Entra ID authority (sovereign/private clouds)",
    "trustpod.upstream_status_codes": "answer with upstream's statuses (all 401) instead of "
    "401/403/404/503",
    "trustpod.max_resource_path_labels": "distinct `resource_path` metric labels",
    "trustpod.max_resource_path_label_chars": "longest `resource_path` label",
    "trustpod.insecure_emulated_roots": "trust emulated vendor roots (testing only; warns)",
    "trustpod.insecure_allow_rsa1_5": "accept RSA1_5 TEE keys (testing only)",
    "trustpod.collateral_dir": "offline collateral (SNP/TDX) directory",
    "trustpod.audit_max_entries": "denial explanations kept",
    "trustpod.at_rest_key_file": "key-encryption key file (base64, 0600) for values at rest",
    "trustpod.at_rest_key_env": "environment variable holding that key",
    "trustpod.max_extra_params_bytes": "largest `/auth` extra-params an unauthenticated "
    "client may store",
    "trustpod.max_sessions": "RCAR sessions kept at once",
    "trustpod.max_json_depth": "deepest JSON nesting accepted in request bodies",
    "trustpod.request_body_timeout_s": "seconds a request body may take to arrive",
    "trustpod.log_format": '`"text"` or `"json"` (one object per line)',
}

_KINDS = {
    "text": "string",
    "path": "path",
    "flag": "bool",
    "integer": "integer",
    "texts": "list of strings",
    "table": "table",
    "tables": "array of tables",
    "raw": "any",
}


@dataclass(frozen=True, slots=True)
class Entry:
    table: str
    key: str
    kind: str
    default: Any
    label: str  # the table as shown in the document

    @property
    def ref(self) -> str:
        return f"{self.table}.{self.key}"


def _table_of(where: str) -> tuple[str, str]:
    """(description key table, shown table) for a Table location like ``plugins[1]``."""
    m = re.fullmatch(r"plugins\[(\d+)\](.*)", where)
    if m:
        return "plugins" + m.group(2), "[[plugins]]" + _PLUGIN_KINDS.get(int(m.group(1)), "")
    plain = re.sub(r"\[\d+\]", "", where)
    if plain != where:
        return plain, f"[[{plain}]]"
    return plain, f"[{plain}]" if plain else "(top level)"


@contextlib.contextmanager
def _recording(seen: list[Entry]) -> Iterator[None]:
    originals: dict[str, Callable[..., Any]] = {}

    def wrap(name: str) -> Callable[..., Any]:
        orig = getattr(Table, name)

        def recorder(self: Table, key: str, *args: Any, **kwargs: Any) -> Any:
            table, label = _table_of(self.where)
            default = args[0] if args else kwargs.get("default")
            # sub-tables are sections of their own; verifier options are per TEE
            if name not in ("table", "tables") and not table.startswith(
                "trustpod.verifier_options"
            ):
                seen.append(Entry(table, key, _KINDS[name], default, label))
            return orig(self, key, *args, **kwargs)

        return recorder

    for name in _KINDS:
        originals[name] = getattr(Table, name)
        setattr(Table, name, wrap(name))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(Table, name, fn)


def collect() -> list[Entry]:
    """Every key the parser reads, in the order it reads them (first occurrence)."""
    from trustpod.kbs.config import parse_config

    seen: list[Entry] = []
    saved = {k: os.environ.pop(k) for k in ("POSTGRES_URL", "REDIS_URL") if k in os.environ}
    try:
        with _recording(seen):
            parse_config(tomllib.loads(_PROBE), Path("/etc/trustpod/kbs-config.toml"))
    finally:
        os.environ.update(saved)
    out: dict[tuple[str, str], Entry] = {}
    for e in seen:
        out.setdefault((e.label, e.key), e)
    return list(out.values())


def _default(e: Entry) -> str:
    if e.default is None or e.kind in ("table", "array of tables"):
        return ""
    if isinstance(e.default, bool):
        return "`true`" if e.default else "`false`"
    if isinstance(e.default, str):
        return f'`"{e.default}"`'
    return f"`{e.default}`"


def render() -> str:
    entries = collect()
    missing = sorted({e.ref for e in entries if e.ref not in DESCRIPTIONS})
    if missing:
        raise SystemExit(
            "undescribed config keys (add them to DESCRIPTIONS in "
            f"src/trustpod/kbs/config_reference.py): {', '.join(missing)}"
        )
    lines = [
        "# kbs-config.toml reference",
        "",
        "Generated from the config parser by `python -m trustpod.kbs.config_reference` "
        "(do not edit;",
        "tests/test_config_reference.py checks it is current). Upstream's v0.21 shape; "
        "trustpod-only",
        "settings are in `[trustpod]` and are described in docs/compat.md. Unknown keys are "
        "errors.",
        "Free-form tables, validated by their verifier: `[trustpod.verifier_options.<tee>]` and "
        "the",
        "`*_verifier` values of `[attestation_service.verifier_config]`.",
        "",
    ]
    sections: dict[str, list[Entry]] = {}
    for e in entries:
        sections.setdefault(e.label, []).append(e)
    for label in sorted(sections, key=lambda lb: (sections[lb][0].table, lb)):
        lines += ["", f"## `{label}`", "", "| key | type | default | meaning |"]
        lines.append("| --- | --- | --- | --- |")
        for e in sections[label]:
            lines.append(f"| `{e.key}` | {e.kind} | {_default(e)} | {DESCRIPTIONS[e.ref]} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    print(render(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
