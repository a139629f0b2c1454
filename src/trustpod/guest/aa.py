"""Attestation agent (guest-and-control-plane.md §1.5, §2): evidence, tokens, initdata binding.

``AttestationAgent`` wraps one ``Attester``:

* ``start()`` binds the initdata digest into the TEE (PCR 8 extend on vTPM platforms, HOST_DATA /
  MRCONFIGID comparison on SNP/TDX); a mismatch stops the AA with a clear error, as upstream
  ("The initdata supplied by the parameter is inconsistent…"). Platforms without binding log it.
* ``get_evidence(runtime_data)``: the primary evidence JSON with ``runtime_data`` as report data.
* ``get_token("kbs")``: ``{"token", "tee_keypair"}`` like upstream's ``GetToken``; the token is
  cached until ``token_refresh_margin_s`` before ``exp`` (upstream AA re-attests on every call;
  docs/compat.md). The attestation message carries the initdata TOML, so the token has
  ``init_data_claims``.
* ``extend_runtime_measurement(domain, operation, content)``: an AAEL event (§2.3) extended into
  the platform register, when ``eventlog_config.enable_eventlog`` is on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
import threading
from collections.abc import Callable
from enum import Enum
from typing import Any

from trustpod.errors import ConfigError, EvidenceError, TrustpodError, VerificationError
from trustpod.guest.attesters.base import Attester, UnsupportedAttesterFeature
from trustpod.guest.config import AaConfig
from trustpod.guest.kbs_client import KbsClient
from trustpod.initdata import InitData

__all__ = [
    "AAEL_TAG",
    "KBS_TOKEN_TYPE",
    "MAX_RUNTIME_DATA_BYTES",
    "AttestationAgent",
    "ExtendResult",
    "aael_event",
]

log = logging.getLogger(__name__)

#: ``TaggedEvent`` id "AAEL" (§2.3).
AAEL_TAG = 0x4141454C
#: Largest ``runtime_data`` accepted by ``get_evidence`` (the widest TEE report field).
MAX_RUNTIME_DATA_BYTES = 64
#: The only token type served (upstream also has ``coco_as``).
KBS_TOKEN_TYPE = "kbs"  # noqa: S105 (a token type name, not a password)

KbsClientFactory = Callable[[AaConfig, Attester, str | None], KbsClient]


class ExtendResult(Enum):
    """Upstream's ``ExtendRuntimeMeasurement`` result enum."""

    OK = 0
    NOT_SUPPORTED = 1
    NOT_ENABLED = 2


def aael_event(domain: str, operation: str, content: str) -> bytes:
    """``TaggedEvent`` bytes: ``u32 "AAEL" | u32 size | "<domain> <operation> <content>"``."""
    for name, value in (("domain", domain), ("operation", operation), ("content", content)):
        if "\n" in value:
            raise EvidenceError(f"runtime measurement {name} must not contain a newline")
    text = f"{domain} {operation} {content}".encode()
    return struct.pack("<II", AAEL_TAG, len(text)) + text


class AttestationAgent:
    """One attester, one KBS token source, the initdata it was started with."""

    def __init__(
        self,
        attester: Attester,
        config: AaConfig,
        *,
        initdata: InitData | None = None,
        client_factory: KbsClientFactory,
    ) -> None:
        self.attester = attester
        self.config = config
        self.initdata = initdata
        self._factory = client_factory
        self._client: KbsClient | None = None
        self._lock = threading.Lock()
        self.eventlog: list[bytes] = []

    @property
    def tee(self) -> str:
        return self.attester.tee

    # (1) initdata binding at start (§1.5)
    def start(self) -> None:
        if self.initdata is None:
            log.info("AA started without initdata; nothing to bind")
            return
        self.bind_init_data(self.initdata.digest)

    def bind_init_data(self, digest: bytes) -> None:
        try:
            self.attester.bind_init_data(digest)
        except UnsupportedAttesterFeature:
            log.warning("the %s attester cannot bind initdata; continuing (as upstream)", self.tee)
            return
        except TrustpodError as exc:
            raise VerificationError(
                f"the initdata is inconsistent with the {self.tee} TEE: {exc.message}",
                reason="aa.initdata_binding",
                fix=exc.fix or "start the VM with the same initdata the TEE measured",
            ) from exc
        log.info("initdata digest %s bound into the %s TEE", digest.hex()[:16], self.tee)

    # (2) evidence (RuntimeData used raw as report data, upstream GetEvidence)
    def get_evidence(self, runtime_data: bytes) -> bytes:
        if len(runtime_data) > MAX_RUNTIME_DATA_BYTES:
            raise EvidenceError(
                f"runtime_data is {len(runtime_data)} bytes; at most {MAX_RUNTIME_DATA_BYTES}",
                reason="aa.runtime_data_size",
            )
        evidence: Any = self.attester.get_evidence(runtime_data)
        return json.dumps(evidence, separators=(",", ":")).encode("utf-8")

    # (3) token: one KBS client (one TEE key) for the AA's lifetime, token cached until near exp
    def kbs_client(self) -> KbsClient:
        with self._lock:
            if self._client is None:
                toml = None if self.initdata is None else self.initdata.raw.decode("utf-8")
                self._client = self._factory(self.config, self.attester, toml)
            return self._client

    def get_token(self, token_type: str = KBS_TOKEN_TYPE) -> bytes:
        if token_type != KBS_TOKEN_TYPE:
            raise ConfigError(
                f"token type {token_type!r} is not supported (only 'kbs')",
                reason="aa.token_type",
            )
        if self.config.kbs is None:
            raise ConfigError(
                "aa.toml has no [token_configs.kbs]",
                reason="aa.no_kbs",
                fix="add [token_configs.kbs] url = '<KBS URL>' to aa.toml (or the initdata)",
            )
        client = self.kbs_client()
        with self._lock:
            token = client.get_token()
        pem = client.tee_key.to_pem().decode("ascii")
        return json.dumps({"token": token, "tee_keypair": pem}).encode("utf-8")

    # (4) runtime measurement (§2.3): digest = H(TaggedEvent), extended into init_pcr
    def extend_runtime_measurement(
        self, domain: str, operation: str, content: str, register_index: int | None = None
    ) -> ExtendResult:
        if not self.config.eventlog_enabled:
            return ExtendResult.NOT_ENABLED
        event = aael_event(domain, operation, content)
        digest = hashlib.new("sha384" if self.tee == "tdx" else "sha256", event).digest()
        index = self.config.eventlog_init_pcr if register_index is None else register_index
        try:
            self.attester.extend_runtime_measurement(digest, index)
        except UnsupportedAttesterFeature:
            return ExtendResult.NOT_SUPPORTED
        self.eventlog.append(struct.pack("<I", index) + event)
        return ExtendResult.OK

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
