"""``make demo`` runs end to end and exits 0."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("trustpod.attestation.service")


def test_demo_exits_zero() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "trustpod.demo"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "the demo secret" in r.stdout
    assert "ear.status={'cpu0': 'affirming'}" in r.stdout
    assert 'kbs_attestation_successes_total{tee_type="sample"} 1.0' in r.stdout
    assert "demo finished" in r.stdout
    import os
    import shutil

    if shutil.which("runc") and os.geteuid() == 0 and "emulated Azure CVM" in r.stdout:
        assert "db password: the pod's database password" in r.stdout  # the confidential pod
        assert "ExecProcessRequest is blocked by policy" in r.stdout
