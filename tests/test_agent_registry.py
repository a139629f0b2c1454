"""``trustpod agent serve`` pulling images in the guest: a real docker-registry on 127.0.0.1
holding images pushed with skopeo, the image security policy fetched from a real trustpod KBS
over TLS through the attested CDH (``[image]`` of the measured cdh.toml), containers in runc.

An allowed image runs and prints; an image the policy rejects is refused at CreateContainer
(PERMISSION_DENIED naming the image) and nothing of it runs.
"""

from __future__ import annotations

import json
import shutil
import tomllib
from collections.abc import Iterator
from typing import Any

import pytest
import trustme

from agent_support import agent_process, container_request, free_port, initdata_toml, need_runc
from kbs_support import builtin_kbs, serve
from trustpod.agent.client import AgentClient
from trustpod.agent.pb import protos
from trustpod.agent.policy_defaults import ALLOW_ALL
from trustpod.agent.rpc import Code, RpcError
from trustpod.kbs.config import parse_config


@pytest.fixture(scope="module")
def registry_pod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    need_runc()
    for tool, pkg in (("docker-registry", "docker-registry"), ("skopeo", "skopeo")):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (apt package {pkg})")
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
            d = tmp / "guest"
            d.mkdir()
            (tmp / "keys").mkdir()
            image = {
                "image_security_policy_uri": "kbs:///default/security-policy/test",
                "insecure_http_registries": [reg.host],
                "work_dir": str(tmp / "image-work"),
            }
            (d / "initdata.toml").write_text(
                initdata_toml(url, ca.cert_pem.bytes().decode(), ALLOW_ALL, image)
            )
            (d / "guest.toml").write_text(
                f'attester = "sample"\nkey_dir = "{tmp / "keys"}"\n'
                f'api_listen = "127.0.0.1:{free_port()}"\n'
            )
            with agent_process(d, [f"unix:{tmp / 'agent.sock'}"], images=None) as ready:
                yield {"ready": ready, "host": reg.host}
    finally:
        reg.close()


def test_guest_pull_through_the_cdh_policy(registry_pod: dict[str, Any]) -> None:
    pb = protos()
    host = registry_pod["host"]
    with AgentClient(registry_pod["ready"]["agent"][0]) as agent:
        ok = container_request(pb, "ok", ["cat", "/etc/hostname"], image=f"{host}/test/ok:1")
        agent.call("CreateContainer", ok)
        agent.call("StartContainer", pb.grpc.StartContainerRequest(container_id="ok"))
        out = agent.call("ReadStdout", pb.grpc.ReadStreamRequest(container_id="ok", len=100)).data
        assert out == b"trustpod\n"
        assert agent.call("WaitProcess", pb.grpc.WaitProcessRequest(container_id="ok")).status == 0
        agent.call("RemoveContainer", pb.grpc.RemoveContainerRequest(container_id="ok"))

        other = container_request(pb, "other", ["true"], image=f"{host}/test/other:1")
        with pytest.raises(RpcError) as refused:
            agent.call("CreateContainer", other)
        assert refused.value.code == Code.PERMISSION_DENIED
        assert "test/other" in refused.value.status_message
        with pytest.raises(RpcError) as absent:
            agent.call("StartContainer", pb.grpc.StartContainerRequest(container_id="other"))
        assert absent.value.code == Code.NOT_FOUND
