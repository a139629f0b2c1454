"""CDH sealed-secret unsealing with a fake KBS: kid resolution, vault, envelope, env, volumes."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from trustpod.errors import EvidenceError, NotFoundError, VerificationError
from trustpod.guest.cdh import ConfidentialDataHub
from trustpod.guest.config import parse_cdh
from trustpod.sealed import (
    VaultSecret,
    generate_signing_key,
    insecure_seal_unsigned,
    public_jwk,
    seal,
    seal_envelope,
)

KEY = generate_signing_key()
OTHER = generate_signing_key()
KEK = os.urandom(32)


class FakeKbs:
    def __init__(self, resources: dict[str, bytes]) -> None:
        self.resources = resources
        self.calls: list[str] = []

    def get_resource(self, path: str, *, plugin: str = "resource") -> bytes:
        self.calls.append(f"{plugin}/{path}")
        try:
            return self.resources[f"{plugin}/{path}"]
        except KeyError:
            raise NotFoundError(f"no {path}", reason="kbs.not_found") from None


def _hub(
    tmp_path: Path, skip: bool = False, creds: str = ""
) -> tuple[ConfidentialDataHub, FakeKbs]:
    kbs = FakeKbs(
        {
            "resource/default/key/1": b"s3cret",
            "resource/default/kek/1": KEK,
            "resource/default/sealed-key/1": json.dumps(public_jwk(KEY.public_key())).encode(),
            "resource/default/cred/1": b"credential-bytes",
        }
    )
    keys = tmp_path / "keys"
    keys.mkdir(exist_ok=True)
    (keys / "local").write_text(json.dumps(public_jwk(KEY.public_key())))
    cfg = parse_cdh(
        f"skip_sealed_secret_verification = {str(skip).lower()}\n{creds}\n"
        '[kbc]\nname = "cc_kbc"\nurl = "http://kbs:8080"\n'
    )
    return ConfidentialDataHub(cfg, kbs, key_dir=keys), kbs


VAULT = VaultSecret(name="kbs:///default/key/1")


@pytest.mark.parametrize("kid", ["local", "kbs:///default/sealed-key/1"])
def test_vault_unsealed_with_local_or_kbs_kid(tmp_path: Path, kid: str) -> None:
    hub, kbs = _hub(tmp_path)
    assert hub.unseal_secret(seal(VAULT, KEY, kid)) == b"s3cret"
    assert kbs.calls[-1] == "resource/default/key/1"


def test_envelope_unsealed(tmp_path: Path) -> None:
    hub, _ = _hub(tmp_path)
    env = seal_envelope(b"envelope plaintext", KEK, "kbs:///default/kek/1")
    assert hub.unseal_secret(seal(env, KEY, "local")) == b"envelope plaintext"
    wrong = seal_envelope(b"x", os.urandom(32), "kbs:///default/kek/1")
    with pytest.raises(VerificationError):
        hub.unseal_secret(seal(wrong, KEY, "local"))


def test_refusals(tmp_path: Path) -> None:
    hub, _ = _hub(tmp_path)
    with pytest.raises(VerificationError):  # wrong signing key
        hub.unseal_secret(seal(VAULT, OTHER, "local"))
    with pytest.raises(NotFoundError) as exc:  # unknown local kid
        hub.unseal_secret(seal(VAULT, KEY, "nobody"))
    assert exc.value.reason == "sealed.kid_unknown"
    with pytest.raises(NotFoundError) as exc:  # unknown KBS kid
        hub.unseal_secret(seal(VAULT, KEY, "kbs:///default/sealed-key/404"))
    assert exc.value.reason == "sealed.kid_unknown"
    with pytest.raises(EvidenceError):  # traversal
        hub.unseal_secret(seal(VAULT, KEY, "../keys/local"))
    with pytest.raises(VerificationError):  # legacy without skip
        hub.unseal_secret(insecure_seal_unsigned(VAULT))
    with pytest.raises(NotFoundError):  # vault pointing to a missing resource
        hub.unseal_secret(seal(VaultSecret(name="kbs:///default/key/2"), KEY, "local"))


def test_symlink_escape_refused(tmp_path: Path) -> None:
    hub, _ = _hub(tmp_path)
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(public_jwk(KEY.public_key())))
    (tmp_path / "keys" / "evil").symlink_to(outside)
    with pytest.raises(EvidenceError) as exc:
        hub.unseal_secret(seal(VAULT, KEY, "evil"))
    assert exc.value.reason == "sealed.kid_traversal"


def test_skip_verification_warns_every_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hub, _ = _hub(tmp_path, skip=True)
    caplog.set_level(logging.WARNING)
    for _ in range(2):
        assert hub.unseal_secret(insecure_seal_unsigned(VAULT)) == b"s3cret"
    assert sum("INSECURE" in r.message for r in caplog.records) >= 2


def test_env_unsealing_names_the_variable(tmp_path: Path) -> None:
    hub, _ = _hub(tmp_path)
    env = {"PLAIN": "value", "SECRET": seal(VAULT, KEY, "local")}
    assert hub.unseal_env(env) == {"PLAIN": "value", "SECRET": "s3cret"}
    env["BAD"] = seal(VAULT, OTHER, "local")
    with pytest.raises(VerificationError, match="env BAD"):
        hub.unseal_env(env)


def test_volume_unsealing_like_kata(tmp_path: Path) -> None:
    hub, _ = _hub(tmp_path)
    vol = tmp_path / "vol"
    data = vol / "..2026_11_23"
    data.mkdir(parents=True)
    (data / "secret").write_text(seal(VAULT, KEY, "local"))
    (data / "plain").write_text("not sealed")
    (vol / "..data").symlink_to(data.name)
    (vol / "secret").symlink_to("..data/secret")
    (vol / "plain").symlink_to("..data/plain")
    written = hub.unseal_volume(vol)
    assert written == [vol / "secret.unsealed"]
    assert (vol / "secret.unsealed").read_bytes() == b"s3cret"
    assert (vol / "secret").read_bytes() == b"s3cret"  # entry re-pointed
    assert (vol / "plain").read_text() == "not sealed"
    (data / "bad").write_text(seal(VAULT, OTHER, "local"))
    (vol / "bad").symlink_to("..data/bad")
    with pytest.raises(VerificationError, match="bad"):
        hub.unseal_volume(vol)


def test_credentials_fetched_at_start(tmp_path: Path) -> None:
    target = tmp_path / "cdh" / "kbs" / "cred"
    creds = f'[[credentials]]\nresource_uri = "kbs:///default/cred/1"\npath = "{target}"\n'
    hub, _ = _hub(tmp_path, creds=creds)
    assert hub.start() == [target]
    assert target.read_bytes() == b"credential-bytes"
    assert target.stat().st_mode & 0o777 == 0o600
    assert hub.get_resource("kbs:///default/key/1") == b"s3cret"
    with pytest.raises(EvidenceError):
        hub.get_resource("kbs:///default/../1")


def test_volume_regular_files_and_skips(tmp_path: Path) -> None:
    hub, _ = _hub(tmp_path)
    vol = tmp_path / "plainvol"
    vol.mkdir()
    (vol / "token").write_text(seal(VAULT, KEY, "local") + "\n")
    (vol / "hostname").write_text(seal(VAULT, OTHER, "local"))  # skipped like kata
    (vol / "dangling").symlink_to("nowhere")
    assert hub.unseal_volume(vol) == [vol / "token.unsealed"]
    assert (vol / "token.unsealed").read_bytes() == b"s3cret"
    assert (vol / "token").read_text().startswith("sealed.")  # regular file kept as is
    assert hub.unseal_volume(vol) == [vol / "token.unsealed"]  # idempotent
