"""A pod runs an encrypted image end to end: ``trustpod agent serve`` (sample TEE) pulls from a
real docker-registry on 127.0.0.1; the layer KEK is a resource of a real trustpod KBS over TLS,
published by ``trustpod image encrypt --publish`` through the admin API and released only to the
attested pod through the CDH. A key the KBS resource policy denies stops CreateContainer with
PERMISSION_DENIED naming the key, and nothing of that image runs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import trustme

from agent_support import need_registry_tools, need_runc, pulling_agent, run_then_refuse
from kbs_support import admin_jwt_kbs, serve
from trustpod.cli.main import main

DENY_POLICY = (
    'package policy\ndefault allow = false\nallow if { data["resource-path"][2] != "denied" }\n'
)


@pytest.fixture(scope="module")
def encrypted_pod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    need_runc()
    need_registry_tools()
    from oci_support import Registry, push_secret_message_image

    tmp = tmp_path_factory.mktemp("agentenc")
    reg = Registry(tmp / "registry")
    try:
        push_secret_message_image(tmp, reg.host, "decrypted in the pod\n")
        app, _, token = admin_jwt_kbs(tmp, DENY_POLICY)
        ca = trustme.CA()
        cafile = tmp / "ca.pem"
        ca.cert_pem.write_to_path(str(cafile))
        with serve(app, cert=ca.issue_cert("127.0.0.1")) as url:
            common = ["--insecure-http-registry", reg.host]
            publish = ["--publish", url, "--token-file", str(token), "--cert-file", str(cafile)]
            for name in ("app", "denied"):
                rc = main(
                    ["image", "encrypt", f"docker://{reg.host}/plain/app:1",
                     f"docker://{reg.host}/enc/{name}:1",
                     "--key-uri", f"kbs:///default/image-key/{name}",
                     "--key-out", str(tmp / f"kek-{name}"), *publish, *common]
                )  # fmt: skip
                assert rc == 0
            image = {"insecure_http_registries": [reg.host], "work_dir": str(tmp / "image-work")}
            with pulling_agent(tmp, url, ca.cert_pem.bytes().decode(), image) as ready:
                yield {"ready": ready, "host": reg.host}
    finally:
        reg.close()


def test_pod_runs_encrypted_image_and_denied_key_stops_it(encrypted_pod: dict[str, Any]) -> None:
    host = encrypted_pod["host"]
    run_then_refuse(
        encrypted_pod["ready"]["agent"][0],
        ("ok", f"{host}/enc/app:1", ["cat", "/etc/secret-message"], b"decrypted in the pod\n"),
        ("denied", f"{host}/enc/denied:1", "kbs:///default/image-key/denied"),
    )
