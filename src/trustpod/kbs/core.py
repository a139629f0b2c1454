"""KBS request logic without HTTP: RCAR handshake, attested resource reads, admin operations.

The Starlette layer (``trustpod.kbs.app``) parses transport details (cookies, headers, body size)
and maps errors to statuses; everything decided here raises ``trustpod.errors`` types.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from trustpod._internal.b64 import b64url_decode
from trustpod._internal.clock import Clock
from trustpod.attestation.token_verify import token_digest
from trustpod.errors import AuthenticationError, EvidenceError, NotFoundError, VerificationError
from trustpod.kbs.audit import AuditLog
from trustpod.kbs.config import KbsConfig
from trustpod.kbs.http_errors import Denial
from trustpod.kbs.metrics import KbsMetrics
from trustpod.kbs.ports import AttestationPort, RvpsPort
from trustpod.kbs.resource_policy import ResourcePolicy
from trustpod.kbs.session_limits import SessionAdmission
from trustpod.kbs.sessions import AttestedSession, AuthedSession, SessionStore
from trustpod.kbs.tokens import TokenVerifier, find_tee_pubkey
from trustpod.protocol import Attestation, Request, TeePubKey, encrypt_response, new_nonce
from trustpod.protocol.runtime_data import hash_algorithm_for_tee, runtime_data_object
from trustpod.storage.port import KeyValueStore

__all__ = ["KbsCore", "parse_resource_path"]

RESOURCE_NS = "repository"
_TEEKEY_MEMO = 4096
#: Entries of each per-process memo (attestation explanations, JWE responses by token+value).
_MEMO_ENTRIES = 4096
#: Only responses of values up to this size are kept (bounds the memo at ~25 MiB).
_MEMO_MAX_VALUE_BYTES = 4096
_SEGMENT = re.compile(r"[a-zA-Z0-9_\-]+[a-zA-Z0-9_\-\.]*")


def parse_resource_path(path: str) -> tuple[str, str, str]:
    """``repo/type/tag`` with upstream's segment regex (§1.7), else 404 InvalidRequestPath."""
    parts = path.split("/")
    if len(parts) != 3 or not all(_SEGMENT.fullmatch(p) for p in parts):
        raise NotFoundError(
            f"invalid resource path {path[:200]!r}: expected <repo>/<type>/<tag>",
            reason="kbs.path_invalid",
            fix="each segment: letters, digits, '_', '-', '.' (not first)",
        )
    return parts[0], parts[1], parts[2]


def _submods(claims: Mapping[str, Any]) -> dict[str, Any]:
    """Per submod: status, trust vector and appraisal policy (no evidence, no keys)."""
    submods = claims.get("submods")
    if not isinstance(submods, Mapping):
        return {}
    out: dict[str, Any] = {}
    for name, sub in submods.items():
        if isinstance(sub, Mapping):
            out[str(name)] = {
                k: sub.get(k)
                for k in ("ear.status", "ear.trustworthiness-vector", "ear.appraisal-policy-id")
            }
    return out


@dataclass
class KbsCore:
    config: KbsConfig
    store: KeyValueStore
    sessions: SessionStore
    clock: Clock
    attestation: AttestationPort
    rvps: RvpsPort
    tokens: TokenVerifier
    policy: ResourcePolicy
    metrics: KbsMetrics
    audit: AuditLog
    _teekeys: dict[str, TeePubKey] = field(default_factory=dict)
    _explains: OrderedDict[bytes, dict[str, Any]] = field(default_factory=OrderedDict)
    _responses: OrderedDict[tuple[bytes, str, bytes], bytes] = field(default_factory=OrderedDict)
    admission: SessionAdmission | None = None  # bounds what /auth may store (wiring sets it)

    # -- RCAR ---------------------------------------------------------------------------------
    def auth(self, body: Any) -> tuple[dict[str, Any], AuthedSession]:
        """``/auth``: Request -> Challenge, a new session (§1.3)."""
        request = Request.from_json(body)
        if self.admission is not None:
            self.admission.check_request(request.extra_params)
        # (1) extra-params is the JSON string "" for every TEE but SE (unsupported here).
        if request.tee == "se":
            raise EvidenceError("TEE 'se' is not supported by trustpod", reason="kbs.tee_se")
        if self.admission is not None:
            self.admission.admit()
        challenge = {"nonce": new_nonce(), "extra-params": ""}
        return challenge, self.sessions.create(request.to_json(), challenge)

    def attest(self, sid: str | None, body: Any) -> tuple[str, AttestedSession]:
        """``/attest``: Attestation -> token (§1.4)."""
        session = self.sessions.get(sid)
        # (1) An attested session returns its token unchanged (backend.rs).
        if isinstance(session, AttestedSession):
            return session.token, session
        attestation = Attestation.from_json(body)
        # (2) The nonce must be the session's challenge nonce.
        if attestation.runtime_data.nonce != session.nonce:
            raise VerificationError(
                "runtime-data nonce does not match the session challenge",
                reason="kbs.nonce_mismatch",
                fix="send the nonce from this session's /auth challenge",
            )
        init_toml = None
        if attestation.init_data is not None:
            if attestation.init_data.format != "toml":
                raise EvidenceError("Unsupported initdata format", reason="kbs.initdata_format")
            init_toml = attestation.init_data.body
        # (3) Runtime data hashed for the report_data check: 3 keys; tee from the session.
        runtime = runtime_data_object(
            attestation.runtime_data.nonce,
            attestation.runtime_data.tee_pubkey.to_json(),
            attestation.tee_evidence.additional_evidence,
        )
        tee = session.tee
        start = time.perf_counter()
        m = self.metrics
        try:
            result = self.attestation.appraise(
                tee,
                attestation.tee_evidence.primary_evidence,
                runtime,
                init_toml,
                hash_algorithm=hash_algorithm_for_tee(tee),
                additional_evidence=attestation.tee_evidence.additional_evidence,
            )
        except Exception:
            m.attestation_failures.labels(tee).inc()
            raise
        finally:
            m.attestation_duration.labels(tee).observe(time.perf_counter() - start)
        m.attestation_successes.labels(tee).inc()
        for reason in result.insecure:  # warned once at start; counted here
            m.insecure_evidence.labels(tee, reason).inc()
        # (4) The token is ours: its claims go straight into the verified-token cache, its
        # explanation into the memo a later denial's audit entry draws on.
        self.tokens.remember(result.token, result.claims)
        self._memo(self._explains, token_digest(result.token), result.explain)
        return result.token, self.sessions.attest(session, result.token)

    def token_from(self, sid: str | None, authorization: str | None) -> str:
        """The token from an attested session cookie, else from ``Authorization: Bearer``."""
        if sid:
            try:
                session = self.sessions.get(sid)
                if isinstance(session, AttestedSession):
                    return session.token
            except AuthenticationError:
                pass
        if authorization and authorization.startswith("Bearer "):
            return authorization[len("Bearer ") :].strip()
        raise AuthenticationError(
            "no attestation token: attest first (session cookie) or send Authorization: Bearer",
            reason="kbs.token_missing",
        )

    # -- resource plugin ---------------------------------------------------------------------
    def get_resource(self, token: str, path: str, query: Mapping[str, str]) -> bytes:
        """The JWE of resource ``path`` for ``token``, as the JSON body of the reply."""
        parts = parse_resource_path(path)
        claims, token_key = self.tokens.verify_keyed(token)
        self._authorize(claims, token_key, "resource", parts, query)
        self.metrics.resource_reads.labels(self.metrics.path_label(path)).inc()
        value = self.store.get(RESOURCE_NS, path)
        if value is None:
            raise NotFoundError(f"resource {path} not found", reason="kbs.resource_not_found")
        # The same token reading the same value gets the same JWE again (ADR 0304): a resend of
        # one message, not a new key agreement; a changed value or another token gets a new one.
        memo_key = (token_key, path, hashlib.sha256(value).digest())
        cached = self._responses.get(memo_key)
        if cached is not None:
            return cached
        small = len(value) <= _MEMO_MAX_VALUE_BYTES
        tee_pubkey = self._tee_pubkey(token, claims)
        jwe = encrypt_response(
            value,
            tee_pubkey,
            insecure_allow_rsa1_5=self.config.trustpod.insecure_allow_rsa1_5,
        )
        body = json.dumps(jwe, separators=(",", ":")).encode()
        if small:
            self._memo(self._responses, memo_key, body)
        return body

    @staticmethod
    def _memo(memo: OrderedDict[Any, Any], key: Any, value: Any) -> None:
        memo[key] = value
        if len(memo) > _MEMO_ENTRIES:
            memo.popitem(last=False)

    def _tee_pubkey(self, token: str, claims: Mapping[str, Any]) -> TeePubKey:
        """The token's TEE key, parsed once per token (bounded memo)."""
        key = self._teekeys.get(token)
        if key is None:
            found = find_tee_pubkey(claims, self.config.attestation_token.extra_teekey_paths)
            try:
                key = TeePubKey.from_json(found)
            except EvidenceError as exc:
                raise AuthenticationError(
                    f"the token's tee-pubkey is invalid: {exc.message}", reason="kbs.jwe_teekey"
                ) from exc
            if len(self._teekeys) >= _TEEKEY_MEMO:
                self._teekeys.clear()
            self._teekeys[token] = key
        return key

    def _authorize(
        self,
        claims: Mapping[str, Any],
        key: bytes,
        plugin: str,
        path: Sequence[str],
        query: Mapping[str, str],
    ) -> None:
        m = self.metrics
        m.policy_evaluations.inc()
        decision = self.policy.evaluate(claims, plugin, path, query, claims_key=key)
        if decision.error is not None:
            m.policy_errors.inc()
        if decision.allow:
            m.policy_approvals.inc()
            return
        m.policy_violations.inc()
        raise Denial(
            f"resource policy denied access to {plugin}/{'/'.join(path)}",
            explain={
                "check": "resource_policy",
                "rule": "data.policy.allow",
                "result": "error" if decision.error else "false",
                "policy_error": decision.error,
                "policy": decision.policy_name,
                "policy_sha256": decision.policy_digest,
                "submods": _submods(claims),
                "token_iss": claims.get("iss"),
                # the attestation service's explanation, when this process issued the token
                "attestation": self._explains.get(key),
            },
        )

    def set_resource(self, path: str, value: bytes) -> None:
        parse_resource_path(path)
        self.metrics.resource_writes.labels(self.metrics.path_label(path)).inc()
        self.store.put(RESOURCE_NS, path, value)

    def delete_resource(self, path: str) -> None:
        parse_resource_path(path)
        self.metrics.resource_deletes.labels(self.metrics.path_label(path)).inc()
        if not self.store.delete(RESOURCE_NS, path):
            raise NotFoundError(f"resource {path} not found", reason="kbs.resource_not_found")

    # -- admin -------------------------------------------------------------------------------
    def set_attestation_policy(self, body: Any) -> None:
        obj = _object(body)
        policy_id, policy = obj.get("policy_id"), obj.get("policy")
        if not isinstance(policy_id, str) or not isinstance(policy, str):
            raise EvidenceError("body needs policy_id and policy strings", reason="kbs.json")
        text = _b64url_text(policy)
        self.attestation.set_policy(policy_id, text)

    def set_resource_policy(self, body: Any) -> None:
        policy = _object(body).get("policy")
        if not isinstance(policy, str):
            raise EvidenceError("body needs a policy string", reason="kbs.json")
        self.policy.set(_b64url_text(policy))

    def register_reference_value(self, body: Any) -> None:
        self.rvps.register(_object(body))

    def get_reference_value(self, name: str) -> Any:
        value = self.rvps.query(name)
        if value is None:
            raise NotFoundError(f"no reference value {name[:128]!r}", reason="rvps.not_found")
        return value


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise EvidenceError("request body must be a JSON object", reason="kbs.json")
    return body


def _b64url_text(value: str) -> str:
    try:
        return b64url_decode(value, field="policy").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EvidenceError("policy is not UTF-8 text", reason="kbs.json") from exc
