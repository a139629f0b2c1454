"""The azure provider with the real Azure SDK against a fake ARM on 127.0.0.1 over HTTPS: CAA's
VM request body asserted field by field, long-running operations, faults (429 Retry-After, 409,
quota exceeded, a VM that never reaches Succeeded) handled with nothing leaked; and secure cloud
bursting: the fake ARM boots each VM as a sandbox pod VM fed exactly the userData it received,
which attests to the on-prem KBS over TLS and gets its sealed secret."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.mgmt.compute", reason="pip install azure-mgmt-compute (extra pods)")

from agent_support import IMAGE, need_runc
from fake_arm import FakeArm, FakeCredential, fake_arm
from pod_support import SECRET, PodEnv, pod_env
from trustpod.errors import DependencyError
from trustpod.guest.emulator.swtpm import swtpm_binary
from trustpod.pod.config import PodConfig, choose_provider
from trustpod.pod.provider import InstanceTypeSpec
from trustpod.pod.providers.azure import AzureProvider, AzureSettings
from trustpod.pod.providers.sandbox import SandboxProvider, SandboxSettings
from trustpod.pod.runner import RunOptions, delete_pod, run_pod
from trustpod.pod.spec import parse_pod
from trustpod.pod.store import PodStore
from trustpod.pod.userdata import provision_files

SUB = "00000000-0000-0000-0000-000000000001"
RG = "peerpods-rg"
SUBNET = (
    f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/virtualNetworks/v"
    "/subnets/s"
)
IMAGE_ID = "/CommunityGalleries/cocopodvm-1234/Images/podvm_image0/Versions/0.1.0"
SSH = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 test@trustpod"


def _settings(arm: FakeArm, **extra: Any) -> AzureSettings:
    raw = {
        "AZURE_SUBSCRIPTION_ID": SUB,
        "AZURE_REGION": "eastus",
        "AZURE_RESOURCE_GROUP": RG,
        "AZURE_SUBNET_ID": SUBNET,
        "AZURE_IMAGE_ID": IMAGE_ID,
        "AZURE_INSTANCE_SIZES": "Standard_DC2as_v5,Standard_DC4as_v5",
        "SSH_PUBLIC_KEY": SSH,
        "TAGS": "owner=trustpod,env=test",
        "AZURE_ARM_ENDPOINT": arm.url,
        "AZURE_CA_BUNDLE": str(arm_ca(arm)),
        "POLLING_INTERVAL_S": 0.05,
        "CREATE_TIMEOUT_S": 30,
        **extra,
    }
    return AzureSettings.from_config(raw)


_CA_FILES: dict[int, Path] = {}


def arm_ca(arm: FakeArm) -> Path:
    key = id(arm)
    if key not in _CA_FILES:
        import tempfile

        f = Path(tempfile.mkdtemp(prefix="fake-arm-")) / "ca.pem"
        f.write_bytes(arm.ca.cert_pem.bytes())
        _CA_FILES[key] = f
    return _CA_FILES[key]


@pytest.fixture
def arm() -> Iterator[FakeArm]:
    with fake_arm() as a:
        yield a


def test_create_body_is_caas_and_delete_takes_nic_and_disk(arm: FakeArm) -> None:
    provider = AzureProvider(_settings(arm), FakeCredential())
    inst = provider.create_instance(
        "web", "ab" * 32, "#cloud-config\nwrite_files: []\n", InstanceTypeSpec()
    )
    assert inst.id == "podvm-web-abababab"
    assert inst.agent_address == "tcp:127.0.0.2:15150" and inst.ips == ("127.0.0.2",)
    (put,) = arm.puts()
    assert put["path"].endswith(
        f"/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines/podvm-web-abababab"
    )
    assert "api-version=" in put["query"] and put["auth"] == "Bearer fake-token"
    body = put["body"]
    assert body["location"] == "eastus"
    assert body["tags"] == {"owner": "trustpod", "env": "test"}
    p = body["properties"]
    assert p["hardwareProfile"] == {"vmSize": "Standard_DC2as_v5"}
    assert p["securityProfile"] == {
        "securityType": "ConfidentialVM",
        "uefiSettings": {"secureBootEnabled": False, "vTpmEnabled": True},
    }
    assert p["storageProfile"]["imageReference"] == {"communityGalleryImageId": IMAGE_ID}
    assert p["storageProfile"]["osDisk"] == {
        "name": "podvm-web-abababab-disk",
        "createOption": "FromImage",
        "caching": "ReadWrite",
        "deleteOption": "Delete",
        "managedDisk": {
            "storageAccountType": "Premium_LRS",
            "securityProfile": {"securityEncryptionType": "VMGuestStateOnly"},
        },
    }
    assert p["osProfile"] == {
        "adminUsername": "peerpod",
        "computerName": "podvm-web-abababab",
        "linuxConfiguration": {
            "disablePasswordAuthentication": True,
            "ssh": {"publicKeys": [{"path": "/home/peerpod/.ssh/authorized_keys", "keyData": SSH}]},
        },
    }
    assert p["networkProfile"] == {
        "networkApiVersion": "2020-11-01",
        "networkInterfaceConfigurations": [
            {
                "name": "podvm-web-abababab-net",
                "properties": {
                    "deleteOption": "Delete",
                    "ipConfigurations": [
                        {"name": "ip-config", "properties": {"subnet": {"id": SUBNET}}}
                    ],
                },
            }
        ],
    }
    assert p["diagnosticsProfile"] == {"bootDiagnostics": {"enabled": True}}
    assert base64.b64decode(p["userData"]) == b"#cloud-config\nwrite_files: []\n"
    assert set(p) == {
        "hardwareProfile",
        "securityProfile",
        "storageProfile",
        "osProfile",
        "networkProfile",
        "diagnosticsProfile",
        "userData",
    }
    # the LRO was polled through Azure-AsyncOperation, then the NIC read for the IP
    paths = [r["path"] for r in arm.requests]
    assert "/operations/op-podvm-web-abababab" in paths
    assert any(p.endswith("/networkInterfaces/podvm-web-abababab-net") for p in paths)
    assert arm.nics and arm.disks
    provider.delete_instance(inst.id)
    assert arm.vms == {} and arm.nics == {} and arm.disks == {}


def test_image_id_disable_cvm_public_ip_nsg_and_size_selection(arm: FakeArm) -> None:
    s = _settings(
        arm,
        AZURE_IMAGE_ID="/subscriptions/x/resourceGroups/y/providers/Microsoft.Compute/images/podvm",
        DISABLECVM=True,
        USE_PUBLIC_IP=True,
        AZURE_NSG_ID="/nsg/1",
        ROOT_VOLUME_SIZE=30,
    )
    provider = AzureProvider(s, FakeCredential())
    inst = provider.create_instance(
        "big", "cd" * 32, "#cloud-config\n", InstanceTypeSpec(vcpus=3, memory_mib=12000)
    )
    p = arm.puts()[0]["body"]["properties"]
    assert p["hardwareProfile"]["vmSize"] == "Standard_DC4as_v5"  # smallest allowed fit
    assert "securityProfile" not in p
    assert p["storageProfile"]["osDisk"]["managedDisk"] == {"storageAccountType": "Premium_LRS"}
    assert p["storageProfile"]["osDisk"]["diskSizeGB"] == 30
    assert p["storageProfile"]["imageReference"] == {"id": s.image_id}
    nic = p["networkProfile"]["networkInterfaceConfigurations"][0]["properties"]
    assert nic["networkSecurityGroup"] == {"id": "/nsg/1"}
    ipc = nic["ipConfigurations"][0]["properties"]["publicIPAddressConfiguration"]
    assert ipc == {"name": "podvm-big-cdcdcdcd-net", "properties": {"deleteOption": "Delete"}}
    assert any(r["path"].endswith("/locations/eastus/vmSizes") for r in arm.requests)
    provider.delete_instance(inst.id)


def test_429_retry_after_is_honoured(arm: FakeArm) -> None:
    arm.faults.append("429")
    provider = AzureProvider(_settings(arm), FakeCredential())
    t = time.monotonic()
    inst = provider.create_instance("r", "ef" * 32, "#cloud-config\n", InstanceTypeSpec())
    assert time.monotonic() - t >= 0.9  # Retry-After: 1
    assert len(arm.puts()) == 2
    provider.delete_instance(inst.id)
    assert arm.vms == {}


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        ("409", ["Conflict", "busy"]),
        ("quota", ["OperationNotAllowed", "quota"]),
        ("never", ["did not reach provisioningState Succeeded"]),
    ],
)
def test_faults_fail_clearly_and_leak_nothing(arm: FakeArm, fault: str, words: list[str]) -> None:
    arm.faults.append(fault)
    provider = AzureProvider(_settings(arm, CREATE_TIMEOUT_S=1), FakeCredential())
    with pytest.raises(DependencyError) as err:
        provider.create_instance("f", "01" * 32, "#cloud-config\n", InstanceTypeSpec())
    for w in words:
        assert w in str(err.value)
    if fault == "quota":
        assert err.value.fix and "quota" in err.value.fix
    assert arm.vms == {} and arm.nics == {} and arm.disks == {}


def test_burst_rule() -> None:
    assert choose_provider(PodConfig(burst="always"), None, 0) == "azure"
    assert choose_provider(PodConfig(burst="never"), None, 99) == "sandbox"
    full = PodConfig(burst="when-local-full", local_capacity=2)
    assert choose_provider(full, None, 1) == "sandbox"
    assert choose_provider(full, None, 2) == "azure"
    assert choose_provider(full, "sandbox", 5) == "sandbox"


@pytest.fixture(scope="module")
def onprem(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodEnv]:
    if swtpm_binary() is None:
        pytest.skip("swtpm not installed (apt swtpm)")
    need_runc()
    with pod_env(tmp_path_factory.mktemp("burst")) as e:
        yield e


def _burst(e: PodEnv, arm: FakeArm) -> tuple[AzureProvider, SandboxProvider, PodStore]:
    store = PodStore(e.tmp / f"burst-store-{len(list(e.tmp.iterdir()))}")
    sandbox = SandboxProvider(
        SandboxSettings(
            vm_root=store.root / ".vms",
            emulator_dir=e.tmp / "emulator",
            local_images=e.tmp / "images",
        )
    )
    seen: dict[str, bytes] = {}

    def boot(name: str, userdata: bytes, ip: str) -> None:
        seen[name] = userdata
        sandbox.boot_instance(name, userdata.decode(), ip=ip)

    arm.boot, arm.stop = boot, sandbox.delete_instance
    arm.seen = seen  # type: ignore[attr-defined]
    return AzureProvider(_settings(arm), FakeCredential()), sandbox, store


def _wait_log(store: PodStore, pod: str, c: str, want: str) -> str:
    deadline = time.monotonic() + 20
    text = ""
    while time.monotonic() < deadline:
        try:
            text = store.log_path(pod, c).read_text()
        except FileNotFoundError:
            text = ""
        if want in text:
            break
        time.sleep(0.1)
    return text


def test_bursted_pod_attests_to_the_onprem_kbs(onprem: PodEnv, arm: FakeArm) -> None:
    e = onprem
    azure, _sandbox, store = _burst(e, arm)
    pod = parse_pod(
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: burst}}\nspec:\n"
        f"  runtimeClassName: kata-remote-azure\n  containers:\n"
        f"  - name: app\n    image: {IMAGE}\n    command: [sh, -c, 'echo got=$S; sleep 30']\n"
        f"    env: [{{name: S, value: '{e.sealed_env}'}}]\n"
    )
    assert choose_provider(PodConfig(), None, 0) == "sandbox"
    assert pod.runtime_class_provider() == "azure"
    steps: list[str] = []
    options = RunOptions(kbs_url=e.url, kbs_cert=e.ca_pem.read_text())
    record = run_pod(pod, azure, store, options, lambda s, _t: steps.append(s))
    try:
        assert record.provider == "azure" and record.agent_address.startswith("tcp:127.0.0.")
        (name,) = arm.seen  # type: ignore[attr-defined]
        # the VM was fed exactly the userData the provider sent: CAA's cloud-config
        sent = base64.b64decode(arm.puts()[0]["body"]["properties"]["userData"])
        assert arm.seen[name] == sent  # type: ignore[attr-defined]
        files = dict(provision_files(sent).files)
        assert e.url.encode() in files["run/peerpod/aa.toml"]
        assert files["run/peerpod/initdata.digest"].decode() == record.initdata_digest
        out = _wait_log(store, "burst", "app", "got=")
        assert f"got={SECRET.decode()}" in out
    finally:
        delete_pod(store, azure, "burst")
    assert arm.vms == {} and arm.nics == {} and arm.disks == {}
    assert not list((store.root / ".vms").glob("podvm-*"))


def test_bursted_pod_naming_another_kbs_fails_attestation(onprem: PodEnv, arm: FakeArm) -> None:
    e = onprem
    azure, _, store = _burst(e, arm)
    pod = parse_pod(
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: other}}\nspec:\n  containers:\n"
        f"  - name: app\n    image: {IMAGE}\n    command: [sh, -c, 'echo $S']\n"
        f"    env: [{{name: S, value: '{e.sealed_env}'}}]\n"
    )
    other = "https://127.0.0.1:9"  # nothing listens: another KBS, not ours
    with pytest.raises(Exception) as err:
        run_pod(
            pod,
            azure,
            store,
            RunOptions(kbs_url=other, kbs_cert=e.ca_pem.read_text(), agent_timeout_s=30),
            lambda *_: None,
        )
    assert "KBS https://127.0.0.1:9 unreachable" in str(err.value), str(err.value)
    assert arm.vms == {} and arm.nics == {}
    assert not store.root.joinpath("other.json").exists()


def test_cli_bursts_by_config_rule_with_client_secret_auth(onprem: PodEnv, arm: FakeArm) -> None:
    """``trustpod pod run`` with ``burst = "always"``: the CLI authenticates with a client
    secret (azure-identity/MSAL against the fake authority), creates the Confidential VM, the
    bursted pod VM attests to the on-prem KBS; logs and delete through the CLI."""
    e = onprem
    _, sandbox, store = _burst(e, arm)
    config = e.tmp / "burst.toml"
    config.write_text(
        f'[pod]\nstore = "{store.root}"\nburst = "always"\n'
        f'[azure]\nAZURE_SUBSCRIPTION_ID = "{SUB}"\nAZURE_REGION = "eastus"\n'
        f'AZURE_RESOURCE_GROUP = "{RG}"\nAZURE_SUBNET_ID = "{SUBNET}"\n'
        f'AZURE_IMAGE_ID = "{IMAGE_ID}"\nSSH_PUBLIC_KEY = "{SSH}"\n'
        f'AZURE_ARM_ENDPOINT = "{arm.url}"\nAZURE_CA_BUNDLE = "{arm_ca(arm)}"\n'
        f'AZURE_AUTHORITY_HOST = "{arm.url}"\nAZURE_TENANT_ID = "tenant1"\n'
        'AZURE_CLIENT_ID = "app1"\nAZURE_CLIENT_SECRET = "s3cret"\nPOLLING_INTERVAL_S = 0.05\n'
    )
    pod = e.tmp / "cli-burst.yaml"
    pod.write_text(
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: cloud}}\nspec:\n  containers:\n"
        f"  - name: app\n    image: {IMAGE}\n    command: [sh, -c, 'echo cloud=$S; sleep 30']\n"
        f"    env: [{{name: S, value: '{e.sealed_env}'}}]\n"
    )
    r = e.cli(
        "run",
        str(pod),
        "--config",
        str(config),
        "--kbs-url",
        e.url,
        "--kbs-cert",
        str(e.ca_pem),
        "-d",
    )
    try:
        assert r.returncode == 0, r.stderr
        assert "provider azure" in r.stderr and "create pod VM (azure)" in r.stderr
        assert arm.tokens >= 1
        assert all(req["auth"] == "Bearer fake-token" for req in arm.puts())
        ls = e.cli("list", "--config", str(config)).stdout
        assert "cloud" in ls and "azure" in ls
        out = ""
        deadline = time.monotonic() + 20
        while "cloud=" not in out and time.monotonic() < deadline:
            out = e.cli("logs", "cloud", "--config", str(config)).stdout
            time.sleep(0.1)
        assert f"cloud={SECRET.decode()}" in out
    finally:
        rm = e.cli("delete", "cloud", "--config", str(config))
    assert rm.returncode == 0, rm.stderr
    assert arm.vms == {} and arm.nics == {} and arm.disks == {}
    assert not list((store.root / ".vms").glob("podvm-*"))
    del sandbox
