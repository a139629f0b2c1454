"""kata's protobuf OCI ``Spec`` → runc's ``config.json``, and the guest-side rewrite (pure).

``to_runtime_json`` follows kata's ``rustjail`` conversion: each set protobuf field becomes the
OCI runtime-spec JSON member of the same name in lowerCamelCase (``OOMScoreAdj`` →
``oomScoreAdj``, ``UIDMappings`` → ``uidMappings``), with the three irregular names of the spec
(``Version`` → ``ociVersion``, ``Pagesize`` → ``pageSize``, ``errnoret`` → ``errnoRet``); unset
(proto3 default) fields are omitted like the spec's ``omitempty``.

``guest_spec`` then makes the host's spec safe to run in the pod VM (what kata's agent does in
``update_container_namespaces`` / ``setup_bundle``, simplified to this runtime):

1. ``root.path`` is the rootfs the image puller unpacked; ``readonly`` is kept;
2. namespaces: host ``path`` values are dropped (they name host namespaces), and the network
   namespace is removed: containers share the agent's network namespace, which is the pod's
   (so ``127.0.0.1:8006`` reaches the CDH/AA API, as in a kata pod VM); the ``pid`` namespace
   is a new one, or the sandbox's (``pid_namespace``, kata's ``sandbox_pidns``);
3. OCI hooks from the host are dropped (kata runs only guest hooks; genpolicy denies them);
4. ``linux.cgroupsPath`` is ``/trustpod/<container id>`` (the host's path means nothing here);
5. bind mounts must come from under ``/run/kata-containers/`` (CopyFile'd files, shared
   storage); they are mapped into the agent's run directory. Any other host path is refused.

``process.terminal`` is kept: the agent gives such a process a pty (``trustpod.agent.console``).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from trustpod.errors import EvidenceError

__all__ = [
    "KATA_RUN_DIR",
    "SHARED_CONTAINERS_DIR",
    "guest_path",
    "guest_spec",
    "json_name",
    "to_runtime_json",
]

#: Where kata's host side puts everything the guest shares (``CONTAINER_BASE``).
KATA_RUN_DIR = "/run/kata-containers"
#: CopyFile's root (kata ``KATA_GUEST_SHARE_DIR``).
SHARED_CONTAINERS_DIR = "/run/kata-containers/shared/containers"

_IRREGULAR = {"Version": "ociVersion", "Pagesize": "pageSize", "errnoret": "errnoRet"}
_LEAD = re.compile(r"^([A-Z0-9]+)(?=[A-Z][a-z]|$)|^[A-Z]")
_BIND_TYPES = {"bind", "rbind"}


def json_name(proto_name: str) -> str:
    if proto_name in _IRREGULAR:
        return _IRREGULAR[proto_name]
    if proto_name.isupper():
        return proto_name.lower()
    m = _LEAD.match(proto_name)
    if not m:
        return proto_name
    return m.group(0).lower() + proto_name[m.end() :]


def _value(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return to_runtime_json(value)
    return value


def to_runtime_json(msg: Message) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field, value in msg.ListFields():
        name = json_name(field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            vf = field.message_type.fields_by_name["value"]
            out[name] = {k: _value(vf, v) for k, v in value.items()}
        elif field.is_repeated:
            out[name] = [_value(field, v) for v in value]
        else:
            out[name] = _value(field, value)
    return out


def guest_path(path: str, run_dir: str) -> str:
    """Map a ``/run/kata-containers/...`` path into ``run_dir``; refuse anything else."""
    if not path.startswith("/") or any(part in (".", "..") for part in path.split("/")):
        raise EvidenceError(f"path {path!r} is not absolute and canonical", reason="agent.path")
    norm = posixpath.normpath(path)
    if norm != KATA_RUN_DIR and not norm.startswith(KATA_RUN_DIR + "/"):
        raise EvidenceError(
            f"path {path!r} is not under {KATA_RUN_DIR}: host paths are not shared with a "
            "confidential pod",
            reason="agent.host_path",
        )
    return run_dir.rstrip("/") + norm[len(KATA_RUN_DIR) :]


def guest_spec(
    config: dict[str, Any],
    *,
    container_id: str,
    rootfs: str,
    run_dir: str,
    map_source: Callable[[str], str] | None = None,
    pid_namespace: str | None = None,
) -> dict[str, Any]:
    """A copy of ``config`` (from ``to_runtime_json``) rewritten by steps 1-5;
    ``pid_namespace``: the path of the PID namespace to join (None: a new one)."""
    spec = dict(config)
    spec.setdefault("ociVersion", "1.0.2")
    root = dict(spec.get("root") or {})
    spec["root"] = {"path": rootfs, "readonly": bool(root.get("readonly", False))}
    process = dict(spec.get("process") or {})
    process.setdefault("cwd", "/")
    process.setdefault("user", {"uid": 0, "gid": 0})
    if not process.get("args"):
        raise EvidenceError("the OCI spec has no process args", reason="agent.no_args")
    spec["process"] = process
    linux = dict(spec.get("linux") or {})
    namespaces = [
        {"type": ns["type"]}
        for ns in linux.get("namespaces", [])
        if ns.get("type") not in ("network", "pid")
    ]
    have = {ns["type"] for ns in namespaces}
    namespaces += [{"type": t} for t in ("ipc", "uts", "mount") if t not in have]
    pid_ns = {"type": "pid"} | ({"path": pid_namespace} if pid_namespace else {})
    namespaces.append(pid_ns)
    linux["namespaces"] = namespaces
    linux["cgroupsPath"] = f"/trustpod/{container_id}"
    spec["linux"] = linux
    spec.pop("hooks", None)
    mapper = map_source or (lambda src: guest_path(src, run_dir))
    mounts = []
    for mount in spec.get("mounts", []):
        m = dict(mount)
        options = m.get("options", [])
        if m.get("type") in _BIND_TYPES or "bind" in options or "rbind" in options:
            m["source"] = mapper(m.get("source", ""))
        mounts.append(m)
    spec["mounts"] = mounts
    return spec
