"""Composition edge: build verifiers together with the collateral sources their settings name.

The verifier modules (``trustpod.verifiers.*``) are pure and take their collateral sources as
arguments; this module (I/O side) creates the file caches and vendor-service clients from
``VerifierSettings`` and hands them in. ``build_verifiers`` is the composition step: the table
of every TEE's factory (plain imports, no import by name), so the pure package never imports an
I/O module.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from trustpod.collateral.amd import sources_from_settings
from trustpod.collateral.bundled import BundledAmdRoots
from trustpod.collateral.intel import source_from_settings
from trustpod.errors import ConfigError
from trustpod.verifiers import az_snp_vtpm, az_tdx_vtpm, nvidia, sample, snp, tdx, tpm
from trustpod.verifiers.base import (
    Verifier,
    VerifierFactory,
    VerifierRegistry,
    VerifierSettings,
)
from trustpod.verifiers.tdx import IntelCollateralSource

__all__ = [
    "FACTORIES",
    "amd_sources",
    "build_verifiers",
    "create_az_snp_vtpm",
    "create_az_tdx_vtpm",
    "create_nvidia",
    "create_snp",
    "create_tdx",
    "intel_source",
]


def amd_sources(settings: VerifierSettings) -> list[Any]:
    """AMD VCEK/CA sources named by ``settings`` (collateral dir and/or KDS), then AMD's
    ARK/ASK/ASVK shipped in the package (``collateral.bundled``, as upstream embeds them)."""
    named: list[Any] = []
    if settings.collateral_dir is not None or settings.amd_kds_url is not None:
        named = list(sources_from_settings(settings))
    return [*named, BundledAmdRoots()]


def intel_source(settings: VerifierSettings) -> IntelCollateralSource | None:
    """Intel collateral source named by ``settings`` (collateral dir and/or PCS/PCCS)."""
    if settings.collateral_dir is None and settings.intel_pcs_url is None:
        return None
    source: IntelCollateralSource = source_from_settings(settings)
    return source


def create_snp(settings: VerifierSettings) -> snp.SnpVerifier:
    return snp.create(settings, amd_sources(settings))


def create_az_snp_vtpm(settings: VerifierSettings) -> az_snp_vtpm.AzSnpVtpmVerifier:
    return az_snp_vtpm.create(settings, amd_sources(settings))


def create_tdx(settings: VerifierSettings) -> tdx.TdxVerifier:
    return tdx.create(settings, intel_source(settings))


def create_nvidia(settings: VerifierSettings) -> nvidia.NvidiaVerifier:
    from trustpod.collateral.nvidia import ocsp_checker, rim_checker

    return nvidia.create(settings, rim_checker(settings), ocsp_checker(settings))


def create_az_tdx_vtpm(settings: VerifierSettings) -> az_tdx_vtpm.AzTdxVtpmVerifier:
    return az_tdx_vtpm.create(settings, intel_source(settings))


#: TEE name (kbs-types serde name) -> factory taking ``VerifierSettings``.
FACTORIES: Mapping[str, VerifierFactory] = {
    "sample": sample.create,
    "snp": create_snp,
    "az-snp-vtpm": create_az_snp_vtpm,
    "az-tdx-vtpm": create_az_tdx_vtpm,
    "tdx": create_tdx,
    "tpm": tpm.create,
    "nvidia": create_nvidia,
}
_log = logging.getLogger(__name__)


def build_verifiers(
    settings: VerifierSettings | None = None, tees: tuple[str, ...] | None = None
) -> VerifierRegistry:
    """Every known verifier (or only ``tees``), built with the collateral ``settings`` name."""
    settings = settings or VerifierSettings()
    unknown = sorted(set(tees or ()) - set(FACTORIES))
    if unknown:  # say which TEEs exist, not "no verifiers configured"
        known = ", ".join(sorted(FACTORIES))
        raise ConfigError(
            f"unknown TEE {', '.join(map(repr, unknown))}: trustpod verifies {known}",
            reason="verifier.unknown_tee",
            fix=f"use one of: {known}",
        )
    if settings.insecure_emulated_roots:
        _log.warning(
            "insecure_emulated_roots is set: evidence signed by an EMULATED vendor "
            "root will verify. Never use this in production."
        )
    found: dict[str, Verifier] = {}
    for tee, factory in FACTORIES.items():
        if tees is None or tee in tees:
            found[tee] = factory(settings)
    return VerifierRegistry(found)
