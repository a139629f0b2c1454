"""``make demo``'s confidential pod: a ``GuestScenario`` for ``trustpod.demo``.

On the demo's KBS (TLS, SQLite, trusting the emulated vendor chain): a sealed secret, a cosign
public key and an image security policy requiring that key; a busybox image pushed with skopeo
to a local ``docker-registry`` and signed (cosign simple-signing payload, ECDSA P-256). Then, as
a user would: ``trustpod pod run`` of a Pod whose ``cc_init_data`` annotation pins its agent
policy (``ExecProcessRequest`` denied), its KBS and certificate and the image policy; the
sandbox pod VM boots, attests (emulated Azure CVM), pulls and verifies the image in the guest,
unseals the env secret and the container prints it; ``trustpod pod exec`` is refused with the
policy's reason; ``trustpod pod delete``. Without docker-registry/skopeo the image is served
from the pod VM image instead (said so, unsigned).
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["pod_scenario"]

SECRET = b"the pod's database password (sealed; released only to this pod's initdata)"
_REPO = "demo/app"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _rootfs(path: Path) -> Path:
    from trustpod.pod.providers.sandbox import build_pause_rootfs

    return build_pause_rootfs(path)


class _Registry:
    def __init__(self, directory: Path) -> None:
        import httpx

        directory.mkdir(parents=True)
        self.host = f"127.0.0.1:{_port()}"
        cfg = directory / "config.yml"
        cfg.write_text(
            "version: 0.1\nlog: {level: error}\n"
            f"storage: {{filesystem: {{rootdirectory: {directory / 'data'}}}}}\n"
            f"http: {{addr: {self.host}}}\n"
        )
        self._log = (directory / "registry.log").open("wb")
        exe = shutil.which("docker-registry") or "docker-registry"
        self.proc = subprocess.Popen(
            [exe, "serve", str(cfg)], stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://{self.host}/v2/", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        self.close()
        raise RuntimeError("docker-registry did not start")

    def push_blob(self, data: bytes) -> str:
        import httpx

        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        r = httpx.post(f"http://{self.host}/v2/{_REPO}/blobs/uploads/")
        r.raise_for_status()
        loc = r.headers["location"]
        loc = f"http://{self.host}{loc}" if loc.startswith("/") else loc
        sep = "&" if "?" in loc else "?"
        httpx.put(f"{loc}{sep}digest={digest}", content=data).raise_for_status()
        return digest

    def cosign_sign(self, digest: str, key: Any) -> None:
        """A cosign signature (``sha256-<hex>.sig``): simple-signing payload, ECDSA P-256."""
        import httpx
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        payload = json.dumps(
            {
                "critical": {
                    "identity": {"docker-reference": f"{self.host}/{_REPO}"},
                    "image": {"docker-manifest-digest": digest},
                    "type": "cosign container image signature",
                },
                "optional": None,
            }
        ).encode()
        sig = key.sign(payload, ec.ECDSA(hashes.SHA256()))
        cfg = b"{}"
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": self.push_blob(cfg),
                "size": len(cfg),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                    "digest": self.push_blob(payload),
                    "size": len(payload),
                    "annotations": {
                        "dev.cosignproject.cosign/signature": base64.b64encode(sig).decode()
                    },
                }
            ],
        }
        httpx.put(
            f"http://{self.host}/v2/{_REPO}/manifests/{digest.replace(':', '-')}.sig",
            content=json.dumps(manifest).encode(),
            headers={"Content-Type": str(manifest["mediaType"])},
        ).raise_for_status()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def _initdata(kbs: Any, image: dict[str, Any] | None, policy: str) -> str:
    import tomli_w

    cert = Path(kbs.cafile).read_text()
    kbc = {"name": "cc_kbc", "url": kbs.url, "kbs_cert": cert}
    cdh: dict[str, Any] = {"socket": "unix:///run/confidential-containers/cdh.sock"}
    cdh |= {"credentials": [], "kbc": kbc}
    if image is not None:
        cdh["image"] = image
    data = {
        "aa.toml": tomli_w.dumps({"token_configs": {"kbs": {"url": kbs.url, "cert": cert}}}),
        "cdh.toml": tomli_w.dumps(cdh),
        "policy.rego": policy,
    }
    return tomli_w.dumps({"algorithm": "sha256", "version": "0.1.0", "data": data})


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "trustpod.cli", "pod", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def _logs_until(name: str, config: Path, done: Callable[[str], bool], timeout_s: float = 20) -> str:
    """``trustpod pod logs NAME`` polled until ``done(output)`` or ``timeout_s``; the last one."""
    out = ""
    deadline = time.monotonic() + timeout_s
    while not done(out) and time.monotonic() < deadline:
        out = _cli("logs", name, "--config", str(config)).stdout
        time.sleep(0.05)
    return out


def _ok(response: Any) -> None:
    if response.status_code != 200:
        raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text}")


def pod_scenario(kbs: Any, demo: Any) -> None:
    """``kbs``: the demo's ``RunningKbs``; ``demo``: its ``Demo`` (``step``/``out``)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from trustpod.guest.demo_flow import pin_initdata_policy
    from trustpod.initdata import InitData, encode_annotation
    from trustpod.sealed import VaultSecret, generate_signing_key, public_jwk, seal

    work = Path(kbs.directory) / "pod"
    work.mkdir()
    signer = generate_signing_key()
    sealed = seal(VaultSecret(name="kbs:///default/pod/db"), signer, "kbs:///default/pod-seal/1")
    have_registry = all(shutil.which(t) for t in ("docker-registry", "skopeo"))
    registry: _Registry | None = None
    local_images = None
    try:
        if have_registry:
            with demo.step(
                "local docker-registry; busybox image pushed (skopeo) and cosign-signed"
            ):
                from trustpod.oci.layout import tar_tree, write_layout

                registry = _Registry(work / "registry")
                root = _rootfs(work / "rootfs")
                write_layout(work / "layout", [tar_tree(root)], tag="1")
                ref = f"{registry.host}/{_REPO}:1"
                subprocess.run(
                    [
                        "skopeo",
                        "copy",
                        "-q",
                        "--dest-tls-verify=false",
                        f"oci:{work / 'layout'}:1",
                        f"docker://{ref}",
                    ],
                    check=True,
                    capture_output=True,
                )
                index = json.loads((work / "layout" / "index.json").read_text())
                digest = index["manifests"][0]["digest"]
                cosign = ec.generate_private_key(ec.SECP256R1())
                registry.cosign_sign(digest, cosign)
            demo.out(f"    image {ref}, signature {digest.replace(':', '-')[:20]}….sig")
            ref = f"{registry.host}/{_REPO}@{digest}"  # pinned: the policy names the digest
            image_policy = {
                "default": [{"type": "reject"}],
                "transports": {
                    "docker": {
                        f"{registry.host}/{_REPO}": [
                            {"type": "sigstoreSigned", "keyPath": "kbs:///default/pod/cosign-key"}
                        ]
                    }
                },
            }
            cosign_pub = cosign.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            image = {
                "image_security_policy_uri": "kbs:///default/pod/image-policy",
                "insecure_http_registries": [registry.host],
                "work_dir": str(work / "image-work"),
            }
        else:
            ref = "registry.local/demo/app@sha256:" + "0" * 64
            local_images = work / "images"
            from trustpod.agent.images import local_name

            _rootfs(local_images / local_name(ref))
            demo.out("    (docker-registry/skopeo absent: the image ships in the pod VM image)")
            image, image_policy, cosign_pub = None, None, b""
        spec = (
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: demo-pod\n  annotations:\n"
            "    io.katacontainers.config.hypervisor.cc_init_data: {note}\nspec:\n"
            f"  containers:\n  - name: app\n    image: {ref}\n"
            "    command: [sh, -c, 'echo \"db password: $DB_PASSWORD\"; sleep 300']\n"
            f"    env: [{{{{name: DB_PASSWORD, value: '{sealed}'}}}}]\n"
        )
        from trustpod.pod.runner import generated_policy

        agent_policy = generated_policy(spec.format(note="''"))  # exactly this pod, no exec
        initdata = _initdata(kbs, image, agent_policy)
        digest_hex = InitData.parse(initdata.encode()).digest.hex()
        with (
            kbs.admin() as admin,
            demo.step(
                "admin: sealed secret + key, cosign key, image policy; attestation policy pins "
                "the pod's initdata"
            ),
        ):
            resources = {
                "default/pod/db": SECRET,
                "default/pod-seal/1": json.dumps(public_jwk(signer.public_key())).encode(),
            }
            if image_policy is not None:
                resources["default/pod/cosign-key"] = cosign_pub
                resources["default/pod/image-policy"] = json.dumps(image_policy).encode()
            for path, value in resources.items():
                _ok(admin.post(f"/kbs/v0/resource/{path}", content=value))
            policy = pin_initdata_policy(InitData.parse(initdata.encode()))
            body = {
                "policy_id": "default_cpu",
                "policy": base64.urlsafe_b64encode(policy.encode()).rstrip(b"=").decode(),
            }
            _ok(admin.post("/kbs/v0/attestation-policy", json=body))
        pod_yaml = work / "pod.yaml"
        pod_yaml.write_text(spec.format(note=encode_annotation(initdata.encode())))
        config = work / "pod.toml"
        lines = [f'[pod]\nstore = "{work / "store"}"', "[sandbox]"]
        lines.append(f'emulator_dir = "{Path(kbs.directory) / "cvm"}"')
        if local_images is not None:
            lines.append(f'local_images = "{local_images}"')
        config.write_text("\n".join(lines) + "\n")
        demo.out(
            f"    initdata sha256:{digest_hex} (agent policy generated from the pod: "
            "this container only, exec denied)"
        )
        with demo.step("trustpod pod run pod.yaml (sandbox pod VM, emulated Azure CVM)"):
            r = _cli("run", str(pod_yaml), "--config", str(config), "-d")
            for line in r.stderr.splitlines():
                demo.out(f"    | {line.strip()}")
            if r.returncode != 0:
                raise RuntimeError("trustpod pod run failed")
        try:
            with demo.step("trustpod pod logs demo-pod (the container's first line)"):
                out = _logs_until("demo-pod", config, lambda out: "db password" in out)
            demo.out(f"    {out.strip()}")
            if SECRET.decode() not in out:
                raise RuntimeError("the container did not print the secret")
            with demo.step(
                "trustpod pod exec demo-pod -- cat /proc/1/environ (refused by the policy)"
            ):
                r = _cli(
                    "exec", "--config", str(config), "demo-pod", "--", "cat", "/proc/1/environ"
                )
            demo.out(f"    exit {r.returncode}: {r.stderr.strip().splitlines()[0]}")
            if r.returncode == 0:
                raise RuntimeError("exec was not refused")
        finally:
            with demo.step("trustpod pod delete demo-pod (VM, vTPM, containers gone)"):
                _cli("delete", "demo-pod", "--config", str(config))
    finally:
        if registry is not None:
            registry.close()
