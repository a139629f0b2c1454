"""TDX TCB evaluation against TCB Info v3 and the TD_QE identity (Intel QVL semantics). Pure.

(a) TCB info matches the PCK (id TDX, version 3, FMSPC, PCE-ID); (b) the QE report matches the
TD_QE identity (MRSIGNER, ISVPRODID, masked MISCSELECT/ATTRIBUTES) and its ISVSVN picks a QE TCB
level; (c) the TDX module (``tee_tcb_svn[1]`` = module major version > 0) matches its
``TDX_NN`` identity and ``tee_tcb_svn[0]`` picks a module level; (d) the first platform TCB level
whose SGX components + PCESVN (from the PCK) and TDX components (from ``tee_tcb_svn``; bytes 0-1
skipped when the module identity was used) are all >= wins; (e) the module status converges
into the platform status as QVL does (OutOfDate taints; Revoked is terminal); (f) TDX 1.5: when
the launch TCB (``tee_tcb_svn``) is out of date but the current one (``tee_tcb_svn2``) is not,
the status is ``TDRelaunchAdvised[ConfigurationNeeded]``; (g) the QE status converges last.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Any

from trustpod.errors import VerificationError
from trustpod.evidence.intel_pck import PckExtensions
from trustpod.evidence.tdx import TdQuote
from trustpod.verifiers.intel_collateral import IntelCollateral, parse_rfc3339

__all__ = ["TcbEvaluation", "evaluate_tcb"]

_TCB_COMPONENTS = 16


@dataclass(frozen=True, slots=True)
class TcbEvaluation:
    status: str
    tcb_date: _dt.datetime
    advisory_ids: tuple[str, ...]
    qe_status: str
    module_status: str | None


def _err(step: str, msg: str) -> VerificationError:
    return VerificationError(f"TDX TCB: {msg}", reason=f"tdx.{step}")


def _hex(value: Any, what: str) -> bytes:
    try:
        return bytes.fromhex(str(value))
    except ValueError:
        raise _err("tcb_info_malformed", f"{what} is not hex") from None


def _masked_eq(value: bytes, expected: bytes, mask: bytes) -> bool:
    if not len(value) == len(expected) == len(mask):
        return False
    return all((v & m) == (e & m) for v, e, m in zip(value, expected, mask, strict=True))


def _first_isvsvn_level(levels: Any, isvsvn: int, what: str) -> dict[str, Any]:
    for level in levels if isinstance(levels, list) else []:
        if isinstance(level, dict) and int(level.get("tcb", {}).get("isvsvn", 1 << 30)) <= isvsvn:
            return level
    raise _err(f"{what}_tcb_level", f"no {what} TCB level matches ISVSVN {isvsvn}")


def _converge(platform: str, other: str) -> str:
    if other == "Revoked":
        return "Revoked"
    if other == "OutOfDate":
        if platform in ("UpToDate", "SWHardeningNeeded"):
            return "OutOfDate"
        if platform in ("ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded"):
            return "OutOfDateConfigurationNeeded"
    return platform


def _svns(items: Any, what: str) -> list[int]:
    if not isinstance(items, list) or len(items) != _TCB_COMPONENTS:
        raise _err("tcb_info_malformed", f"{what} must list {_TCB_COMPONENTS} components")
    return [int(c.get("svn", 0)) for c in items]


def evaluate_tcb(quote: TdQuote, col: IntelCollateral) -> TcbEvaluation:
    """Evaluate; collateral of an unexpected shape fails closed (``tdx.tcb_info_malformed``)."""
    try:
        return _evaluate(quote, col)
    except (AttributeError, TypeError, ValueError, KeyError, IndexError, OverflowError) as exc:
        raise _err("tcb_info_malformed", f"TCB info / QE identity has an unexpected shape: {exc}"
                   ) from exc  # fmt: skip


def _evaluate(quote: TdQuote, col: IntelCollateral) -> TcbEvaluation:
    pck, qe, body = quote.sig.pck, quote.sig.qe_report, quote.body
    info = col.tcb_info.body
    # (a) the TCB info is for this platform
    if info.get("id") != "TDX" or info.get("version") != 3:
        raise _err("tcb_info_mismatch", "TCB info is not TDX TCB Info v3")
    if _hex(info.get("fmspc"), "fmspc") != pck.fmspc:
        raise _err("tcb_info_mismatch", f"TCB info is for FMSPC {info.get('fmspc')}, "
                   f"the PCK says {pck.fmspc.hex()}")  # fmt: skip
    if _hex(info.get("pceId"), "pceId") != pck.pce_id:
        raise _err("tcb_info_mismatch", "TCB info PCE-ID does not match the PCK")
    # (b) the QE is Intel's TD quoting enclave
    ident = col.qe_identity.body
    if ident.get("id") != "TD_QE":
        raise _err("qe_identity", f"QE identity id is {ident.get('id')!r}, expected TD_QE")
    if _hex(ident.get("mrsigner"), "mrsigner") != qe.mr_signer:
        raise _err("qe_identity", "QE MRSIGNER does not match the TD_QE identity")
    if int(ident.get("isvprodid", -1)) != qe.isv_prod_id:
        raise _err("qe_identity", "QE ISVPRODID does not match the TD_QE identity")
    misc = qe.misc_select.to_bytes(4, "little")
    misc_id = _hex(ident.get("miscselect"), "miscselect")[::-1]
    misc_mask = _hex(ident.get("miscselectMask"), "miscselectMask")[::-1]
    if not _masked_eq(misc, misc_id, misc_mask):
        raise _err("qe_identity", "QE MISCSELECT does not match the TD_QE identity")
    attrs = _hex(ident.get("attributes"), "attributes")
    if not _masked_eq(qe.attributes, attrs, _hex(ident.get("attributesMask"), "attributesMask")):
        raise _err("qe_identity", "QE ATTRIBUTES do not match the TD_QE identity")
    qe_level = _first_isvsvn_level(ident.get("tcbLevels"), qe.isv_svn, "qe")
    qe_status = str(qe_level.get("tcbStatus"))
    # (c)-(e) for the TEE TCB SVN the TD was launched with
    launch = _tdx_status(info, pck, body.tcb_svn, body.mrsigner_seam, body.seam_attributes)
    status, level, adv, module_status = launch
    # (f) TDX 1.5: a TD launched under an out-of-date module that now runs an up-to-date one
    # (TEE_TCB_SVN2) is advised to relaunch rather than marked out of date.
    if body.tee_tcb_svn2 is not None and status in ("OutOfDate", "OutOfDateConfigurationNeeded"):
        try:
            current = _tdx_status(
                info, pck, body.tee_tcb_svn2, body.mrsigner_seam, body.seam_attributes
            )[0]
        except VerificationError:
            current = ""
        if current in ("UpToDate", "SWHardeningNeeded"):
            status = "TDRelaunchAdvised"
        elif current in ("ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded"):
            status = "TDRelaunchAdvisedConfigurationNeeded"
    # (g) converge the QE status
    status = _converge(status, qe_status)
    return TcbEvaluation(
        status=status,
        tcb_date=parse_rfc3339(level.get("tcbDate"), "tcbDate"),
        advisory_ids=tuple(adv + list(qe_level.get("advisoryIDs", []))),
        qe_status=qe_status,
        module_status=module_status,
    )


def _tdx_status(
    info: dict[str, Any], pck: PckExtensions, tee: bytes, mrsigner_seam: bytes, seam_attrs: bytes
) -> tuple[str, dict[str, Any], list[str], str | None]:
    """(status, platform level, advisory ids, module status) for one TEE TCB SVN."""
    # (c) the TDX module
    module_status: str | None = None
    module_adv: list[str] = []
    if tee[1] > 0:
        wanted = f"TDX_{tee[1]:02X}"
        idents = [m for m in info.get("tdxModuleIdentities", []) if m.get("id") == wanted]
        if not idents:
            raise _err("tdx_module", f"TCB info has no TDX module identity {wanted}")
        module = idents[0]
    else:
        module = info.get("tdxModule") or {}
    if _hex(module.get("mrsigner"), "mrsigner") != mrsigner_seam:
        raise _err("tdx_module", "MRSIGNER_SEAM does not match the TDX module identity")
    mask = _hex(module.get("attributesMask"), "attributesMask")
    if not _masked_eq(seam_attrs, _hex(module.get("attributes"), "attributes"), mask):
        raise _err("tdx_module", "SEAM_ATTRIBUTES do not match the TDX module identity")
    if tee[1] > 0:
        mod_level = _first_isvsvn_level(module.get("tcbLevels"), tee[0], "tdx_module")
        module_status = str(mod_level.get("tcbStatus"))
        module_adv = list(mod_level.get("advisoryIDs", []))
    # (d) the platform TCB level
    start = 2 if tee[1] > 0 else 0
    for level in info.get("tcbLevels", []):
        tcb = level.get("tcb", {})
        sgx = _svns(tcb.get("sgxtcbcomponents"), "sgxtcbcomponents")
        tdx = _svns(tcb.get("tdxtcbcomponents"), "tdxtcbcomponents")
        if (
            all(have >= need for have, need in zip(pck.tcb_components, sgx, strict=True))
            and pck.pce_svn >= int(tcb.get("pcesvn", 1 << 30))
            and all(tee[i] >= tdx[i] for i in range(start, _TCB_COMPONENTS))
        ):
            status = str(level.get("tcbStatus"))
            # (e) converge the module status into the platform status
            if module_status is not None:
                status = _converge(status, module_status)
            return status, level, list(level.get("advisoryIDs", [])) + module_adv, module_status
    raise _err("tcb_level", "no TCB level in the TCB info matches this platform (unsupported)")
