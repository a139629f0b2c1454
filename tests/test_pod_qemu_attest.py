"""A confidential pod in the real pod VM: ``trustpod pod run --provider qemu`` boots the
dm-verity image under QEMU with the emulated Azure CVM provisioned into its swtpm vTPM (AK, HCL
report; the paravisor regenerates the report for each user-data write), the in-guest
``az-snp-vtpm`` attester (``attester = "auto"``, unchanged) attests over the guestfwd route to a
real trustpod KBS over TLS on 127.0.0.1 (``insecure_emulated_roots`` naming the emulated root),
and the container prints the sealed secret the guest unsealed.

Boots a VM (~1 min under TCG) and builds the image when its inputs changed, so it runs with
``make test-vm`` (TRUSTPOD_VM_FULL=1). ``TRUSTPOD_POD_VM_IMAGE`` reuses a built image.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from agent_support import IMAGE
from pod_support import SECRET, PodEnv, build_pod_vm_image, detached_cli, pod_env

pytestmark = [pytest.mark.vm, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
GUEST_HOST_IP = "10.0.2.100"

if os.environ.get("TRUSTPOD_VM_FULL") != "1":
    pytest.skip(
        "the attested pod VM test runs with `make test-vm` (TRUSTPOD_VM_FULL=1)",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for tool, pkg in (
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("mmdebstrap", "mmdebstrap"),
        ("swtpm", "swtpm"),
    ):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (apt-get install {pkg})")
    given = os.environ.get("TRUSTPOD_POD_VM_IMAGE")
    if given:
        return Path(given)
    return build_pod_vm_image(tmp_path_factory.mktemp("podvm"), ROOT)


@pytest.fixture(scope="module")
def registry_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image without baked-in images: the agent pulls from registries."""
    for tool, pkg in (("docker-registry", "docker-registry"), ("skopeo", "skopeo")):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (apt-get install {pkg})")
    return build_pod_vm_image(tmp_path_factory.mktemp("podvm-registry"), ROOT, local_images=False)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodEnv]:
    with pod_env(tmp_path_factory.mktemp("pods"), ("127.0.0.1", GUEST_HOST_IP)) as e:
        yield e


def write_pod(e: PodEnv, image_dir: Path) -> tuple[Path, list[str]]:
    """pod.toml (qemu provider, emulated CVM, the KBS port forwarded) + pod.yaml; run args."""
    port = urlsplit(e.url).port
    config = e.tmp / "qemu-pod.toml"
    config.write_text(
        f'[pod]\nstore = "{e.tmp / "qemu-store"}"\n[qemu]\nimage_dir = "{image_dir}"\n'
        f'emulator_dir = "{e.tmp / "emulator"}"\nforward = [{port}]\n'
    )
    token = base64.b64encode(e.sealed_env.encode()).decode()
    secrets = e.tmp / "qemu-secrets.yaml"
    secrets.write_text(
        f"apiVersion: v1\nkind: Secret\nmetadata: {{name: creds}}\ndata: {{token: {token}}}\n"
    )
    pod = e.tmp / "secret-pod.yaml"
    pod.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: sealed}\nspec:\n  containers:\n"
        f"  - name: app\n    image: {IMAGE}\n"
        "    command: [sh, -c, 'echo \"secret=$TOKEN\"; sleep 600']\n"
        "    env:\n    - {name: TOKEN, valueFrom: {secretKeyRef: {name: creds, key: token}}}\n"
    )
    args = [str(pod), "--provider", "qemu", "--config", str(config), "-d"]
    args += ["--kbs-url", f"https://{GUEST_HOST_IP}:{port}", "--kbs-cert", str(e.ca_pem)]
    args += ["--secrets", str(secrets), "--policy", "allow-all"]
    return config, args


def test_sealed_secret_in_the_vm(image: Path, env: PodEnv) -> None:
    config, args = write_pod(env, image)
    t0 = time.monotonic()
    r = detached_cli("run", *args)
    try:
        assert r.returncode == 0, r.stdout
        out = ""
        while time.monotonic() - t0 < 300 and "secret=" not in out:
            out = detached_cli("logs", "sealed", "app", "--config", str(config)).stdout
            time.sleep(0.5)
        first_log = time.monotonic() - t0
        assert f"secret={SECRET.decode()}" in out, out
        assert "sealed." not in out
        console = detached_cli("logs", "--console", "sealed", "--config", str(config)).stdout
        assert "root verified" in console and "EMULATED platform" in console
        # the KBS verified az-snp-vtpm evidence (the VM's vTPM), and the paravisor rebuilt the
        # HCL report for the guest's user data (the KBS nonce)
        reg = env.core.metrics.registry
        ok = reg.get_sample_value("kbs_attestation_successes_total", {"tee_type": "az-snp-vtpm"})
        assert ok is not None and ok >= 1
        logs = list((env.tmp / "qemu-store" / ".vms-qemu").glob("*/tpm/paravisor.log"))
        assert logs and "HCL report regenerated" in logs[0].read_text()
        print(f"pod run --provider qemu (attested) to the secret's log line: {first_log:.1f} s")
    finally:
        d = detached_cli("delete", "sealed", "--config", str(config))
    assert d.returncode == 0, d.stdout
    assert not list((env.tmp / "qemu-store" / ".vms-qemu").iterdir())


def test_make_demo_vm_pulls_from_the_host_registry(image: Path, registry_image: Path) -> None:
    """``make demo-vm`` end to end: the VM attests, pulls the image from a docker-registry on
    the host through guestfwd, and the container prints the sealed secret."""
    del image  # the qemu/mmdebstrap/swtpm checks
    env = dict(os.environ, TRUSTPOD_POD_VM_IMAGE=str(registry_image))
    r = subprocess.run(
        [sys.executable, "-m", "trustpod.pod.demo_vm"],
        env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    assert "db password: the pod's database password" in out
    assert ": pull 10.0.2.100:" in out  # from the host registry, not baked in
    assert 'kbs_attestation_successes_total{tee_type="az-snp-vtpm"} 1.0' in out
    assert "fix: the pod's initdata policy does not allow this exec" in out
