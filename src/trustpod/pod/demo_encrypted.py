"""``make demo-encrypted``'s confidential pod: an encrypted image run by ``trustpod pod run``.

Given the demo's KBS (TLS, SQLite, trusting the emulated vendor chain), a ``docker-registry``
holding ``demo/app:1`` and ``demo/denied:1`` (both encrypted, their KEKs only in the KBS) and the
resource policy that never releases the ``denied`` key: the attestation policy pins the pods'
initdata (PCR 8 of the emulated Azure CVM); ``trustpod pod run`` boots a sandbox pod VM, which
attests, fetches the KEK through its attested CDH, checks each layer's HMAC, decrypts and
unpacks, and starts the container, which prints the encrypted layer's file; a second pod whose
image key the resource policy denies fails naming the key, leaving nothing; ``trustpod pod
delete`` removes the first pod's VM, vTPM and containers, and the demo checks nothing is left.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trustpod.pod.demo import _cli, _logs_until

__all__ = ["POD_COMMAND", "encrypted_pod_scenario"]

#: The container's command: print the file that only exists in the encrypted layer.
POD_COMMAND = ["sh", "-c", "cat /etc/secret-message; sleep 300"]


def _pod_yaml(name: str, image: str, annotation: str) -> str:
    from trustpod.pod.spec import INITDATA_ANNOTATION

    doc = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": {INITDATA_ANNOTATION: annotation}},
        "spec": {"containers": [{"name": "app", "image": image, "command": POD_COMMAND}]},
    }
    return json.dumps(doc, indent=1)  # JSON is YAML


def encrypted_pod_scenario(
    kbs: Any, demo: Any, work: Path, host: str, ok: Callable[[Any], Any]
) -> None:
    """``kbs``: the demo's ``RunningKbs``; ``demo``: its ``Demo``; ``host``: the registry."""
    from trustpod.agent.policy_defaults import ALLOW_ALL_EXCEPT_EXEC_PROCESS
    from trustpod.guest.demo_flow import pin_initdata_policy
    from trustpod.initdata import InitData, encode_annotation
    from trustpod.pod.demo import _initdata

    image = {"insecure_http_registries": [host], "work_dir": "/run/kata-containers/image"}
    initdata = _initdata(kbs, image, ALLOW_ALL_EXCEPT_EXEC_PROCESS)
    parsed = InitData.parse(initdata.encode())
    with kbs.admin() as admin, demo.step("admin: attestation policy pins the pods' initdata"):
        policy = pin_initdata_policy(parsed)
        body = {
            "policy_id": "default_cpu",
            "policy": base64.urlsafe_b64encode(policy.encode()).rstrip(b"=").decode(),
        }
        ok(admin.post("/kbs/v0/attestation-policy", json=body))
    demo.out(f"    initdata sha256:{parsed.digest.hex()} (KBS, its certificate, [image])")
    note = encode_annotation(initdata.encode())
    pods = {}
    for name in ("app", "denied"):
        pods[name] = work / f"enc-{name}.yaml"
        pods[name].write_text(_pod_yaml(f"enc-{name}", f"{host}/demo/{name}:1", note))
    store = work / "store"
    config = work / "pod.toml"
    config.write_text(
        f'[pod]\nstore = "{store}"\n[sandbox]\n'
        f'emulator_dir = "{Path(kbs.directory) / "cvm"}"\n'  # no local_images: pulled
    )
    title = (
        f"trustpod pod run enc-app.yaml ({host}/demo/app:1; sandbox pod VM, emulated Azure CVM: "
        "boot, attest, KEK via the CDH, HMAC, decrypt, unpack, start)"
    )
    try:
        with demo.step(title):
            r = _cli("run", str(pods["app"]), "--config", str(config), "-d")
            for line in r.stderr.splitlines():
                demo.out(f"    | {line.rstrip()}")
            if r.returncode != 0:
                raise RuntimeError("trustpod pod run failed")
        with demo.step("trustpod pod logs enc-app (the container prints the encrypted file)"):
            out = _logs_until("enc-app", config, lambda out: "\n" in out)
        demo.out(f"    {out.strip()}")
        if "encrypted layer" not in out:
            raise RuntimeError("the container did not print the encrypted layer's file")
        with demo.step("trustpod pod run enc-denied.yaml (the resource policy denies its key)"):
            r = _cli("run", str(pods["denied"]), "--config", str(config), "-d")
        for line in r.stderr.strip().splitlines()[-3:]:
            demo.out(f"    | {line.rstrip()}")
        if r.returncode == 0 or "kbs:///default/image-key/denied" not in r.stderr:
            raise RuntimeError("the pod with the denied image key was not refused naming the key")
    finally:
        with demo.step("trustpod pod delete enc-app (VM, vTPM, containers gone)"):
            _cli("delete", "enc-app", "--config", str(config))
    _nothing_left(demo, store, config)


def _processes_under(root: Path) -> list[str]:
    """Processes whose command line names a path under ``root`` (pod VMs, swtpm, log pumps)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if str(root) in argv:
                found.append(f"{proc.name}: {argv.replace(chr(0), ' ').strip()[:80]}")
    return found


def _nothing_left(demo: Any, store: Path, config: Path) -> None:
    with demo.step("trustpod pod list; no pod VM directory, process or mount left"):
        listed = _cli("list", "--config", str(config)).stdout.strip().splitlines()[1:]
        vms = store / ".vms"  # the sandbox provider's vm_root; .pause-rootfs is a shared cache
        left = (
            sorted(p.name for p in vms.iterdir() if not p.name.startswith("."))
            if vms.exists()
            else []
        )
        procs = _processes_under(store)
        mounts = [m for m in Path("/proc/self/mounts").read_text().splitlines() if str(store) in m]
    demo.out(
        f"    pods {len(listed)}, pod VMs {len(left)}, processes {len(procs)}, mounts {len(mounts)}"
    )
    if listed or left or procs or mounts:
        raise RuntimeError(f"left behind: {listed} {left} {procs} {mounts}")
