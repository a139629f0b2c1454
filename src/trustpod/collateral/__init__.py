"""Vendor collateral (certificates, CRLs, TCB info) from services, stores and caches."""
