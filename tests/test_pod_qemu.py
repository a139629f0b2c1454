"""The ``qemu`` provider with the full Debian pod VM image: the VM boots from the dm-verity
root (checked by the guest kernel), reads its userdata from the cidata ISO, starts the agent
behind the in-guest forwarder, and the host's ttRPC health check reaches it through the
127.0.0.1 hostfwd; a flipped byte in the root makes create_instance fail with the kernel's
dm-verity line.

A cold image build is minutes (mmdebstrap + mksquashfs) and each boot ~40 s under TCG, so this
runs with ``make test-vm`` (TRUSTPOD_VM_FULL=1), not in ``make test``; the kernel-checked
dm-verity boot itself is in test_image_vm_boot.py, which ``make test`` runs.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from agent_support import IMAGE, initdata_toml
from pod_support import build_pod_vm_image, detached_cli
from trustpod.agent.policy_defaults import ALLOW_ALL
from trustpod.errors import DependencyError
from trustpod.pod.provider import InstanceTypeSpec
from trustpod.pod.providers.qemu import AGENT_SOCKET, QemuProvider, QemuSettings
from trustpod.pod.userdata import DaemonConfig, build_cloud_config

pytestmark = [pytest.mark.vm, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]

if os.environ.get("TRUSTPOD_VM_FULL") != "1":
    pytest.skip(
        "the full pod VM image test runs with `make test-vm` (TRUSTPOD_VM_FULL=1)",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for tool, pkg in (("qemu-system-x86_64", "qemu-system-x86"), ("mmdebstrap", "mmdebstrap")):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (apt-get install {pkg})")
    return build_pod_vm_image(tmp_path_factory.mktemp("podvm"), ROOT)


def _userdata() -> str:
    initdata = initdata_toml("http://10.0.2.100:8080", None, ALLOW_ALL)
    return build_cloud_config(initdata, DaemonConfig("p1", "default", f"unix:{AGENT_SOCKET}"))


def test_agent_serves_in_the_vm(image: Path, tmp_path: Path) -> None:
    from trustpod.agent.client import AgentClient

    provider = QemuProvider(QemuSettings(image_dir=image, vm_root=tmp_path / "vms"))
    t0 = time.monotonic()
    try:
        inst = provider.create_instance("p1", "0123456789abcdef", _userdata(), InstanceTypeSpec())
        booted = time.monotonic() - t0
        with AgentClient(inst.agent_address, timeout_s=60) as agent:
            pb = agent.pb
            raw = agent.call_raw("grpc.Health", "Check", pb.grpc.CheckRequest().SerializeToString())
            health = pb.grpc.HealthCheckResponse()
            health.ParseFromString(raw)
            assert health.status == 1  # SERVING
        console = provider.console(inst.id)
        assert "root verified" in console and "userdata found" in console
        print(f"boot to agent serving: {booted:.1f} s")
    finally:
        provider.teardown()
    assert not list((tmp_path / "vms").iterdir())


def test_flipped_byte_fails_the_instance(image: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(image, bad)
    with (bad / "disk.raw").open("r+b") as f:
        f.seek(1024 * 1024 + 4096 * 1000 + 7)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0x80]))
    provider = QemuProvider(QemuSettings(image_dir=bad, vm_root=tmp_path / "vms"))
    try:
        with pytest.raises(DependencyError, match=r"verity.*corrupted"):
            provider.create_instance("p1", "0123456789abcdef", _userdata(), InstanceTypeSpec())
    finally:
        provider.teardown()


def test_pod_run_in_the_vm_through_the_cli(image: Path, tmp_path: Path) -> None:
    config = tmp_path / "pod.toml"
    config.write_text(f'[pod]\nstore = "{tmp_path / "store"}"\n[qemu]\nimage_dir = "{image}"\n')
    pod = tmp_path / "pod.yaml"
    pod.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: hello}\nspec:\n  containers:\n"
        f"  - name: app\n    image: {IMAGE}\n"
        "    command: [sh, -c, 'echo hello from the pod VM; sleep 600']\n"
    )
    t0 = time.monotonic()
    r = detached_cli(
        "run", str(pod), "--provider", "qemu", "--config", str(config), "-d",
        "--kbs-url", "http://10.0.2.100:8080", "--policy", "allow-all",
    )  # fmt: skip
    try:
        assert r.returncode == 0, r.stdout
        line = ""
        while time.monotonic() - t0 < 300 and "hello from the pod VM" not in line:
            line = detached_cli("logs", "hello", "app", "--config", str(config)).stdout
            time.sleep(0.5)
        first_log = time.monotonic() - t0
        assert "hello from the pod VM" in line
        print(f"pod run --provider qemu to first log line: {first_log:.1f} s")
    finally:
        d = detached_cli("delete", "hello", "--config", str(config))
    assert d.returncode == 0, d.stdout
    assert not list((tmp_path / "store" / ".vms-qemu").iterdir())
