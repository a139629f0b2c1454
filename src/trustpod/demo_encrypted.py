"""``make demo-encrypted``: an encrypted image whose key only the attested pod gets, on 127.0.0.1.

Steps (each printed with its timing, on ``trustpod.demo``'s KBS: ``kbs init``, TLS, SQLite):
start a ``docker-registry``; build a small image and ``trustpod image encrypt`` it into the
registry with a fresh KEK that is published to the KBS through the admin API (and kept nowhere
else); show the layer annotations; show that the KEK is not released without attestation. Then,
where pods run here (swtpm, runc, root, busybox), a confidential pod
(``trustpod.pod.demo_encrypted``): ``trustpod pod run`` boots a sandbox pod VM (emulated Azure
CVM), which attests, fetches the KEK through its attested CDH, checks the HMAC, decrypts and
unpacks the image, and the container prints the encrypted layer's file; a pod whose image key
the resource policy denies fails naming the key; delete leaves no pod, pod VM, process or
mount; the KBS metrics show the one KEK read. Elsewhere a sample-TEE guest (initdata with
``[image]``) does the pull itself: attest, KEK through the CDH, HMAC, unpack; the denied image is
refused before anything is unpacked, naming the key.

Needs ``docker-registry`` (Debian package ``docker-registry``); without it the demo says so.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from trustpod._internal.b64 import b64url_encode
from trustpod.demo import Demo, GuestScenario, RunningKbs, _ok

__all__ = ["encrypted_image_scenario", "main", "pods_run_here"]

#: Released to affirming attestations only, and never the "denied" image key.
RESOURCE_POLICY = """package policy
import rego.v1
default allow := false
allow if {
    data["resource-path"][2] != "denied"
    input.submods.cpu0["ear.status"] == "affirming"
}
"""
MESSAGE = b"hello from an encrypted layer: decrypted only inside the attested pod\n"


def _registry(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        host = f"127.0.0.1:{s.getsockname()[1]}"
    cfg = tmp / "registry.yml"
    cfg.write_text(
        "version: 0.1\nlog: {level: error}\n"
        f"storage: {{filesystem: {{rootdirectory: {tmp / 'registry'}}}}}\nhttp: {{addr: {host}}}\n"
    )
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://{host}/v2/", timeout=1)
            return proc, host
        except httpx.HTTPError:
            time.sleep(0.05)
    os.kill(proc.pid, signal.SIGTERM)
    raise RuntimeError("docker-registry did not start")


def _layer() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("etc")
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
        info = tarfile.TarInfo("etc/secret-message")
        info.size, info.mode = len(MESSAGE), 0o644
        tar.addfile(info, io.BytesIO(MESSAGE))
    return buf.getvalue()


def pods_run_here() -> bool:
    """A sandbox pod VM needs swtpm (the vTPM), runc, root and a static busybox (its image)."""
    from trustpod.guest.emulator.swtpm import swtpm_binary

    tools = swtpm_binary() is not None and shutil.which("runc") is not None
    return tools and os.geteuid() == 0 and Path("/bin/busybox").exists()


def encrypted_image_scenario(kbs: RunningKbs, demo: Demo, *, pod: bool = False) -> None:
    from trustpod.cli.main import main as cli
    from trustpod.errors import PolicyDenied
    from trustpod.oci.layout import tar_tree, write_layout

    tmp = kbs.directory / "encrypted-demo"
    tmp.mkdir()
    with demo.step("start docker-registry on 127.0.0.1"):
        reg, host = _registry(tmp)
    try:
        if pod:
            from trustpod.pod.providers.sandbox import build_pause_rootfs

            with demo.step("build an image (busybox + etc/secret-message) as an OCI layout"):
                base = tar_tree(build_pause_rootfs(tmp / "rootfs"))
                write_layout(tmp / "layout", [base, _layer()], tag="1", cmd=["sh"])
        else:
            with demo.step("build a one-layer image (etc/secret-message) as an OCI layout"):
                cmd = ["cat", "/etc/secret-message"]
                write_layout(tmp / "layout", [_layer()], tag="1", cmd=cmd)
        token = kbs.directory / "admin-token"
        token.write_text(kbs.admin_token)
        for name in ("app", "denied"):
            title = (
                f"trustpod image encrypt oci:layout:1 docker://{host}/demo/{name}:1 "
                f"--key-uri kbs:///default/image-key/{name} --publish {kbs.url}"
            )
            with demo.step(title):
                argv = ["image", "encrypt", f"oci:{tmp / 'layout'}:1"]
                argv += [f"docker://{host}/demo/{name}:1", "--insecure-http-registry", host]
                argv += ["--key-uri", f"kbs:///default/image-key/{name}", "--publish", kbs.url]
                argv += ["--token-file", str(token), "--cert-file", kbs.cafile]
                with open(os.devnull, "w") as null:
                    old, sys.stdout = sys.stdout, null
                    try:
                        rc = cli(argv)
                    finally:
                        sys.stdout = old
                if rc != 0:
                    raise RuntimeError(f"image encrypt failed ({rc})")
        import httpx

        r = httpx.get(
            f"http://{host}/v2/demo/app/manifests/1",
            headers={"accept": "application/vnd.oci.image.manifest.v1+json"},
        )
        layer = r.json()["layers"][-1]
        ann = layer["annotations"]
        packet = json.loads(
            base64.b64decode(ann["org.opencontainers.image.enc.keys.provider.attestation-agent"])
        )
        demo.out(f"    layer {layer['mediaType']}")
        demo.out(f"    annotation packet: kid={packet['kid']} wrap_type={packet['wrap_type']}")
        demo.out(f"    pubopts: {base64.b64decode(ann['org.opencontainers.image.enc.pubopts'])!r}")
        with kbs.admin() as a, demo.step("admin: resource policy (affirming, never 'denied')"):
            policy = b64url_encode(RESOURCE_POLICY.encode())
            _ok(a.post("/kbs/v0/resource-policy", json={"policy": policy}))
        with demo.step("GET the KEK without attestation (must be refused)"):
            import ssl

            ctx = ssl.create_default_context(cafile=kbs.cafile)
            r = httpx.get(f"{kbs.url}/kbs/v0/resource/default/image-key/app", verify=ctx)
            if r.status_code == 200:
                raise RuntimeError("the KBS released the KEK without attestation")
        demo.out(f"    refused: HTTP {r.status_code}")
        if pod:
            from trustpod.pod.demo_encrypted import encrypted_pod_scenario

            encrypted_pod_scenario(kbs, demo, tmp, host, _ok)
        else:
            _guest_pull(kbs, demo, tmp, host, PolicyDenied)
    finally:
        os.kill(reg.pid, signal.SIGTERM)
        reg.wait(10)


def _guest_pull(
    kbs: RunningKbs, demo: Demo, tmp: Path, host: str, denied_error: type[Exception]
) -> None:
    from trustpod.cli.initdata import build_initdata
    from trustpod.guest.run import GuestRuntime
    from trustpod.oci.guest import GuestImagePuller

    guest = tmp / "guest"
    guest.mkdir()
    (tmp / "keys").mkdir()
    doc = build_initdata(kbs.url, kbs_cert=Path(kbs.cafile).read_text(), policy=None)
    image = f'[image]\nwork_dir = "{tmp / "work"}"\ninsecure_http_registries = ["{host}"]\n'
    (guest / "initdata.toml").write_text(
        doc.replace("credentials = []\n", "credentials = []\n\n" + image, 1)
    )
    (guest / "guest.toml").write_text(f'attester = "sample"\nkey_dir = "{tmp / "keys"}"\n')
    runtime = GuestRuntime.from_dir(guest)
    with demo.step("guest: start (initdata with [image], sample TEE)"):
        runtime.start()
    puller = GuestImagePuller.from_cdh(runtime.cdh, dict(runtime.config.cdh.image))
    try:
        with demo.step(f"guest: pull {host}/demo/app:1 (attest, KEK via the CDH, HMAC, unpack)"):
            rootfs = puller.pull(f"{host}/demo/app:1", tmp / "bundle-app")
        demo.out(f"    /etc/secret-message: {(rootfs / 'etc' / 'secret-message').read_text()!r}")
        with demo.step(f"guest: pull {host}/demo/denied:1 (its key is denied)"):
            try:
                puller.pull(f"{host}/demo/denied:1", tmp / "bundle-denied")
            except denied_error as exc:
                demo.out(f"    refused: {exc}")
            else:
                raise RuntimeError("the denied image was pulled")
            if (tmp / "bundle-denied" / "rootfs").exists():
                raise RuntimeError("something of the denied image was unpacked")
    finally:
        puller.close()
        runtime.stop()
        runtime.close()


def main() -> int:
    import logging

    logging.basicConfig(level=logging.ERROR)
    if shutil.which("docker-registry") is None:
        print("demo-encrypted: docker-registry not installed (apt package docker-registry)")
        return 0
    if pods_run_here():
        name = "encrypted image in a confidential pod (trustpod pod run, sandbox pod VM)"
        scenario = functools.partial(encrypted_image_scenario, pod=True)
        return Demo(emulated_cvm=True).run([GuestScenario(name, scenario)])
    print("demo-encrypted: no sandbox pods here (swtpm, runc, root, busybox): a sample-TEE guest")
    return Demo().run([GuestScenario("encrypted image", encrypted_image_scenario)])


if __name__ == "__main__":
    sys.exit(main())
