"""Verifier registry fails closed; the CLI maps errors to exit codes and prints the fix."""

from __future__ import annotations

from typing import Any

import pytest

from trustpod.cli.main import build_parser, exit_code_for, main
from trustpod.errors import (
    ConfigError,
    DependencyError,
    EvidenceError,
    PolicyDenied,
    VerificationError,
)
from trustpod.verifiers.base import TeeClaims, VerifierRegistry, VerifyInput


class _Fake:
    tee = "fake"

    def verify(self, evidence: Any, expected: VerifyInput) -> list[TeeClaims]:
        return [TeeClaims({"ok": evidence})]


def test_empty_registry_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        VerifierRegistry({})


def test_unknown_tee_is_refused() -> None:
    reg = VerifierRegistry({"fake": _Fake()})
    with pytest.raises(VerificationError) as err:
        reg.get("snp-unknown")
    assert err.value.reason == "verifier.unknown_tee"


def test_registry_dispatches() -> None:
    import datetime as dt

    reg = VerifierRegistry({"fake": _Fake()})
    out = reg.verify("fake", 1, VerifyInput(b"", None, dt.datetime.now(dt.UTC)))
    assert out[0].claims == {"ok": 1} and out[0].tee_class == "cpu"


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ConfigError("c"), 2),
        (DependencyError("d"), 3),
        (EvidenceError("e"), 4),
        (VerificationError("v"), 1),
        (PolicyDenied("p"), 1),
    ],
)
def test_exit_codes(exc: Exception, code: int) -> None:
    assert exit_code_for(exc) == code  # type: ignore[arg-type]


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert "trustpod" in capsys.readouterr().out
    assert build_parser().prog == "trustpod"
