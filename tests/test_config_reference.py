"""docs/config-reference.md is generated from the config parser and must be current; the
generator sees every key the parser reads (an unknown key stays an error)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from trustpod.errors import ConfigError
from trustpod.kbs.config import parse_config
from trustpod.kbs.config_reference import DESCRIPTIONS, collect, render

DOC = Path(__file__).resolve().parents[1] / "docs" / "config-reference.md"


def test_committed_reference_is_current() -> None:
    assert DOC.read_text() == render(), (
        "regenerate: .venv/bin/python -m trustpod.kbs.config_reference > docs/config-reference.md"
    )


def test_every_described_key_is_read_by_the_parser() -> None:
    read = {e.ref for e in collect()}
    assert set(DESCRIPTIONS) <= read, sorted(set(DESCRIPTIONS) - read)


def test_reference_covers_the_deployment_keys() -> None:
    text = render()
    for needle in ("`storage_type`", "`vault_url`", "`client_secret_env`", "`at_rest_key_env`"):
        assert needle in text


def test_unknown_keys_stay_errors(tmp_path: Path) -> None:
    text = "[http_server]\ninsecure_http = true\n[trustpod]\nnot_a_key = 1\n"
    with pytest.raises(ConfigError, match="not_a_key"):
        parse_config(tomllib.loads(text), tmp_path / "k.toml")
