"""AMD SEV-SNP verifier (trustee ``deps/verifier/src/snp/mod.rs``; protocol notes §5.1).

``verify_snp`` is the pure core: report + certificate chain + expected values -> upstream's
claims, or a raised ``VerificationError`` whose ``reason`` names the failed step. ``SnpVerifier``
adds the edges: evidence JSON (or a raw report), certificates from the evidence's table, the
collateral sources (offline store / KDS) and the chain cache.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from trustpod.collateral.ports import (
    AmdCaCerts,
    AmdTcb,
    MemoryAmdCollateral,
    RootSource,
    VcekSource,
    kds_hwid,
)
from trustpod.errors import DependencyError, EvidenceError, NotFoundError, VerificationError
from trustpod.evidence.snp import SnpReport
from trustpod.evidence.snp_json import CertTableEntry, SnpEvidence
from trustpod.initdata import fit
from trustpod.verifiers.base import TeeClaims, VerifierSettings, VerifyInput
from trustpod.verifiers.snp_chain import (
    ChainCache,
    SnpChain,
    TrustAnchors,
    VekInfo,
    common_name,
    load_cert,
    verify_chain,
)

__all__ = [
    "INSECURE_EMULATED_ROOT",
    "SnpVerifier",
    "create",
    "product_from_cpuid",
    "snp_claims",
    "verify_report",
    "verify_snp",
]

_log = logging.getLogger(__name__)
SIG_ALGO_ECDSA_P384_SHA384 = 1
_ECDSA_SHA384 = ec.ECDSA(hashes.SHA384())
#: ``TeeClaims.insecure`` marker of a report verified through an emulated vendor root.
INSECURE_EMULATED_ROOT = "snp.emulated_root"


def product_from_cpuid(family: int, model: int) -> str | None:
    """Product line from CPUID family/model (trustee ``get_processor_generation``)."""
    if family == 0x19 and model <= 0x0F:
        return "Milan"
    if family == 0x19 and (0x10 <= model <= 0x1F or 0xA0 <= model <= 0xAF):
        return "Genoa"
    if family == 0x1A and model <= 0x11:
        return "Turin"
    return None


def report_product(report: SnpReport) -> str | None:
    """(2) The product line a v3+ report names; ``None`` for v2 (no CPUID fields)."""
    if report.version < 3:
        return None
    product = product_from_cpuid(report.cpuid_fam_id or 0, report.cpuid_mod_id or 0)
    if product is None:
        raise VerificationError(
            f"unsupported processor: CPUID family 0x{report.cpuid_fam_id or 0:02x} "
            f"model 0x{report.cpuid_mod_id or 0:02x}",
            reason="snp.product",
        )
    return product


def verify_report(report: SnpReport, vek: VekInfo, *, allowed_vmpls: frozenset[int]) -> None:
    """Steps that need no expected values: signature, VEK TCB/hwID, VMPL."""
    # (8) ECDSA P-384 / SHA-384 over bytes 0x000-0x29F (r, s little-endian, zero padded).
    if report.sig_algo != SIG_ALGO_ECDSA_P384_SHA384:
        raise VerificationError(
            f"unsupported signature algorithm {report.sig_algo}", reason="snp.sig_algo"
        )
    try:
        vek.public_key.verify(report.signature_der(), report.signed_bytes(), _ECDSA_SHA384)
    except (InvalidSignature, ValueError) as exc:
        raise VerificationError(
            "report signature does not verify with the VCEK/VLEK", reason="snp.signature"
        ) from exc
    # (9) VEK TCB extensions == reported_tcb (upstream verify_report_tcb).
    tcb = report.reported_tcb
    pairs: list[tuple[str, int | None, int | None]] = [
        ("microcode", vek.microcode, tcb.microcode),
        ("snp", vek.snp, tcb.snp),
        ("tee", vek.tee, tcb.tee),
        ("bootloader", vek.bootloader, tcb.bootloader),
    ]
    if vek.product == "Turin" or tcb.fmc is not None:
        pairs.append(("fmc", vek.fmc, tcb.fmc))
    for name, cert_value, reported in pairs:
        if cert_value != reported:
            raise VerificationError(
                f"reported_tcb {name}={reported} but the {vek.kind} says {cert_value}",
                reason="snp.tcb_mismatch",
            )
    # (10) hwID == chip_id for a VCEK (VLEKs are not chip specific).
    if vek.kind == "VCEK" and (
        vek.hwid is None or not hmac.compare_digest(vek.hwid, report.chip_id)
    ):
        raise VerificationError("chip_id does not match the VCEK hwID", reason="snp.chip_id")
    # (11) VMPL (upstream: 0 only).
    if report.vmpl not in allowed_vmpls:
        raise VerificationError(
            f"report VMPL {report.vmpl} not in allowed {sorted(allowed_vmpls)}",
            reason="snp.vmpl",
            fix="set allowed_vmpls in the verifier settings if this VMPL is expected",
        )


def check_product_and_validity(report: SnpReport, vek: VekInfo, expected: VerifyInput) -> None:
    """(2) CPUID product == the ARK's product line; (7) every certificate valid at ``now``."""
    product = report_product(report)
    if product is not None and vek.product is not None and product != vek.product:
        raise VerificationError(
            f"report is from a {product} but the chain is {vek.product}", reason="snp.product"
        )
    if not vek.not_before <= expected.now <= vek.not_after:
        raise VerificationError(
            f"certificate chain not valid at {expected.now.isoformat()} "
            f"(window {vek.not_before.date()}..{vek.not_after.date()})",
            reason="snp.cert_validity",
        )
    # An emulated root was warned about at start; each use is marked INSECURE_EMULATED_ROOT.


def verify_snp(
    report: SnpReport,
    chain: SnpChain,
    expected: VerifyInput,
    *,
    allowed_vmpls: frozenset[int] = frozenset({0}),
    trusted_arks: TrustAnchors | None = None,
    cache: ChainCache | None = None,
) -> dict[str, Any]:
    """Verify a report against ``chain`` and the expected bindings; return upstream's claims."""
    # (1) report version: upstream accepts 3..=5; we also accept v2 (see docs/compat.md).
    if report.version not in (2, 3, 4, 5):
        raise VerificationError(f"report version {report.version}", reason="snp.report_version")
    anchors = trusted_arks or TrustAnchors.default()
    # (3)-(6) ARK pinned, self-signed; ASK/ASVK by ARK; VEK by ASK/ASVK (cached per chain).
    vek = cache.verify(chain, anchors) if cache is not None else _verify_uncached(chain, anchors)
    check_product_and_validity(report, vek, expected)
    verify_report(report, vek, allowed_vmpls=allowed_vmpls)
    # (12) REPORT_DATA == expected zero-padded/truncated to 64.
    if not hmac.compare_digest(report.report_data, fit(expected.report_data, 64)):
        raise VerificationError("REPORT_DATA does not match", reason="snp.report_data")
    # (13) HOST_DATA == initdata digest padded/truncated to 32.
    if expected.init_data_digest is not None and not hmac.compare_digest(
        report.host_data, fit(expected.init_data_digest, 32)
    ):
        raise VerificationError(
            "HOST_DATA does not match the initdata digest", reason="snp.host_data"
        )
    return snp_claims(report)


def _verify_uncached(chain: SnpChain, anchors: TrustAnchors) -> VekInfo:
    return verify_chain(chain, anchors)


def snp_claims(report: SnpReport) -> dict[str, Any]:
    """trustee ``parse_tee_evidence``: ints/bools, byte fields lowercase hex."""
    pol, plat, tcb = report.policy_bits, report.platform_bits, report.reported_tcb
    return {
        "policy_abi_major": pol.abi_major,
        "policy_abi_minor": pol.abi_minor,
        "policy_smt_allowed": pol.smt_allowed,
        "policy_migrate_ma": pol.migrate_ma_allowed,
        "policy_debug_allowed": pol.debug_allowed,
        "policy_single_socket": pol.single_socket_required,
        "reported_tcb_bootloader": tcb.bootloader,
        "reported_tcb_tee": tcb.tee,
        "reported_tcb_snp": tcb.snp,
        "reported_tcb_microcode": tcb.microcode,
        "platform_tsme_enabled": plat.tsme_enabled,
        "platform_smt_enabled": plat.smt_enabled,
        "measurement": report.measurement.hex(),
        "report_data": report.report_data.hex(),
        "init_data": report.host_data.hex(),
        "chip_id": report.chip_id.hex(),
    }


class SnpVerifier:
    """The ``snp`` verifier: gathers the chain, then runs ``verify_snp``."""

    tee = "snp"

    def __init__(
        self,
        *,
        vcek_sources: Sequence[VcekSource] = (),
        root_sources: Sequence[RootSource] = (),
        allowed_vmpls: frozenset[int] = frozenset({0}),
        insecure_emulated_roots: tuple[bytes, ...] = (),
        cache: ChainCache | None = None,
    ) -> None:
        self.vcek_sources = tuple(vcek_sources)
        emulated = emulated_ca(insecure_emulated_roots)
        self.root_sources = tuple(root_sources) + ((emulated,) if emulated else ())
        self.allowed_vmpls = allowed_vmpls
        self.insecure_emulated_roots = insecure_emulated_roots
        self.anchors = TrustAnchors.default(insecure_emulated_roots)
        self.cache = cache or ChainCache()

    def verify(self, evidence: Any, expected: VerifyInput) -> list[TeeClaims]:
        if isinstance(evidence, bytes | bytearray):
            parsed = SnpEvidence(SnpReport.from_bytes(bytes(evidence)), None)
        else:
            parsed = SnpEvidence.from_json(evidence)
        chain = self.chain_for(parsed.report, parsed.cert_chain)
        claims = verify_snp(
            parsed.report,
            chain,
            expected,
            allowed_vmpls=self.allowed_vmpls,
            trusted_arks=self.anchors,
            cache=self.cache,
        )
        emulated = self.cache.verify(chain, self.anchors).emulated  # cached: a dict lookup
        return [TeeClaims(claims, "cpu", insecure=(INSECURE_EMULATED_ROOT,) if emulated else ())]

    # ------------------------------------------------------------------ chain gathering
    def chain_for(
        self, report: SnpReport, table: tuple[CertTableEntry, ...] | None, vek: bytes | None = None
    ) -> SnpChain:
        """Complete the chain: evidence table first, then the root/VCEK sources."""
        got: dict[str, bytes] = {}
        for entry in table or ():
            if entry.cert_type in ("ARK", "ASK", "VCEK", "VLEK"):
                got.setdefault(entry.cert_type, entry.data)
        vlek = "VLEK" in got and "VCEK" not in got
        vek = vek or got.get("VLEK" if vlek else "VCEK")
        products = [report_product(report)] if report.version >= 3 else ["Milan", "Genoa", "Turin"]
        # every (ARK, ASK) the sources offer, in source order (collateral dir, KDS, the roots
        # shipped in the package, named emulated roots): the first chain that verifies wins;
        # if none does, the first one is returned so the verification names what is wrong
        candidates: list[SnpChain] = []
        for product in products:
            assert product is not None
            product_vek = vek
            for ca in self._ca_candidates(product, got):
                ark = got.get("ARK") or ca.ark
                ask = got.get("ASK") or (ca.asvk if vlek else ca.ask)
                if ark is None or ask is None:
                    continue
                if product_vek is None:
                    product_vek = self._fetch_vcek(report, product)
                    if product_vek is None:
                        break
                chain = SnpChain(product_vek, ask, ark)
                if chain in candidates:
                    continue
                if self._chain_ok(chain):
                    return chain
                candidates.append(chain)
        if candidates:
            return candidates[0]
        raise DependencyError(
            "AMD certificates for this report are not available (ARK/ASK or VCEK)",
            reason="snp.collateral_missing",
            fix="run `trustpod collateral fetch amd ...` or `trustpod collateral import`, "
            "or configure amd_kds_url",
        )

    def _chain_ok(self, chain: SnpChain) -> bool:
        try:
            self.cache.verify(chain, self.anchors)
        except (VerificationError, EvidenceError):
            return False
        return True

    def _ca_candidates(self, product: str, got: dict[str, bytes]) -> Iterator[AmdCaCerts]:
        """CA sets for ``product``, lazily in source order (a later source, e.g. KDS, is only
        asked when the earlier ones' chains did not verify)."""
        if "ARK" in got and "ASK" in got:
            yield AmdCaCerts()
            return
        any_ark = False
        for source in self.root_sources:
            try:
                ca = source.get_ca_certs(product)
            except (NotFoundError, DependencyError) as exc:
                _log.debug("root source %r: %s", source, exc)
                continue
            if ca.ark is not None:
                any_ark = True
                yield ca
        if not any_ark:
            yield AmdCaCerts()

    def _fetch_vcek(self, report: SnpReport, product: str) -> bytes | None:
        tcb = report.reported_tcb
        want = AmdTcb(tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode, tcb.fmc)
        hwid = kds_hwid(product, report.chip_id)
        for source in self.vcek_sources:
            try:
                return source.get_vcek(product, hwid, want)
            except (NotFoundError, DependencyError) as exc:
                _log.debug("VCEK source %r: %s", source, exc)
        return None


def emulated_ca(ders: tuple[bytes, ...]) -> MemoryAmdCollateral | None:
    """CA certificates from ``insecure_emulated_roots`` (ARK-<P>, SEV-<P>, SEV-VLEK-<P> CNs)."""
    if not ders:
        return None
    found: dict[str, dict[str, bytes]] = {}
    for der in ders:
        cn = common_name(load_cert(der, "insecure emulated root"))
        for prefix, slot in (("ARK-", "ark"), ("SEV-VLEK-", "asvk"), ("SEV-", "ask")):
            if cn.startswith(prefix):
                found.setdefault(cn[len(prefix) :], {}).setdefault(slot, der)
                break
    return MemoryAmdCollateral.from_ca({p: AmdCaCerts(**slots) for p, slots in found.items()})


def create(settings: VerifierSettings, sources: Sequence[Any] = ()) -> SnpVerifier:
    """Build the verifier; ``sources`` (VCEK/CA sources) come from the composition edge
    (``trustpod.collateral.wiring``), which keeps this package free of I/O."""
    return SnpVerifier(
        vcek_sources=list(sources),
        root_sources=list(sources),
        allowed_vmpls=settings.allowed_vmpls,
        insecure_emulated_roots=settings.insecure_emulated_roots,
    )
