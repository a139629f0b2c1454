"""``trustpod agent serve`` pulling images in the guest: a real docker-registry on 127.0.0.1
holding images pushed with skopeo, the image security policy fetched from a real trustpod KBS
over TLS through the attested CDH (``[image]`` of the measured cdh.toml), containers in runc.

An allowed image runs and prints; an image the policy rejects is refused at CreateContainer
(PERMISSION_DENIED naming the image) and nothing of it runs.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from typing import Any

import pytest
import trustme

from agent_support import need_registry_tools, need_runc, pulling_agent, run_then_refuse
from kbs_support import builtin_kbs, serve
from trustpod.kbs.config import parse_config


@pytest.fixture(scope="module")
def registry_pod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    need_runc()
    need_registry_tools()
    from oci_support import Registry, build_image, busybox_rootfs, skopeo_copy

    tmp = tmp_path_factory.mktemp("agentreg")
    reg = Registry(tmp / "registry")
    try:
        root = busybox_rootfs(tmp / "rootfs")
        build_image(tmp / "layout", root, "1")
        for repo in ("test/ok", "test/other"):
            skopeo_copy(f"oci:{tmp / 'layout'}:1", f"docker://{reg.host}/{repo}:1")
        policy = {
            "default": [{"type": "reject"}],
            "transports": {"docker": {f"{reg.host}/test/ok": [{"type": "insecureAcceptAnything"}]}},
        }
        ca = trustme.CA()
        config = parse_config(
            tomllib.loads(
                "[http_server]\ninsecure_http = true\n[attestation_service]\ntimeout = 5\n"
            ),
            tmp / "kbs-config.toml",
        )
        app, core = builtin_kbs(config)
        core.set_resource("default/security-policy/test", json.dumps(policy).encode())
        with serve(app, cert=ca.issue_cert("127.0.0.1")) as url:
            image = {
                "image_security_policy_uri": "kbs:///default/security-policy/test",
                "insecure_http_registries": [reg.host],
                "work_dir": str(tmp / "image-work"),
            }
            with pulling_agent(tmp, url, ca.cert_pem.bytes().decode(), image) as ready:
                yield {"ready": ready, "host": reg.host}
    finally:
        reg.close()


def test_guest_pull_through_the_cdh_policy(registry_pod: dict[str, Any]) -> None:
    host = registry_pod["host"]
    run_then_refuse(
        registry_pod["ready"]["agent"][0],
        ("ok", f"{host}/test/ok:1", ["cat", "/etc/hostname"], b"trustpod\n"),
        ("other", f"{host}/test/other:1", "test/other"),
    )
