"""``trustpod agent serve`` on the emulated Azure CVM (az-snp-vtpm on swtpm): the KBS (over TLS,
built-in attestation service, trusting the emulated vendor root) releases a secret only to this
pod's initdata; a container receives it as a sealed env value and prints it."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import trustme

from agent_support import (
    IMAGE,
    agent_process,
    busybox_rootfs,
    container_request,
    free_port,
    need_runc,
)
from kbs_support import serve
from trustpod._internal.b64 import b64url_encode
from trustpod.agent.client import AgentClient
from trustpod.agent.pb import protos
from trustpod.agent.policy_defaults import ALLOW_ALL
from trustpod.cli.initdata import build_initdata
from trustpod.guest.emulator.cvm import EmulatedAzureCvm
from trustpod.guest.emulator.swtpm import swtpm_binary
from trustpod.initdata import InitData, pcr8_after_extend
from trustpod.kbs.app import create_app
from trustpod.kbs.config import parse_config
from trustpod.kbs.wiring import build_core
from trustpod.sealed import VaultSecret, generate_signing_key, public_jwk, seal

pytestmark = pytest.mark.skipif(swtpm_binary() is None, reason="swtpm not installed (apt swtpm)")

SIGNER = generate_signing_key()
#: Attestation policy: affirming only for this pod's initdata (PCR 8 after the AA's extend).
PIN = """package policy
import rego.v1
default trust_claims := {"executables": 33, "hardware": 97, "configuration": 36}
trust_claims := {"executables": 2, "hardware": 2, "configuration": 2} if {
    input.init_data == "%s"
}
"""
KID = "kbs:///default/sealed-key/1"


def test_sealed_env_secret_on_the_emulated_cvm(tmp_path: Path) -> None:
    need_runc()
    cvm_dir = tmp_path / "cvm"
    EmulatedAzureCvm.create(cvm_dir, backend="software")  # the emulated vendor chain
    roots = cvm_dir / "vendor" / "roots.pem"
    ca = trustme.CA()
    text = (
        "[http_server]\ninsecure_http = true\n[attestation_service]\ntimeout = 5\n"
        f'[trustpod]\ninsecure_emulated_roots = ["{roots}"]\n'
    )
    core, admin = build_core(parse_config(tomllib.loads(text), tmp_path / "kbs.toml"))
    core.set_resource("default/key/1", b"cvm-secret")
    core.set_resource("default/sealed-key/1", json.dumps(public_jwk(SIGNER.public_key())).encode())
    with serve(create_app(core, admin), cert=ca.issue_cert("127.0.0.1")) as url:
        d = tmp_path / "guest"
        d.mkdir()
        (tmp_path / "keys").mkdir()
        initdata = build_initdata(url, kbs_cert=ca.cert_pem.bytes().decode(), policy=ALLOW_ALL)
        (d / "initdata.toml").write_text(initdata)
        pcr8 = pcr8_after_extend(InitData.parse(initdata.encode()).digest).hex()
        core.set_attestation_policy(
            {"policy_id": "default_cpu", "policy": b64url_encode((PIN % pcr8).encode())}
        )
        (d / "guest.toml").write_text(
            f'attester = "emulated-az-snp-vtpm"\nkey_dir = "{tmp_path / "keys"}"\n'
            f'api_listen = "127.0.0.1:{free_port()}"\nkbs_max_retries = 1\n'
            f'[attester_settings]\nemulator_dir = "{cvm_dir}"\nemulator_backend = "swtpm"\n'
            "report_refresh_delay_s = 0\n"
        )
        busybox_rootfs(d / "pause" / "rootfs", pause=True)
        images = tmp_path / "images"
        busybox_rootfs(images / IMAGE.replace("/", "_").replace(":", "_"))
        pb = protos()
        sealed = seal(VaultSecret(name="kbs:///default/key/1"), SIGNER, KID)
        with (
            agent_process(d, [f"unix:{tmp_path / 'a.sock'}"], images=images) as ready,
            AgentClient(ready["agent"][0]) as agent,
        ):
            req = container_request(pb, "app", ["sh", "-c", "echo $S"], env=[f"S={sealed}"])
            agent.call("CreateContainer", req)
            agent.call("StartContainer", pb.grpc.StartContainerRequest(container_id="app"))
            out = agent.call(
                "ReadStdout", pb.grpc.ReadStreamRequest(container_id="app", len=100)
            ).data
            assert out == b"cvm-secret\n"
            wait = pb.grpc.WaitProcessRequest(container_id="app")
            assert agent.call("WaitProcess", wait).status == 0
            agent.call("RemoveContainer", pb.grpc.RemoveContainerRequest(container_id="app"))
