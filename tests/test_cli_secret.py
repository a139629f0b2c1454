"""``trustpod secret`` CLI: keygen, seal vault/envelope, Kubernetes manifest, errors."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from trustpod.cli.main import main
from trustpod.sealed import (
    EnvelopeSecret,
    VaultSecret,
    load_private_jwk,
    load_public_key,
    open_envelope,
    parse,
    verify,
)


def _keygen(tmp_path: Path, kid: str = "mykey") -> Path:
    assert main(["secret", "keygen", "--kid", kid, "--out", str(tmp_path)]) == 0
    return tmp_path  # keygen prints the file names: callers drain capsys before sealing


def test_keygen_files(tmp_path: Path) -> None:
    _keygen(tmp_path)
    priv, pub = tmp_path / "mykey-private.json", tmp_path / "mykey-public.json"
    assert priv.stat().st_mode & 0o777 == 0o600
    key = load_private_jwk(priv.read_bytes())
    assert load_public_key(pub.read_bytes()).public_numbers() == key.public_key().public_numbers()
    assert "d" not in json.loads(pub.read_text()) and json.loads(pub.read_text())["kid"] == "mykey"
    assert main(["secret", "keygen", "--kid", "../x", "--out", str(tmp_path)]) == 4
    _keygen(tmp_path / "uri", "kbs:///default/sealed-key/1")
    assert (tmp_path / "uri" / "1-public.json").exists()


def test_seal_vault_and_envelope(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _keygen(tmp_path)
    capsys.readouterr()
    jwk = str(tmp_path / "mykey-private.json")
    pub = load_public_key((tmp_path / "mykey-public.json").read_bytes())
    argv = ["secret", "seal", "--signing-kid", "mykey", "--signing-jwk-path", jwk]
    assert main([*argv, "vault", "--resource-uri", "kbs:///default/key/1"]) == 0
    sealed = parse(capsys.readouterr().out.strip())
    verify(sealed, pub)
    assert sealed.payload == VaultSecret(name="kbs:///default/key/1")

    kek = tmp_path / "kek.bin"
    kek.write_bytes(os.urandom(32))
    pt = tmp_path / "pt"
    pt.write_bytes(b"hello envelope")
    env_args = ["envelope", "--key-uri", "kbs:///default/kek/1", "--plaintext-file", str(pt)]
    assert main([*argv, *env_args, "--kek-file", str(kek)]) == 0
    sealed = parse(capsys.readouterr().out.strip())
    verify(sealed, pub)
    assert isinstance(sealed.payload, EnvelopeSecret)
    assert open_envelope(sealed.payload, kek.read_bytes()) == b"hello envelope"


def test_k8s_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _keygen(tmp_path)
    capsys.readouterr()
    argv = [
        "secret",
        "seal",
        "--signing-kid",
        "mykey",
        "--signing-jwk-path",
        str(tmp_path / "mykey-private.json"),
        "--k8s-secret",
        "sealed-secret",
        "--key",
        "secret",
        "--namespace",
        "demo",
        "vault",
        "--resource-uri",
        "kbs:///default/key/1",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[:5] == [
        "apiVersion: v1",
        "kind: Secret",
        "metadata:",
        "  name: sealed-secret",
        "  namespace: demo",
    ]
    value = next(line for line in lines if line.startswith("  secret: ")).split(": ", 1)[1]
    assert base64.b64decode(value).decode().startswith("sealed.")
    bad = [*argv]
    bad[bad.index("sealed-secret")] = "Bad_Name"
    assert main(bad) == 2


def test_seal_errors(tmp_path: Path) -> None:
    _keygen(tmp_path)
    argv = ["secret", "seal", "--signing-kid", "mykey", "--signing-jwk-path"]
    pub = str(tmp_path / "mykey-public.json")
    assert main([*argv, pub, "vault", "--resource-uri", "kbs:///default/key/1"]) == 4
    priv = str(tmp_path / "mykey-private.json")
    assert main([*argv, priv, "vault", "--resource-uri", "kbs:///default/key"]) == 4
    assert main([*argv, str(tmp_path / "none"), "vault", "--resource-uri", "kbs:///a/b/c"]) == 2
    assert main(["secret", "unseal", "sealed.a.b.c", "--api", "http://127.0.0.1:1"]) == 3
