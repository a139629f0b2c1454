"""The ``tdx`` verifier: DCAP quote + optional CC event log -> upstream's TDX claims (§5.2). Pure.

Evidence (upstream ``TdxEvidence``): ``{"quote": "<b64 std>", "cc_eventlog": "<b64 std>"|null}``.
Collateral comes through the ``IntelCollateralSource`` port (offline store, PCS/PCCS, cache:
``trustpod.collateral.intel``), looked up by the PCK's FMSPC and CA.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trustpod._internal.b64 import b64_decode
from trustpod.collateral.ports import IntelCollateralSource
from trustpod.errors import ConfigError, EvidenceError, NotFoundError, VerificationError
from trustpod.evidence.ccel import CcEventLog
from trustpod.evidence.tdx import MAX_QUOTE_BYTES, TdQuote, parse_td_quote
from trustpod.initdata import fit
from trustpod.verifiers.base import TeeClaims, VerifierSettings, VerifyInput
from trustpod.verifiers.intel_dcap import DcapOptions, verify_dcap

__all__ = [
    "CCEL_RTMR_INDEX",
    "IntelCollateralSource",
    "TdxVerifier",
    "create",
    "dcap_options",
    "td_attributes_claims",
    "tdx_quote_claims",
    "verify_td_quote",
]

_log = logging.getLogger(__name__)
_TD_ATTR_BITS = {"debug": 0, "septve_disable": 28, "protection_keys": 30, "key_locker": 31,
                 "perfmon": 63}  # fmt: skip
_BODY_KEYS = ("tcb_svn", "mr_seam", "mrsigner_seam", "seam_attributes", "td_attributes", "xfam",
              "mr_td", "mr_config_id", "mr_owner", "mr_owner_config", "rtmr_0", "rtmr_1",
              "rtmr_2", "rtmr_3", "report_data")  # fmt: skip
#: CC event log MR index -> RTMR number (UEFI 2.11 §38.4.1, TDX mapping)
CCEL_RTMR_INDEX = {1: 0, 2: 1, 3: 2, 4: 3}


def td_attributes_claims(td_attributes: bytes) -> dict[str, bool]:
    value = int.from_bytes(td_attributes, "little")
    return {name: bool(value >> bit & 1) for name, bit in _TD_ATTR_BITS.items()}


def tdx_quote_claims(quote: TdQuote) -> dict[str, Any]:
    """Upstream ``generate_parsed_claim`` without event logs (all byte fields lowercase hex)."""
    h, b = quote.header, quote.body
    header = {
        "version": quote.version.to_bytes(2, "little").hex(),
        "att_key_type": h.att_key_type.to_bytes(2, "little").hex(),
        "tee_type": h.tee_type.to_bytes(4, "little").hex(),
        "reserved": h.reserved.hex(),
        "vendor_id": h.vendor_id.hex(),
        "user_data": h.user_data.hex(),
    }
    body = {k: getattr(b, k).hex() for k in _BODY_KEYS}
    if b.tee_tcb_svn2 is not None and b.mr_servicetd is not None:
        body["tee_tcb_svn2"] = b.tee_tcb_svn2.hex()
        body["mr_servicetd"] = b.mr_servicetd.hex()
    qmap: dict[str, Any] = {"header": header, "body": body}
    if quote.body_type is not None and quote.body_size is not None:
        qmap["type"] = quote.body_type.to_bytes(2, "little").hex()
        qmap["size"] = quote.body_size.to_bytes(4, "little").hex()
    claims: dict[str, Any] = {
        "quote": qmap,
        "td_attributes": td_attributes_claims(b.td_attributes),
        "report_data": b.report_data.hex(),
        "init_data": b.mr_config_id.hex(),
    }
    pii = quote.sig.pck.platform_instance_id
    if pii is not None:  # upstream prints it byte-reversed
        claims["platform_instance_id"] = pii[::-1].hex()
    return claims


def verify_td_quote(
    quote: TdQuote, source: IntelCollateralSource | None, now: _dt.datetime, opts: DcapOptions
) -> dict[str, Any]:
    """DCAP-verify a parsed quote with collateral from ``source``; return collateral claims."""
    if source is None:
        raise VerificationError(
            "TDX: no Intel collateral source is configured",
            reason="tdx.collateral_missing",
            fix="pass --collateral DIR (offline store) or configure intel_pcs_url",
        )
    fmspc = quote.sig.pck.fmspc.hex()
    try:
        collateral = source.get_tdx(fmspc, quote.sig.pck.ca)
    except NotFoundError as exc:
        raise VerificationError(
            f"TDX: no Intel collateral for FMSPC {fmspc.upper()} ({quote.sig.pck.ca} CA)",
            reason="tdx.collateral_missing",
            fix=f"trustpod collateral fetch/import intel for FMSPC {fmspc.upper()}",
        ) from exc
    return verify_dcap(quote, collateral, now, opts)


def dcap_options(settings: VerifierSettings, tee: str = "tdx") -> DcapOptions:
    extra: Mapping[str, Any] = settings.extra.get(tee, {})
    known = {"insecure_unsigned_collateral", "insecure_skip_crl", "reject_expired_collateral",
             "accepted_statuses", "tcb_update_type"}  # fmt: skip
    unknown = sorted(set(extra) - known)
    if unknown:
        raise ConfigError(f"unknown {tee} verifier option(s): {', '.join(unknown)}",
                          reason="config.unknown_key")  # fmt: skip
    opts = DcapOptions(
        extra_roots_der=tuple(settings.insecure_emulated_roots),
        insecure_unsigned_collateral=bool(extra.get("insecure_unsigned_collateral", False)),
        insecure_skip_crl=bool(extra.get("insecure_skip_crl", False)),
        reject_expired_collateral=bool(extra.get("reject_expired_collateral", True)),
    )
    if "accepted_statuses" in extra:
        opts = dataclasses.replace(opts, accepted_statuses=frozenset(extra["accepted_statuses"]))
    return opts


def _evidence_bytes(evidence: Any, key: str, limit: int, required: bool) -> bytes | None:
    if not isinstance(evidence, dict):
        raise EvidenceError("TDX evidence must be a JSON object", reason="tdx.evidence_shape")
    value = evidence.get(key)
    if value is None or value == "":
        if required:
            raise EvidenceError(f"TDX evidence has no {key!r}", reason="tdx.evidence_shape")
        return None
    if not isinstance(value, str) or len(value) > limit * 4 // 3 + 4:
        raise EvidenceError(f"TDX evidence {key!r} is not a bounded string",
                            reason="tdx.evidence_shape")  # fmt: skip
    return b64_decode(value, field=f"tdx.{key}")


@dataclass(slots=True)
class TdxVerifier:
    source: IntelCollateralSource | None
    options: DcapOptions
    max_evidence_bytes: int = 2 * 1024 * 1024
    tee: str = "tdx"

    def verify(self, evidence: Any, expected: VerifyInput) -> list[TeeClaims]:
        raw = _evidence_bytes(evidence, "quote", MAX_QUOTE_BYTES, True)
        assert raw is not None
        ccel_raw = _evidence_bytes(evidence, "cc_eventlog", self.max_evidence_bytes, False)
        quote = parse_td_quote(raw)
        # (1) DCAP: PCK chain, QE, quote signature, collateral, TCB status (§5.2).
        collateral_claims = verify_td_quote(quote, self.source, expected.now, self.options)
        # (2) REPORT_DATA == expected report_data zero-padded/truncated to 64 (§1.5).
        if not hmac.compare_digest(fit(expected.report_data, 64), quote.body.report_data):
            raise VerificationError("TDX: REPORT_DATA does not match the expected report data",
                                    reason="tdx.report_data")  # fmt: skip
        # (3) MRCONFIGID == initdata digest padded to 48 (§4.6), when initdata was sent.
        if expected.init_data_digest is not None:
            if not hmac.compare_digest(fit(expected.init_data_digest, 48), quote.body.mr_config_id):
                raise VerificationError("TDX: MRCONFIGID does not match the initdata digest",
                                        reason="tdx.init_data")  # fmt: skip
        claims = tdx_quote_claims(quote)
        # (4) CC event log replayed into RTMR0..3 (SHA-384), when present.
        if ccel_raw is not None:
            log = CcEventLog.parse(ccel_raw, max_bytes=self.max_evidence_bytes)
            for index, rtmr in CCEL_RTMR_INDEX.items():
                if log.replay(index) != quote.body.rtmrs[rtmr]:
                    raise VerificationError(
                        f"TDX: event log replay does not match RTMR{rtmr}",
                        reason="tdx.ccel_replay",
                    )
            claims = {"uefi_event_logs": log.claims(), **claims}
        else:
            _log.info("TDX evidence carries no CC event log")
        claims.update(collateral_claims)
        return [TeeClaims(claims, "cpu")]


def create(settings: VerifierSettings, source: IntelCollateralSource | None = None) -> TdxVerifier:
    """Build the verifier; the collateral ``source`` comes from ``trustpod.collateral.wiring``."""
    return TdxVerifier(
        source=source,
        options=dcap_options(settings),
        max_evidence_bytes=settings.max_evidence_bytes,
    )
