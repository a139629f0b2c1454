"""The pod VM's userdata: CAA's cloud-config, built on the host and read in the guest (pure).

Host side (CAA ``cloudinit/cloudconfig.go``): ``#cloud-config`` with ``write_files`` entries
``{path, content}``: ``/run/peerpod/initdata`` (gzip+base64 initdata TOML),
``/run/peerpod/apf.json`` (the daemon config: pod name/namespace, where the agent listens)
and, trustpod's addition, ``/run/peerpod/guest.toml`` (which attester the pod VM image
uses; unmeasured like apf.json —
a wrong one only yields evidence the KBS refuses).

Guest side (CAA ``process-user-data provision-files``): parse strictly (``yaml.UnmarshalStrict``
into ``{write_files:[{path,content}]}``), keep only allow-listed paths, decode initdata (gzip
or plain TOML), compute its digest (hex, ``initdata.digest``) and extract ``aa.toml``/``cdh.toml``/
``policy.rego`` next to it. ``provision_files`` returns the files to write; ``write_provisioned``
writes them under a root directory (``/`` in a real VM; the sandbox VM's own directory here).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from trustpod.errors import ConfigError
from trustpod.initdata import InitData, decode_annotation, encode_annotation

__all__ = [
    "ALLOWED_PATHS",
    "MAX_USERDATA_BYTES",
    "PEERPOD_DIR",
    "USERDATA_FILE",
    "DaemonConfig",
    "Provisioned",
    "build_cloud_config",
    "decode_initdata",
    "encode_initdata",
    "provision_files",
    "write_provisioned",
]

PEERPOD_DIR = "/run/peerpod"
#: The config-drive file name (``/media/cidata/user-data``).
USERDATA_FILE = "user-data"
#: The paths process-user-data writes (CAA's allow list plus trustpod's guest.toml).
ALLOWED_PATHS = tuple(
    f"{PEERPOD_DIR}/{n}"
    for n in (
        "aa.toml",
        "cdh.toml",
        "apf.json",
        "auth.json",
        "initdata",
        "scratch-space.marker",
        "guest.toml",
    )
)
#: Azure's userData limit (the base64 text, 64 KiB) — applied to every provider.
MAX_USERDATA_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """apf.json: what the pod VM's daemons need from the host (unmeasured)."""

    pod_name: str
    pod_namespace: str
    agent_listen: str

    def to_json(self) -> str:
        return json.dumps(
            {
                "pod-name": self.pod_name,
                "pod-namespace": self.pod_namespace,
                "agent-listen": self.agent_listen,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> DaemonConfig:
        try:
            raw = json.loads(text)
            return cls(str(raw["pod-name"]), str(raw["pod-namespace"]), str(raw["agent-listen"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise _bad(f"apf.json: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Provisioned:
    """What provision-files produced: relative path → bytes, plus the parsed pieces."""

    files: tuple[tuple[str, bytes], ...]
    initdata: InitData | None
    daemon: DaemonConfig | None


def _bad(what: str) -> ConfigError:
    return ConfigError(f"userdata: {what}", reason="pod.userdata")


def encode_initdata(toml_text: str) -> str:
    """gzip + standard base64, as kata and CAA encode the annotation."""
    return encode_annotation(toml_text.encode())


def decode_initdata(content: str) -> bytes:
    """Plain TOML as is, else gzip+base64 (kata's annotation encoding)."""
    if content.lstrip().startswith(("algorithm", "version", "[", "#")):
        return content.encode()  # exact bytes: the digest is over them
    return decode_annotation(content)


def build_cloud_config(
    initdata_toml: str, daemon: DaemonConfig, guest_toml: str | None = None
) -> str:
    """The ``#cloud-config`` document CAA sends as userdata."""
    doc = {
        "write_files": [
            {"path": f"{PEERPOD_DIR}/apf.json", "content": daemon.to_json() + "\n"},
            {"path": f"{PEERPOD_DIR}/initdata", "content": encode_initdata(initdata_toml) + "\n"},
        ]
    }
    if guest_toml is not None:
        doc["write_files"].append({"path": f"{PEERPOD_DIR}/guest.toml", "content": guest_toml})
    text = "#cloud-config\n\n" + yaml.safe_dump(doc, sort_keys=False, width=1 << 20)
    if len(base64.b64encode(text.encode())) > MAX_USERDATA_BYTES:
        raise ConfigError(
            f"userdata is larger than {MAX_USERDATA_BYTES} bytes once base64-encoded",
            reason="pod.userdata_size",
            fix="shrink the initdata (policy.rego) or drop unneeded annotations",
        )
    return text


def provision_files(userdata: bytes) -> Provisioned:
    """process-user-data provision-files over the raw userdata (pure)."""
    if len(userdata) > MAX_USERDATA_BYTES:
        raise _bad(f"larger than {MAX_USERDATA_BYTES} bytes")
    try:
        doc: Any = yaml.safe_load(userdata)
    except yaml.YAMLError as exc:
        raise _bad(f"not YAML: {exc}") from exc
    if not isinstance(doc, Mapping) or set(doc) != {"write_files"}:
        raise _bad("must be a cloud-config with exactly write_files (strict, like CAA)")
    entries = doc["write_files"]
    if not isinstance(entries, list):
        raise _bad("write_files must be a list")
    files: dict[str, bytes] = {}
    initdata: InitData | None = None
    daemon: DaemonConfig | None = None
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or not set(entry) <= {"path", "content"}:
            raise _bad(f"write_files[{i}] must have only path and content")
        path, content = entry.get("path"), entry.get("content", "")
        if not isinstance(path, str) or not isinstance(content, str):
            raise _bad(f"write_files[{i}] path/content must be strings")
        if path not in ALLOWED_PATHS:
            continue  # CAA skips paths outside its allow list
        rel = path.lstrip("/")
        if path.endswith("/initdata"):
            raw = decode_initdata(content)
            initdata = InitData.parse(raw)
            files[rel] = raw
            files[rel + ".digest"] = initdata.digest.hex().encode()
            for key in ("aa.toml", "cdh.toml", "policy.rego"):
                if key in initdata.data:
                    files[f"{PEERPOD_DIR.lstrip('/')}/{key}"] = initdata.data[key].encode()
        else:
            files.setdefault(rel, content.encode())
            if path.endswith("/apf.json"):
                daemon = DaemonConfig.from_json(content)
    return Provisioned(tuple(sorted(files.items())), initdata, daemon)


def write_provisioned(result: Provisioned, root: Path) -> None:
    """Write the provisioned files under ``root`` (dirs 0700, files 0600, never following
    a pre-existing symlink at the destination)."""
    for rel, data in result.files:
        dest = root / rel
        dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
