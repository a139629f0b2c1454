"""Architecture rules, checked on the source (transitively over trustpod's own modules):

1. Pure cores import no I/O library (network, database, subprocess, web framework, TPM).
2. The guest package never imports the server side (KBS, attestation service, storage, verifiers,
   collateral fetchers).
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

PURE = (
    "trustpod.errors",
    "trustpod.error_table",
    "trustpod.initdata",
    "trustpod.protocol",
    "trustpod.evidence",
    "trustpod.verifiers",
    "trustpod.sealed",
    "trustpod.verity.core",
    "trustpod.agent.framing",
    "trustpod.agent.serde",
    "trustpod.agent.policy_gen",
    "trustpod.agent.policy_rules",
    # image puller: pure parsers and the decision (registry/unpack/gpgv/lookaside are I/O)
    "trustpod.oci.reference",
    "trustpod.oci.manifest",
    "trustpod.oci.settings",
    "trustpod.oci.policy",
    "trustpod.oci.payload",
    "trustpod.oci.cosign",
    "trustpod.oci.decide",
    "trustpod.oci.auth",
    "trustpod.oci.sigstore_config",
    "trustpod.oci.config",
    # pod VM image formats (cpio, GPT, VHD); kernel/initramfs/qemu are the I/O edges
    "trustpod.image.cpio",
    "trustpod.image.disk",
    "trustpod.pod.spec",
    "trustpod.pod.userdata",
    "trustpod.pod.requests",
    "trustpod.pod.config",
    "trustpod.pod.provider",
)
IO_LIBS = {
    "socket",
    "ssl",
    "httpx",
    "requests",
    "urllib",
    "http",
    "sqlite3",
    "subprocess",
    "asyncio",
    "anyio",
    "starlette",
    "uvicorn",
    "psycopg",
    "redis",
    "tpm2_pytss",
    "prometheus_client",
    "regorus",
    "shutil",
}
GUEST = ("trustpod.guest", "trustpod.agent", "trustpod.oci", "trustpod.pod.guest_boot")
SERVER = (
    "trustpod.kbs",
    "trustpod.attestation",
    "trustpod.storage",
    "trustpod.verifiers",
    "trustpod.collateral",
    "trustpod.rvps",
)


def _module_file(name: str) -> Path | None:
    base = SRC.joinpath(*name.split("."))
    if (base / "__init__.py").exists():
        return base / "__init__.py"
    if base.with_suffix(".py").exists():
        return base.with_suffix(".py")
    return None


def _all_modules(prefix: str) -> list[str]:
    base = SRC.joinpath(*prefix.split("."))
    if base.with_suffix(".py").exists():
        return [prefix]
    if not base.is_dir():
        return []
    out = []
    for f in base.rglob("*.py"):
        rel = f.relative_to(SRC).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.append(".".join(parts))
    return out


@cache
def _imports(name: str) -> frozenset[str]:
    f = _module_file(name)
    if f is None:
        return frozenset()
    tree = ast.parse(f.read_text(), str(f))
    found: set[str] = set()
    pkg = name if f.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            for a in node.names:
                if _module_file(f"{mod}.{a.name}"):
                    found.add(f"{mod}.{a.name}")
    return frozenset(found)


def _closure(name: str) -> set[str]:
    seen: set[str] = set()
    todo = [name]
    while todo:
        cur = todo.pop()
        if cur in seen:
            continue
        seen.add(cur)
        for imp in _imports(cur):
            if imp.startswith("trustpod"):
                todo.append(imp)
                # importing a.b.c also runs a and a.b
                parts = imp.split(".")
                todo.extend(".".join(parts[:i]) for i in range(2, len(parts)))
            else:
                seen.add(imp)
    return seen


def _pure_modules() -> list[str]:
    return sorted({m for p in PURE for m in _all_modules(p)})


@pytest.mark.parametrize("module", _pure_modules())
def test_pure_modules_import_no_io(module: str) -> None:
    bad = sorted(i for i in _closure(module) if i.split(".")[0] in IO_LIBS)
    assert not bad, f"{module} (pure) reaches I/O libraries: {bad}"


def _guest_modules() -> list[str]:
    return sorted({m for p in GUEST for m in _all_modules(p)}) or ["trustpod.guest"]


@pytest.mark.parametrize("module", _guest_modules())
def test_guest_never_imports_server(module: str) -> None:
    bad = sorted(
        i for i in _closure(module) if any(i == s or i.startswith(s + ".") for s in SERVER)
    )
    assert not bad, f"{module} (guest side) imports server modules: {bad}"


@pytest.mark.parametrize("module", _pure_modules())
def test_pure_modules_do_not_import_by_name(module: str) -> None:
    # importlib in a pure module would hide an I/O dependency from the checks above; the
    # verifier table is composed in trustpod.collateral.wiring (no exemption).
    assert "importlib" not in _imports(module), f"{module} (pure) imports modules by name"
