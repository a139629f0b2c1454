"""Helpers for the pod tests: a KBS over TLS trusting the emulated vendor chain, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trustme

from agent_support import IMAGE, busybox_rootfs
from kbs_support import serve
from trustpod._internal.b64 import b64url_encode
from trustpod.guest.emulator.cvm import EmulatedAzureCvm
from trustpod.kbs.app import create_app
from trustpod.kbs.config import parse_config
from trustpod.kbs.wiring import build_core
from trustpod.sealed import VaultSecret, generate_signing_key, public_jwk, seal

SECRET = b"pod-secret-from-the-kbs"
FILE_SECRET = b"volume-secret"
#: Attestation policy: affirming only when the evidence carries an initdata binding.
AFFIRM_WITH_INITDATA = """package policy
import rego.v1
default trust_claims := {"executables": 33, "hardware": 97, "configuration": 36}
trust_claims := {"executables": 2, "hardware": 2, "configuration": 2} if {
    input.init_data != ""
}
"""


@dataclass
class PodEnv:
    tmp: Path
    url: str
    ca_pem: Path
    config: Path
    core: Any
    sealed_env: str
    sealed_file: str

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "trustpod.cli", "pod", *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


@contextmanager
def pod_env(tmp: Path, cert_hosts: tuple[str, ...] = ("127.0.0.1",)) -> Iterator[PodEnv]:
    store = tmp / "store"
    emu = tmp / "emulator"
    EmulatedAzureCvm.create(emu, backend="software")  # the emulated vendor chain only
    roots = emu / "vendor" / "roots.pem"
    ca = trustme.CA()
    text = (
        "[http_server]\ninsecure_http = true\n[attestation_service]\ntimeout = 5\n"
        f'[trustpod]\ninsecure_emulated_roots = ["{roots}"]\n'
    )
    core, admin = build_core(parse_config(tomllib.loads(text), tmp / "kbs.toml"))
    signer = generate_signing_key()
    core.set_resource("default/key/1", SECRET)
    core.set_resource("default/key/2", FILE_SECRET)
    core.set_resource("default/sealed-key/1", json.dumps(public_jwk(signer.public_key())).encode())
    core.set_attestation_policy(
        {"policy_id": "default_cpu", "policy": b64url_encode(AFFIRM_WITH_INITDATA.encode())}
    )
    kid = "kbs:///default/sealed-key/1"
    images = tmp / "images"
    busybox_rootfs(images / IMAGE.replace("/", "_").replace(":", "_"))
    (tmp / "ca.pem").write_bytes(ca.cert_pem.bytes())
    config = tmp / "pod.toml"
    config.write_text(
        f'[pod]\nstore = "{store}"\n[sandbox]\nlocal_images = "{images}"\nemulator_dir = "{emu}"\n'
    )
    with serve(create_app(core, admin), cert=ca.issue_cert(*cert_hosts)) as url:
        try:
            yield PodEnv(
                tmp,
                url,
                tmp / "ca.pem",
                config,
                core,
                seal(VaultSecret(name="kbs:///default/key/1"), signer, kid),
                seal(VaultSecret(name="kbs:///default/key/2"), signer, kid),
            )
        finally:
            delete_all(config)


def delete_all(config: Path) -> None:
    """Delete every pod of the store (a failed test must not leave pod VMs running)."""
    from trustpod.pod.runner import delete_pod
    from trustpod.pod.wiring import load_config, make_provider, make_store

    cfg = load_config(config)
    store = make_store(cfg)
    for record in list(store.list()):
        if record.provider == "sandbox":
            delete_pod(store, make_provider("sandbox", cfg, store), record.name)


def detached_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``trustpod pod ARGS`` with output to a file, not a pipe: ``run -d`` leaves its log pump
    running, and the pump inherits stdout/stderr (a pipe would never reach EOF)."""
    with tempfile.TemporaryFile("w+") as out:
        r = subprocess.run(
            [sys.executable, "-m", "trustpod.cli", "pod", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=600,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        out.seek(0)
        return subprocess.CompletedProcess(r.args, r.returncode, out.read(), "")


def build_pod_vm_image(base: Path, checkout: Path, *, local_images: bool = True) -> Path:
    """``trustpod image build --bootable`` into ``base/image`` (cached by its inputs' digest);
    with ``local_images`` the busybox test image is baked in, else the agent pulls."""
    out = base / "image"
    cmd = [sys.executable, "-m", "trustpod.cli", "image", "build", "--bootable", "--no-vhd"]
    cmd += ["--out", str(out), "--checkout", str(checkout)]
    if local_images:
        images = base / "images"
        busybox_rootfs(images / IMAGE.replace("/", "_").replace(":", "_"))
        cmd += ["--local-images", str(images)]
    subprocess.run(cmd, check=True, timeout=1500)
    return out
