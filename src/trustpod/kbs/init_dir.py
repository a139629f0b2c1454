"""``trustpod kbs init``: a working KBS directory in one command.

Writes ``kbs-config.toml`` (upstream v0.21 shape), a self-signed TLS certificate and key (unless
``insecure_http``), the attestation-token signer key (P-256, so tokens survive restarts and are
valid on every process), an Ed25519 admin key pair, an ``[admin]`` AuthenticatedAuthorization
section with an ``admin`` role allowed on ``^/kbs/.+$``, and ``admin-token`` (a long-lived
EdDSA JWT with ``role = "admin"``), all with absolute paths. Private keys are mode 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from trustpod._internal.clock import Clock, SystemClock
from trustpod.errors import ConfigError
from trustpod.kbs.jwks import sign_jwt
from trustpod.storage.at_rest import generate_key_file

__all__ = ["ADMIN_ISSUER", "ADMIN_TOKEN_YEARS", "InitResult", "init_kbs_dir"]

_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_SAN = re.compile(rf"(?=.{{1,253}}$)(\*\.)?{_LABEL}(\.{_LABEL})*")

ADMIN_ISSUER = "trustpod-kbs"
ADMIN_TOKEN_YEARS = 10
CERT_DAYS = 825


@dataclass(frozen=True, slots=True)
class InitResult:
    config: Path
    admin_token: Path
    certificate: Path | None
    url: str


def _write(path: Path, data: bytes, secret: bool = False) -> None:
    """Write ``data``; secrets are created 0600 by ``os.open`` (never readable by others, not
    even between write and chmod). An existing file is replaced, not rewritten in place, so a
    file with older, wider permissions does not keep them."""
    if not secret:
        path.write_bytes(data)
        return
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _pem_private(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _self_signed(
    host: str, key: ec.EllipticCurvePrivateKey, now: dt.datetime, sans: tuple[str, ...] = ()
) -> bytes:
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    addresses = {"127.0.0.1"}
    for name in (host, *sans):
        try:
            ipaddress.ip_address(name)
            addresses.add(name)
        except ValueError:
            if x509.DNSName(name) not in names:
                names.append(x509.DNSName(name))
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in sorted(addresses)]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"trustpod KBS {host}")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        # key identifiers: clients trusting several replicas' self-signed certificates (one CA
        # bundle, identical subjects) find the right one by key, not by name
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def _check_san(name: str) -> None:
    try:
        ipaddress.ip_address(name)
        return
    except ValueError:
        pass
    if not _SAN.fullmatch(name):
        raise ConfigError(
            f"--san {name!r} is neither a DNS name nor an IP address",
            reason="config.san",
            fix="e.g. --san trustpod-kbs.confidential.svc --san 10.0.0.5",
        )


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _storage_section(url: str | None, d: Path) -> str:
    """``[storage_backend]`` for SQLite in ``d`` (one node) or a shared PostgreSQL/Redis."""
    if url is None:
        return (
            '[storage_backend]\nstorage_type = "Sqlite"\n\n'
            f'[storage_backend.backends.sqlite]\npath = "{d / "kbs.sqlite"}"\n'
        )
    u = urlsplit(url)
    if u.scheme in ("redis", "rediss"):
        return (
            '[storage_backend]\nstorage_type = "Redis"\n\n'
            f"[storage_backend.backends.redis]\nurl = {_toml_str(url)}\n"
        )
    if u.scheme in ("postgres", "postgresql") and u.hostname:
        lines = [f"host = {_toml_str(u.hostname)}", f"port = {u.port or 5432}"]
        lines.append(f"db = {_toml_str(u.path.lstrip('/') or 'postgres')}")
        lines.append(f"username = {_toml_str(unquote(u.username or 'postgres'))}")
        if u.password:
            lines.append(f"password = {_toml_str(unquote(u.password))}")
        return (
            '[storage_backend]\nstorage_type = "Postgres"\n\n'
            "[storage_backend.backends.postgres]\n" + "\n".join(lines) + "\n"
        )
    raise ConfigError(
        f"--storage-url {url!r} is not a postgres:// or redis:// URL",
        reason="config.storage_url",
        fix="e.g. --storage-url postgres://kbs@db.example:5432/kbs or redis://cache:6379/0",
    )


def _read_secret(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"--join: cannot read {path}: {exc.strerror}",
            reason="config.join",
            fix="pass the directory of an existing replica (with admin-key.pem and at-rest.key)",
        ) from exc


def _admin_key(path: Path | None) -> ed25519.Ed25519PrivateKey:
    if path is None:
        return ed25519.Ed25519PrivateKey.generate()
    try:
        key = serialization.load_pem_private_key(_read_secret(path), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"--join: {path}: {exc}", reason="config.admin_key") from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(
            f"--join: {path} is not an Ed25519 private key",
            reason="config.admin_key",
            fix="pass the admin-key.pem of the first replica's directory",
        )
    return key


def init_kbs_dir(
    directory: str | Path,
    listen: str,
    *,
    insecure_http: bool = False,
    force: bool = False,
    clock: Clock | None = None,
    sans: tuple[str, ...] = (),
    storage_url: str | None = None,
    join: Path | None = None,
) -> InitResult:
    """``sans``: extra certificate names (a Kubernetes Service name, a load balancer's address).
    ``storage_url``: ``postgres://`` or ``redis://`` store shared by replicas; the token signer
    key then lives in that store (created once, atomically), so tokens from every replica made
    with the same URL are valid on all. ``join``: another replica's directory (copied from its
    machine): its admin key (one admin token for all replicas) and at-rest key are reused."""
    d = Path(directory).resolve()
    for name in sans:
        _check_san(name)
    storage = _storage_section(storage_url, d)
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"--listen {listen!r} is not HOST:PORT", fix="e.g. 127.0.0.1:8080")
    config = d / "kbs-config.toml"
    if config.exists() and not force:
        raise ConfigError(
            f"{config} already exists", reason="config.exists", fix="pass --force to overwrite"
        )
    d.mkdir(mode=0o700, parents=True, exist_ok=True)  # holds keys and the store
    kek_path = d / "at-rest.key"
    if join is not None:  # a replica of ``join``: the same at-rest key (one store, one KEK)
        _write(kek_path, _read_secret(join / "at-rest.key"), secret=True)
    elif not kek_path.exists():  # kept on --force: it decrypts the existing store
        generate_key_file(kek_path)
    now = (clock or SystemClock()).now()
    http = f'sockets = ["{listen}"]\ninsecure_http = {"true" if insecure_http else "false"}\n'
    cert_path: Path | None = None
    if not insecure_http:
        tls_key = ec.generate_private_key(ec.SECP256R1())
        cert_path = d / "kbs-cert.pem"
        _write(d / "kbs-key.pem", _pem_private(tls_key), secret=True)
        _write(cert_path, _self_signed(host, tls_key, now, sans))
        http += f'private_key = "{d / "kbs-key.pem"}"\ncertificate = "{cert_path}"\n'
    signer_section = ""
    if storage_url is None:  # one node: the signer key is a file; replicas: it is in the store
        signer = ec.generate_private_key(ec.SECP256R1())
        _write(d / "token-key.pem", _pem_private(signer), secret=True)
        signer_section = (
            "\n[attestation_service.attestation_token_broker.signer]\n"
            f'key_path = "{d / "token-key.pem"}"\n'
        )
    admin = _admin_key(None if join is None else join / "admin-key.pem")
    _write(d / "admin-key.pem", _pem_private(admin), secret=True)
    _write(
        d / "admin-public.pem",
        admin.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    iat = int(now.timestamp())
    token = sign_jwt(
        admin,
        {
            "iss": ADMIN_ISSUER,
            "sub": "admin",
            "aud": ["KBS"],
            "role": "admin",
            "iat": iat,
            "exp": iat + ADMIN_TOKEN_YEARS * 365 * 86400,
        },
    )
    admin_token = d / "admin-token"
    _write(admin_token, token.encode() + b"\n", secret=True)
    config.write_text(
        f"""# trustpod KBS configuration (upstream kbs-config.toml v0.21 shape)
# trustpod-only settings: [trustpod], see docs/compat.md (KBS section)
[http_server]
{http}payload_request_size = 2

[attestation_token]
insecure_header_jwk = false

[attestation_service]
type = "coco_as_builtin"
timeout = 5

[attestation_service.attestation_token_broker]
duration_min = 5
{signer_section}
[admin]
authorization_mode = "AuthenticatedAuthorization"

[admin.authentication.bearer_jwt]
identity_providers = [{{ issuer = "{ADMIN_ISSUER}", audience = ["KBS"], \
public_key_uri = "{d / "admin-public.pem"}" }}]

[admin.authorization.regex_acl]
acls = [{{ role = "admin", allowed_endpoints = "^/kbs/.+$" }}]

{storage}
[[plugins]]
name = "resource"
storage_backend_type = "kvstorage"

[trustpod]
upstream_status_codes = false
max_resource_path_labels = 256
# resources and the signer key are encrypted at rest under this key (0600, outside the store);
# every replica on one store needs the same key
at_rest_key_file = "{kek_path}"
"""
    )
    scheme = "http" if insecure_http else "https"
    return InitResult(config, admin_token, cert_path, f"{scheme}://{listen}")
