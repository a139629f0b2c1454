"""The local pod store: one JSON record per pod, so a second shell sees the pods.

Layout (directories 0700, files 0600, created with those modes)::

    STORE/<pod>.json             the record (provider, instance, sandbox id, containers, state)
    STORE/<pod>/logs/<ctr>.log   container output (written by the pod's log pump)
    STORE/<pod>/vm/              the sandbox provider's pod VM directory

Records are written to a temporary file and renamed (a reader never sees half a record).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trustpod._internal.private_dirs import make_private_dirs
from trustpod.errors import ConfigError, NotFoundError

__all__ = ["DEFAULT_STORE_ENV", "PodRecord", "PodStore", "default_store_dir"]

DEFAULT_STORE_ENV = "TRUSTPOD_POD_STORE"
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def default_store_dir() -> Path:
    env = os.environ.get(DEFAULT_STORE_ENV)
    return Path(env) if env else Path.home() / ".trustpod" / "pods"


@dataclass
class PodRecord:
    name: str
    namespace: str
    provider: str
    sandbox_id: str
    instance_id: str = ""
    agent_address: str = ""
    containers: dict[str, str] = field(default_factory=dict)  # name -> container id
    state: str = "creating"
    initdata_digest: str = ""
    pump_pid: int = 0
    created: float = 0.0

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> PodRecord:
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})


class PodStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        make_private_dirs(root, parents=True, exist_ok=True)

    def _check(self, name: str) -> str:
        if not _NAME.fullmatch(name):
            raise ConfigError(f"pod name {name!r} is not a DNS label", reason="pod.name")
        return name

    def pod_dir(self, name: str) -> Path:
        return self.root / self._check(name)

    def log_path(self, name: str, container: str) -> Path:
        return self.pod_dir(name) / "logs" / f"{self._check(container)}.log"

    def create(self, record: PodRecord) -> None:
        """Reserve the name (fails if a pod of that name exists)."""
        path = self.root / f"{self._check(record.name)}.json"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise ConfigError(
                f"pod {record.name!r} exists",
                reason="pod.exists",
                fix=f"trustpod pod delete {record.name}",
            ) from None
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(record), f)
        (self.root / record.name / "logs").mkdir(mode=0o700, parents=True, exist_ok=True)

    def save(self, record: PodRecord) -> None:
        path = self.root / f"{self._check(record.name)}.json"
        tmp = path.with_suffix(f".json.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(record), f)
        os.replace(tmp, path)

    def get(self, name: str) -> PodRecord:
        path = self.root / f"{self._check(name)}.json"
        try:
            return PodRecord.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            raise NotFoundError(f"no pod {name!r}", reason="pod.not_found") from None

    def list(self) -> Iterator[PodRecord]:
        for path in sorted(self.root.glob("*.json")):
            try:
                yield PodRecord.from_json(json.loads(path.read_text()))
            except (OSError, ValueError, TypeError):
                continue

    def remove(self, name: str) -> None:
        shutil.rmtree(self.pod_dir(name), ignore_errors=True)
        (self.root / f"{self._check(name)}.json").unlink(missing_ok=True)
