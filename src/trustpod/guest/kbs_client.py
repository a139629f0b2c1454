"""Synchronous RCAR client for a Trustee-compatible KBS (gc ``kbs_protocol``; guest notes §4).

``attest()`` runs the handshake (``/auth`` → challenge → runtime-data digest → evidence →
``/attest``) and caches the token; ``get_resource(path)`` fetches ``/kbs/v0/resource/<path>``
with ``Authorization: Bearer <token>`` (passport style, as CDH does) and decrypts the JWE with the
TEE key. Status handling follows what upstream's clients act on (trustee-protocol.md §12): 401
re-attests (once per resource GET; the handshake itself is retried ``max_retries`` times), 404 is
``NotFoundError``, and trustpod's KBS answers policy denials with 403 → ``PolicyDenied``.
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from trustpod import __version__
from trustpod._internal.b64 import b64url_decode
from trustpod._internal.clock import Clock, SystemClock
from trustpod._internal.jcs import jcs_digest
from trustpod.errors import (
    AuthenticationError,
    ConfigError,
    DependencyError,
    EvidenceError,
    NotFoundError,
    PolicyDenied,
)
from trustpod.guest.attesters.base import Attester
from trustpod.guest.tee_key import TeeKeyPair
from trustpod.protocol import (
    PROTOCOL_VERSION,
    SESSION_COOKIE,
    SUPPORTED_HASH_ALGORITHMS,
    Attestation,
    AttestResponse,
    Challenge,
    CompositeEvidence,
    ErrorInformation,
    InitDataMsg,
    Request,
    RuntimeData,
    runtime_data_digest,
)
from trustpod.protocol.runtime_data import device_runtime_data_object

__all__ = ["DEFAULT_TIMEOUT_S", "KbsClient", "token_expiry"]

log = logging.getLogger(__name__)

#: Per-request timeout (upstream client: 60 s).
DEFAULT_TIMEOUT_S = 60.0
#: Handshake attempts (upstream ``RCAR_MAX_ATTEMPT``) and the pause between them.
DEFAULT_MAX_RETRIES = 5
DEFAULT_RETRY_DELAY_S = 1.0
#: A cached token is renewed this long before its ``exp``.
DEFAULT_TOKEN_REFRESH_MARGIN_S = 30.0
#: Largest response body read from the KBS.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
#: Headers describing the wire framing of a body we have already decoded.
_BODY_FRAMING_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})


def token_expiry(token: str) -> float | None:
    """The unverified ``exp`` of a JWT (the guest never verifies its own token, as upstream)."""
    parts = token.split(".")
    if len(parts) != 3:
        raise EvidenceError("attestation token is not a JWT", reason="kbs.token_malformed")
    try:
        claims = json.loads(b64url_decode(parts[1], field="token payload"))
    except ValueError as exc:
        raise EvidenceError(
            "attestation token payload is not JSON", reason="kbs.token_malformed"
        ) from exc
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


def _error_text(response: httpx.Response) -> str:
    """``Variant: detail`` from an ErrorInformation body, or a note that the body was not one."""
    try:
        info = ErrorInformation.from_json(response.json())
    except (ValueError, EvidenceError):
        snippet = response.text[:200].replace("\n", " ")
        return f"HTTP {response.status_code} (body is not ErrorInformation JSON: {snippet!r})"
    return f"HTTP {response.status_code} {info.variant}: {info.detail}"


def _session_cookie(response: httpx.Response) -> str | None:
    for header in response.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        if name.strip() == SESSION_COOKIE:
            return rest.split(";", 1)[0].strip()
    return None


class KbsClient:
    """RCAR + resource client; one TEE key per client (upstream: one per ``KbsClient``)."""

    def __init__(
        self,
        url: str,
        attester: Attester | None,
        *,
        tee_key: TeeKeyPair | None = None,
        cert_file: str | None = None,
        init_data_toml: str | None = None,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry_delay_s: float = DEFAULT_RETRY_DELAY_S,
        token_refresh_margin_s: float = DEFAULT_TOKEN_REFRESH_MARGIN_S,
        http_client: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Clock | None = None,
        sleep: Callable[[float], None] = time.sleep,
        device_attesters: Sequence[Attester] = (),
    ) -> None:
        if max_retries < 1:
            raise ConfigError("max_retries must be at least 1", reason="guest.kbs_client")
        self.url = url.rstrip("/")
        self.attester = attester
        #: device attesters (GPUs): their evidence is sent as ``additional_evidence``
        self.device_attesters = tuple(device_attesters)
        self.tee_key = tee_key or TeeKeyPair.generate_ec()
        self._init_data = init_data_toml
        self._max_retries = max_retries
        self._retry_delay = retry_delay_s
        self._margin = token_refresh_margin_s
        self._clock = clock or SystemClock()
        self._sleep = sleep
        self._token: str | None = None
        self._token_exp: float | None = None
        if http_client is None:
            verify: ssl.SSLContext | bool = True
            if cert_file:
                verify = ssl.create_default_context()
                try:
                    verify.load_verify_locations(cafile=cert_file)
                except (OSError, ssl.SSLError) as exc:
                    raise ConfigError(f"cannot load KBS CA certificate {cert_file}: {exc}") from exc
            http_client = httpx.Client(
                timeout=timeout,
                verify=verify,
                transport=transport,
                headers={"User-Agent": f"trustpod-kbs-client/{__version__}"},
            )
        self._http = http_client
        if token is not None:
            self.set_token(token)

    # -- plumbing ---------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> KbsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            with self._http.stream(method, f"{self.url}/kbs/v0/{path}", **kwargs) as streamed:
                body = bytearray()
                for chunk in streamed.iter_bytes():
                    body += chunk
                    if len(body) > MAX_RESPONSE_BYTES:
                        raise EvidenceError(
                            f"KBS response larger than {MAX_RESPONSE_BYTES} bytes",
                            reason="kbs.response_too_large",
                        )
        except httpx.TransportError as exc:
            raise DependencyError(
                f"KBS {self.url} unreachable: {type(exc).__name__}: {exc}",
                reason="kbs.unreachable",
                fix="check --url, the network and (for https) --cert-file",
            ) from exc
        finally:
            self._http.cookies.clear()  # the session cookie is sent explicitly, never from a jar
        headers = [
            (name, value)
            for name, value in streamed.headers.multi_items()
            if name.lower() not in _BODY_FRAMING_HEADERS
        ]
        return httpx.Response(streamed.status_code, headers=headers, content=bytes(body))

    @staticmethod
    def _json(response: httpx.Response, what: str) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise EvidenceError(
                f"KBS {what} response is not JSON", reason="kbs.bad_response"
            ) from exc

    @staticmethod
    def _raise_for(response: httpx.Response, what: str) -> None:
        status = response.status_code
        text = f"KBS {what} failed: {_error_text(response)}"
        if status == 401:
            raise AuthenticationError(text, reason="kbs.unauthorized")
        if status == 403:
            raise PolicyDenied(text, reason="kbs.policy_denied")
        if status == 404:
            raise NotFoundError(text, reason="kbs.not_found")
        if 400 <= status < 500:
            raise EvidenceError(text, reason="kbs.rejected")
        raise DependencyError(text, reason="kbs.server_error")

    # -- RCAR -------------------------------------------------------------------------------

    def _handshake(self) -> str:
        if self.attester is None:
            raise ConfigError("no attester configured; cannot attest", reason="guest.no_attester")
        # (1) /auth: Request → Challenge (+ session cookie).
        request = Request(
            version=PROTOCOL_VERSION,
            tee=self.attester.tee,
            extra_params={"supported-hash-algorithms": list(SUPPORTED_HASH_ALGORITHMS)},
        )
        response = self._send("POST", "auth", json=request.to_json())
        if response.status_code != 200:
            self._raise_for(response, "auth")
        challenge = Challenge.from_json(self._json(response, "auth"))
        cookie = _session_cookie(response)
        # (2) report_data = HASH(JCS({additional-evidence, nonce, tee-pubkey})), §1.5.
        jwk = self.tee_key.public_jwk()
        alg = challenge.selected_hash_algorithm
        additional = ""
        if self.device_attesters:  # devices bind HASH(JCS({nonce, tee-pubkey}))
            device_digest = jcs_digest(device_runtime_data_object(challenge.nonce, jwk), alg)
            devices = {a.tee: a.get_evidence(device_digest) for a in self.device_attesters}
            additional = json.dumps(devices, separators=(",", ":"))
        digest = runtime_data_digest(challenge.nonce, jwk, additional, alg)
        evidence = self.attester.get_evidence(digest)
        attestation = Attestation(
            runtime_data=RuntimeData(nonce=challenge.nonce, tee_pubkey=self.tee_key.tee_pubkey),
            tee_evidence=CompositeEvidence(
                primary_evidence=evidence, additional_evidence=additional
            ),
            init_data=None if self._init_data is None else InitDataMsg("toml", self._init_data),
        )
        # (3) /attest with the session cookie → token.
        headers = {"Cookie": f"{SESSION_COOKIE}={cookie}"} if cookie else {}
        response = self._send("POST", "attest", json=attestation.to_json(), headers=headers)
        if response.status_code != 200:
            self._raise_for(response, "attest")
        return AttestResponse.from_json(self._json(response, "attest")).token

    def attest(self) -> str:
        """Run the RCAR handshake (retrying 401/5xx/unreachable) and cache the token."""
        for attempt in range(1, self._max_retries + 1):
            try:
                token = self._handshake()
            except (AuthenticationError, DependencyError) as exc:
                if attempt == self._max_retries:
                    raise
                log.info("RCAR attempt %d/%d failed: %s", attempt, self._max_retries, exc.message)
                self._sleep(self._retry_delay)
                continue
            self.set_token(token)
            return token
        raise AssertionError("unreachable")  # pragma: no cover

    def set_token(self, token: str) -> None:
        """Use an existing token (passport mode); it must match ``tee_key``."""
        self._token_exp = token_expiry(token)
        self._token = token

    def get_token(self) -> str:
        """The cached token while it is not within the refresh margin of ``exp``, else attest."""
        if self._token is not None and (
            self._token_exp is None or self._clock.time() < self._token_exp - self._margin
        ):
            return self._token
        return self.attest()

    # -- resources --------------------------------------------------------------------------

    def get_resource(self, path: str, *, plugin: str = "resource") -> bytes:
        """GET ``/kbs/v0/<plugin>/<path>`` and decrypt the JWE response."""
        path = path.strip("/")
        if not path or any(seg in ("", ".", "..") for seg in path.split("/")):
            raise ConfigError(f"invalid resource path {path!r}", reason="guest.resource_path")
        for attempt in (1, 2):
            token = self.get_token()
            response = self._send(
                "GET", f"{plugin}/{path}", headers={"Authorization": f"Bearer {token}"}
            )
            if response.status_code == 200:
                return self.tee_key.decrypt(self._json(response, "resource"))
            if response.status_code == 401 and attempt == 1 and self.attester is not None:
                log.info("KBS answered 401 for %s; re-attesting once", path)
                self._token = None
                continue
            self._raise_for(response, f"GET {plugin}/{path}")
        raise AssertionError("unreachable")  # pragma: no cover
