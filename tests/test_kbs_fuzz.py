"""hypothesis: random bodies on every KBS endpoint give a 4xx error body, never a 500."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kbs_support import builtin_kbs, serve
from trustpod.kbs.config import parse_config
from trustpod.storage.memory import MemoryStore

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=12), c, max_size=4),
    max_leaves=20,
)
KEYS = st.sampled_from(
    [
        "version",
        "tee",
        "extra-params",
        "runtime-data",
        "tee-evidence",
        "init-data",
        "nonce",
        "tee-pubkey",
        "primary_evidence",
        "additional_evidence",
        "policy",
        "policy_id",
        "payload",
    ]
)
SHAPED = st.recursive(
    st.none() | st.text(max_size=10) | st.just("0.4.0") | st.just("sample"),
    lambda c: st.dictionaries(KEYS, c, max_size=5),
    max_leaves=15,
)


@pytest.fixture(scope="module")
def client() -> Any:
    text = '[http_server]\ninsecure_http = true\n[admin]\nauthorization_mode = "InsecureAllowAll"\n'
    # the built-in attestation service and RVPS, as `trustpod kbs serve` runs them
    app, _ = builtin_kbs(
        parse_config(tomllib.loads(text), Path("/tmp/fuzz.toml")), store=MemoryStore()
    )
    with serve(app) as url, httpx.Client(base_url=url) as c:
        # an authed session so /attest reaches the body parser
        r = c.post("/kbs/v0/auth", json={"version": "0.4.0", "tee": "sample", "extra-params": ""})
        assert r.status_code == 200
        yield c


PRINTABLE = st.characters(min_codepoint=33, max_codepoint=126)
PATHS = [
    "/kbs/v0/auth",
    "/kbs/v0/attest",
    "/kbs/v0/resource-policy",
    "/kbs/v0/attestation-policy",
    "/kbs/v0/reference-value",
]


@settings(max_examples=150, deadline=None)
@given(body=JSON | SHAPED, path=st.sampled_from(PATHS))
def test_random_json_is_4xx(client: Any, body: Any, path: str) -> None:
    r = client.post(path, content=json.dumps(body))
    assert r.status_code < 500 or r.status_code == 503, (path, body, r.text)
    if r.status_code >= 400:
        assert r.json()["type"].startswith("https://github.com/confidential-containers/kbs/errors/")


@settings(max_examples=60, deadline=None)
@given(raw=st.binary(max_size=200), path=st.sampled_from(PATHS))
def test_random_bytes_is_4xx(client: Any, raw: bytes, path: str) -> None:
    r = client.post(path, content=raw)
    assert 400 <= r.status_code < 500 or r.status_code == 200, (path, raw, r.text)


@settings(max_examples=60, deadline=None)
@given(
    token=st.text(PRINTABLE, min_size=1, max_size=300),
    path=st.text(PRINTABLE, max_size=40),
)
def test_random_tokens_and_paths(client: Any, token: str, path: str) -> None:
    headers = {"authorization": "Bearer " + token}
    url = "/kbs/v0/resource/" + path.replace("?", "").replace("#", "")
    r = client.get(url, headers=headers)
    assert r.status_code in (401, 404), (url, r.text)
