"""Composition edge: build verifiers together with the collateral sources their settings name.

The verifier modules (``trustpod.verifiers.*``) are pure and take their collateral sources as
arguments; this module (I/O side) creates the file caches and vendor-service clients from
``VerifierSettings`` and hands them in. ``trustpod.verifiers.base.KNOWN_TEES`` points the
hardware TEEs here, so ``VerifierRegistry.build`` wires collateral without the pure package
importing any I/O module.
"""

from __future__ import annotations

from typing import Any

from trustpod.collateral.amd import sources_from_settings
from trustpod.collateral.intel import source_from_settings
from trustpod.verifiers import az_snp_vtpm, az_tdx_vtpm, snp, tdx
from trustpod.verifiers.base import VerifierSettings
from trustpod.verifiers.tdx import IntelCollateralSource

__all__ = [
    "amd_sources",
    "create_az_snp_vtpm",
    "create_az_tdx_vtpm",
    "create_snp",
    "create_tdx",
    "intel_source",
]


def amd_sources(settings: VerifierSettings) -> list[Any]:
    """AMD VCEK/CA sources named by ``settings`` (collateral dir and/or KDS); may be empty."""
    if settings.collateral_dir is None and settings.amd_kds_url is None:
        return []
    return list(sources_from_settings(settings))


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


def create_az_tdx_vtpm(settings: VerifierSettings) -> az_tdx_vtpm.AzTdxVtpmVerifier:
    return az_tdx_vtpm.create(settings, intel_source(settings))
