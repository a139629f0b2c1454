"""A Kubernetes Pod (or a workload's pod template) parsed once into frozen dataclasses (pure).

What ``trustpod pod run`` accepts is the part of the Pod API a peer pod can honour: containers
(name, image, command, args, env, volumeMounts, workingDir, securityContext), volumes (emptyDir,
secret, configMap), the pod securityContext, ``shareProcessNamespace``, metadata (name, namespace,
labels, annotations) and ``runtimeClassName``. Everything else is an error naming the field, so
a pod never runs with a setting silently dropped. ``valueFrom.secretKeyRef`` resolves against
Secret manifests given with ``--secrets`` (values are sealed secrets, unsealed in the guest by the
CDH); configMap volumes and ``configMapKeyRef`` against ConfigMap manifests in the same file.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from trustpod.errors import ConfigError

__all__ = [
    "INITDATA_ANNOTATION",
    "MAX_POD_BYTES",
    "ContainerSpec",
    "EnvVar",
    "Mount",
    "PodSpec",
    "Volume",
    "parse_objects",
    "parse_pod",
]

#: Kata's initdata annotation (plain TOML, or gzip+base64 as kata/CAA encode it).
INITDATA_ANNOTATION = "io.katacontainers.config.hypervisor.cc_init_data"
#: Largest pod / secrets YAML accepted.
MAX_POD_BYTES = 1024 * 1024
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_WORKLOADS = ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job")
_POD_FIELDS = {
    "containers",
    "volumes",
    "securityContext",
    "runtimeClassName",
    "restartPolicy",
    "shareProcessNamespace",
}
_CONTAINER_FIELDS = {
    "name",
    "image",
    "command",
    "args",
    "env",
    "volumeMounts",
    "workingDir",
    "securityContext",
    "imagePullPolicy",
    "resources",
    "ports",  # informational in Kubernetes too
}
_SECURITY_FIELDS = {
    "runAsUser",
    "runAsGroup",
    "runAsNonRoot",
    "readOnlyRootFilesystem",
    "allowPrivilegeEscalation",
    "privileged",
}


@dataclass(frozen=True, slots=True)
class EnvVar:
    """``value`` is literal; ``secret``/``config_map`` name ``(object, key)`` to resolve."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class Mount:
    name: str
    path: str
    read_only: bool


@dataclass(frozen=True, slots=True)
class Volume:
    """``kind`` is ``emptyDir``, ``secret`` or ``configMap``; ``files`` = file name → bytes."""

    name: str
    kind: str
    files: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    name: str
    image: str
    command: tuple[str, ...]
    args: tuple[str, ...]
    env: tuple[EnvVar, ...]
    mounts: tuple[Mount, ...]
    working_dir: str
    run_as_user: int | None
    run_as_group: int | None
    read_only_root: bool
    no_new_privileges: bool
    #: ``resources.limits`` (else requests): millicores and MiB, 0 when unset.
    cpu_milli: int = 0
    memory_mib: int = 0


@dataclass(frozen=True, slots=True)
class PodSpec:
    name: str
    namespace: str
    labels: tuple[tuple[str, str], ...]
    annotations: tuple[tuple[str, str], ...]
    runtime_class: str | None
    containers: tuple[ContainerSpec, ...]
    volumes: tuple[Volume, ...]
    #: ``shareProcessNamespace``: the containers join the pause container's PID namespace.
    share_process_namespace: bool = False

    def instance_size(self) -> tuple[int, int]:
        """(vCPUs, memory MiB) the pod asks for, as CAA's webhook sums them (0 = unset)."""
        milli = sum(c.cpu_milli for c in self.containers)
        return (-(-milli // 1000), sum(c.memory_mib for c in self.containers))

    def annotation(self, key: str) -> str | None:
        return dict(self.annotations).get(key)

    def runtime_class_provider(self) -> str | None:
        """The provider a runtime class names (``kata-remote-azure`` / ``trustpod-azure`` →
        azure, ``trustpod-sandbox`` → sandbox), else ``None`` (the config decides)."""
        rc = self.runtime_class or ""
        if rc.endswith("-azure"):
            return "azure"
        if rc.endswith("-sandbox"):
            return "sandbox"
        return None


def _err(field: str, problem: str) -> ConfigError:
    return ConfigError(
        f"pod field {field}: {problem}",
        reason="pod.spec",
        fix="remove or fix the field; trustpod pod runs containers, env, volumes "
        "(emptyDir, secret, configMap), securityContext and annotations",
    )


def _map(value: Any, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _err(field, "must be a mapping")
    return value


def _str(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise _err(field, "must be a string")
    return value


def _strs(value: Any, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _err(field, "must be a list of strings")
    return tuple(value)


def _known(obj: Mapping[str, Any], allowed: set[str], field: str) -> None:
    for key in obj:
        if key not in allowed:
            raise _err(f"{field}.{key}", "is not supported")


def _int(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**32:
        raise _err(field, "must be an integer 0..2^32-1")
    return value


def parse_objects(text: str | bytes) -> list[Mapping[str, Any]]:
    """Every YAML document of ``text`` (``---`` separated; ``kind: List`` flattened)."""
    if len(text) > MAX_POD_BYTES:
        raise _err("(file)", f"larger than {MAX_POD_BYTES} bytes")
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise _err("(file)", f"is not YAML: {exc}") from exc
    out: list[Mapping[str, Any]] = []
    for doc in docs:
        doc = _map(doc, "(document)")
        if doc.get("kind") == "List":
            out.extend(_map(i, "items[]") for i in doc.get("items") or [])
        else:
            out.append(doc)
    return out


def _data_of(obj: Mapping[str, Any], kind: str) -> dict[str, bytes]:
    """A Secret's ``data`` (base64) / ``stringData``, or a ConfigMap's ``data``."""
    out: dict[str, bytes] = {}
    if kind == "Secret":
        for k, v in _map(obj.get("data") or {}, "Secret.data").items():
            try:
                out[k] = base64.b64decode(_str(v, f"Secret.data.{k}"), validate=True)
            except ValueError as exc:
                raise _err(f"Secret.data.{k}", "is not base64") from exc
        for k, v in _map(obj.get("stringData") or {}, "Secret.stringData").items():
            out[k] = _str(v, f"Secret.stringData.{k}").encode()
    else:
        for k, v in _map(obj.get("data") or {}, "ConfigMap.data").items():
            out[k] = _str(v, f"ConfigMap.data.{k}").encode()
    return out


def _objects_by_kind(objects: list[Mapping[str, Any]]) -> dict[tuple[str, str], dict[str, bytes]]:
    out: dict[tuple[str, str], dict[str, bytes]] = {}
    for obj in objects:
        kind = obj.get("kind")
        if kind in ("Secret", "ConfigMap"):
            name = _str(_map(obj.get("metadata") or {}, f"{kind}.metadata").get("name"), "name")
            out[(str(kind), name)] = _data_of(obj, str(kind))
    return out


def _env(
    items: Any, field: str, refs: dict[tuple[str, str], dict[str, bytes]]
) -> tuple[EnvVar, ...]:
    out: list[EnvVar] = []
    for i, item in enumerate(items or []):
        f = f"{field}[{i}]"
        item = _map(item, f)
        _known(item, {"name", "value", "valueFrom"}, f)
        name = _str(item.get("name"), f + ".name")
        if "valueFrom" in item:
            src = _map(item["valueFrom"], f + ".valueFrom")
            _known(src, {"secretKeyRef", "configMapKeyRef"}, f + ".valueFrom")
            ((kind_key, ref),) = src.items()
            kind = "Secret" if kind_key == "secretKeyRef" else "ConfigMap"
            ref = _map(ref, f"{f}.valueFrom.{kind_key}")
            _known(ref, {"name", "key", "optional"}, f"{f}.valueFrom.{kind_key}")
            obj, key = _str(ref.get("name"), "name"), _str(ref.get("key"), "key")
            data = refs.get((kind, obj))
            if data is None or key not in data:
                raise _err(
                    f"{f}.valueFrom.{kind_key}",
                    f"{kind} {obj!r} key {key!r} not found (give the manifest with --secrets)",
                )
            out.append(EnvVar(name, data[key].decode("utf-8", "strict")))
        else:
            out.append(EnvVar(name, _str(item.get("value", ""), f + ".value")))
    return tuple(out)


def _volumes(items: Any, refs: dict[tuple[str, str], dict[str, bytes]]) -> tuple[Volume, ...]:
    out: list[Volume] = []
    for i, item in enumerate(items or []):
        f = f"spec.volumes[{i}]"
        item = _map(item, f)
        name = _str(item.get("name"), f + ".name")
        kinds = [k for k in item if k != "name"]
        if len(kinds) != 1 or kinds[0] not in ("emptyDir", "secret", "configMap"):
            raise _err(f"{f}.{','.join(kinds) or '(type)'}", "only emptyDir, secret, configMap")
        kind = kinds[0]
        src = _map(item[kind] or {}, f"{f}.{kind}")
        if kind == "emptyDir":
            _known(src, {"medium", "sizeLimit"}, f"{f}.emptyDir")
            out.append(Volume(name, kind))
            continue
        key = "secretName" if kind == "secret" else "name"
        _known(src, {key, "defaultMode", "optional"}, f"{f}.{kind}")
        obj = _str(src.get(key), f"{f}.{kind}.{key}")
        data = refs.get(("Secret" if kind == "secret" else "ConfigMap", obj))
        if data is None:
            raise _err(f"{f}.{kind}", f"{obj!r} not found (give the manifest with --secrets)")
        out.append(Volume(name, kind, tuple(sorted(data.items()))))
    return tuple(out)


_MEM_UNITS = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
}


def _resources(value: Any, field: str) -> tuple[int, int]:
    res = _map(value or {}, field)
    _known(res, {"limits", "requests"}, field)
    which = "limits" if res.get("limits") else "requests"
    field = f"{field}.{which}"
    chosen = _map(res.get(which) or {}, field)
    cpu, mem = 0, 0
    if "cpu" in chosen:
        text = str(chosen["cpu"])
        try:
            cpu = int(text[:-1]) if text.endswith("m") else int(float(text) * 1000)
        except ValueError as exc:
            raise _err(field + ".cpu", f"{text!r} is not a quantity") from exc
    if "memory" in chosen:
        text = str(chosen["memory"])
        m = re.fullmatch(r"([0-9]+)([KMGT]i?)?", text)
        if m is None:
            raise _err(field + ".memory", f"{text!r} is not a quantity")
        mem = int(m.group(1)) * _MEM_UNITS.get(m.group(2) or "", 1) // 2**20
    return cpu, mem


def _container(
    item: Any, i: int, refs: dict[tuple[str, str], dict[str, bytes]], pod_sc: Mapping[str, Any]
) -> ContainerSpec:
    f = f"spec.containers[{i}]"
    c = _map(item, f)
    _known(c, _CONTAINER_FIELDS, f)
    name = _str(c.get("name"), f + ".name")
    if not _NAME.fullmatch(name):
        raise _err(f + ".name", f"{name!r} is not a DNS label")
    sc = _map(c.get("securityContext") or {}, f + ".securityContext")
    _known(sc, _SECURITY_FIELDS, f + ".securityContext")
    if sc.get("privileged"):
        raise _err(f + ".securityContext.privileged", "privileged containers are refused")
    mounts = []
    for j, m in enumerate(c.get("volumeMounts") or []):
        mf = f"{f}.volumeMounts[{j}]"
        m = _map(m, mf)
        _known(m, {"name", "mountPath", "readOnly"}, mf)
        path = _str(m.get("mountPath"), mf + ".mountPath")
        if not path.startswith("/") or ".." in path.split("/"):
            raise _err(mf + ".mountPath", "must be an absolute path without ..")
        mounts.append(Mount(_str(m.get("name"), mf + ".name"), path, bool(m.get("readOnly"))))
    merged = {**pod_sc, **sc}
    cpu, mem = _resources(c.get("resources"), f + ".resources")
    return ContainerSpec(
        name=name,
        image=_str(c.get("image"), f + ".image"),
        command=_strs(c.get("command"), f + ".command"),
        args=_strs(c.get("args"), f + ".args"),
        env=_env(c.get("env"), f + ".env", refs),
        mounts=tuple(mounts),
        working_dir=_str(c.get("workingDir", "/"), f + ".workingDir"),
        run_as_user=_int(merged.get("runAsUser"), f + ".securityContext.runAsUser"),
        run_as_group=_int(merged.get("runAsGroup"), f + ".securityContext.runAsGroup"),
        read_only_root=bool(sc.get("readOnlyRootFilesystem")),
        no_new_privileges=sc.get("allowPrivilegeEscalation") is False,
        cpu_milli=cpu,
        memory_mib=mem,
    )


def parse_pod(text: str | bytes, secrets: str | bytes | None = None) -> PodSpec:
    """The first Pod (or workload pod template) of ``text``; Secret/ConfigMap manifests in
    ``text`` or ``secrets`` resolve ``valueFrom`` and secret/configMap volumes."""
    objects = parse_objects(text)
    refs = _objects_by_kind(objects + (parse_objects(secrets) if secrets else []))
    pod: Mapping[str, Any] | None = None
    for obj in objects:
        if obj.get("kind") == "Pod":
            pod = obj
        elif obj.get("kind") in _WORKLOADS:
            spec = _map(obj.get("spec"), f"{obj['kind']}.spec")
            template = _map(spec.get("template"), f"{obj['kind']}.spec.template")
            meta = {**_map(obj.get("metadata") or {}, "metadata")}
            meta.update(_map(template.get("metadata") or {}, "template.metadata"))
            pod = {"metadata": meta, "spec": template.get("spec")}
        if pod is not None:
            break
    if pod is None:
        raise _err("kind", "no Pod or workload (Deployment, ...) in the file")
    meta2 = _map(pod.get("metadata") or {}, "metadata")
    _known(meta2, {"name", "namespace", "labels", "annotations", "generateName", "uid"}, "metadata")
    name = _str(meta2.get("name") or meta2.get("generateName", "").rstrip("-"), "metadata.name")
    if not _NAME.fullmatch(name):
        raise _err("metadata.name", f"{name!r} is not a DNS label")
    spec = _map(pod.get("spec"), "spec")
    _known(spec, _POD_FIELDS, "spec")
    pod_sc = _map(spec.get("securityContext") or {}, "spec.securityContext")
    _known(pod_sc, {"runAsUser", "runAsGroup", "runAsNonRoot", "fsGroup"}, "spec.securityContext")
    items = spec.get("containers")
    if not isinstance(items, list) or not items:
        raise _err("spec.containers", "must be a non-empty list")
    containers = tuple(_container(c, i, refs, pod_sc) for i, c in enumerate(items))
    if len({c.name for c in containers}) != len(containers):
        raise _err("spec.containers", "container names must be unique")
    volumes = _volumes(spec.get("volumes"), refs)
    names = {v.name for v in volumes}
    for c in containers:
        for m in c.mounts:
            if m.name not in names:
                raise _err(f"containers[{c.name}].volumeMounts", f"no volume {m.name!r}")
    labels = _map(meta2.get("labels") or {}, "metadata.labels")
    annotations = _map(meta2.get("annotations") or {}, "metadata.annotations")
    rc = spec.get("runtimeClassName")
    share = spec.get("shareProcessNamespace", False)
    if not isinstance(share, bool):
        raise _err("spec.shareProcessNamespace", "must be true or false")
    return PodSpec(
        name=name,
        namespace=_str(meta2.get("namespace", "default"), "metadata.namespace"),
        labels=tuple((str(k), _str(v, f"labels.{k}")) for k, v in labels.items()),
        annotations=tuple((str(k), _str(v, f"annotations.{k}")) for k, v in annotations.items()),
        runtime_class=None if rc is None else _str(rc, "spec.runtimeClassName"),
        containers=containers,
        volumes=volumes,
        share_process_namespace=share,
    )
