"""An encrypted image runs in a pod on the sandbox provider, through ``trustpod pod run``: the
pod VM (fresh namespaces, emulated Azure CVM over swtpm) attests to a real KBS over TLS, its
puller fetches the layer KEK through the attested CDH and decrypts the layers from a real
docker-registry on 127.0.0.1. A key the KBS resource policy denies keeps the container from
starting, and the error names the key."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_support import initdata_toml, need_registry_tools, need_runc
from pod_support import PodEnv, pod_env
from trustpod._internal.b64 import b64url_encode
from trustpod.agent.policy_defaults import ALLOW_ALL
from trustpod.cli.main import main
from trustpod.guest.emulator.swtpm import swtpm_binary
from trustpod.pod.spec import INITDATA_ANNOTATION

pytestmark = pytest.mark.skipif(swtpm_binary() is None, reason="swtpm not installed (apt swtpm)")

#: Released only to affirming attestations, and never the "denied" key.
RESOURCE_POLICY = """package policy
import rego.v1
default allow := false
allow if {
    data["resource-path"][2] != "denied"
    input.submods.cpu0["ear.status"] == "affirming"
}
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PodEnv, Any, Path]]:
    need_runc()
    need_registry_tools()
    from oci_support import Registry, push_secret_message_image

    tmp = tmp_path_factory.mktemp("podenc")
    reg = Registry(tmp / "registry")
    try:
        with pod_env(tmp / "pod") as e:
            push_secret_message_image(tmp, reg.host, "decrypted in the pod VM\n")
            kek = tmp / "kek"
            kek.write_bytes(bytes(range(64, 96)))
            for name in ("app", "denied"):
                e.core.set_resource(f"default/image-key/{name}", kek.read_bytes())
                rc = main(
                    ["image", "encrypt", f"docker://{reg.host}/plain/app:1",
                     f"docker://{reg.host}/enc/{name}:1",
                     "--key-uri", f"kbs:///default/image-key/{name}", "--key-file", str(kek),
                     "--insecure-http-registry", reg.host]
                )  # fmt: skip
                assert rc == 0
            e.core.set_resource_policy({"policy": b64url_encode(RESOURCE_POLICY.encode())})
            config = tmp / "pod-registry.toml"  # no local_images: the VM pulls from the registry
            config.write_text(
                f'[pod]\nstore = "{tmp / "store"}"\n'
                f'[sandbox]\nemulator_dir = "{e.tmp / "emulator"}"\n'
            )
            yield e, reg, config
    finally:
        reg.close()


def _pod(e: PodEnv, reg: Any, name: str, repo: str) -> Path:
    image = {"insecure_http_registries": [reg.host], "work_dir": "/run/kata-containers/image"}
    initdata = initdata_toml(e.url, e.ca_pem.read_text(), ALLOW_ALL, image)
    doc = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": {INITDATA_ANNOTATION: initdata}},
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": f"{reg.host}/{repo}:1",
                    "command": ["sh", "-c", "cat /etc/secret-message; sleep 60"],
                }
            ]
        },
    }
    path = e.tmp / f"{name}.yaml"
    path.write_text(json.dumps(doc))  # JSON is YAML
    return path


def test_encrypted_image_runs_in_a_sandbox_pod(env: tuple[PodEnv, Any, Path]) -> None:
    e, reg, config = env
    r = e.cli("run", str(_pod(e, reg, "enc", "enc/app")), "--config", str(config), "-d")
    try:
        assert r.returncode == 0, r.stderr
        deadline = time.monotonic() + 20
        while True:
            out = e.cli("logs", "enc", "app", "--config", str(config)).stdout
            if "decrypted" in out or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert out == "decrypted in the pod VM\n"
    finally:
        e.cli("delete", "--config", str(config), "enc")


def test_denied_key_keeps_the_container_from_starting(env: tuple[PodEnv, Any, Path]) -> None:
    e, reg, config = env
    r = e.cli("run", str(_pod(e, reg, "denied", "enc/denied")), "--config", str(config), "-d")
    try:
        assert r.returncode != 0
        assert "kbs:///default/image-key/denied" in r.stderr, r.stderr
        logs = e.cli("logs", "denied", "app", "--config", str(config)).stdout
        assert "decrypted" not in logs
    finally:
        e.cli("delete", "--config", str(config), "denied")
