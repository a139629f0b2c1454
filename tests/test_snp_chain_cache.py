"""The SNP chain cache remembers refused chains too (verifiers try several CA sets per report)."""

from __future__ import annotations

from typing import Any

import pytest

from trustpod.errors import TrustpodError
from trustpod.verifiers import snp_chain
from trustpod.verifiers.snp_chain import ChainCache, SnpChain, TrustAnchors


def test_refused_chain_is_not_verified_again(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = snp_chain.verify_chain

    def counting(chain: SnpChain, anchors: TrustAnchors) -> Any:
        calls.append(1)
        return real(chain, anchors)

    monkeypatch.setattr(snp_chain, "verify_chain", counting)
    cache, anchors = ChainCache(), TrustAnchors.default()
    chain = SnpChain(b"not a vcek", b"not an ask", b"not an ark")
    reasons = set()
    for _ in range(3):
        with pytest.raises(TrustpodError) as err:
            cache.verify(chain, anchors)
        reasons.add((type(err.value), err.value.reason))
    assert len(calls) == 1 and len(reasons) == 1  # same refusal, computed once
    other = SnpChain(b"another vcek", b"not an ask", b"not an ark")
    with pytest.raises(TrustpodError):
        cache.verify(other, anchors)
    assert len(calls) == 2
