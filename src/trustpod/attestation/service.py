"""The built-in attestation service: verify evidence, appraise it with a Rego policy, sign an EAR.

Upstream: ``attestation-service/src/lib.rs evaluate`` + ``ear_token/broker.rs issue``. Policies
live in storage namespace ``attestation_service_policy`` under ``<id>.rego``; the defaults
``default_cpu``/``default_gpu`` are installed with ``overwrite=False``. Policies are read from
storage on every evaluation and compiled bundles are cached by the hash of the stored text, so an
update made by another process (replica) takes effect at once.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any

from trustpod._internal.clock import Clock
from trustpod._internal.jcs import jcs_digest
from trustpod.attestation.composite import ClaimSet, parse_additional_evidence, verify_additional
from trustpod.attestation.defaults import DEFAULT_POLICY_IDS, default_policy
from trustpod.attestation.ear import Appraisal, EarTokenSettings, ear_claims, submod_names
from trustpod.attestation.policy_input import build_policy_input
from trustpod.attestation.result import AttestationResult
from trustpod.attestation.rv_explain import reference_value_checks
from trustpod.attestation.signer import TokenSigner
from trustpod.errors import ConfigError, EvidenceError, NotFoundError
from trustpod.initdata import InitData
from trustpod.rego import PolicyEngine, validate
from trustpod.rvps import ReferenceValueStore
from trustpod.storage.port import KeyValueStore
from trustpod.verifiers.base import VerifierRegistry, VerifyInput

__all__ = [
    "MAX_TOKEN_DURATION_MIN",
    "POLICY_NAMESPACE",
    "POLICY_RULES",
    "AttestationResult",
    "AttestationService",
    "EarTokenSettings",
    "TokenSettings",
]

_log = logging.getLogger(__name__)
POLICY_NAMESPACE = "attestation_service_policy"
#: Rules read from an attestation policy (upstream broker).
POLICY_RULES = ("trust_claims", "extensions")
_POLICY_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
#: Upper bound on ``duration_min`` (one day).
MAX_TOKEN_DURATION_MIN = 24 * 60
#: ``trustpod.kbs.wiring`` looks this name up.
TokenSettings = EarTokenSettings


class AttestationService:
    """``evaluate`` -> EAR JWT; policy admin; JWKS."""

    def __init__(
        self,
        store: KeyValueStore,
        verifiers: VerifierRegistry,
        token: EarTokenSettings,
        clock: Clock,
        *,
        rvps: ReferenceValueStore | None = None,
        engine: PolicyEngine | None = None,
    ) -> None:
        if not 1 <= token.duration_min <= MAX_TOKEN_DURATION_MIN:
            raise ConfigError(
                f"attestation_token_broker.duration_min must be 1..{MAX_TOKEN_DURATION_MIN}",
                reason="config.token_duration",
            )
        self._store = store
        self._verifiers = verifiers
        self._settings = token
        self._clock = clock
        self._rvps = rvps or ReferenceValueStore(store, clock)
        self._engine = engine or PolicyEngine()
        if token.signer_key_path:
            self.signer = TokenSigner.from_files(
                token.signer_key_path, token.signer_cert_path, token.signer_cert_url
            )
        else:
            self.signer = TokenSigner.persistent(store)
        for pid in DEFAULT_POLICY_IDS:
            store.put(
                POLICY_NAMESPACE, f"{pid}.rego", default_policy(pid).encode(), overwrite=False
            )

    def attach_rvps(self, rvps: ReferenceValueStore) -> None:
        """Use this RVPS for ``query_reference_value`` (the KBS shares one)."""
        self._rvps = rvps

    # -- evaluation ------------------------------------------------------------------------
    def evaluate(
        self,
        tee: str,
        primary_evidence: Any,
        runtime_data: dict[str, Any],
        init_data_toml: str | None,
        hash_algorithm: str = "sha384",
        policy_id: str = "default",
    ) -> str:
        """Verify, appraise and return the signed EAR token (raises on verification errors)."""
        return self.appraise(
            tee,
            primary_evidence,
            runtime_data,
            init_data_toml,
            hash_algorithm=hash_algorithm,
            policy_id=policy_id,
        ).token

    def appraise(
        self,
        tee: str,
        primary_evidence: Any,
        runtime_data: dict[str, Any],
        init_data_toml: str | None,
        *,
        hash_algorithm: str = "sha384",
        policy_id: str = "default",
        additional_evidence: str = "",
    ) -> AttestationResult:
        """As ``evaluate``, returning the claims and an ``explain`` record too.

        ``additional_evidence`` is the attestation's ``Tee -> evidence`` JSON string: each
        device becomes its own submod (``trustpod.attestation.composite``)."""
        # (1) Init-data: parse the TOML, digest with its own algorithm (§4.6).
        init_digest: bytes | None = None
        init_claims: Any = None
        if init_data_toml is not None:
            initdata = InitData.parse(init_data_toml)
            init_digest, init_claims = initdata.digest, initdata.claims()
        # (2) Runtime data: HASH(JCS(runtime_data)) is the expected report data (§1.5).
        report_data = jcs_digest(runtime_data, hash_algorithm)
        # (3) Verifier (raises on any failed check).
        expected = VerifyInput(report_data, init_digest, self._clock.now())
        claim_sets = self._verifiers.verify(tee, primary_evidence, expected)
        if not claim_sets:
            raise EvidenceError("the verifier returned no claims", reason="attestation.claims")
        # (3b) Additional (device) evidence, each bound to {"nonce", "tee-pubkey"} (composite).
        devices = parse_additional_evidence(additional_evidence, tee)
        sets = [ClaimSet(tee, c, runtime_data) for c in claim_sets]
        sets += verify_additional(self._verifiers, devices, runtime_data, expected, hash_algorithm)
        references = self._rvps.all_values()
        data = {"reference": references}
        submods: dict[str, Appraisal] = {}
        explain_subs: dict[str, Any] = {}
        names = submod_names([s.claims.tee_class for s in sets])
        for name, one in zip(names, sets, strict=True):
            claim_set = one.claims
            # (4) Policy input (transform_claims).
            doc = build_policy_input(
                one.tee,
                claim_set.claims,
                one.runtime_data,
                init_claims,
                verbose=self._settings.verbose_token,
            )
            # (5) Policy "<policy_id>_<tee_class>", compiled once per stored text + data.
            pid = f"{policy_id}_{claim_set.tee_class}"
            text = self.get_policy(pid)
            compiled = self._engine.compile(text, POLICY_RULES, data)
            results = compiled.evaluate_all(doc)
            # (6) Trust vector and status.
            appraisal = Appraisal.from_policy(results, policy_id, doc)
            submods[name] = appraisal
            explain_subs[name] = {
                "policy_id": pid,
                "policy_sha256": compiled.sha256,
                "ear.status": appraisal.status,
                "ear.trustworthiness-vector": dict(appraisal.trust_vector),
            }
            if appraisal.status != "affirming":
                # which reference value failed (read from the policy text; an aid, not a verdict)
                checks = reference_value_checks(text, doc, references)
                explain_subs[name]["reference_value_failures"] = [c for c in checks if not c["ok"]]
        # (7) Sign the EAR.
        claims = ear_claims(self._settings, submods, int(self._clock.time()))
        token = self.signer.sign(claims)
        explain = {
            "tee": tee,
            "submods": explain_subs,
            "reference_values": sorted(references),
            "init_data": init_data_toml is not None,
        }
        _log.info(
            "attestation of %s appraised: %s",
            tee,
            {k: v["ear.status"] for k, v in explain_subs.items()},
        )
        insecure = tuple(dict.fromkeys(r for s in sets for r in s.claims.insecure))
        return AttestationResult(token=token, claims=claims, explain=explain, insecure=insecure)

    # -- policy admin ----------------------------------------------------------------------
    @staticmethod
    def _check_id(policy_id: str) -> None:
        if not _POLICY_ID_RE.match(policy_id):
            raise EvidenceError(
                "policy id must be 1-128 characters of [A-Za-z0-9_.-]", reason="policy.id"
            )

    def set_policy(self, policy_id: str, policy: str) -> None:
        """Validate (parses with regorus) and store ``<id>.rego`` (overwrites)."""
        self._check_id(policy_id)
        validate(policy, POLICY_RULES)
        self._store.put(POLICY_NAMESPACE, f"{policy_id}.rego", policy.encode("utf-8"))
        _log.info("attestation policy %s updated", policy_id)

    def get_policy(self, policy_id: str) -> str:
        self._check_id(policy_id)
        raw = self._store.get(POLICY_NAMESPACE, f"{policy_id}.rego")
        if raw is None:
            raise NotFoundError(
                f"attestation policy {policy_id!r} not found",
                reason="policy.not_found",
                fix=f"upload it: kbs-client config set-attestation-policy --id {policy_id}",
            )
        return raw.decode("utf-8", "replace")

    def list_policies(self) -> dict[str, str]:
        """``{policy_id: sha256 hex of its text}``."""
        out: dict[str, str] = {}
        for key in self._store.list_keys(POLICY_NAMESPACE):
            if key.endswith(".rego"):
                raw = self._store.get(POLICY_NAMESPACE, key) or b""
                out[key[: -len(".rego")]] = hashlib.sha256(raw).hexdigest()
        return out

    # -- keys --------------------------------------------------------------------------------
    def public_jwk(self) -> dict[str, Any]:
        return self.signer.public_jwk()

    def jwks(self) -> dict[str, Any]:
        return self.signer.jwks()
