"""CAA's provider interface (``src/cloud-providers/types.go``), in Python.

``create_instance(pod_name, sandbox_id, userdata, spec)`` creates the pod VM and returns where its
agent listens; ``delete_instance(instance_id)`` removes the VM and everything created with it;
``teardown()`` releases provider-wide resources. The userdata is the cloud-config text
(``trustpod.pod.userdata.build_cloud_config``); providers deliver it their own way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Instance", "InstanceTypeSpec", "Provider", "instance_name"]


@dataclass(frozen=True, slots=True)
class InstanceTypeSpec:
    """CAA's ``InstanceTypeSpec`` (the fields trustpod uses)."""

    instance_type: str = ""
    vcpus: int = 0
    memory_mib: int = 0
    image: str = ""


@dataclass(frozen=True, slots=True)
class Instance:
    """A created pod VM: its provider id, name, IPs and the agent's ttRPC address."""

    id: str
    name: str
    agent_address: str
    ips: tuple[str, ...] = ()


class Provider(Protocol):
    name: str

    def create_instance(
        self, pod_name: str, sandbox_id: str, userdata: str, spec: InstanceTypeSpec
    ) -> Instance: ...

    def delete_instance(self, instance_id: str) -> None: ...

    def teardown(self) -> None: ...


def instance_name(pod_name: str, sandbox_id: str, max_len: int = 63) -> str:
    """CAA's ``util.GenerateInstanceName``: ``podvm-<pod>-<first 8 of sandbox id>``, lower-case,
    at most ``max_len`` characters."""
    pod = re.sub(r"[^a-z0-9-]", "-", pod_name.lower())
    suffix = sandbox_id[:8]
    room = max_len - len("podvm--") - len(suffix)
    return f"podvm-{pod[:room].strip('-')}-{suffix}"
