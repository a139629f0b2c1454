"""Pinned vendor roots: SHA-256 fingerprints of the DER encodings (facts, not certificates).

The certificates themselves are not shipped. They come from a collateral directory, from the
evidence's own certificate table, or from the vendor service (AMD KDS ``/vcek/v1/<product>/
cert_chain``), and are accepted only when their fingerprint is listed here.

Values computed from AMD's published ASK/ARK/ASVK certificates (the same files trustee bundles as
``deps/verifier/src/snp/{milan,genoa,turin}_ask_ark_asvk.pem``) with
``sha256(cert.public_bytes(DER))``.
"""

from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

__all__ = [
    "AMD_ARK_SHA256",
    "AMD_ASK_SHA256",
    "AMD_ASVK_SHA256",
    "AMD_PRODUCTS",
    "cert_fingerprint",
    "der_fingerprint",
    "pinned_ark_product",
]

AMD_PRODUCTS = ("Milan", "Genoa", "Turin")

#: AMD Root Key per product line (CN=ARK-<Product>), RSA-4096, self-signed RSA-PSS/SHA-384.
AMD_ARK_SHA256: dict[str, str] = {
    "Milan": "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
    "Genoa": "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1",
    "Turin": "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a",
}

#: AMD SEV Key (CN=SEV-<Product>), signs VCEKs. Informational: an ASK is accepted when the pinned
#: ARK signed it, so a re-issued ASK keeps working.
AMD_ASK_SHA256: dict[str, str] = {
    "Milan": "67d303bd3905fd38db8b20e0793699870e7fa612eaad5dec358293fd8c0bac1b",
    "Genoa": "5464738c1546aed5f2cecf1dc98c5c960a92e8913238a61711bc90ec6e828521",
    "Turin": "5b77ef5fe7a7a004fd9032668fba9d0fda22f88c4442069a479636a6ae3b3185",
}

#: AMD SEV VLEK Key (CN=SEV-VLEK-<Product>), signs VLEKs. Informational, as above.
AMD_ASVK_SHA256: dict[str, str] = {
    "Milan": "c5e081f59b7efab1fe2f8b505e159704e72f29cab7ef7cf628a05a42439082f5",
    "Genoa": "197e610743a917d6b9bb982a5a9226ccc0a15b611be0619e626aca9151457372",
    "Turin": "104e10a8bd060a3c20a434261a57d0588fd65a88915b4f65b08bdecaf8df1a3c",
}


def der_fingerprint(der: bytes) -> str:
    """Lower-case hex SHA-256 of a DER certificate."""
    return hashlib.sha256(der).hexdigest()


def cert_fingerprint(cert: x509.Certificate) -> str:
    return der_fingerprint(cert.public_bytes(Encoding.DER))


def pinned_ark_product(der: bytes) -> str | None:
    """The product line whose pinned ARK has this DER encoding, else ``None``."""
    fp = der_fingerprint(der)
    for product, pinned in AMD_ARK_SHA256.items():
        if fp == pinned:
            return product
    return None
