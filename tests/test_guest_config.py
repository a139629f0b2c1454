"""aa.toml / cdh.toml / guest.toml in upstream's shape; unknown keys name key and file."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustpod.errors import ConfigError, TrustpodError
from trustpod.guest.config import parse_aa, parse_cdh, parse_guest

AA_FULL = """
[token_configs.kbs]
url = "https://kbs.example:8080/"
cert = "PEM"
tee_key_algorithm = "ECDH-ES+A256KW-P521"
[token_configs.coco_as]
url = "http://as.example:8000"
[eventlog_config]
init_pcr = 17
enable_eventlog = true
[log]
level = "debug"
"""

CDH_FULL = """
socket = "unix:///run/confidential-containers/cdh.sock"
skip_sealed_secret_verification = false
[aa]
aa_socket = "unix:///run/aa.sock"
[kbc]
name = "cc_kbc"
url = "http://kbs:8080"
kbs_cert = "PEM"
[[credentials]]
resource_uri = "kbs:///default/test/file"
path = "/run/confidential-containers/cdh/kbs/test/file"
[image]
work_dir = "/run/image-rs"
[log]
level = "info"
"""


def test_full_configs_parse() -> None:
    aa = parse_aa(AA_FULL)
    assert aa.kbs is not None and aa.kbs.url == "https://kbs.example:8080"
    assert aa.kbs.tee_key_algorithm == "ECDH-ES+A256KW-P521" and aa.eventlog_enabled
    assert aa.coco_as_url == "http://as.example:8000" and aa.log_level == "debug"
    cdh = parse_cdh(CDH_FULL)
    assert cdh.kbc.url == "http://kbs:8080" and cdh.kbc.kbs_cert == "PEM"
    assert cdh.credentials[0].resource_uri.path == "default/test/file"
    assert cdh.image == {"work_dir": "/run/image-rs"}
    assert parse_aa("").kbs is None


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (AA_FULL.replace("init_pcr", "init_pcrs"), "eventlog_config.init_pcrs"),
        (AA_FULL + "\nfoo = 1\n", "foo"),
        (AA_FULL.replace('url = "https://kbs', 'uri = "https://kbs'), "token_configs.kbs"),
    ],
)
def test_unknown_aa_keys_named(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_aa(text, "/etc/aa.toml")
    assert needle in exc.value.message and "/etc/aa.toml" in exc.value.message


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (CDH_FULL.replace("kbs_cert", "kbs_certificate"), "kbc.kbs_certificate"),
        (CDH_FULL.replace('path = "/run', 'paht = "/run'), "credentials[0].paht"),
        (CDH_FULL.replace("skip_sealed_secret_verification", "skip_verify"), "skip_verify"),
    ],
)
def test_unknown_cdh_keys_named(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_cdh(text, "cdh.toml")
    assert needle in exc.value.message and exc.value.reason == "config.unknown_key"


def test_bad_values() -> None:
    for text in (
        'skip_sealed_secret_verification = "yes"\n[kbc]\nurl = "http://k"',
        '[kbc]\nname = "offline_fs_kbc"\nurl = "http://k"',
        '[kbc]\nurl = "file:///x"',
        "socket = 1",
        '[kbc]\nurl = "http://k"\n[[credentials]]\nresource_uri = "kbs:///a/b"\npath = "/x"',
    ):
        with pytest.raises(TrustpodError):
            parse_cdh(text)
    with pytest.raises(ConfigError):
        parse_aa('[token_configs.kbs]\nurl = "http://k"\ntee_key_algorithm = "RSA1_5"')
    with pytest.raises(ConfigError):
        parse_guest("attester = 'sample'\nlisten = '1'")
    assert (
        parse_guest("attester = 'sample'\napi_listen = 'unix:/tmp/s'").api_listen == "unix:/tmp/s"
    )


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_random_config_text_raises_only_config_errors(text: str) -> None:
    for parser in (parse_aa, parse_cdh, parse_guest):
        try:
            parser(text)
        except TrustpodError:
            pass
