"""``make demo-vm``: ``make demo``'s confidential pod in a real pod VM (the ``qemu`` provider).

On ``trustpod.demo``'s KBS (TLS with the guest-side address ``10.0.2.100`` in its certificate,
SQLite, trusting the emulated vendor chain): the bootable dm-verity image (``trustpod image
build --bootable``, cached by its inputs' digest), a busybox image pushed with skopeo to a local
``docker-registry``, a sealed secret and an attestation policy pinning the pod's initdata. Then
``trustpod pod run --provider qemu``: qemu (TCG here) boots the image, the guest kernel opens the
root through dm-verity, the agent reads the cidata userdata, binds the initdata into PCR 8,
attests with the in-guest ``az-snp-vtpm`` attester against the VM's swtpm vTPM (the emulated
Azure CVM's AK and HCL report provisioned before boot, its paravisor regenerating the report),
reaching the KBS and the registry through user-mode networking's ``guestfwd`` to 127.0.0.1;
pulls the image, unseals the secret, and the container prints it. ``pod logs --console`` shows
the serial console; ``pod exec`` is refused by the generated policy; ``pod delete``.

The image in the registry is pinned by digest and accepted unsigned (``insecureAcceptAnything``
for that one repository): ``make demo`` shows the cosign-signed variant on the sandbox provider.
INSECURE emulation throughout (the KBS accepts the evidence only via ``insecure_emulated_roots``).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from trustpod.demo import Demo, GuestScenario, RunningKbs

__all__ = ["GUEST_HOST_IP", "main", "vm_pod_scenario"]

#: where the pod VM reaches the host's forwarded ports (``trustpod.pod.providers.qemu``)
GUEST_HOST_IP = "10.0.2.100"
SECRET = b"the pod's database password (sealed; released only to this pod VM's initdata)"
_REPO = "demo/app"
_TOOLS = {
    "qemu-system-x86_64": "qemu-system-x86",
    "swtpm": "swtpm",
    "docker-registry": "docker-registry",
    "skopeo": "skopeo",
}


def _checkout() -> Path:
    root = Path(__file__).resolve().parents[3]
    if not (root / "pyproject.toml").is_file():
        raise RuntimeError("make demo-vm runs from a trustpod checkout (the image bakes its wheel)")
    return root


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Output through a file: a detached log pump inherits it (a pipe would never end)."""
    with tempfile.TemporaryFile("w+") as out:
        r = subprocess.run(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            timeout=timeout,
            check=False,
        )
        out.seek(0)
        return subprocess.CompletedProcess(r.args, r.returncode, out.read(), "")


def _pod(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-m", "trustpod.cli", "pod", *args], timeout)


def _image(work: Path, demo: Demo) -> Path:
    given = os.environ.get("TRUSTPOD_POD_VM_IMAGE")
    if given:
        demo.out(f"    using $TRUSTPOD_POD_VM_IMAGE={given}")
        return Path(given)
    out = work / "image"
    with demo.step("trustpod image build --bootable (Debian rootfs + this checkout's wheel)"):
        argv = [sys.executable, "-m", "trustpod.cli", "image", "build", "--bootable", "--no-vhd"]
        r = _run([*argv, "--out", str(out), "--checkout", str(_checkout())], 1800)
        if r.returncode != 0:
            raise RuntimeError(f"image build failed:\n{r.stdout[-2000:]}")
    for line in r.stdout.splitlines():
        if "cached" in line or line.startswith(("cmdline", "digest")):
            demo.out(f"    | {line.strip()[:150]}")
    return out


def _push(work: Path, demo: Demo) -> tuple[Any, str]:
    from trustpod.oci.layout import tar_tree, write_layout
    from trustpod.pod.demo import _Registry, _rootfs

    with demo.step("local docker-registry; busybox image pushed (skopeo)"):
        registry = _Registry(work / "registry")
        write_layout(work / "layout", [tar_tree(_rootfs(work / "rootfs"))], tag="1")
        argv = ["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{work / 'layout'}:1"]
        subprocess.run([*argv, f"docker://{registry.host}/{_REPO}:1"], check=True, timeout=120)
        index = json.loads((work / "layout" / "index.json").read_text())
        digest = str(index["manifests"][0]["digest"])
    return registry, digest


def vm_pod_scenario(kbs: RunningKbs, demo: Demo) -> None:
    from trustpod.guest.demo_flow import pin_initdata_policy
    from trustpod.initdata import InitData, encode_annotation
    from trustpod.pod.demo import _initdata, _ok
    from trustpod.pod.runner import generated_policy
    from trustpod.sealed import VaultSecret, generate_signing_key, public_jwk, seal

    work = Path(kbs.directory) / "pod-vm"
    work.mkdir()
    image_dir = _image(work, demo)
    registry, digest = _push(work, demo)
    try:
        kbs_port = urlsplit(kbs.url).port
        reg_port = int(registry.host.rpartition(":")[2])
        guest_reg = f"{GUEST_HOST_IP}:{reg_port}"
        ref = f"{guest_reg}/{_REPO}@{digest}"
        demo.out(f"    the VM pulls {ref} (guestfwd to 127.0.0.1:{reg_port})")
        signer = generate_signing_key()
        sealed = seal(
            VaultSecret(name="kbs:///default/pod/db"), signer, "kbs:///default/pod-seal/1"
        )
        image_policy = {
            "default": [{"type": "reject"}],
            "transports": {
                "docker": {f"{guest_reg}/{_REPO}": [{"type": "insecureAcceptAnything"}]}
            },
        }
        image = {
            "image_security_policy_uri": "kbs:///default/pod/image-policy",
            "insecure_http_registries": [guest_reg],
            "work_dir": "/run/trustpod/image-work",
        }
        spec = (
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: demo-vm-pod\n  annotations:\n"
            "    io.katacontainers.config.hypervisor.cc_init_data: {note}\nspec:\n"
            f"  containers:\n  - name: app\n    image: {ref}\n"
            "    command: [sh, -c, 'echo \"db password: $DB_PASSWORD\"; sleep 600']\n"
            f"    env: [{{{{name: DB_PASSWORD, value: '{sealed}'}}}}]\n"
        )
        guest_kbs = dataclasses.replace(kbs, url=f"https://{GUEST_HOST_IP}:{kbs_port}")
        initdata = _initdata(guest_kbs, image, generated_policy(spec.format(note="''")))
        parsed = InitData.parse(initdata.encode())
        with (
            kbs.admin() as admin,
            demo.step("admin: sealed secret + key, image policy; attestation policy pins initdata"),
        ):
            resources = {
                "default/pod/db": SECRET,
                "default/pod-seal/1": json.dumps(public_jwk(signer.public_key())).encode(),
                "default/pod/image-policy": json.dumps(image_policy).encode(),
            }
            for path, value in resources.items():
                _ok(admin.post(f"/kbs/v0/resource/{path}", content=value))
            policy = base64.urlsafe_b64encode(pin_initdata_policy(parsed).encode()).rstrip(b"=")
            body = {"policy_id": "default_cpu", "policy": policy.decode()}
            _ok(admin.post("/kbs/v0/attestation-policy", json=body))
        demo.out(f"    initdata sha256:{parsed.digest.hex()} (KBS at {guest_kbs.url} for the VM)")
        pod_yaml = work / "pod.yaml"
        pod_yaml.write_text(spec.format(note=encode_annotation(initdata.encode())))
        config = work / "pod.toml"
        config.write_text(
            f'[pod]\nstore = "{work / "store"}"\n[qemu]\nimage_dir = "{image_dir}"\n'
            f'emulator_dir = "{Path(kbs.directory) / "cvm"}"\nforward = [{kbs_port}, {reg_port}]\n'
        )
        _run_pod(pod_yaml, config, demo)
    finally:
        registry.close()


def _run_pod(pod_yaml: Path, config: Path, demo: Demo) -> None:
    cfg = ["--config", str(config)]
    with demo.step("trustpod pod run --provider qemu pod.yaml (boot, attest, pull, unseal)"):
        r = _pod("run", str(pod_yaml), "--provider", "qemu", *cfg, "-d", "--no-progress")
        for line in r.stdout.splitlines():
            demo.out(f"    | {line.strip()}")
        if r.returncode != 0:
            raise RuntimeError("trustpod pod run failed")
    try:
        with demo.step("trustpod pod logs demo-vm-pod (the container's first line)"):
            out, deadline = "", time.monotonic() + 300
            while "db password" not in out and time.monotonic() < deadline:
                out = _pod("logs", "demo-vm-pod", *cfg).stdout
                time.sleep(0.2)
        demo.out(f"    {out.strip()}")
        if SECRET.decode() not in out:
            raise RuntimeError("the container did not print the secret")
        with demo.step("trustpod pod logs --console demo-vm-pod (the VM's serial console)"):
            console = _pod("logs", "--console", "demo-vm-pod", *cfg).stdout
        for line in console.splitlines():
            if line.startswith(("trustpod-initramfs", "trustpod-init")):
                demo.out(f"    | {line.strip()[:150]}")
        with demo.step("trustpod pod exec demo-vm-pod -- cat /proc/1/environ (refused)"):
            r = _pod("exec", *cfg, "demo-vm-pod", "--", "cat", "/proc/1/environ", timeout=120)
        demo.out(f"    exit {r.returncode}: {(r.stdout.strip().splitlines() or [''])[-1][:150]}")
        if r.returncode == 0:
            raise RuntimeError("exec was not refused")
    finally:
        with demo.step("trustpod pod delete demo-vm-pod (qemu, swtpm, paravisor stopped)"):
            d = _pod("delete", "demo-vm-pod", *cfg, timeout=120)
        if d.returncode != 0:
            raise RuntimeError(f"delete failed: {d.stdout}")


def main() -> int:
    import logging

    logging.basicConfig(level=logging.ERROR)
    missing = [f"{t} (apt-get install {p})" for t, p in _TOOLS.items() if shutil.which(t) is None]
    if os.geteuid() != 0:
        missing.append("root (mmdebstrap in the image build)")
    if missing:
        print("make demo-vm needs: " + ", ".join(missing), file=sys.stderr)
        return 2
    demo = Demo(emulated_cvm=True, kbs_sans=(GUEST_HOST_IP,))
    name = "confidential pod in a QEMU pod VM (dm-verity root, vTPM, emulated Azure CVM)"
    return demo.run([GuestScenario(name, vm_pod_scenario)])


if __name__ == "__main__":
    sys.exit(main())
