"""One error -> HTTP status / exit code table, and the KBS, guest API and CLI all follow it."""

from __future__ import annotations

import pytest

from trustpod.cli.main import exit_code_for
from trustpod.error_table import ERROR_TABLE, http_status, outcome
from trustpod.errors import (
    AuthenticationError,
    ConfigError,
    DependencyError,
    EvidenceError,
    NotFoundError,
    PolicyDenied,
    TrustpodError,
    VerificationError,
)
from trustpod.guest.api import status_for
from trustpod.kbs.http_errors import BodyTimeout, BodyTooLarge, Denial, MalformedBody, error_reply

ROWS = [
    (EvidenceError("x"), 400, 4),
    (VerificationError("x"), 401, 1),
    (AuthenticationError("x"), 401, 1),
    (PolicyDenied("x"), 403, 1),
    (NotFoundError("x"), 404, 1),
    (DependencyError("x"), 503, 3),
    (ConfigError("x"), 503, 2),
    (TrustpodError("x"), 500, 1),
]


@pytest.mark.parametrize(("exc", "status", "code"), ROWS)
def test_every_surface_uses_the_table(exc: TrustpodError, status: int, code: int) -> None:
    assert http_status(exc) == status
    assert error_reply(exc).status == status  # KBS
    assert status_for(exc) == status  # guest API
    assert exit_code_for(exc) == code  # CLI


def test_table_covers_the_whole_tree() -> None:
    assert set(ERROR_TABLE) == {type(e) for e, _, _ in ROWS}


def test_most_specific_class_wins() -> None:
    assert outcome(Denial("x", explain={})).http_status == 403  # a PolicyDenied subclass
    assert outcome(MalformedBody("x")).http_status == 400
    # the KBS transport's own rows
    assert error_reply(BodyTooLarge("x")).status == 413
    assert error_reply(BodyTimeout("x")).status == 408
    assert status_for(BodyTooLarge("x")) == 400  # outside the KBS transport: an EvidenceError
