"""``make demo-encrypted`` runs to the end: the KEK is refused without attestation; where sandbox
pods run, ``trustpod pod run`` starts a pod whose encrypted image only the attested pod VM
decrypts, a pod whose key is denied fails naming the key, and delete leaves nothing; elsewhere
(and forced here) the attested sample-TEE guest unpacks the encrypted layer itself."""

from __future__ import annotations

import shutil

import pytest

from trustpod import demo_encrypted


@pytest.fixture(autouse=True)
def _registry() -> None:
    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry not installed (apt package docker-registry)")


def _common(out: str) -> None:
    assert "refused: HTTP 401" in out
    assert "decrypted only inside the attested pod" in out
    assert "the KBS denied the image key kbs:///default/image-key/denied" in out
    assert "demo finished" in out


def test_demo_encrypted(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo_encrypted.main() == 0
    out = capsys.readouterr().out
    _common(out)
    if demo_encrypted.pods_run_here():  # the confidential pod, end to end
        assert "trustpod pod run enc-app.yaml" in out
        assert "wait for the agent (boot, attest, initdata bound)" in out
        assert "app: StartContainer" in out
        assert "pods 0, pod VMs 0, processes 0, mounts 0" in out
        # the KEK left the KBS once: to the attested pod; the denied key never
        assert 'kbs_resource_reads_total{resource_path="default/image-key/app"} 1.0' in out
        assert 'resource_reads_total{resource_path="default/image-key/denied"}' not in out
        assert 'kbs_attestation_successes_total{tee_type="az-snp-vtpm"} 2.0' in out


def test_demo_encrypted_without_pods(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo_encrypted, "pods_run_here", lambda: False)
    assert demo_encrypted.main() == 0
    out = capsys.readouterr().out
    _common(out)
    assert "a sample-TEE guest" in out
