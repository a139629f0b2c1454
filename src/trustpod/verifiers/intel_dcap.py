"""DCAP quote verification (ECDSA-256, PCK chain, QE, TCB evaluation) with ``cryptography``. Pure.

Steps follow Intel's Quote Verification Library (``QuoteVerifier``, ``TcbLevelCheck``,
``TdxModuleCheck``) as used by trustee ``intel_dcap`` (§5.2). Why this is not delegated to
``dcap-qvl``: ADR 0500. Every failed step raises ``VerificationError`` with ``tdx.<step>``.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from trustpod.errors import VerificationError
from trustpod.evidence.tdx import TdQuote
from trustpod.verifiers.intel_collateral import IntelCollateral, SignedCollateral
from trustpod.verifiers.intel_qvl import qvl_complete, qvl_status
from trustpod.verifiers.intel_tcb import evaluate_tcb

__all__ = ["INTEL_SGX_ROOT_CA_SHA256", "DcapOptions", "verify_dcap"]

_log = logging.getLogger(__name__)

#: SHA-256 of the DER of "CN=Intel SGX Root CA" (self-signed, valid to 2049-12-31); a fact,
#: computed from the root at the end of the PCK chains in real quotes.
INTEL_SGX_ROOT_CA_SHA256 = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
CHAIN_CACHE_SIZE = 256  #: verified certificate chains kept (by exact DER), per process
_SGX_TYPES = {0: "Standard", 1: "Scalable", 2: "Scalable with Integrity"}


@dataclass(frozen=True, slots=True)
class DcapOptions:
    """Knobs of DCAP verification; every relaxation is named ``insecure_`` and warns."""

    extra_roots_der: tuple[bytes, ...] = ()
    insecure_unsigned_collateral: bool = False
    insecure_skip_crl: bool = False
    reject_expired_collateral: bool = True
    cross_check_dcap_qvl: bool = True
    accepted_statuses: frozenset[str] = frozenset(
        {
            "UpToDate",
            "SWHardeningNeeded",
            "ConfigurationNeeded",
            "ConfigurationAndSWHardeningNeeded",
            "OutOfDate",
            "OutOfDateConfigurationNeeded",
            "TDRelaunchAdvised",
            "TDRelaunchAdvisedConfigurationNeeded",
        }
    )


def _err(step: str, msg: str, fix: str | None = None) -> VerificationError:
    return VerificationError(f"TDX DCAP: {msg}", reason=f"tdx.{step}", fix=fix)


def _ecdsa_p256(key: ec.EllipticCurvePublicKey, rs: bytes, data: bytes, step: str) -> None:
    sig = encode_dss_signature(int.from_bytes(rs[:32], "big"), int.from_bytes(rs[32:], "big"))
    try:
        key.verify(sig, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise _err(step, f"{step.replace('_', ' ')} is invalid") from exc


def _ec_key(cert: x509.Certificate, step: str) -> ec.EllipticCurvePublicKey:
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise _err(step, "certificate key is not an EC key")
    return key


def _pinned(opts: DcapOptions) -> set[str]:
    pins = {INTEL_SGX_ROOT_CA_SHA256}
    if opts.extra_roots_der:
        _log.warning(
            "TDX: trusting %d EMULATED Intel root(s): testing only", len(opts.extra_roots_der)
        )
        pins |= {hashlib.sha256(d).hexdigest() for d in opts.extra_roots_der}
    return pins


@functools.lru_cache(maxsize=CHAIN_CACHE_SIZE)
def _unsigned_link(chain_der: tuple[bytes, ...]) -> int | None:
    """Index of the first certificate not signed by the next one (the root by itself), or None.

    Cached by the exact DER chain: a platform's PCK chain and the TCB-signing chain repeat on
    every quote. Validity periods are not part of the cache; they are checked per call.
    """
    chain = [x509.load_der_x509_certificate(d) for d in chain_der]
    for i, (cert, issuer) in enumerate(zip(chain, (*chain[1:], chain[-1]), strict=True)):
        try:
            cert.verify_directly_issued_by(issuer)
        except (InvalidSignature, ValueError, TypeError):
            return i
    return None


def _verify_chain(
    chain: tuple[x509.Certificate, ...], now: _dt.datetime, opts: DcapOptions, step: str
) -> None:
    """(leaf, ..., root): each signed by the next, root self-signed and pinned, all valid now."""
    if len(chain) < 2:
        raise _err(step, "certificate chain is incomplete")
    root = chain[-1]
    if hashlib.sha256(root.public_bytes(Encoding.DER)).hexdigest() not in _pinned(opts):
        raise _err(step, "chain does not end at the pinned Intel SGX Root CA")
    bad = _unsigned_link(tuple(c.public_bytes(Encoding.DER) for c in chain))
    if bad is not None:
        raise _err(step, f"{chain[bad].subject.rfc4514_string()} is not signed by its issuer")
    for cert in chain:
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise _err(step, f"{cert.subject.rfc4514_string()} is not valid at {now.isoformat()}")


def _check_crls(
    col: IntelCollateral, chain: tuple[x509.Certificate, ...], now: _dt.datetime, opts: DcapOptions
) -> tuple[int, int, list[_dt.datetime], list[_dt.datetime]]:
    if opts.insecure_skip_crl:
        _log.warning("TDX: insecure_skip_crl is set: PCK revocation NOT checked")
        return 0, 0, [], []
    if col.pck_crl is None or col.root_ca_crl is None:
        raise _err(
            "crl_missing",
            "PCK CRL or root CA CRL is missing from the collateral",
            fix="fetch complete collateral (trustpod collateral fetch intel ...)",
        )
    issued, expires = [], []
    nums = []
    for crl, issuer, subject in (
        (col.pck_crl, chain[1], chain[0]),
        (col.root_ca_crl, chain[-1], chain[1]),
    ):
        if not crl.is_signature_valid(_ec_key(issuer, "crl_signature")):
            raise _err("crl_signature", "CRL is not signed by the PCK chain's CA")
        if crl.next_update_utc is None or crl.next_update_utc < now:
            raise _err("crl_expired", "CRL is past its nextUpdate")
        if crl.get_revoked_certificate_by_serial_number(subject.serial_number) is not None:
            raise _err("revoked", f"{subject.subject.rfc4514_string()} is revoked")
        try:
            nums.append(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
        except x509.ExtensionNotFound:
            nums.append(0)
        issued.append(crl.last_update_utc)
        expires.append(crl.next_update_utc)
    return nums[0], nums[1], issued, expires


def _check_signed(item: SignedCollateral, now: _dt.datetime, opts: DcapOptions) -> None:
    step = "tcb_info" if item.key == "tcbInfo" else "qe_identity"
    if not item.issuer_chain:
        if not opts.insecure_unsigned_collateral:
            raise _err(
                f"{step}_issuer_missing",
                f"{item.key} has no issuer chain, so its signature cannot be verified",
                fix="use collateral with the PCS issuer-chain header, or (testing only) set "
                "tdx.insecure_unsigned_collateral",
            )
        _log.warning("TDX: insecure_unsigned_collateral: %s signature NOT verified", item.key)
        return
    _verify_chain(item.issuer_chain, now, opts, f"{step}_chain")
    _ecdsa_p256(
        _ec_key(item.issuer_chain[0], f"{step}_signature"),
        item.signature,
        item.signed_bytes,
        f"{step}_signature",
    )


def _eval_num(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _err("tcb_info_malformed", "tcbEvaluationDataNumber is not a number")
    return value


def _rfc3339(t: _dt.datetime) -> str:
    return t.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def verify_dcap(
    quote: TdQuote, col: IntelCollateral, now: _dt.datetime, opts: DcapOptions
) -> dict[str, Any]:
    """Verify ``quote`` against ``col`` at ``now``; return upstream's collateral claims."""
    sig = quote.sig
    chain = tuple(x509.load_der_x509_certificate(d) for d in sig.pck_chain)
    # (1) PCK chain to the pinned Intel SGX Root CA, every certificate valid at `now`.
    _verify_chain(chain, now, opts, "pck_chain")
    # (2) Revocation: PCK CRL (by the Platform/Processor CA), root CA CRL (by the root).
    pck_crl_num, root_crl_num, crl_issued, crl_expires = _check_crls(col, chain, now, opts)
    # (3) QE report signed by the PCK key.
    _ecdsa_p256(_ec_key(chain[0], "qe_report_signature"), sig.qe_report_signature,
                sig.qe_report.raw, "qe_report_signature")  # fmt: skip
    # (4) QE report_data binds the attestation key: SHA256(att_key || auth_data) || 0^32.
    bound = hashlib.sha256(sig.attestation_key + sig.qe_auth_data).digest() + bytes(32)
    if sig.qe_report.report_data != bound:
        raise _err("qe_report_data", "QE report_data does not bind the attestation key")
    # (5) Quote (header + body) signed by the attestation key.
    att_key = ec.EllipticCurvePublicKey.from_encoded_point(
        ec.SECP256R1(), b"\x04" + sig.attestation_key
    )
    _ecdsa_p256(att_key, sig.signature, quote.signed, "quote_signature")
    # (6) TCB info and QE identity signed by the TCB signing chain to the same root.
    _check_signed(col.tcb_info, now, opts)
    _check_signed(col.qe_identity, now, opts)
    # (7) TCB evaluation (platform, TDX module, QE) -> tcb_status.
    ev = evaluate_tcb(quote, col)
    if ev.status not in opts.accepted_statuses:
        raise _err("tcb_status", f"TCB status {ev.status} is not accepted")
    # (8) Collateral freshness at `now`.
    issued = [col.tcb_info.issue_date, col.qe_identity.issue_date, *crl_issued]
    issued += [c.not_valid_before_utc for c in chain]
    expires = [col.tcb_info.next_update, col.qe_identity.next_update, *crl_expires]
    expires += [c.not_valid_after_utc for c in chain]
    expired = min(expires) < now or max(issued) > now
    if expired and opts.reject_expired_collateral:
        raise _err(
            "collateral_expired",
            f"collateral is not valid at {now.isoformat()} (earliest expiry "
            f"{_rfc3339(min(expires))})",
            fix="refresh the Intel collateral, or verify with --now inside its window",
        )
    # (9) Second opinion: dcap-qvl on complete, fresh collateral must agree (ADR 0500).
    if (
        opts.cross_check_dcap_qvl
        and not expired
        and qvl_complete(col)
        and not (opts.insecure_skip_crl or opts.insecure_unsigned_collateral)
    ):
        qvl = qvl_status(quote, col, chain[-1].public_bytes(Encoding.DER), now)
        if qvl is not None and qvl[0] != ev.status:
            raise _err("qvl_disagrees", f"dcap-qvl says {qvl[0]}, trustpod says {ev.status}")
    pck = sig.pck
    claims: dict[str, Any] = {
        "earliest_issue_date": _rfc3339(min(issued)),
        "latest_issue_date": _rfc3339(max(issued)),
        "earliest_expiration_date": _rfc3339(min(expires)),
        "tcb_date": _rfc3339(ev.tcb_date),
        "pck_crl_num": pck_crl_num,
        "root_ca_crl_num": root_crl_num,
        "tcb_eval_num": _eval_num(col.tcb_info.body.get("tcbEvaluationDataNumber")),
        "platform_provider_id": pck.ppid.hex(),
        "sgx_type": _SGX_TYPES.get(pck.sgx_type, f"Unknown ({pck.sgx_type})"),
    }
    if pck.sgx_type > 0:
        claims["is_dynamic_platform"] = bool(pck.dynamic_platform)
        claims["is_cached_keys"] = bool(pck.cached_keys)
        claims["is_smt_enabled"] = bool(pck.smt_enabled)
    root_point = _ec_key(chain[-1], "pck_chain").public_bytes(
        Encoding.X962, PublicFormat.UncompressedPoint
    )
    claims["root_key_id"] = hashlib.sha384(root_point).hexdigest()
    claims["tcb_status"] = ev.status
    claims["collateral_expiration_status"] = "1" if expired else "0"
    claims["advisory_ids"] = sorted(set(ev.advisory_ids))
    return claims
