"""``azure``: a Confidential VM per pod, created as CAA's Azure provider creates it.

CAA ``src/cloud-providers/azure/provider.go`` (guest-and-control-plane.md §8.3, pods-images-gpu.md
§5.2), through the Azure SDK (``azure-mgmt-compute``/``azure-mgmt-network``, ``azure-identity``):

1. size: the ``machine_type`` asked for (must be in ``AZURE_INSTANCE_SIZES``), else the smallest
   allowed size with the vCPUs and memory asked for (from ``virtual_machine_sizes.list``), else
   ``AZURE_INSTANCE_SIZE`` (``SelectInstanceTypeToUse``);
2. ``virtual_machines.begin_create_or_update`` with CAA's body (``vm_parameters``): CVM security
   profile (vTPM on), ``VMGuestStateOnly`` OS-disk encryption, inline NIC ``<vm>-net``, image by
   id or community gallery, ``userData`` = base64 cloud-config (≤ 64 KiB), tags; polled until
   ``Succeeded`` within ``create_timeout_s`` — else the VM is deleted and the pod fails;
3. the NIC's private IP (``network_interfaces.get``) → the agent at ``tcp:<ip>:<forwarder port>``;
4. ``begin_delete``: the NIC and OS disk go with the VM (``deleteOption = Delete``).

Divergence (docs/compat.md): no agent-protocol-forwarder (CAA's mTLS ttRPC proxy in the VM); the
agent listens on the forwarder port itself. ``AZURE_ARM_ENDPOINT``/``AZURE_CA_BUNDLE``/
``AZURE_AUTHORITY_HOST`` point the SDK and azure-identity at another ARM and Entra ID authority
(the tests' fake ARM on 127.0.0.1).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from trustpod.errors import ConfigError, DependencyError
from trustpod.pod.provider import Instance, InstanceTypeSpec, instance_name

__all__ = ["AzureProvider", "AzureSettings", "select_size", "vm_parameters"]

_REQUIRED = (
    "AZURE_SUBSCRIPTION_ID",
    "AZURE_REGION",
    "AZURE_RESOURCE_GROUP",
    "AZURE_SUBNET_ID",
    "AZURE_IMAGE_ID",
)
_KEYS = {
    *_REQUIRED,
    "AZURE_INSTANCE_SIZE",
    "AZURE_INSTANCE_SIZES",
    "AZURE_NSG_ID",
    "SSH_USERNAME",
    "SSH_PUBLIC_KEY",
    "DISABLECVM",
    "ENABLE_SECURE_BOOT",
    "USE_PUBLIC_IP",
    "ROOT_VOLUME_SIZE",
    "TAGS",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_TENANT_ID",
    "FORWARDER_PORT",
    "AZURE_ARM_ENDPOINT",
    "AZURE_CA_BUNDLE",
    "AZURE_AUTHORITY_HOST",
    "CREATE_TIMEOUT_S",
    "POLLING_INTERVAL_S",
}
_NETWORK_API_VERSION = "2020-11-01"


@dataclass(frozen=True, slots=True)
class AzureSettings:
    subscription_id: str
    region: str
    resource_group: str
    subnet_id: str
    image_id: str
    instance_size: str = "Standard_DC2as_v5"
    instance_sizes: tuple[str, ...] = ()
    nsg_id: str = ""
    ssh_username: str = "peerpod"
    ssh_public_key: str = ""
    disable_cvm: bool = False
    enable_secure_boot: bool = False
    use_public_ip: bool = False
    root_volume_size: int = 0
    tags: Mapping[str, str] = field(default_factory=dict)
    client_id: str = ""
    client_secret: str = ""
    tenant_id: str = ""
    forwarder_port: int = 15150
    arm_endpoint: str = ""
    ca_bundle: str = ""
    authority_host: str = ""
    create_timeout_s: float = 600.0
    polling_interval_s: float = 5.0

    @classmethod
    def from_config(cls, raw: Mapping[str, Any]) -> AzureSettings:
        """CAA's ConfigMap/Secret names (``[azure]`` of the pod config)."""
        for key in raw:
            if key not in _KEYS:
                raise ConfigError(f"[azure] {key} is not a setting", reason="pod.config")
        missing = [k for k in _REQUIRED if not raw.get(k)]
        if missing:
            raise ConfigError(
                f"[azure] missing {', '.join(missing)}",
                reason="pod.config",
                fix="set them as in CAA's peer-pods-cm ConfigMap",
            )
        tags = raw.get("TAGS", {})
        if isinstance(tags, str):  # CAA: "k1=v1,k2=v2"
            tags = dict(t.split("=", 1) for t in tags.split(",") if "=" in t)
        sizes = raw.get("AZURE_INSTANCE_SIZES", ())
        if isinstance(sizes, str):
            sizes = [s.strip() for s in sizes.split(",") if s.strip()]
        return cls(
            subscription_id=str(raw["AZURE_SUBSCRIPTION_ID"]),
            region=str(raw["AZURE_REGION"]),
            resource_group=str(raw["AZURE_RESOURCE_GROUP"]),
            subnet_id=str(raw["AZURE_SUBNET_ID"]),
            image_id=str(raw["AZURE_IMAGE_ID"]),
            instance_size=str(raw.get("AZURE_INSTANCE_SIZE", "Standard_DC2as_v5")),
            instance_sizes=tuple(str(s) for s in sizes),
            nsg_id=str(raw.get("AZURE_NSG_ID", "")),
            ssh_username=str(raw.get("SSH_USERNAME", "peerpod")),
            ssh_public_key=str(raw.get("SSH_PUBLIC_KEY", "")),
            disable_cvm=bool(raw.get("DISABLECVM", False)),
            enable_secure_boot=bool(raw.get("ENABLE_SECURE_BOOT", False)),
            use_public_ip=bool(raw.get("USE_PUBLIC_IP", False)),
            root_volume_size=int(raw.get("ROOT_VOLUME_SIZE", 0)),
            tags={str(k): str(v) for k, v in dict(tags).items()},
            client_id=str(raw.get("AZURE_CLIENT_ID", "")),
            client_secret=str(raw.get("AZURE_CLIENT_SECRET", "")),
            tenant_id=str(raw.get("AZURE_TENANT_ID", "")),
            forwarder_port=int(raw.get("FORWARDER_PORT", 15150)),
            arm_endpoint=str(raw.get("AZURE_ARM_ENDPOINT", "")),
            ca_bundle=str(raw.get("AZURE_CA_BUNDLE", "")),
            authority_host=str(raw.get("AZURE_AUTHORITY_HOST", "")),
            create_timeout_s=float(raw.get("CREATE_TIMEOUT_S", 600.0)),
            polling_interval_s=float(raw.get("POLLING_INTERVAL_S", 5.0)),
        )


def select_size(s: AzureSettings, spec: InstanceTypeSpec, sizes: list[tuple[str, int, int]]) -> str:
    """CAA's ``SelectInstanceTypeToUse`` over ``(name, vcpus, memory MiB)`` of the region."""
    allowed = s.instance_sizes
    if spec.instance_type:
        if spec.instance_type != s.instance_size and spec.instance_type not in allowed:
            raise ConfigError(
                f"instance type {spec.instance_type!r} is not in AZURE_INSTANCE_SIZES",
                reason="pod.instance_type",
            )
        return spec.instance_type
    if spec.vcpus and spec.memory_mib and allowed:
        fits = sorted(
            (vcpus, mem, name)
            for name, vcpus, mem in sizes
            if name in allowed and vcpus >= spec.vcpus and mem >= spec.memory_mib
        )
        if fits:
            return fits[0][2]
    return s.instance_size


def vm_parameters(
    s: AzureSettings, name: str, size: str, userdata: str, ssh_key: str, image: str = ""
) -> dict[str, Any]:
    """CAA's ``getVMParameters`` body (REST JSON names; pods-images-gpu.md §5.2)."""
    encoded = base64.b64encode(userdata.encode()).decode()
    if len(encoded) > 64 * 1024:
        raise ConfigError("userData exceeds Azure's 64 KiB", reason="pod.userdata_size")
    image_id = image or s.image_id
    ref = (
        {"communityGalleryImageId": image_id}
        if image_id.startswith("/CommunityGalleries/")
        else {"id": image_id}
    )
    managed: dict[str, Any] = {"storageAccountType": "Premium_LRS"}
    if not s.disable_cvm:
        managed["securityProfile"] = {"securityEncryptionType": "VMGuestStateOnly"}
    os_disk: dict[str, Any] = {
        "name": f"{name}-disk",
        "createOption": "FromImage",
        "caching": "ReadWrite",
        "deleteOption": "Delete",
        "managedDisk": managed,
    }
    if s.root_volume_size:
        os_disk["diskSizeGB"] = s.root_volume_size
    ip_config: dict[str, Any] = {"subnet": {"id": s.subnet_id}}
    if s.use_public_ip:
        ip_config["publicIPAddressConfiguration"] = {
            "name": f"{name}-net",
            "properties": {"deleteOption": "Delete"},
        }
    nic: dict[str, Any] = {
        "deleteOption": "Delete",
        "ipConfigurations": [{"name": "ip-config", "properties": ip_config}],
    }
    if s.nsg_id:
        nic["networkSecurityGroup"] = {"id": s.nsg_id}
    props: dict[str, Any] = {
        "hardwareProfile": {"vmSize": size},
        "storageProfile": {"imageReference": ref, "osDisk": os_disk},
        "osProfile": {
            "adminUsername": s.ssh_username,
            "computerName": name,
            "linuxConfiguration": {
                "disablePasswordAuthentication": True,
                "ssh": {
                    "publicKeys": [
                        {
                            "path": f"/home/{s.ssh_username}/.ssh/authorized_keys",
                            "keyData": ssh_key,
                        }
                    ]
                },
            },
        },
        "networkProfile": {
            "networkApiVersion": _NETWORK_API_VERSION,
            "networkInterfaceConfigurations": [{"name": f"{name}-net", "properties": nic}],
        },
        "diagnosticsProfile": {"bootDiagnostics": {"enabled": True}},
        "userData": encoded,
    }
    if not s.disable_cvm:
        props["securityProfile"] = {
            "securityType": "ConfidentialVM",
            "uefiSettings": {
                "secureBootEnabled": s.enable_secure_boot,
                "vTpmEnabled": True,
            },
        }
    return {"location": s.region, "tags": dict(s.tags), "properties": props}


def _ssh_public_key() -> str:
    """CAA: an in-memory RSA-4096 key when no key is configured (nobody logs in)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


def _credential(s: AzureSettings) -> Any:
    from azure.identity import ClientSecretCredential, WorkloadIdentityCredential

    kwargs: dict[str, Any] = {}
    if s.authority_host:  # another cloud / a test authority (MSAL skips instance discovery)
        kwargs |= {"authority": s.authority_host, "disable_instance_discovery": True}
    if s.ca_bundle:
        kwargs["connection_verify"] = s.ca_bundle
    if s.client_secret:
        return ClientSecretCredential(s.tenant_id, s.client_id, s.client_secret, **kwargs)
    return WorkloadIdentityCredential(
        tenant_id=s.tenant_id or None, client_id=s.client_id or None, **kwargs
    )


def _azure_error(action: str, exc: Exception) -> DependencyError:
    code = getattr(getattr(exc, "error", None), "code", None) or type(exc).__name__
    message = getattr(getattr(exc, "error", None), "message", None) or str(exc)
    fix = None
    if "quota" in message.lower():
        fix = "request more quota for this VM family, or choose another AZURE_INSTANCE_SIZE"
    elif getattr(exc, "status_code", None) == 409:
        fix = "a resource of that name is in another operation; retry or delete it"
    return DependencyError(f"Azure {action}: {code}: {message}", reason="pod.azure", fix=fix)


class AzureProvider:
    name = "azure"

    def __init__(self, settings: AzureSettings, credential: Any = None) -> None:
        from azure.mgmt.compute import ComputeManagementClient
        from azure.mgmt.network import NetworkManagementClient

        self.settings = settings
        kwargs: dict[str, Any] = {"retry_backoff_factor": 0.2, "retry_backoff_max": 10}
        if settings.arm_endpoint:
            kwargs["base_url"] = settings.arm_endpoint
            kwargs["credential_scopes"] = ["https://management.azure.com/.default"]
        if settings.ca_bundle:
            kwargs["connection_verify"] = settings.ca_bundle
        cred = credential if credential is not None else _credential(settings)
        self.compute = ComputeManagementClient(cred, settings.subscription_id, **kwargs)
        self.network = NetworkManagementClient(cred, settings.subscription_id, **kwargs)
        self._ssh_key = settings.ssh_public_key

    def agent_listen_for(self, instance_id: str) -> str:
        """apf.json's listen address: every address of the VM, the forwarder port."""
        del instance_id
        return f"tcp:0.0.0.0:{self.settings.forwarder_port}"

    def _sizes(self) -> list[tuple[str, int, int]]:
        out = []
        for size in self.compute.virtual_machine_sizes.list(self.settings.region):
            out.append(
                (str(size.name), int(size.number_of_cores or 0), int(size.memory_in_mb or 0))
            )
        return out

    def create_instance(
        self, pod_name: str, sandbox_id: str, userdata: str, spec: InstanceTypeSpec
    ) -> Instance:
        from azure.core.exceptions import AzureError
        from azure.mgmt.compute import models

        s = self.settings
        name = instance_name(pod_name, sandbox_id)
        try:
            sizes = self._sizes() if spec.vcpus and spec.memory_mib else []
            size = select_size(s, spec, sizes)
        except AzureError as exc:
            raise _azure_error("listing VM sizes", exc) from exc
        if not self._ssh_key:
            self._ssh_key = _ssh_public_key()
        body = vm_parameters(s, name, size, userdata, self._ssh_key, spec.image)
        try:
            poller = self.compute.virtual_machines.begin_create_or_update(
                s.resource_group,
                name,
                models.VirtualMachine(body),
                polling_interval=s.polling_interval_s,
            )
        except AzureError as exc:
            raise _azure_error(f"creating VM {name}", exc) from exc
        try:
            vm = poller.result(timeout=s.create_timeout_s)
            if not poller.done():
                raise DependencyError(
                    f"Azure VM {name} did not reach provisioningState Succeeded in "
                    f"{s.create_timeout_s:.0f} s",
                    reason="pod.azure_timeout",
                    fix="check the VM's boot diagnostics; raise CREATE_TIMEOUT_S",
                )
            ip = self._private_ip(vm, name)
        except BaseException as exc:
            self._delete(name)
            if isinstance(exc, AzureError):
                raise _azure_error(f"creating VM {name}", exc) from exc
            raise
        return Instance(
            id=name,
            name=name,
            agent_address=f"tcp:{ip}:{s.forwarder_port}",
            ips=(ip,),
        )

    def _private_ip(self, vm: Any, name: str) -> str:
        nic_name = f"{name}-net"
        props = getattr(vm, "properties", None)
        nics = getattr(getattr(props, "network_profile", None), "network_interfaces", None) or []
        if nics and getattr(nics[0], "id", None):
            nic_name = str(nics[0].id).rstrip("/").rpartition("/")[2]
        nic = self.network.network_interfaces.get(self.settings.resource_group, nic_name)
        for cfg in nic.ip_configurations or []:
            if cfg.private_ip_address:
                return str(cfg.private_ip_address)
        raise DependencyError(f"NIC {nic_name} of VM {name} has no private IP")

    def _delete(self, name: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self.compute.virtual_machines.begin_delete(
                self.settings.resource_group,
                name,
                polling_interval=self.settings.polling_interval_s,
            ).result()
        except ResourceNotFoundError:
            pass

    def delete_instance(self, instance_id: str) -> None:
        from azure.core.exceptions import AzureError

        name = instance_id.rstrip("/").rpartition("/")[2]  # CAA: the name from the resource id
        try:
            self._delete(name)
        except AzureError as exc:
            raise _azure_error(f"deleting VM {name}", exc) from exc

    def teardown(self) -> None:
        """CAA: no-op."""
