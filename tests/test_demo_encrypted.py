"""``make demo-encrypted`` runs to the end: the KEK is refused without attestation, the attested
guest unpacks the encrypted layer, the denied key is refused naming the key."""

from __future__ import annotations

import shutil

import pytest


def test_demo_encrypted(capsys: pytest.CaptureFixture[str]) -> None:
    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry not installed (apt package docker-registry)")
    from trustpod.demo_encrypted import main

    assert main() == 0
    out = capsys.readouterr().out
    assert "refused: HTTP 401" in out
    assert "decrypted only inside the attested pod" in out
    assert "the KBS denied the image key kbs:///default/image-key/denied" in out
    assert "demo finished" in out
