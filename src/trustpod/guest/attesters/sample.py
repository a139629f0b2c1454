"""The ``sample`` attester: no hardware, for tests and demos (never for production trust).

Evidence shape (``primary_evidence``), identical to upstream guest-components
``attester/src/sample`` and what Trustee's sample verifier (``deps/verifier/src/sample``) reads::

    {"svn": "1", "report_data": "<standard base64 (with padding) of the report data bytes>"}

* ``report_data`` carries the exact report-data bytes (48 for the default SHA-384 runtime-data
  digest; no padding). The verifier base64-decodes it and compares it **exactly** with the
  expected report data (§1.5 table).
* Upstream's sample *verifier* does not read anything else from the evidence: it emits the claims
  ``{"svn": <evidence svn>, "report_data": <evidence string>, "launch_digest": "abcde",
  "platform_version": {"major": 1, "minor": 4}, "debug": false}`` itself (fixed values), which is
  what the default CPU policy's sample rules check (``launch_digest``, ``svn``,
  ``platform_version.major/minor``, ``debug``). Unknown evidence members are ignored upstream
  (serde default); ``svn`` is required, ``report_data`` defaults to ``""``.
* There is no initdata binding: the sample verifier logs "not supported" and skips it, so
  ``bind_init_data`` is a no-op here (as upstream, which has no hardware to bind into).
"""

from __future__ import annotations

import logging
from typing import Any

from trustpod._internal.b64 import b64_encode
from trustpod.guest.attesters.base import unsupported

__all__ = ["SAMPLE_SVN", "SampleAttester"]

log = logging.getLogger(__name__)

#: The ``svn`` upstream's sample attester always reports.
SAMPLE_SVN = "1"


class SampleAttester:
    """Emits ``{"svn": "1", "report_data": b64std(report_data)}``."""

    tee = "sample"

    def __init__(self, *, svn: str = SAMPLE_SVN) -> None:
        self._svn = svn

    def get_evidence(self, report_data: bytes) -> Any:
        return {"svn": self._svn, "report_data": b64_encode(report_data)}

    def bind_init_data(self, digest: bytes) -> None:
        # Upstream's sample verifier ignores initdata ("not supported, skip"); nothing to bind.
        log.debug("sample attester: initdata digest not bound (no hardware)")

    def extend_runtime_measurement(self, event_digest: bytes, register_index: int) -> None:
        raise unsupported(self.tee, "runtime measurement")
