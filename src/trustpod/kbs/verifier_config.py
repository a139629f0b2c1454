"""``[attestation_service.verifier_config]`` (upstream shape, §3.1) -> ``VerifierSettings``.

* ``snp_verifier = { vcek_sources = [{type = "KDS", base_url = "..."},
  {type = "OfflineStore", path = "..."}] }`` -> ``amd_kds_url`` / ``collateral_dir``;
* ``dcap_verifier = { collateral_service = "https://..." | "file://DIR",
  tcb_update_type = "early" | "standard" }`` -> ``intel_pcs_url`` / ``collateral_dir`` and the
  TDX option ``tcb_update_type``;
* ``tpm_verifier = {}`` accepted; ``nvidia_verifier`` refused (no GPU verifier).
trustpod additions in ``[trustpod]``: ``collateral_dir`` (wins over the above),
``insecure_emulated_roots``, and ``[trustpod.verifier_options.<tee>]`` passed to that verifier
(it rejects keys it does not know). Collateral services are contacted only when configured.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trustpod.errors import ConfigError
from trustpod.verifiers.base import VerifierSettings

__all__ = ["verifier_settings"]


def _bad(source: Path, key: str, want: str) -> ConfigError:
    return ConfigError(
        f"{source}: attestation_service.verifier_config.{key} {want}",
        reason="config.verifier",
        fix="see docs/compat.md (KBS section) for the accepted verifier_config shape",
    )


def _local(uri: str) -> Path:
    return Path(uri[len("file://") :]) if uri.startswith("file://") else Path(uri)


def verifier_settings(
    source: Path,
    verifier_config: Mapping[str, Any],
    *,
    collateral_dir: Path | None,
    emulated_roots: tuple[bytes, ...],
    max_evidence_bytes: int,
    options: Mapping[str, Mapping[str, Any]],
) -> VerifierSettings:
    amd_kds_url: str | None = None
    intel_pcs_url: str | None = None
    store_dir: Path | None = None
    extra: dict[str, dict[str, Any]] = {tee: dict(v) for tee, v in options.items()}
    snp = verifier_config.get("snp_verifier")
    if snp is not None:
        if not isinstance(snp, Mapping) or set(snp) - {"vcek_sources"}:
            raise _bad(source, "snp_verifier", "accepts only vcek_sources")
        for src in snp.get("vcek_sources", []):
            kind = src.get("type") if isinstance(src, Mapping) else None
            if kind == "KDS":
                amd_kds_url = str(src.get("base_url", "https://kdsintf.amd.com"))
            elif kind == "OfflineStore" and isinstance(src.get("path"), str):
                store_dir = Path(src["path"])
            else:
                raise _bad(source, "snp_verifier.vcek_sources", "entries must be KDS/OfflineStore")
    dcap = verifier_config.get("dcap_verifier")
    if dcap is not None:
        if not isinstance(dcap, Mapping) or set(dcap) - {"collateral_service", "tcb_update_type"}:
            raise _bad(source, "dcap_verifier", "accepts collateral_service and tcb_update_type")
        service = dcap.get("collateral_service")
        if isinstance(service, str) and service.startswith("file://"):
            store_dir = store_dir or _local(service)
        elif isinstance(service, str):
            intel_pcs_url = service
        update = dcap.get("tcb_update_type")
        if update is not None:
            if update not in ("early", "standard"):
                raise _bad(source, "dcap_verifier.tcb_update_type", "must be early or standard")
            extra.setdefault("tdx", {})["tcb_update_type"] = update
    if verifier_config.get("nvidia_verifier") is not None:
        raise ConfigError(
            f"{source}: attestation_service.verifier_config.nvidia_verifier is not supported",
            reason="config.unsupported",
            fix="remove it: trustpod has no GPU verifier",
        )
    return VerifierSettings(
        collateral_dir=collateral_dir or store_dir,
        amd_kds_url=amd_kds_url,
        intel_pcs_url=intel_pcs_url,
        insecure_emulated_roots=emulated_roots,
        max_evidence_bytes=max_evidence_bytes,
        extra=extra,
    )
