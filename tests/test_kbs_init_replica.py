"""``trustpod kbs init`` for deployments: ``--san`` names in the certificate, ``--storage-url``
for a shared PostgreSQL/Redis (signer key in the store), ``--join`` for one admin/at-rest key."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from cryptography import x509

from trustpod.errors import ConfigError
from trustpod.kbs.config import load_config
from trustpod.kbs.init_dir import init_kbs_dir

CLI = [sys.executable, "-m", "trustpod.cli"]


def _sans(cert: Path) -> tuple[list[str], list[str]]:
    c = x509.load_pem_x509_certificate(cert.read_bytes())
    ext = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return ext.get_values_for_type(x509.DNSName), [
        str(a) for a in ext.get_values_for_type(x509.IPAddress)
    ]


def test_san_repeatable_through_the_cli(tmp_path: Path) -> None:
    d = tmp_path / "k"
    args = ["kbs", "init", "--dir", str(d), "--listen", "0.0.0.0:8080"]
    args += ["--san", "trustpod-kbs.confidential.svc", "--san", "kbs.example.org"]
    args += ["--san", "10.96.0.10", "--san", "fd00::1"]
    subprocess.run([*CLI, *args], check=True, capture_output=True, timeout=60)
    dns, ips = _sans(d / "kbs-cert.pem")
    assert dns == ["localhost", "trustpod-kbs.confidential.svc", "kbs.example.org"]
    assert set(ips) == {"0.0.0.0", "127.0.0.1", "10.96.0.10", "fd00::1"}
    cert = x509.load_pem_x509_certificate((d / "kbs-cert.pem").read_bytes())
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert ipaddress.ip_address("10.96.0.10")


@pytest.mark.parametrize("bad", ["a b", "-x.svc", "x..y", "", "é.svc", "a" * 64 + ".svc"])
def test_bad_san_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match="--san"):
        init_kbs_dir(tmp_path / "k", "127.0.0.1:1", sans=(bad,))
    assert not (tmp_path / "k").exists()


def test_storage_url_postgres_and_redis(tmp_path: Path) -> None:
    res = init_kbs_dir(
        tmp_path / "pg", "127.0.0.1:1", storage_url="postgres://kbs:p%40ss@db.svc:5433/trustpod"
    )
    raw = tomllib.loads(res.config.read_text())
    assert raw["storage_backend"] == {
        "storage_type": "Postgres",
        "backends": {
            "postgres": {
                "host": "db.svc",
                "port": 5433,
                "db": "trustpod",
                "username": "kbs",
                "password": "p@ss",
            }
        },
    }
    # the signer key is not a file: it is created once in the shared store
    assert "signer" not in raw["attestation_service"]["attestation_token_broker"]
    assert not (tmp_path / "pg" / "token-key.pem").exists()
    cfg = load_config(res.config)
    assert cfg.storage_backend.storage_type == "Postgres"
    assert "host=db.svc" in (cfg.storage_backend.postgres_conninfo or "")
    res = init_kbs_dir(tmp_path / "rd", "127.0.0.1:1", storage_url="redis://cache:6379/2")
    cfg = load_config(res.config)
    assert (cfg.storage_backend.storage_type, cfg.storage_backend.redis_url) == (
        "Redis",
        "redis://cache:6379/2",
    )
    with pytest.raises(ConfigError, match="storage-url"):
        init_kbs_dir(tmp_path / "x", "127.0.0.1:1", storage_url="mysql://db/x")


def test_join_reuses_admin_and_at_rest_keys(tmp_path: Path) -> None:
    a = init_kbs_dir(tmp_path / "a", "127.0.0.1:1", storage_url="redis://r:6379/0")
    b = init_kbs_dir(
        tmp_path / "b", "127.0.0.1:2", storage_url="redis://r:6379/0", join=tmp_path / "a"
    )
    for name in ("admin-key.pem", "admin-public.pem", "at-rest.key"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert ((tmp_path / "b" / "at-rest.key").stat().st_mode & 0o777) == 0o600
    assert a.certificate is not None and b.certificate is not None
    assert a.certificate.read_bytes() != b.certificate.read_bytes()  # own TLS key per replica
    with pytest.raises(ConfigError, match="--join"):
        init_kbs_dir(tmp_path / "c", "127.0.0.1:3", join=tmp_path / "nope")
