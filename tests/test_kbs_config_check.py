"""``trustpod kbs config check FILE``: every problem of a config in one run."""

from __future__ import annotations

from pathlib import Path

import pytest

from trustpod.cli.main import main
from trustpod.errors import ConfigError
from trustpod.kbs._toml import ConfigProblems
from trustpod.kbs.config import load_config

# an OSC-era config: legacy keys and values spread over every section
OLD = """
sockets = ["0.0.0.0:8080"]
insecure_api = true

[http_server]
sockets = ["127.0.0.1:8080"]
insecure_http = "yes"
worker_count = 0

[attestation_token]
insecure_key = true

[attestation_service]
type = "coco_as_grpc"

[storage_backend]
storage_type = "LocalFs"

[admin]
insecure_api = true

[[plugins]]
name = "sample"
"""


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    f = tmp_path / "kbs-config.toml"
    f.write_text(OLD)
    with pytest.raises(ConfigProblems) as err:
        load_config(f)
    reasons = [p.reason for p in err.value.problems]
    assert reasons.count("config.unknown_key") == 3  # sockets, insecure_api, insecure_key
    assert reasons.count("config.type") == 2  # insecure_http, worker_count
    assert reasons.count("config.unsupported") == 3  # AS type, LocalFs, plugin
    assert "config.legacy_admin" in reasons
    # a wrongly typed insecure_http does not also claim the TLS files are missing
    assert "config.tls_required" not in reasons
    assert err.value.reason == "config.problems"


def test_cli_lists_every_problem_with_its_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "kbs-config.toml"
    f.write_text(OLD)
    assert main(["kbs", "config", "check", str(f)]) == 2
    err = capsys.readouterr().err
    assert "9 problems [config.problems]" in err
    for needle in (
        "unknown key 'sockets'",
        "unknown key 'insecure_api'",
        "attestation_token.insecure_key",
        "http_server.insecure_http must be true or false",
        "http_server.worker_count must be an integer >= 1",
        "coco_as_grpc",
        "LocalFs",
        "plugin 'sample'",
        "admin.insecure_api",
    ):
        assert needle in err, needle
    assert err.count("fix:") >= 10  # one per problem plus the overall one


def test_one_problem_keeps_its_own_reason(tmp_path: Path) -> None:
    f = tmp_path / "kbs-config.toml"
    f.write_text('[http_server]\ninsecure_http = true\nsocket = ["127.0.0.1:1"]\n')
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert not isinstance(err.value, ConfigProblems)
    assert err.value.reason == "config.unknown_key"


def test_a_good_config_checks_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kbs", "init", "--dir", str(tmp_path / "kbs"), "--listen", "127.0.0.1:0"]) == 0
    capsys.readouterr()
    cfg = tmp_path / "kbs" / "kbs-config.toml"
    assert main(["kbs", "config", "check", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{cfg.resolve()}: OK (HTTPS on 127.0.0.1:0")


def test_wrong_table_types_are_collected(tmp_path: Path) -> None:
    f = tmp_path / "kbs-config.toml"
    f.write_text('http_server = 3\nplugins = [1, {name = "resource"}]\n[trustpod]\nnope = 1\n')
    with pytest.raises(ConfigProblems) as err:
        load_config(f)
    text = err.value.diagnostics()
    assert "[http_server] must be a table" in text
    assert "[plugins[0]] must be a table" in text
    assert "unknown key 'trustpod.nope'" in text
