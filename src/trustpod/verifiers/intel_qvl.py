"""Second opinion from ``dcap-qvl`` (Phala's maintained DCAP verifier) on complete collateral. Pure.

trustpod's own steps (``intel_dcap``) name the failing check and can run on the partial
collateral of the vectors; when the collateral is complete (issuer chains and both CRLs),
``dcap-qvl`` re-verifies the whole quote offline at the same ``now`` with the same pinned root
and must agree on the TCB status (ADR 0500).
"""

from __future__ import annotations

import datetime as _dt
import logging

import dcap_qvl
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from trustpod.errors import VerificationError
from trustpod.evidence.tdx import TdQuote
from trustpod.verifiers.intel_collateral import IntelCollateral

__all__ = ["QVL_POLICY_ONLY", "qvl_complete", "qvl_status"]

_log = logging.getLogger(__name__)

#: dcap-qvl rejections that are its own TD-attribute *policy*, not DCAP verification. Upstream
#: accepts such quotes and leaves these to the attestation policy (``td_attributes`` claims), so
#: the second opinion is "not applicable" for them, never a reason to refuse.
QVL_POLICY_ONLY = (
    "Debug mode",
    "SEPT_VE_DISABLE",
    "MR service TD",
    "Reserved bits in TD attributes",
)


def qvl_complete(col: IntelCollateral) -> bool:
    """dcap-qvl needs every item; partial collateral is verified by trustpod alone."""
    return bool(
        col.tcb_info.issuer_chain
        and col.qe_identity.issuer_chain
        and col.pck_crl is not None
        and col.root_ca_crl is not None
    )


def _pem(certs: tuple[x509.Certificate, ...]) -> str:
    return "".join(c.public_bytes(Encoding.PEM).decode() for c in certs)


def qvl_status(
    quote: TdQuote, col: IntelCollateral, root_der: bytes, now: _dt.datetime
) -> tuple[str, list[str]] | None:
    """Run ``dcap_qvl.verify_with_root_ca``: (status, advisory ids), or ``None`` when dcap-qvl
    only objects to TD attributes by its own policy (``QVL_POLICY_ONLY``)."""
    assert col.pck_crl is not None and col.root_ca_crl is not None
    pck_crl_chain = "".join(
        x509.load_der_x509_certificate(d).public_bytes(Encoding.PEM).decode()
        for d in quote.sig.pck_chain[1:]
    )
    collateral = dcap_qvl.QuoteCollateralV3(
        pck_crl_chain,
        col.root_ca_crl.public_bytes(Encoding.DER),
        col.pck_crl.public_bytes(Encoding.DER),
        _pem(col.tcb_info.issuer_chain),
        col.tcb_info.signed_bytes.decode("utf-8"),
        col.tcb_info.signature,
        _pem(col.qe_identity.issuer_chain),
        col.qe_identity.signed_bytes.decode("utf-8"),
        col.qe_identity.signature,
    )
    try:
        report = dcap_qvl.verify_with_root_ca(quote.raw, collateral, root_der, int(now.timestamp()))
    except ValueError as exc:
        text = str(exc)
        if any(marker.lower() in text.lower() for marker in QVL_POLICY_ONLY):
            _log.info("dcap-qvl second opinion not applicable: %s", text.splitlines()[-1])
            return None
        raise VerificationError(
            f"TDX: dcap-qvl rejected the quote: {str(exc).splitlines()[0]}", reason="tdx.qvl"
        ) from exc
    return str(report.status), [str(a) for a in report.advisory_ids]
