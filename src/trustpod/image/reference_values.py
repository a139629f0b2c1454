"""Reference values for a pod VM image: its expected PCR 11 as RVPS ``sample`` messages.

Ids follow upstream's default CPU policy (``ear_default_policy_cpu.rego``):
``input["az-snp-vtpm"].tpm.pcr11 in query_reference_value("snp_pcr11")``, ``az-tdx-vtpm`` ->
``tdx_pcr11``, ``tpm`` -> ``tpm_pcr11``. The message is RVPS's register format
``{"version":"0.1.0","type":"sample","payload":<std base64 of {"id":[values]}>}`` and is
POSTed to the KBS admin endpoint ``/kbs/v0/reference-value``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from trustpod._internal.b64 import b64_encode
from trustpod.errors import ConfigError
from trustpod.image.manifest import BootManifest

__all__ = [
    "PUBLISH_TIMEOUT_S",
    "RVPS_MESSAGE_VERSION",
    "TEE_REFERENCE_IDS",
    "publish",
    "reference_values",
    "rvps_sample_message",
]

TEE_REFERENCE_IDS = {"az-snp-vtpm": "snp_pcr11", "az-tdx-vtpm": "tdx_pcr11", "tpm": "tpm_pcr11"}
RVPS_MESSAGE_VERSION = "0.1.0"
PUBLISH_TIMEOUT_S = 10.0


def reference_values(manifest: BootManifest, tees: Iterable[str]) -> dict[str, list[str]]:
    """``{"snp_pcr11": ["<hex>"], ...}`` for the chosen TEEs (values are lists, like kbs-client)."""
    out: dict[str, list[str]] = {}
    for tee in tees:
        rid = TEE_REFERENCE_IDS.get(tee)
        if rid is None:
            raise ConfigError(
                f"no PCR 11 reference value id for TEE {tee!r}",
                reason="image.tee",
                fix=f"use one of {', '.join(TEE_REFERENCE_IDS)}",
            )
        out[rid] = [manifest.pcr11_sha256]
    if not out:
        raise ConfigError("no TEE selected", reason="image.tee")
    return out


def rvps_sample_message(values: dict[str, Any]) -> dict[str, str]:
    payload = json.dumps(values, separators=(",", ":"), sort_keys=True).encode()
    return {"version": RVPS_MESSAGE_VERSION, "type": "sample", "payload": b64_encode(payload)}


def publish(
    url: str,
    token: str,
    message: dict[str, str],
    *,
    cert_file: Path | None = None,
    timeout_s: float = PUBLISH_TIMEOUT_S,
) -> None:
    """POST the message to ``<url>/kbs/v0/reference-value`` with the admin bearer token."""
    from trustpod.admin_http import admin_request

    admin_request(
        url,
        "POST",
        "/kbs/v0/reference-value",
        token=token,
        cert_file=cert_file,
        timeout_s=timeout_s,
        reason_prefix="image.publish",
        json=message,
    )
