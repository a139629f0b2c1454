"""kbs-config.toml: upstream v0.21 shape read as-is, strict keys, HTTPS by default, [trustpod]."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustpod.errors import ConfigError
from trustpod.kbs.config import load_config, parse_config
from trustpod.kbs.init_dir import init_kbs_dir

UPSTREAM_SHAPE = """
[http_server]
sockets = ["0.0.0.0:8080"]
insecure_http = false
private_key = "/etc/kbs/key.pem"
certificate = "/etc/kbs/cert.pem"
payload_request_size = 4
worker_count = 2
tls_profile = "intermediate"

[attestation_token]
trusted_jwk_sets = []
trusted_certs_paths = []
extra_teekey_paths = ["/custom/tee-pubkey"]
insecure_header_jwk = true

[attestation_service]
type = "coco_as_builtin"
timeout = 7

[attestation_service.attestation_token_broker]
duration_min = 10
issuer_name = "me"

[attestation_service.attestation_token_broker.signer]
key_path = "token.key"

[attestation_service.rvps_config]
type = "BuiltIn"

[attestation_service.verifier_config]
snp_verifier = { vcek_sources = [{ type = "OfflineStore", path = "/x" }] }

[admin]
authorization_mode = "DenyAll"

[storage_backend]
storage_type = "Memory"

[[plugins]]
name = "resource"
storage_backend_type = "kvstorage"

[trustpod]
upstream_status_codes = true
max_resource_path_labels = 3
"""


def load(text: str, tmp_path: Path) -> Any:
    f = tmp_path / "kbs-config.toml"
    f.write_text(text)
    return load_config(f)


def test_upstream_shape(tmp_path: Path) -> None:
    c = load(UPSTREAM_SHAPE, tmp_path)
    assert c.http_server.sockets == ("0.0.0.0:8080",)
    assert c.http_server.max_body_bytes == 4 * 1024 * 1024
    assert c.http_server.worker_count == 2
    assert c.attestation_token.insecure_header_jwk is True
    assert c.attestation_token.extra_teekey_paths == ("/custom/tee-pubkey",)
    assert c.attestation_service.timeout == 7
    broker = c.attestation_service.attestation_token_broker
    assert broker.duration_min == 10 and broker.issuer_name == "me"
    assert broker.signer_key_path == tmp_path / "token.key"
    assert "snp_verifier" in c.attestation_service.verifier_config
    assert c.admin is not None and c.admin.authorization_mode == "DenyAll"
    assert c.storage_backend.storage_type == "Memory"
    assert c.trustpod.upstream_status_codes is True
    assert c.trustpod.max_resource_path_labels == 3


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("worker_count = 2", "worker_count = 2\nworkers = 3", "http_server.workers"),
        ("duration_min = 10", "duration_min = 10\nfoo = 1", "attestation_token_broker.foo"),
        ('name = "resource"', 'name = "resource"\ndir_path = "/x"', "plugins[0].dir_path"),
        ("[trustpod]", "[trustpod]\nbogus = true", "trustpod.bogus"),
        ("[admin]", "bogus_top = 1\n[admin]", "bogus_top"),
    ],
)
def test_unknown_key_names_key_and_file(tmp_path: Path, old: str, new: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(UPSTREAM_SHAPE.replace(old, new, 1), tmp_path)
    assert key in info.value.message
    assert "kbs-config.toml" in info.value.message
    assert info.value.reason == "config.unknown_key"


def test_https_by_default(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load("[http_server]\nsockets = ['127.0.0.1:1']\n", tmp_path)
    assert "private_key" in info.value.message and info.value.fix
    assert load("[http_server]\ninsecure_http = true\n", tmp_path).admin is None


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[attestation_service]\ntype = "coco_as_grpc"', "not supported"),
        ('[storage_backend]\nstorage_type = "LocalFs"', "Sqlite"),
        ('[storage_backend]\nstorage_type = "Sqlite"', "backends.sqlite.path"),
        ("[admin]\ninsecure_api = true", "pre-v0.21"),
        ('[admin]\nauthorization_mode = "Simple"', "unknown"),
        ('[admin]\nauthorization_mode = "AuthenticatedAuthorization"', "needs"),
        ("[http_server]\npayload_request_size = 'big'", "integer"),
    ],
)
def test_rejections_with_fix(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(
            "[http_server]\ninsecure_http = true\n" + text.replace("[http_server]\n", ""), tmp_path
        )
    assert needle in info.value.diagnostics()


def test_init_dir_config_loads(tmp_path: Path) -> None:
    res = init_kbs_dir(tmp_path / "kbs", "127.0.0.1:8443")
    c = load_config(res.config)
    assert c.http_server.certificate is not None and c.http_server.certificate.is_file()
    assert c.admin is not None and c.admin.authorization_mode == "AuthenticatedAuthorization"
    assert c.admin.acls[0].pattern.fullmatch("/kbs/v0/resource/a/b/c")
    assert c.storage_backend.storage_type == "Sqlite"
    assert (tmp_path / "kbs" / "admin-token").stat().st_mode & 0o077 == 0
    with pytest.raises(ConfigError, match="already exists"):
        init_kbs_dir(tmp_path / "kbs", "127.0.0.1:8443")
    insecure = init_kbs_dir(tmp_path / "plain", "127.0.0.1:8080", insecure_http=True)
    assert load_config(insecure.config).http_server.insecure_http


@settings(max_examples=100, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
        max_leaves=10,
    )
)
def test_random_config_raises_only_config_error(value: Any) -> None:
    raw = {"http_server": {"insecure_http": True}, "x": value}
    for doc in (raw, {"attestation_service": value}, {"admin": value}, {"storage_backend": value}):
        try:
            parse_config(doc if isinstance(doc, dict) else {}, Path("/tmp/k.toml"))
        except ConfigError:
            pass


def test_toml_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid TOML"):
        load("[http_server\n", tmp_path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    assert tomllib


def test_verifier_config_mapping(tmp_path: Path) -> None:
    from trustpod.kbs.verifier_config import verifier_settings

    text = """[http_server]
insecure_http = true
[attestation_service.verifier_config]
snp_verifier = { vcek_sources = [{ type = "KDS", base_url = "https://kds.example" },
                                 { type = "OfflineStore", path = "/var/vcek" }] }
dcap_verifier = { collateral_service = "https://pcs.example/v4/", tcb_update_type = "early" }
tpm_verifier = {}
[trustpod.verifier_options.tdx]
insecure_skip_crl = true
"""
    c = load(text, tmp_path)
    s = verifier_settings(
        c.source,
        c.attestation_service.verifier_config,
        collateral_dir=None,
        emulated_roots=(),
        max_evidence_bytes=1024,
        options=c.trustpod.verifier_options,
    )
    assert s.amd_kds_url == "https://kds.example"
    assert s.intel_pcs_url == "https://pcs.example/v4/"
    assert s.collateral_dir == Path("/var/vcek")
    assert s.extra["tdx"] == {"insecure_skip_crl": True, "tcb_update_type": "early"}
    bad = text.replace('tcb_update_type = "early"', 'tcb_update_type = "late"')
    c = load(bad, tmp_path)
    with pytest.raises(ConfigError, match="early or standard"):
        verifier_settings(
            c.source,
            c.attestation_service.verifier_config,
            collateral_dir=None,
            emulated_roots=(),
            max_evidence_bytes=1,
            options={},
        )
