"""The guest half of ``make demo``: emulated Azure CVM boots with initdata, attests, unseals.

The KBS side (H3's ``trustpod.demo``) uses three helpers::

    roots = emulated_root(workdir)                # put in [trustpod] insecure_emulated_roots
    resources, sealed = demo_secrets()            # upload resources (admin API), keep sealed
    run_guest_demo(kbs_url, ca_pem, workdir=workdir, sealed=sealed)

Every step is printed with its elapsed time. Nothing here is insecure by itself; the emulated
root is what the KBS must be told to trust.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from trustpod._internal.b64 import b64url_decode
from trustpod.initdata import InitData, pcr8_after_extend
from trustpod.sealed import (
    VaultSecret,
    generate_signing_key,
    public_jwk,
    seal,
    seal_envelope,
)

__all__ = ["DEMO_KID", "demo_secrets", "emulated_root", "run_guest_demo"]

DEMO_KID = "kbs:///default/sealed-key/1"


def emulated_root(workdir: Path) -> Path:
    """Create (once) the emulated AMD vendor chain under ``workdir/cvm``; return its
    ``roots.pem`` (ARK + ASK), the file for the KBS's ``insecure_emulated_roots``."""
    from trustpod.guest.emulator.vendor import load_or_create_vendor

    load_or_create_vendor(workdir / "cvm" / "vendor")
    return workdir / "cvm" / "vendor" / "roots.pem"


def demo_secrets(
    secret: bytes = b"demo database password",
) -> tuple[dict[str, bytes], dict[str, str]]:
    """KBS resources to upload (path → bytes) and the sealed strings that reference them."""
    import os

    signer, kek = generate_signing_key(), os.urandom(32)
    resources = {
        "default/sealed-key/1": json.dumps(public_jwk(signer.public_key())).encode(),
        "default/db/password": secret,
        "default/kek/1": kek,
    }
    sealed = {
        "vault": seal(VaultSecret(name="kbs:///default/db/password"), signer, DEMO_KID),
        "envelope": seal(
            seal_envelope(b"demo envelope plaintext", kek, "kbs:///default/kek/1"),
            signer,
            DEMO_KID,
        ),
    }
    return resources, sealed


def run_guest_demo(
    kbs_url: str,
    kbs_ca_pem: str | None,
    *,
    workdir: Path,
    sealed: Mapping[str, str],
    backend: str = "swtpm",
    echo: Callable[[str], None] = print,
) -> dict[str, bytes]:
    """Boot the emulated CVM with fresh initdata, bind it, attest, unseal ``sealed``."""
    from trustpod.cli.initdata import build_initdata
    from trustpod.guest.emulator.cvm import EmulatedAzureCvm
    from trustpod.guest.run import GuestRuntime

    t0 = time.monotonic()

    def step(text: str) -> None:
        echo(f"[guest {time.monotonic() - t0:7.3f}s] {text}")

    guest_dir = workdir / "guest"
    guest_dir.mkdir(parents=True, exist_ok=True)
    text = build_initdata(kbs_url, kbs_cert=kbs_ca_pem, policy=None)
    (guest_dir / "initdata.toml").write_text(text)
    (guest_dir / "guest.toml").write_text(f'key_dir = "{guest_dir / "keys"}"\n')
    initdata = InitData.parse(text)
    step(f"initdata written: {initdata.algorithm} {initdata.digest.hex()[:16]}…")
    cvm = EmulatedAzureCvm.create(workdir / "cvm", backend=backend).boot()
    step(f"emulated Azure CVM booted ({backend} vTPM)")
    runtime = GuestRuntime.from_dir(guest_dir, attester=cvm.attester())
    out: dict[str, bytes] = {}
    try:
        runtime.start()
        ok = cvm.initdata_pcr() == pcr8_after_extend(initdata.digest)
        step(f"AA bound initdata: PCR8 = {cvm.initdata_pcr().hex()[:16]}… (expected: {ok})")
        token = json.loads(runtime.aa.get_token())["token"]
        claims = json.loads(b64url_decode(token.split(".")[1]))
        cpu0 = claims.get("submods", {}).get("cpu0", {})
        step(f"attested to {kbs_url}: ear.status = {cpu0.get('ear.status')}")
        for name, value in sealed.items():
            out[name] = runtime.cdh.unseal_secret(value)
            step(f"unsealed {name} secret: {len(out[name])} bytes")
    finally:
        runtime.close()
        cvm.shutdown()
    step("guest shut down")
    return out
