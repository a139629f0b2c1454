"""The guest half of ``make demo``: emulated Azure CVM boots with initdata, attests, unseals.

``trustpod.demo`` (the KBS side) plugs ``emulated_cvm_scenario`` in as a ``GuestScenario``; the
KBS must have been started with ``[trustpod] insecure_emulated_roots = [emulated_root(dir)]``.
The scenario uploads the demo resources and an attestation policy that is affirming only for the
pod's initdata (its PCR 8 value) through the admin API (the KBS keeps releasing resources to
affirming attestations only), then boots the CVM, binds the initdata, attests and unseals a
vault and an envelope sealed secret, printing every step with its timing.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from trustpod._internal.b64 import b64url_decode
from trustpod.initdata import InitData, pcr8_after_extend
from trustpod.sealed import VaultSecret, generate_signing_key, public_jwk, seal, seal_envelope

__all__ = [
    "DEMO_KID",
    "demo_secrets",
    "emulated_cvm_scenario",
    "emulated_root",
    "pin_initdata_policy",
    "prepare_guest",
    "run_guest",
]

DEMO_KID = "kbs:///default/sealed-key/1"
StepFactory = Callable[[str], AbstractContextManager[Any]]


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


def pin_initdata_policy(initdata: InitData) -> str:
    """An attestation (EAR appraisal) policy that is ``affirming`` only for a pod whose PCR 8
    carries ``initdata`` (everything else gets upstream's contraindicated defaults)."""
    pcr8 = pcr8_after_extend(initdata.digest).hex()
    return (
        "package policy\nimport rego.v1\n"
        'default trust_claims := {"executables": 33, "hardware": 97, "configuration": 36}\n'
        'trust_claims := {"executables": 2, "hardware": 2, "configuration": 2} if {\n'
        f'    input.init_data == "{pcr8}"\n}}\n'
    )


def prepare_guest(workdir: Path, kbs_url: str, kbs_ca_pem: str | None) -> tuple[Path, InitData]:
    """Write ``workdir/guest/{initdata,guest}.toml``; return the directory and the initdata."""
    from trustpod.cli.initdata import build_initdata

    guest_dir = workdir / "guest"
    guest_dir.mkdir(parents=True, exist_ok=True)
    text = build_initdata(kbs_url, kbs_cert=kbs_ca_pem, policy=None)
    (guest_dir / "initdata.toml").write_text(text)
    (guest_dir / "guest.toml").write_text(f'key_dir = "{guest_dir / "keys"}"\n')
    return guest_dir, InitData.parse(text)


def run_guest(
    guest_dir: Path,
    workdir: Path,
    sealed: dict[str, str],
    step: StepFactory,
    out: Callable[[str], None],
    *,
    backend: str = "swtpm",
) -> dict[str, bytes]:
    """Boot the emulated CVM, bind the initdata, attest, unseal ``sealed``; shut down."""
    from trustpod.guest.emulator.cvm import EmulatedAzureCvm
    from trustpod.guest.run import GuestRuntime

    with step(f"emulated Azure CVM boots ({backend} vTPM, emulated AMD chain)"):
        cvm = EmulatedAzureCvm.create(workdir / "cvm", backend=backend).boot()
    results: dict[str, bytes] = {}
    try:
        runtime = GuestRuntime.from_dir(guest_dir, attester=cvm.attester())
        try:
            with step("guest AA starts: initdata digest extended into PCR 8"):
                runtime.start()
            out(f"    PCR8 = {cvm.initdata_pcr().hex()}")
            with step("guest AA attests (az-snp-vtpm evidence + initdata TOML)"):
                token = json.loads(runtime.aa.get_token())["token"]
            cpu0 = json.loads(b64url_decode(token.split(".")[1]))["submods"]["cpu0"]
            evidence = cpu0.get("ear.veraison.annotated-evidence", {})
            out(f"    ear.status={cpu0.get('ear.status')} init_data={evidence.get('init_data')}")
            for name, value in sealed.items():
                with step(f"guest CDH unseals the {name} sealed secret"):
                    results[name] = runtime.cdh.unseal_secret(value)
                out(f"    {name}: {results[name].decode(errors='replace')!r}")
        finally:
            runtime.close()
    finally:
        cvm.shutdown()
    return results


def emulated_cvm_scenario(kbs: Any, demo: Any, *, backend: str = "swtpm") -> None:
    """``GuestScenario`` for ``trustpod.demo``: ``kbs`` is its ``RunningKbs``, ``demo`` its
    ``Demo`` (``step``/``out``)."""
    workdir = Path(kbs.directory)
    ca_pem = Path(kbs.cafile).read_text() if kbs.cafile else None
    guest_dir, initdata = prepare_guest(workdir, kbs.url, ca_pem)
    demo.out(f"    initdata {initdata.algorithm}:{initdata.digest.hex()}")
    resources, sealed = demo_secrets()
    with (
        kbs.admin() as admin,
        demo.step("admin: sealed-secret key, secret, KEK; attestation policy pins the initdata"),
    ):
        for path, value in resources.items():
            _ok(admin.post(f"/kbs/v0/resource/{path}", content=value))
        policy = base64.urlsafe_b64encode(pin_initdata_policy(initdata).encode()).rstrip(b"=")
        body = {"policy_id": "default_cpu", "policy": policy.decode()}
        _ok(admin.post("/kbs/v0/attestation-policy", json=body))
    run_guest(guest_dir, workdir, sealed, demo.step, demo.out, backend=backend)


def _ok(response: Any) -> None:
    if response.status_code != 200:
        raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text[:200]}")
