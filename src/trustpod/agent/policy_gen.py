"""``trustpod policy generate``: a policy that allows exactly one pod (genpolicy's job; pure).

From a Kubernetes Pod (or a workload's pod template) this derives, per container, what kata's
agent will see in ``CreateContainerRequest`` (pods-images-gpu.md §1.2): ``Args`` (command/args over
the image's Entrypoint/Cmd), ``Env`` (image + pod env; ``valueFrom`` values and Kubernetes' own
service variables by pattern), ``Cwd``, ``User``, capabilities, ``Terminal``, read-only root,
``NoNewPrivileges``, volume mounts, and the exec commands it may run (the pod annotation
``EXEC_ANNOTATION`` plus exec probes and lifecycle hooks, as genpolicy collects them). The result
is ``policy_rules.RULES`` followed by ``policy_data := {...}`` (last, like genpolicy).

Unlike genpolicy, **every image is pinned to its digest**: a ``name@sha256:…`` reference is used
as written; a tag is resolved by the injected ``ImageResolver`` (the registry, or the settings'
``images`` table) and refused when nothing can resolve it. The rules then require each
``image_guest_pull`` storage (and the CRI image-name annotation) to name the pinned reference.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from trustpod.agent.policy_rules import RULES
from trustpod.errors import ConfigError, EvidenceError
from trustpod.oci.reference import ImageReference, parse_digest, parse_reference

__all__ = [
    "DEFAULT_CAPABILITIES",
    "EXEC_ANNOTATION",
    "MAX_POD_BYTES",
    "GeneratorSettings",
    "ImageInfo",
    "ImageResolver",
    "generate_policy",
    "load_settings",
    "parse_pod",
    "policy_data",
]

#: Pod annotation listing extra exec commands: JSON ``[[argv...], ...]`` (every container) or
#: ``{"<container name>": [[argv...], ...]}``.
EXEC_ANNOTATION = "io.trustpod.policy/exec"
#: Largest pod YAML accepted.
MAX_POD_BYTES = 1024 * 1024
#: containerd's default capability set for a non-privileged container.
DEFAULT_CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)
_ALL_CAPABILITIES = (
    *DEFAULT_CAPABILITIES,
    *(
        f"CAP_{c}"
        for c in (
            "DAC_READ_SEARCH LINUX_IMMUTABLE NET_BROADCAST NET_ADMIN IPC_LOCK IPC_OWNER SYS_MODULE "
            "SYS_RAWIO SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME "
            "SYS_TTY_CONFIG LEASE AUDIT_CONTROL MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM "
            "BLOCK_SUSPEND AUDIT_READ PERFMON BPF CHECKPOINT_RESTORE"
        ).split()
    ),
)
_DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_SERVICE_ENV = (
    r"^[A-Z0-9_]+_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT(_[0-9]+_(TCP|UDP|SCTP)"
    r"(_PROTO|_PORT|_ADDR)?)?)=[A-Za-z0-9.:/_\[\]-]*$"
)
_WORKLOAD_KINDS = (
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "ReplicationController",
)
_DEFAULT_MOUNTS = (
    "/proc",
    "/dev",
    "/dev/pts",
    "/dev/mqueue",
    "/sys",
    "/sys/fs/cgroup",
    "/dev/shm",  # noqa: S108 - a mount destination, not a temp file
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
    "/dev/termination-log",
)
_SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What a resolver knows of an image: its digest, and its OCI config when fetched."""

    digest: str
    config: Mapping[str, Any] | None = None


#: ``resolve(reference) -> ImageInfo``: the registry (``trustpod.oci``) or a fixed table.
ImageResolver = Callable[[ImageReference], ImageInfo]


@dataclass(frozen=True, slots=True)
class GeneratorSettings:
    """``--settings`` JSON (every key optional)."""

    #: ``{"<ref as in the pod>": "sha256:…" | {"digest": ..., "config": {OCI image config}}}``.
    images: Mapping[str, ImageInfo] = field(default_factory=dict)
    #: Exec commands allowed in every container (genpolicy's ``allowed_commands``).
    exec_commands: tuple[tuple[str, ...], ...] = ()
    #: Allow ``kubectl logs`` (ReadStream) / stdin (WriteStream, CloseStdin); genpolicy: false.
    allow_logs: bool = False
    allow_stdin: bool = False
    #: Extra environment patterns allowed in every container.
    env_regex: tuple[str, ...] = ()
    #: Paths CopyFile may write (regex prefixes); default: kata's per-container shared files.
    copy_file_regex: tuple[str, ...] = (
        r"^/run/kata-containers/shared/containers/(watchable/)?[a-zA-Z0-9]+-[a-z0-9]{16}-",
    )
    #: The sandbox (pause) container as the pod VM image runs it.
    pause_args: tuple[str, ...] = ("/pause",)
    pause_uid: int = 65535
    pause_gid: int = 65535


def _strs(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise ConfigError(f"{what} must be a list of strings", reason="policy_gen.settings")
    return tuple(value)


def _image_info(ref: str, value: Any) -> ImageInfo:
    if isinstance(value, str):
        return ImageInfo(parse_digest(value))
    if isinstance(value, Mapping) and isinstance(value.get("digest"), str):
        config = value.get("config")
        if config is not None and not isinstance(config, Mapping):
            raise ConfigError(f"images[{ref!r}].config must be an object")
        return ImageInfo(parse_digest(value["digest"]), config)
    raise ConfigError(
        f"images[{ref!r}] must be a digest or {{'digest', 'config'}}",
        reason="policy_gen.settings",
    )


def load_settings(text: str | None) -> GeneratorSettings:
    """Parse the settings JSON (``None``: defaults)."""
    if text is None:
        return GeneratorSettings()
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"settings are not JSON: {exc}", reason="policy_gen.settings") from exc
    if not isinstance(doc, Mapping):
        raise ConfigError("settings must be a JSON object", reason="policy_gen.settings")
    known = {f for f in GeneratorSettings.__dataclass_fields__}
    unknown = set(doc) - known
    if unknown:
        raise ConfigError(
            f"unknown settings {sorted(unknown)}; known: {sorted(known)}",
            reason="policy_gen.settings",
        )
    kw: dict[str, Any] = {}
    if "images" in doc:
        if not isinstance(doc["images"], Mapping):
            raise ConfigError("images must be an object", reason="policy_gen.settings")
        kw["images"] = {k: _image_info(k, v) for k, v in doc["images"].items()}
    if "exec_commands" in doc:
        cmds = doc["exec_commands"]
        if not isinstance(cmds, list):
            raise ConfigError("exec_commands must be a list of argv lists")
        kw["exec_commands"] = tuple(_strs(c, "exec_commands[i]") for c in cmds)
    for key in ("env_regex", "copy_file_regex", "pause_args"):
        if key in doc:
            kw[key] = _strs(doc[key], key)
    for key in ("allow_logs", "allow_stdin"):
        if key in doc:
            if not isinstance(doc[key], bool):
                raise ConfigError(f"{key} must be true or false", reason="policy_gen.settings")
            kw[key] = doc[key]
    for key in ("pause_uid", "pause_gid"):
        if key in doc:
            if not isinstance(doc[key], int) or isinstance(doc[key], bool):
                raise ConfigError(f"{key} must be an integer", reason="policy_gen.settings")
            kw[key] = doc[key]
    for pattern in (*kw.get("env_regex", ()), *kw.get("copy_file_regex", ())):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(
                f"bad regex {pattern!r}: {exc}", reason="policy_gen.settings"
            ) from exc
    return GeneratorSettings(**kw)


# --- the pod ---------------------------------------------------------------------------------


def _bad(what: str) -> EvidenceError:
    return EvidenceError(f"pod: {what}", reason="policy_gen.pod")


def parse_pod(text: str) -> dict[str, Any]:
    """The first document holding a pod spec: a ``Pod`` or a workload with a pod template.
    Returns ``{"metadata", "spec", "exact_name"}``."""
    if len(text.encode("utf-8")) > MAX_POD_BYTES:
        raise _bad(f"YAML is larger than {MAX_POD_BYTES} bytes")
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise _bad(f"not valid YAML: {exc}") from exc
    for doc in docs:
        if not isinstance(doc, Mapping):
            continue
        kind, meta = doc.get("kind"), doc.get("metadata") or {}
        if kind == "Pod" and isinstance(doc.get("spec"), Mapping):
            return {"metadata": meta, "spec": doc["spec"], "exact_name": "name" in meta}
        if kind in _WORKLOAD_KINDS:
            tmpl = (doc.get("spec") or {}).get("template") or {}
            if isinstance(tmpl.get("spec"), Mapping):
                merged = dict(meta)
                merged["annotations"] = {
                    **(meta.get("annotations") or {}),
                    **((tmpl.get("metadata") or {}).get("annotations") or {}),
                }
                return {"metadata": merged, "spec": tmpl["spec"], "exact_name": False}
    raise _bad("no Pod or workload with a pod template found")


def _pinned(
    ref: str, settings: GeneratorSettings, resolver: ImageResolver | None
) -> tuple[list[str], ImageInfo]:
    image = parse_reference(ref)
    table = settings.images.get(ref)
    if image.digest is not None:
        info = (
            table if table is not None and table.digest == image.digest else ImageInfo(image.digest)
        )
    elif table is not None:
        info = table
    elif resolver is not None:
        info = resolver(image)
    else:
        raise ConfigError(
            f"image {ref!r} is a tag; the policy pins every image to its digest",
            reason="policy_gen.unpinned_image",
            fix=f"use {ref.split(':')[0]}@sha256:<digest> in the pod, list it under `images` in "
            "--settings, or pass --resolve to ask the registry",
        )
    pinned = image.with_digest(info.digest)
    bare = ref.split("@", 1)[0]
    if image.tag is not None and bare.endswith(f":{image.tag}"):
        bare = bare[: -len(image.tag) - 1]
    refs = list(dict.fromkeys([str(pinned), f"{bare}@{info.digest}"]))
    return refs, info


def _env(
    container: Mapping[str, Any], config: Mapping[str, Any] | None
) -> tuple[list[str], list[str]]:
    exact: list[str] = list((config or {}).get("Env") or [])
    patterns: list[str] = []
    if config is None:
        exact.append(_DEFAULT_PATH)
    for item in container.get("env") or []:
        name = item.get("name")
        if not isinstance(name, str):
            raise _bad("env entry without a name")
        if "value" in item or "valueFrom" not in item:
            exact.append(f"{name}={item.get('value', '')}")
        else:
            patterns.append(f"^{re.escape(name)}=.*$")
    if container.get("envFrom"):
        patterns.append(r"^[A-Za-z_][A-Za-z0-9_.-]*=.*$")  # whole ConfigMaps/Secrets: any name
    return exact, patterns


def _args(container: Mapping[str, Any], config: Mapping[str, Any] | None, name: str) -> list[str]:
    command, args = container.get("command"), container.get("args")
    if command is None and config is None:
        raise ConfigError(
            f"container {name!r} has no command and its image config is unknown",
            reason="policy_gen.image_config",
            fix="set `command` in the pod, give the image's config under `images` in --settings, "
            "or pass --resolve",
        )
    entry = list(command) if command is not None else list((config or {}).get("Entrypoint") or [])
    if args is not None:
        rest = list(args)
    elif command is not None:
        rest = []
    else:
        rest = list((config or {}).get("Cmd") or [])
    out = entry + rest
    if not out or not all(isinstance(x, str) for x in out):
        raise _bad(f"container {name!r}: no command to run")
    return out


def _user(
    sc: Mapping[str, Any], psc: Mapping[str, Any], config: Mapping[str, Any] | None, name: str
) -> tuple[int, int]:
    uid = sc.get("runAsUser", psc.get("runAsUser"))
    gid = sc.get("runAsGroup", psc.get("runAsGroup"))
    image_user = str((config or {}).get("User") or "")
    if uid is None:
        head = image_user.split(":", 1)[0]
        if head and not head.isdigit():
            raise ConfigError(
                f"container {name!r}: image user {image_user!r} is a name",
                reason="policy_gen.user",
                fix="set securityContext.runAsUser (and runAsGroup) in the pod",
            )
        uid = int(head) if head else 0
    if gid is None:
        tail = image_user.split(":", 1)[1] if ":" in image_user else ""
        gid = int(tail) if tail.isdigit() else 0
    return int(uid), int(gid)


def _exec_commands(
    meta: Mapping[str, Any], container: Mapping[str, Any], name: str
) -> list[list[str]]:
    cmds: list[list[str]] = []
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        cmd = ((container.get(probe) or {}).get("exec") or {}).get("command")
        if cmd:
            cmds.append(list(cmd))
    for hook in ("postStart", "preStop"):
        cmd = (((container.get("lifecycle") or {}).get(hook) or {}).get("exec") or {}).get(
            "command"
        )
        if cmd:
            cmds.append(list(cmd))
    raw = (meta.get("annotations") or {}).get(EXEC_ANNOTATION)
    if raw is not None:
        try:
            doc = json.loads(raw)
        except (TypeError, json.JSONDecodeError) as exc:
            raise _bad(f"annotation {EXEC_ANNOTATION} is not JSON") from exc
        listed = doc.get(name, []) if isinstance(doc, Mapping) else doc
        if not isinstance(listed, list) or not all(
            isinstance(c, list) and c and all(isinstance(a, str) for a in c) for c in listed
        ):
            raise _bad(f"annotation {EXEC_ANNOTATION}: expected [[argv...], ...]")
        cmds.extend(list(c) for c in listed)
    return cmds


def _container(
    pod: Mapping[str, Any],
    c: Mapping[str, Any],
    settings: GeneratorSettings,
    resolver: ImageResolver | None,
) -> dict[str, Any]:
    spec, meta = pod["spec"], pod["metadata"]
    name = c.get("name")
    if not isinstance(name, str) or not isinstance(c.get("image"), str):
        raise _bad("every container needs a name and an image")
    refs, info = _pinned(c["image"], settings, resolver)
    config = info.config
    cfg = (config or {}).get("config", config) if config else None
    sc, psc = c.get("securityContext") or {}, spec.get("securityContext") or {}
    privileged = bool(sc.get("privileged", False))
    caps = set(_ALL_CAPABILITIES if privileged else DEFAULT_CAPABILITIES)
    adds = ((sc.get("capabilities") or {}).get("add")) or []
    drops = ((sc.get("capabilities") or {}).get("drop")) or []
    caps |= {a if a.startswith("CAP_") else f"CAP_{a}" for a in adds}
    if any(d.upper() in ("ALL", "CAP_ALL") for d in drops):
        caps = {a if a.startswith("CAP_") else f"CAP_{a}" for a in adds}
    else:
        caps -= {d if d.startswith("CAP_") else f"CAP_{d}" for d in drops}
    uid, gid = _user(sc, psc, cfg, name)
    env, env_regex = _env(c, cfg)
    mounts = [
        {"destination": m["mountPath"], "readonly": bool(m.get("readOnly", False))}
        for m in c.get("volumeMounts") or []
        if isinstance(m, Mapping) and isinstance(m.get("mountPath"), str)
    ]
    if spec.get("automountServiceAccountToken", True) is not False:
        mounts.append({"destination": _SERVICE_ACCOUNT, "readonly": True})
    supplemental = psc.get("supplementalGroups")
    return {
        "name": name,
        "type": "container",
        "image_refs": refs,
        "args": _args(c, cfg, name),
        "env": env,
        "env_regex": env_regex,
        "cwd": c.get("workingDir") or (cfg or {}).get("WorkingDir") or "/",
        "uid": uid,
        "gid": gid,
        "additional_gids": None
        if supplemental is None
        else sorted({gid, *supplemental, *([psc["fsGroup"]] if "fsGroup" in psc else [])}),
        "terminal": bool(c.get("tty", False)),
        "readonly_root": bool(sc.get("readOnlyRootFilesystem", False)),
        "no_new_privileges": sc.get("allowPrivilegeEscalation") is False,
        "capabilities": sorted(caps),
        "sandbox_pidns": bool(spec.get("shareProcessNamespace", False)),
        "mounts": mounts,
        "exec": _exec_commands(meta, c, name),
    }


def policy_data(
    pod: Mapping[str, Any], settings: GeneratorSettings, resolver: ImageResolver | None = None
) -> dict[str, Any]:
    """The ``policy_data`` document for this pod."""
    spec, meta = pod["spec"], pod["metadata"]
    for flag in ("hostPID", "hostIPC"):
        if spec.get(flag):
            raise ConfigError(
                f"pod sets {flag}: not possible in a confidential pod", reason="policy_gen.pod"
            )
    name = meta.get("name") or meta.get("generateName") or ""
    if not isinstance(name, str) or not name:
        raise _bad("metadata.name (or generateName) is required")
    exact = bool(pod.get("exact_name"))
    prefix = name if name.endswith("-") else f"{name}-"
    containers = [
        {
            "name": "pause",
            "type": "sandbox",
            "image_refs": [],
            "args": list(settings.pause_args),
            "env": [_DEFAULT_PATH],
            "env_regex": [],
            "cwd": "/",
            "uid": settings.pause_uid,
            "gid": settings.pause_gid,
            "additional_gids": None,
            "terminal": False,
            "readonly_root": True,
            "no_new_privileges": True,
            "capabilities": sorted(DEFAULT_CAPABILITIES),
            "sandbox_pidns": False,
            "mounts": [],
            "exec": [],
        }
    ]
    listed = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    if not listed:
        raise _bad("the pod has no containers")
    names = [c.get("name") for c in listed if isinstance(c, Mapping)]
    if len(set(names)) != len(names):
        raise _bad("container names are not unique")
    containers += [_container(pod, c, settings, resolver) for c in listed]
    annotations = {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if isinstance(v, str) and k != EXEC_ANNOTATION
    }
    return {
        "pod": {
            "name": name if exact else None,
            "name_prefix": None if exact else prefix,
            "namespace": meta.get("namespace") or "default",
            "annotations": annotations,
        },
        "containers": containers,
        "container_index": {
            "sandbox" if c["type"] == "sandbox" else f"container/{c['name']}": i
            for i, c in enumerate(containers)
        },
        "common": {
            "default_mounts": list(_DEFAULT_MOUNTS),
            "bind_source_regex": r"^/run/kata-containers/(shared/containers/|sandbox/)",
            "volume_drivers": ["ephemeral", "local"],
            "volume_mount_point_regex": r"^/run/kata-containers/(shared/containers/|sandbox/)",
            "sandbox_mount_point_regex": r"^/run/kata-containers/sandbox/",
            "annotation_prefixes": ["io.katacontainers.pkg.oci."],
            "env_regex": [r"^HOSTNAME=[A-Za-z0-9.-]*$", _SERVICE_ENV, *settings.env_regex],
            "required_namespaces": ["ipc", "uts", "mount"],
            "allowed_namespaces": ["ipc", "uts", "mount", "cgroup"],
            "forbidden_devices": ["lo"],
            "forbidden_raw_flags": 8,  # IFF_LOOPBACK
        },
        "request_defaults": {
            "exec_commands": [list(c) for c in settings.exec_commands],
            "copy_file_regex": list(settings.copy_file_regex),
            "ReadStreamRequest": settings.allow_logs,
            "WriteStreamRequest": settings.allow_stdin,
            "CloseStdinRequest": settings.allow_stdin,
        },
    }


def generate_policy(
    pod: Mapping[str, Any],
    settings: GeneratorSettings | None = None,
    resolver: ImageResolver | None = None,
) -> str:
    """Rules + ``policy_data`` (pretty JSON, last), ready for initdata ``policy.rego``."""
    data = policy_data(pod, settings or GeneratorSettings(), resolver)
    return RULES + "\npolicy_data := " + json.dumps(data, indent=2, sort_keys=False) + "\n"
