"""End to end: the pod VM image's PCR 11 reference values are accepted by the attestation
service's default CPU policy (``snp_pcr11``), and a different image's are not.

Emulated Azure CVM boots, checks its root image against roothash= of the measured command
line, measures the command line into PCR 11, attests with az-snp-vtpm evidence; the attestation
service with the az-snp-vtpm verifier appraises it with ``default_cpu``.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import pytest

from trustpod.image import BootManifest, EmulatorPcrs, check_root, measure_uki_boot
from trustpod.image.build import BuildOptions, build_image
from trustpod.image.fsmakers import SquashfsMaker
from trustpod.image.reference_values import reference_values, rvps_sample_message

pytest.importorskip("regorus")
pytest.importorskip("trustpod.attestation.service")
pytest.importorskip("trustpod.guest.emulator.cvm")
pytestmark = pytest.mark.skipif(shutil.which("mksquashfs") is None, reason="no squashfs-tools")

RUNTIME_DATA = {"nonce": "pod-vm-image-test", "tee-pubkey": {"kty": "EC", "crv": "P-256"}}


def _image(base: Path, payload: bytes) -> tuple[Path, BootManifest]:
    root = base / "rootfs"
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "agent").write_bytes(payload)
    out = base / "out"
    return out, build_image(root, out, SquashfsMaker(), BuildOptions(osrel="ID=trustpod\n"))


@pytest.fixture(scope="module")
def booted(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from trustpod.guest.emulator.cvm import EmulatedAzureCvm

    base = tmp_path_factory.mktemp("e2e")
    out, manifest = _image(base / "good", random.Random(7).randbytes(200_000))
    cvm = EmulatedAzureCvm.create(base / "cvm", backend="software").boot()
    try:
        # the pod VM's boot: check the root against the measured command line, then measure it
        check_root(manifest, out / "root.img", out / "root.verity")
        pcr11 = measure_uki_boot(EmulatorPcrs(cvm), manifest)
        assert cvm.device.pcr_read([11])[0] == pcr11
        yield base, manifest, cvm
    finally:
        cvm.shutdown()


def _service(cvm: Any) -> tuple[Any, Any, Any]:
    from trustpod._internal.clock import SystemClock
    from trustpod.attestation.ear import EarTokenSettings
    from trustpod.attestation.service import AttestationService
    from trustpod.collateral.wiring import build_verifiers
    from trustpod.rvps import ReferenceValueStore
    from trustpod.storage.memory import MemoryStore
    from trustpod.verifiers.base import VerifierSettings

    store, clock = MemoryStore(), SystemClock()
    rvps = ReferenceValueStore(store, clock)
    registry = build_verifiers(
        VerifierSettings(insecure_emulated_roots=cvm.vendor.emulated_roots), ("az-snp-vtpm",)
    )
    service = AttestationService(store, registry, EarTokenSettings(), clock, rvps=rvps)
    return service, rvps, registry


def _executables(service: Any, cvm: Any) -> tuple[int, str]:
    from trustpod._internal.jcs import jcs_digest

    evidence = cvm.attester().get_evidence(jcs_digest(RUNTIME_DATA, "sha384"))
    result = service.appraise("az-snp-vtpm", evidence, RUNTIME_DATA, None)
    sub = result.explain["submods"]["cpu0"]
    return sub["ear.trustworthiness-vector"].get("executables", 0), sub["policy_id"]


def test_reference_values_accepted_by_default_policy(booted: Any) -> None:
    from trustpod._internal.clock import SystemClock
    from trustpod._internal.jcs import jcs_digest
    from trustpod.verifiers.base import VerifyInput

    base, manifest, cvm = booted
    service, rvps, registry = _service(cvm)
    # the SNP launch measurement of the emulated CVM is a separate reference value
    report_data = jcs_digest(RUNTIME_DATA, "sha384")
    [claims] = registry.verify(
        "az-snp-vtpm",
        cvm.attester().get_evidence(report_data),
        VerifyInput(report_data, None, SystemClock().now()),
    )
    assert claims.claims["tpm"]["pcr11"] == manifest.pcr11_sha256
    rvps.register(rvps_sample_message({"measurement": [claims.claims["measurement"]]}))
    # (1) without the image's PCR 11 reference value: executables is not affirmed
    before, policy_id = _executables(service, cvm)
    assert policy_id == "default_cpu" and before != 3
    # (2) a different image's reference values do not help
    _, other = _image(base / "other", random.Random(8).randbytes(200_000))
    assert other.pcr11_sha256 != manifest.pcr11_sha256
    rvps.register(rvps_sample_message(reference_values(other, ["az-snp-vtpm"])))
    assert _executables(service, cvm)[0] != 3
    # (3) this image's reference values (as `trustpod image reference-values` prints them)
    rvps.register(rvps_sample_message(reference_values(manifest, ["az-snp-vtpm", "tpm"])))
    assert _executables(service, cvm)[0] == 3


def test_publish_to_a_real_kbs(booted: Any, tmp_path: Path) -> None:
    """`trustpod image reference-values --publish` against `trustpod kbs serve` over TLS."""
    import os
    import socket
    import ssl
    import subprocess
    import sys
    import time

    import httpx

    _, manifest, _ = booted
    (tmp_path / "manifest.json").write_text(manifest.dumps())
    cli = [sys.executable, "-m", "trustpod.cli"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        listen = f"127.0.0.1:{s.getsockname()[1]}"
    d = tmp_path / "kbs"
    subprocess.run(
        [*cli, "kbs", "init", "--dir", str(d), "--listen", listen],
        check=True,
        capture_output=True,
        timeout=60,
    )
    proc = subprocess.Popen(
        [*cli, "kbs", "serve", "--config", str(d / "kbs-config.toml")],
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "kbs.log").open("wb"),
    )
    try:
        url, cert, token = f"https://{listen}", str(d / "kbs-cert.pem"), d / "admin-token"
        ctx = ssl.create_default_context(cafile=cert)
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", verify=ctx, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:  # our own server failing is a failure, not a skip
                tail = (tmp_path / "kbs.log").read_text(errors="replace").strip()[-2000:]
                pytest.fail(f"trustpod kbs serve exited at start (rc {proc.returncode}):\n{tail}")
            assert time.monotonic() < deadline, "kbs did not start"
            time.sleep(0.1)
        argv = ["image", "reference-values", str(tmp_path / "manifest.json")]
        argv += ["--publish", url, "--token-file", str(token), "--cert-file", cert]
        res = subprocess.run([*cli, *argv], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        auth = {"Authorization": f"Bearer {token.read_text().strip()}"}
        for rid in ("snp_pcr11", "tdx_pcr11", "tpm_pcr11"):
            got = httpx.get(f"{url}/kbs/v0/reference-value/{rid}", headers=auth, verify=ctx)
            assert got.status_code == 200 and got.json() == [manifest.pcr11_sha256]
        (tmp_path / "bad-token").write_text("not-the-token")
        argv[-3] = str(tmp_path / "bad-token")
        res = subprocess.run([*cli, *argv], capture_output=True, text=True, timeout=60)
        assert res.returncode == 1 and "image.publish.http_401" in res.stderr
        assert "--token-file" in res.stderr  # the fix is printed
    finally:
        proc.terminate()
        proc.wait(20)
