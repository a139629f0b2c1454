"""Vendor collateral (certificates, CRLs, TCB info) from services, stores and caches.

``ports`` (pure protocols and in-memory adapters), ``cache`` (AMD offline store / persistent
cache), ``amd`` (AMD KDS client, httpx), ``intel`` (Intel PCS/PCCS and offline collateral).
Layouts are described in docs/collateral.md. This package's ``__init__`` imports nothing, so the
pure verifiers may depend on ``collateral.ports``.
"""

__all__: list[str] = []
