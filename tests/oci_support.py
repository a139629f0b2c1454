"""Image test support: a real docker-registry on 127.0.0.1, skopeo, a throwaway GPG key, pushes."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from trustpod.oci.layout import tar_tree, write_layout

__all__ = [
    "GpgKey",
    "Registry",
    "build_image",
    "busybox_rootfs",
    "cosign_sign",
    "guest_puller",
    "load_cosign_private_key",
    "push_blob",
    "push_manifest",
    "push_secret_message_image",
    "skopeo_allows",
    "skopeo_copy",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Registry:
    """``docker-registry serve`` with its own config (components-on-this-platform.md §8)."""

    def __init__(
        self, directory: Path, *, htpasswd: Path | None = None, tls: tuple[Path, Path] | None = None
    ) -> None:
        exe = shutil.which("docker-registry")
        if exe is None:
            raise FileNotFoundError("docker-registry (apt package docker-registry)")
        directory.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.host = f"127.0.0.1:{self.port}"
        auth = ""
        tls_cfg = ""
        if tls is not None:
            tls_cfg = f", tls: {{certificate: {tls[0]}, key: {tls[1]}}}"
        if htpasswd is not None:
            auth = f"auth: {{htpasswd: {{realm: test, path: {htpasswd}}}}}\n"
        cfg = directory / "config.yml"
        cfg.write_text(
            "version: 0.1\nlog: {level: error}\n"
            f"storage: {{filesystem: {{rootdirectory: {directory / 'data'}}}, "
            "delete: {enabled: true}}\n"
            f"http: {{addr: {self.host}{tls_cfg}}}\n" + auth
        )
        self._log = (directory / "registry.log").open("wb")
        self.proc = subprocess.Popen(
            [exe, "serve", str(cfg)], stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                httpx.get(
                    f"{'https' if tls else 'http'}://{self.host}/v2/", timeout=1, verify=False
                )
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        self.close()
        raise RuntimeError("docker-registry did not start")

    def close(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


def busybox_rootfs(root: Path) -> Path:
    """``/bin/busybox`` (busybox-static) plus a few applet links and directories."""
    bb = Path("/bin/busybox")
    if not bb.exists():
        raise FileNotFoundError("busybox (apt package busybox-static)")
    (root / "bin").mkdir(parents=True)
    shutil.copy2(bb, root / "bin" / "busybox")
    for applet in ("sh", "echo", "cat", "ls"):
        (root / "bin" / applet).symlink_to("busybox")
    for d in ("proc", "sys", "dev", "tmp", "etc"):
        (root / d).mkdir()
    (root / "etc" / "hostname").write_text("trustpod\n")
    return root


def skopeo_copy(src: str, dst: str, *extra: str, env: dict[str, str] | None = None) -> None:
    subprocess.run(
        [
            "skopeo",
            "--insecure-policy",
            "copy",
            "--dest-tls-verify=false",
            "--src-tls-verify=false",
            *extra,
            src,
            dst,
        ],
        check=True,
        capture_output=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def skopeo_allows(ref: str, policy: Path, registries_d: Path, dest: Path) -> tuple[bool, str]:
    """skopeo's decision for pulling ``ref`` under ``policy`` (True when the copy succeeds)."""
    proc = subprocess.run(
        [
            "skopeo",
            "--policy",
            str(policy),
            "--registries.d",
            str(registries_d),
            "copy",
            "--remove-signatures",
            "--src-tls-verify=false",
            f"docker://{ref}",
            f"oci:{dest}:x",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return proc.returncode == 0, proc.stderr


class GpgKey:
    """A passphrase-less ed25519 signing key in a temp GNUPGHOME."""

    def __init__(self, home: Path, uid: str = "trustpod test <test@trustpod.invalid>") -> None:
        if shutil.which("gpg") is None:
            raise FileNotFoundError("gpg (apt package gnupg)")
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.home = home
        self.env = {"GNUPGHOME": str(home)}
        self._gpg("--quick-gen-key", uid, "ed25519", "sign", "never")
        out = self._gpg("--with-colons", "--list-keys", uid)
        self.fingerprint = next(
            ln.split(":")[9] for ln in out.splitlines() if ln.startswith("fpr:")
        )
        self.public = subprocess.run(
            ["gpg", "--batch", "--export", self.fingerprint],
            capture_output=True,
            check=True,
            env={**os.environ, **self.env},
        ).stdout

    def _gpg(self, *args: str) -> str:
        return subprocess.run(
            ["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", *args],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, **self.env},
            timeout=60,
        ).stdout

    def stop_agent(self) -> None:
        subprocess.run(
            ["gpgconf", "--kill", "gpg-agent"],
            env={**os.environ, **self.env},
            check=False,
            capture_output=True,
        )


def push_blob(host: str, repo: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    r = httpx.post(f"http://{host}/v2/{repo}/blobs/uploads/")
    r.raise_for_status()
    loc = r.headers["location"]
    if loc.startswith("/"):
        loc = f"http://{host}{loc}"
    sep = "&" if "?" in loc else "?"
    httpx.put(
        f"{loc}{sep}digest={digest}",
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    ).raise_for_status()
    return digest


def push_manifest(host: str, repo: str, ref: str, manifest: dict[str, object]) -> str:
    raw = json.dumps(manifest).encode()
    httpx.put(
        f"http://{host}/v2/{repo}/manifests/{ref}",
        content=raw,
        headers={"Content-Type": str(manifest["mediaType"])},
    ).raise_for_status()
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def cosign_sign(host: str, repo: str, digest: str, private_key: object, identity: str) -> None:
    """Store a cosign-format signature (``sha256-<hex>.sig``) for ``digest``, signed with
    ``private_key`` (an EC private key from ``cryptography``)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    assert isinstance(private_key, ec.EllipticCurvePrivateKey)
    payload = json.dumps(
        {
            "critical": {
                "identity": {"docker-reference": identity},
                "image": {"docker-manifest-digest": digest},
                "type": "cosign container image signature",
            },
            "optional": None,
        }
    ).encode()
    sig = private_key.sign(payload, ec.ECDSA(hashes.SHA256()))
    pdigest = push_blob(host, repo, payload)
    cfg = b"{}"
    cdigest = push_blob(host, repo, cfg)
    push_manifest(
        host,
        repo,
        digest.replace(":", "-") + ".sig",
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": cdigest,
                "size": len(cfg),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                    "digest": pdigest,
                    "size": len(payload),
                    "annotations": {
                        "dev.cosignproject.cosign/signature": base64.b64encode(sig).decode()
                    },
                }
            ],
        },
    )


def build_image(
    layout: Path,
    root: Path,
    tag: str,
    *,
    extra_layers: list[bytes] | None = None,
    compression: str = "gzip",
) -> str:
    return write_layout(
        layout, [tar_tree(root), *(extra_layers or [])], tag=tag, compression=compression
    )


def push_secret_message_image(tmp: Path, host: str, message: str, tag: str = "1") -> Path:
    """busybox plus a layer adding ``/etc/secret-message`` (``message``): built as ``tag`` in
    ``tmp/layout`` (returned) and pushed to ``docker://{host}/plain/app:1``."""
    root = busybox_rootfs(tmp / "rootfs")
    top = tmp / "top"
    (top / "etc").mkdir(parents=True)
    (top / "etc" / "secret-message").write_text(message)
    layout = tmp / "layout"
    build_image(layout, root, tag, extra_layers=[tar_tree(top)])
    skopeo_copy(f"oci:{layout}:{tag}", f"docker://{host}/plain/app:1")
    return layout


def load_cosign_private_key(path: Path, password: bytes = b"") -> object:
    """An ``ENCRYPTED COSIGN PRIVATE KEY`` (scrypt + nacl secretbox around PKCS#8 DER)."""
    from cryptography.hazmat.primitives import serialization
    from nacl.secret import SecretBox

    body = "".join(ln for ln in path.read_text().splitlines() if not ln.startswith("-----"))
    doc = json.loads(base64.b64decode(body))
    p = doc["kdf"]["params"]
    key = hashlib.scrypt(
        password,
        salt=base64.b64decode(doc["kdf"]["salt"]),
        n=p["N"],
        r=p["r"],
        p=p["p"],
        dklen=32,
        maxmem=128 * 1024 * 1024,
    )
    der = SecretBox(key).decrypt(
        base64.b64decode(doc["ciphertext"]), base64.b64decode(doc["cipher"]["nonce"])
    )
    return serialization.load_der_private_key(der, None)


@contextmanager
def guest_puller(tmp: Path, kbs_url: str, kbs_cert: str, image_toml: str) -> Iterator[Any]:
    """A started ``GuestRuntime`` (sample TEE) whose initdata names the KBS at ``kbs_url`` (TLS,
    ``kbs_cert``) with ``image_toml`` (an ``[image]`` table) in its cdh.toml; yields the
    ``GuestImagePuller`` built from its CDH. Config under ``tmp/guest``, keys in ``tmp/keys``."""
    from trustpod.cli.initdata import build_initdata
    from trustpod.guest.run import GuestRuntime
    from trustpod.oci.guest import GuestImagePuller

    d = tmp / "guest"
    d.mkdir()
    (tmp / "keys").mkdir()
    doc = build_initdata(kbs_url, kbs_cert=kbs_cert, policy=None)
    assert "credentials = []\n" in doc
    (d / "initdata.toml").write_text(
        doc.replace("credentials = []\n", "credentials = []\n\n" + image_toml, 1)
    )
    (d / "guest.toml").write_text(f'attester = "sample"\nkey_dir = "{tmp / "keys"}"\n')
    runtime = GuestRuntime.from_dir(d)
    runtime.start()
    try:
        puller = GuestImagePuller.from_cdh(runtime.cdh, dict(runtime.config.cdh.image))
        try:
            yield puller
        finally:
            puller.close()
    finally:
        runtime.stop()
        runtime.close()
