"""The JCS fast path gives rfc8785's bytes (or its refusal) for any JSON value."""

from __future__ import annotations

from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from trustpod._internal.jcs import canonical_json
from trustpod.errors import EvidenceError

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.text(alphabet=st.characters(max_codepoint=0x7F))
    | st.sampled_from(["\x00", "\x1f", "\x7f", '"\\', "\u2028", "\ud800", "\U0001f600", "\ue000"])
)
KEYS = st.text(max_size=6) | st.sampled_from(["a", "b", "\ue000", "\U0001f600", "tee-pubkey"])
VALUES = st.recursive(
    SCALARS,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(KEYS, c, max_size=4),
    max_leaves=20,
)


def _reference(value: Any) -> bytes | None:
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError):
        return None


@settings(max_examples=400, deadline=None)
@given(VALUES)
def test_fast_path_equals_rfc8785(value: Any) -> None:
    want = _reference(value)
    if want is None:
        with pytest.raises(EvidenceError):
            canonical_json(value)
    else:
        assert canonical_json(value) == want


def test_runtime_data_shape() -> None:
    runtime = {
        "nonce": "4Jj2kKk3mA==",
        "tee-pubkey": {"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": "x", "y": "y"},
        "additional-evidence": "",
    }
    assert canonical_json(runtime) == rfc8785.dumps(runtime)
