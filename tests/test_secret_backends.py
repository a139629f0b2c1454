"""Resources in HashiCorp Vault (KV v2 and v1, via hvac) and Azure Key Vault (the real
azure-keyvault-secrets + azure-identity SDKs): against faithful fakes over HTTPS on 127.0.0.1
(tests/fake_secret_stores.py; trustme CA), and against a real ``vault server -dev`` when the
``vault`` binary is installed (it is not packaged by Debian; the test says so when skipping).
Then whole KBS flows with each backend: admin writes and attested reads through the same resource
API and metrics, values sealed at rest before they reach the backend, and backend failures
answered with 503 naming the backend."""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

pytest.importorskip("hvac")
pytest.importorskip("azure.keyvault.secrets")

from fake_secret_stores import FakeAzureKeyVault, FakeVault
from kbs_support import serve
from replica_support import flow, provision_reference_values
from storage_servers import free_port
from trustpod.errors import ConfigError, DependencyError, NotFoundError
from trustpod.storage.azure_keyvault import (
    MAX_PATH_BYTES,
    AzureKeyVaultStore,
    path_from_name,
    secret_name,
)
from trustpod.storage.port import KeyValueStore
from trustpod.storage.secret_settings import AzureKeyVaultConfig, VaultConfig
from trustpod.storage.vault import VaultKvStore

TOKEN = "hvs.test-root-token"
# h11: Vault's LIST method; clients keep connections alive, so do not wait for them at the end
FAKE_SERVER: dict[str, Any] = {"http": "h11", "timeout_graceful_shutdown": 1}
TENANT, CLIENT, CLIENT_SECRET = "72f988bf-0000-0000-0000-2d7cd011db47", "kbs-app", "s3cr3t"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(p))
    return p


@pytest.fixture(scope="module")
def vault(ca: trustme.CA) -> Iterator[tuple[FakeVault, str]]:
    fake = FakeVault(TOKEN)
    with serve(fake.app, cert=ca.issue_cert("127.0.0.1"), **FAKE_SERVER) as url:
        yield fake, url


@pytest.fixture(scope="module")
def vault_v1(ca: trustme.CA) -> Iterator[tuple[FakeVault, str]]:
    fake = FakeVault(TOKEN, mount="kv", kv_version=1)
    with serve(fake.app, cert=ca.issue_cert("127.0.0.1"), **FAKE_SERVER) as url:
        yield fake, url


AKV_HOST = "trustpod.vault.test"  # the SDK wants the vault to be a subdomain of the resource


@pytest.fixture(scope="module")
def akv(ca: trustme.CA) -> Iterator[tuple[FakeAzureKeyVault, str]]:
    """The fake vault at https://trustpod.vault.test:<port>, challenge resource
    https://vault.test:<port>: *.test names resolve to 127.0.0.1 inside this process only."""
    real = socket.getaddrinfo

    def resolve(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.endswith(".test"):
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    fake = FakeAzureKeyVault(TENANT, CLIENT, CLIENT_SECRET)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket, "getaddrinfo", resolve)
        with serve(fake.app, cert=ca.issue_cert(AKV_HOST), **FAKE_SERVER) as local:
            port = local.rsplit(":", 1)[1]
            url = f"https://{AKV_HOST}:{port}"
            fake.base = url
            fake.resource = f"https://vault.test:{port}"
            yield fake, url


def _exercise(store: KeyValueStore) -> None:
    assert store.get("repository", "default/key/a") is None
    assert store.put("repository", "default/key/a", b"\x00one\xff")
    assert store.get("repository", "default/key/a") == b"\x00one\xff"
    assert not store.put("repository", "default/key/a", b"two", overwrite=False)
    assert store.get("repository", "default/key/a") == b"\x00one\xff"
    assert store.put("repository", "default/key/a", b"three")
    assert store.get("repository", "default/key/a") == b"three"
    assert store.put("repository", "other/cert_x/tls.pem", b"")
    assert store.get("repository", "other/cert_x/tls.pem") == b""
    assert store.list_keys("repository") == ["default/key/a", "other/cert_x/tls.pem"]
    assert store.delete("repository", "default/key/a")
    assert not store.delete("repository", "default/key/a")
    assert store.get("repository", "default/key/a") is None
    assert store.put("repository", "default/key/a", b"again")  # a deleted name is reusable
    assert store.list_keys("repository") == ["default/key/a", "other/cert_x/tls.pem"]
    with pytest.raises(ConfigError):
        store.get("kbs_protocol_session", "x")


def test_vault_kv2_fake(vault: tuple[FakeVault, str], ca_file: Path) -> None:
    fake, url = vault
    store = VaultKvStore(VaultConfig(url, TOKEN, ca_certs=(ca_file,)))
    _exercise(store)
    # upstream's layout: path repo/type/tag, field "data" = base64 of the bytes
    assert fake.data["default/key/a"][-1] == {"data": base64.b64encode(b"again").decode()}
    assert len(fake.data["default/key/a"]) == 1  # deleted with all versions, then written anew
    bad = VaultKvStore(VaultConfig(url, "wrong", ca_certs=(ca_file,)))
    with pytest.raises(DependencyError, match="HashiCorp Vault read failed") as e:
        bad.get("repository", "default/key/a")
    assert e.value.reason == "storage.vault.read"
    untrusted = VaultKvStore(VaultConfig(url, TOKEN))  # our CA not trusted: TLS fails closed
    with pytest.raises(DependencyError, match="HashiCorp Vault"):
        untrusted.get("repository", "default/key/a")
    fake.sealed = True
    try:
        with pytest.raises(DependencyError, match="HashiCorp Vault write failed"):
            store.put("repository", "default/key/b", b"x")
    finally:
        fake.sealed = False
    store.close()


def test_vault_kv1_fake(vault_v1: tuple[FakeVault, str], ca_file: Path) -> None:
    fake, url = vault_v1
    store = VaultKvStore(
        VaultConfig(url, TOKEN, mount_path="kv", kv_version=1, ca_certs=(ca_file,))
    )
    _exercise(store)
    assert fake.data["default/key/a"][-1] == {"data": base64.b64encode(b"again").decode()}


def test_vault_unreachable() -> None:
    store = VaultKvStore(VaultConfig(f"http://127.0.0.1:{free_port()}", TOKEN, timeout_s=1))
    t0 = time.monotonic()
    with pytest.raises(DependencyError, match="HashiCorp Vault read failed"):
        store.get("repository", "a/b/c")
    assert time.monotonic() - t0 < 5


def test_real_vault_dev_server(tmp_path: Path) -> None:
    exe = os.environ.get("VAULT_BIN") or shutil.which("vault")
    if exe is None:
        pytest.skip("no `vault` binary (HashiCorp does not publish it to Debian or PyPI)")
    port = free_port()
    proc = subprocess.Popen(
        [
            exe,
            "server",
            "-dev",
            f"-dev-root-token-id={TOKEN}",
            f"-dev-listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/v1/sys/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "vault -dev did not start"
            time.sleep(0.1)
        _exercise(VaultKvStore(VaultConfig(url, TOKEN)))  # dev mode mounts KV v2 at secret/
    finally:
        proc.terminate()
        proc.wait(10)


def _akv_config(url: str, ca_file: Path, secret: str = CLIENT_SECRET) -> AzureKeyVaultConfig:
    return AzureKeyVaultConfig(
        url,
        credential="client_secret",
        tenant_id=TENANT,
        client_id=CLIENT,
        client_secret=secret,
        authority_host=url,
        ca_certs=(ca_file,),
        timeout_s=5,
    )


def test_azure_key_vault_fake_with_the_real_sdk(
    akv: tuple[FakeAzureKeyVault, str], ca_file: Path
) -> None:
    fake, url = akv
    store = AzureKeyVaultStore(_akv_config(url, ca_file))
    _exercise(store)
    name = secret_name("default/key/a")
    assert fake.secrets[name]["value"] == base64.b64encode(b"again").decode()
    assert fake.secrets[name]["tags"] == {"trustpod-path": "default/key/a"}
    assert fake.tokens  # the SDK went through the challenge and the client-credentials grant
    store.close()
    bad = AzureKeyVaultStore(_akv_config(url, ca_file, secret="wrong"))
    with pytest.raises(DependencyError, match="Azure Key Vault read failed"):
        bad.get("repository", "default/key/a")


def test_azure_secret_names() -> None:
    for path in ("default/key/1", "A/b_c/d.e-f", "x" * (MAX_PATH_BYTES - 4) + "/a/b"):
        name = secret_name(path)
        assert len(name) <= 127 and all(c.isalnum() or c == "-" for c in name)
        assert path_from_name(name) == path and path_from_name(name.upper()) == path
    assert secret_name("a/B/c") != secret_name("a/b/c")  # case kept despite case-blind names
    assert path_from_name("unrelated-secret") is None
    with pytest.raises(NotFoundError):
        secret_name("x" * MAX_PATH_BYTES + "/a/b")


# -- whole KBS flows over each backend -------------------------------------------------------


def _kbs_config(tmp: Path, plugin: str) -> tuple[Path, str]:
    from trustpod.kbs.init_dir import init_kbs_dir

    res = init_kbs_dir(tmp / "kbs", f"127.0.0.1:{free_port()}", insecure_http=True)
    text = res.config.read_text()
    old = '[[plugins]]\nname = "resource"\nstorage_backend_type = "kvstorage"\n'
    assert old in text
    res.config.write_text(text.replace(old, plugin))
    return res.config, res.admin_token.read_text().strip()


@contextlib.contextmanager
def _kbs_flow(config: Path, admin: str) -> Iterator[tuple[httpx.Client, dict[str, str]]]:
    from trustpod.kbs.config import load_config
    from trustpod.kbs.wiring import build_app

    app = build_app(load_config(config))
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as c:
        h = {"authorization": f"Bearer {admin}"}
        assert c.post("/kbs/v0/resource/default/key/v", content=b"via backend", headers=h)
        provision_reference_values(c, admin)
        assert flow([c], "default/key/v") == b"via backend"
        metrics = c.get("/metrics").text
        assert 'kbs_resource_writes_total{resource_path="default/key/v"} 1.0' in metrics
        assert 'kbs_resource_reads_total{resource_path="default/key/v"} 1.0' in metrics
        yield c, h


def _assert_503(c: httpx.Client, h: dict[str, str], backend: str) -> None:
    r = c.post("/kbs/v0/resource/default/key/w", content=b"x", headers=h)
    assert r.status_code == 503, r.text
    assert backend in r.json()["detail"]
    with pytest.raises(AssertionError, match="resource 503"):
        flow([c], "default/key/v")


def test_kbs_with_vault(
    vault: tuple[FakeVault, str], ca_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, url = vault
    monkeypatch.setenv("TRUSTPOD_TEST_VAULT_TOKEN", TOKEN)
    plugin = f"""[[plugins]]
name = "resource"
storage_backend_type = "Vault"
vault_url = "{url}"
token_env = "TRUSTPOD_TEST_VAULT_TOKEN"
mount_path = "secret"
verify_ssl = true
ca_certs = ["{ca_file}"]
"""
    config, admin = _kbs_config(tmp_path, plugin)
    with _kbs_flow(config, admin) as (c, h):
        stored = base64.b64decode(fake.data["default/key/v"][-1]["data"])
        assert b"via backend" not in stored  # sealed with the at-rest key before Vault sees it
        fake.sealed = True
        try:
            _assert_503(c, h, "HashiCorp Vault")
        finally:
            fake.sealed = False
        assert flow([c], "default/key/v") == b"via backend"  # recovers by itself


def test_kbs_with_azure_key_vault(
    akv: tuple[FakeAzureKeyVault, str],
    ca_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, url = akv
    monkeypatch.setenv("TRUSTPOD_TEST_AKV_SECRET", CLIENT_SECRET)
    plugin = f"""[[plugins]]
name = "resource"
storage_backend_type = "AzureKeyVault"
vault_url = "{url}"
credential = "client_secret"
tenant_id = "{TENANT}"
client_id = "{CLIENT}"
client_secret_env = "TRUSTPOD_TEST_AKV_SECRET"
authority_host = "{url}"
ca_certs = ["{ca_file}"]
"""
    config, admin = _kbs_config(tmp_path, plugin)
    with _kbs_flow(config, admin) as (c, h):
        stored = base64.b64decode(fake.secrets[secret_name("default/key/v")]["value"])
        assert b"via backend" not in stored
        fake.fail_with = 403
        try:
            _assert_503(c, h, "Azure Key Vault")
        finally:
            fake.fail_with = None
        assert flow([c], "default/key/v") == b"via backend"


VAULT = 'storage_backend_type = "Vault"\nvault_url = "https://v"\n'


@pytest.mark.parametrize(
    ("plugin", "match"),
    [
        ('storage_backend_type = "Vault"\nvault_url = "https://v:8200"\n', "token"),
        ('storage_backend_type = "Vault"\ntoken = "t"\n', "vault_url"),
        (VAULT + 'token = "t"\nkv_version = 3\n', "kv_version"),
        (
            'storage_backend_type = "Vault"\nvault_url = "https://v"\ntoken_env = "NOPE_X"\n',
            "NOPE_X",
        ),
        ('storage_backend_type = "AzureKeyVault"\nvault_url = "http://x"\n', "HTTPS"),
        (
            'storage_backend_type = "AzureKeyVault"\nvault_url = "https://x"\n'
            'credential = "client_secret"\n',
            "tenant_id",
        ),
        ('storage_backend_type = "Aliyun"\n', "not supported"),
        (
            'storage_backend_type = "Vault"\nvault_url = "https://v"\ntoken = "t"\nbogus = 1\n',
            "bogus",
        ),
    ],
)
def test_plugin_config_errors(tmp_path: Path, plugin: str, match: str) -> None:
    import tomllib

    from trustpod.kbs.config import parse_config

    text = f'[http_server]\ninsecure_http = true\n[[plugins]]\nname = "resource"\n{plugin}'
    with pytest.raises(ConfigError, match=match):
        parse_config(tomllib.loads(text), tmp_path / "k.toml")


def test_plugin_config_parsed(tmp_path: Path, ca_file: Path) -> None:
    import tomllib

    from trustpod.kbs.config import parse_config

    text = f"""[http_server]
insecure_http = true
[[plugins]]
name = "resource"
storage_backend_type = "Vault"
vault_url = "https://vault.example:8200/"
token = "hvs.x"
mount_path = "/kv/"
kv_version = 1
ca_certs = ["{ca_file}"]
"""
    cfg = parse_config(tomllib.loads(text), tmp_path / "k.toml")
    assert cfg.resource_backend == VaultConfig(
        "https://vault.example:8200", "hvs.x", "kv", 1, True, (ca_file,)
    )
    assert "hvs.x" not in repr(cfg.resource_backend)
    assert cfg.plugins == ("resource",)
