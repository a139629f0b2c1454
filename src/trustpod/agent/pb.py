"""Protobuf message classes for kata's agent API and ttRPC's envelopes (ADR 0900).

The ``.proto`` files in ``trustpod/agent/protos/`` are compiled by ``protoc`` (grpcio-tools)
into one ``FileDescriptorSet``; message classes are made from it at run time by protobuf's
``message_factory``. No Python code is generated and nothing is encoded by hand.

Where the compiled set comes from, in order:

1. ``protos/descriptors-<digest>.binpb`` next to the sources, written at build time by
   ``make protos`` (``python -m trustpod.agent.pb``) and shipped in the wheel;
2. the same file in the cache directory (``$TRUSTPOD_CACHE_DIR`` or
   ``~/.cache/trustpod``)/``protos``;
3. otherwise it is compiled now with grpcio-tools into that cache directory.

``<digest>`` is the SHA-256 of the ``.proto`` sources, so an edited ``.proto`` never loads a
stale compilation.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import threading
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError

from trustpod.errors import ConfigError, DependencyError

__all__ = [
    "AGENT_SERVICE",
    "HEALTH_SERVICE",
    "PROTO_FILES",
    "Namespace",
    "Protos",
    "build",
    "compile_descriptor_set",
    "descriptor_file_name",
    "protos",
    "sources_digest",
]

#: The ``.proto`` files, dependencies first.
PROTO_FILES = ("ttrpc.proto", "types.proto", "oci.proto", "agent.proto", "health.proto")
#: Full name of kata's agent service (the ttRPC ``Request.service`` value).
AGENT_SERVICE = "grpc.AgentService"
#: kata's health service (the shim's liveness check; not policy-checked).
HEALTH_SERVICE = "grpc.Health"

_lock = threading.Lock()


def _proto_dir() -> Path:
    return Path(str(resources.files("trustpod.agent") / "protos"))


def sources_digest(proto_dir: Path | None = None) -> str:
    """SHA-256 over the names and bytes of the ``.proto`` sources (hex)."""
    root = proto_dir or _proto_dir()
    h = hashlib.sha256()
    for name in PROTO_FILES:
        data = (root / name).read_bytes()
        h.update(f"{name}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def descriptor_file_name(digest: str) -> str:
    return f"descriptors-{digest[:16]}.binpb"


def _cache_dir() -> Path:
    base = os.environ.get("TRUSTPOD_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "trustpod"
    )
    return Path(base) / "protos"


def compile_descriptor_set(out: Path, proto_dir: Path | None = None) -> None:
    """Run grpcio-tools' protoc over the sources; write the set atomically to ``out`` (0644)."""
    try:
        import grpc_tools
        from grpc_tools import protoc
    except ImportError as exc:
        raise DependencyError(
            "the agent's protobuf descriptors are not built and grpcio-tools is not installed",
            reason="agent.protos_missing",
            fix="run `make protos` or install the 'guest' extra (grpcio-tools)",
        ) from exc
    root = proto_dir or _proto_dir()
    include = Path(grpc_tools.__file__).parent / "_proto"
    out.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".protos-", suffix=".tmp")
    os.close(fd)
    try:
        args = [
            "protoc",
            f"-I{root}",
            f"-I{include}",
            "--include_imports",
            f"--descriptor_set_out={tmp}",
            *PROTO_FILES,
        ]
        rc = protoc.main(args)
        if rc != 0:
            raise ConfigError(f"protoc failed ({rc}) on {root}", reason="agent.protos_compile")
        os.chmod(tmp, 0o644)  # mkstemp is 0600; the set is public build output
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load_set() -> descriptor_pb2.FileDescriptorSet:
    digest = sources_digest()
    name = descriptor_file_name(digest)
    for candidate in (_proto_dir() / name, _cache_dir() / name):
        if candidate.is_file():
            break
    else:
        candidate = _cache_dir() / name
        compile_descriptor_set(candidate)
    fds = descriptor_pb2.FileDescriptorSet()
    try:
        fds.ParseFromString(candidate.read_bytes())
    except DecodeError:
        # a truncated or corrupted file: compile afresh into the cache
        candidate = _cache_dir() / name
        compile_descriptor_set(candidate)
        fds.ParseFromString(candidate.read_bytes())
    return fds


class Namespace:
    """Message classes of one protobuf package: ``ns.CreateContainerRequest(container_id=...)``.

    Attributes are typed ``Any``: the classes are made at run time, so there is no stub."""

    def __init__(self, protos: Protos, package: str) -> None:
        self._protos = protos
        self._package = package

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._protos.message(f"{self._package}.{name}")


class Protos:
    """One descriptor pool holding the agent, OCI, types and ttRPC definitions."""

    def __init__(self, fds: descriptor_pb2.FileDescriptorSet) -> None:
        self.pool = descriptor_pool.DescriptorPool()
        for file_proto in fds.file:
            self.pool.Add(file_proto)
        self._classes: dict[str, Any] = {}
        self.grpc = Namespace(self, "grpc")
        self.types = Namespace(self, "types")
        self.ttrpc = Namespace(self, "ttrpc")
        self.empty = Namespace(self, "google.protobuf")

    def message(self, full_name: str) -> Any:
        cls = self._classes.get(full_name)
        if cls is None:
            try:
                desc = self.pool.FindMessageTypeByName(full_name)
            except KeyError as exc:
                raise AttributeError(f"no protobuf message {full_name}") from exc
            cls = self._classes[full_name] = message_factory.GetMessageClass(desc)
        return cls

    def service(self, full_name: str = AGENT_SERVICE) -> ServiceDescriptor:
        return self.pool.FindServiceByName(full_name)

    def methods(self, full_name: str = AGENT_SERVICE) -> dict[str, MethodDescriptor]:
        return {m.name: m for m in self.service(full_name).methods}


@cache
def _protos() -> Protos:
    with _lock:
        return Protos(_load_set())


def protos() -> Protos:
    """The process-wide message classes (compiled or loaded on first use)."""
    return _protos()


def build() -> Path:
    """Build-time step (``make protos``): write the set next to the sources."""
    out = _proto_dir() / descriptor_file_name(sources_digest())
    for old in _proto_dir().glob("descriptors-*.binpb"):
        if old != out:
            old.unlink()
    compile_descriptor_set(out)
    return out


if __name__ == "__main__":  # pragma: no cover - build step
    print(build(), file=sys.stdout)
