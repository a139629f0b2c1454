"""The attestation-policy input document (pure; upstream ``broker.rs transform_claims``).

``{<tee>: claims minus report_data/init_data, "report_data", "runtime_data_claims", "init_data",
"init_data_claims"}``. ``report_data``/``runtime_data_claims`` appear only when the verifier
emitted a ``report_data`` claim, ``init_data``/``init_data_claims`` only when it emitted
``init_data``. With ``verbose=False`` the runtime data's ``additional-evidence`` is dropped
(upstream ``verbose_token = false``). Keys are sorted, as upstream's ``BTreeMap``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trustpod.errors import VerificationError

__all__ = ["build_policy_input"]


def _claim_string(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise VerificationError(
            f"verifier claim {name!r} is not a string", reason="attestation.claims"
        )
    return value


def build_policy_input(
    tee: str,
    claims: Mapping[str, Any],
    runtime_data_claims: Any,
    init_data_claims: Any,
    *,
    verbose: bool = True,
) -> dict[str, Any]:
    """Build the document given to the policy as ``input`` (and put in the token)."""
    rest = dict(claims)
    out: dict[str, Any] = {}
    # (1) init_data lifted to the top, with the parsed initdata claims.
    if "init_data" in rest:
        out["init_data"] = _claim_string(rest.pop("init_data"), "init_data")
        out["init_data_claims"] = init_data_claims
    # (2) report_data lifted to the top, with the runtime data it binds.
    if "report_data" in rest:
        out["report_data"] = _claim_string(rest.pop("report_data"), "report_data")
        rdc = runtime_data_claims
        if not verbose and isinstance(rdc, Mapping):
            rdc = {k: v for k, v in rdc.items() if k != "additional-evidence"}
        out["runtime_data_claims"] = rdc
    # (3) Everything else under the TEE's serde name.
    out[tee] = rest
    return dict(sorted(out.items()))
