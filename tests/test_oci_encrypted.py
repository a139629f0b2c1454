"""Encrypted images against a real docker-registry on 127.0.0.1 and a real KBS over TLS:
skopeo (Go ocicrypt) interop both ways, the guest pull through the attested CDH, and a denied
key, a wrong key and a tampered layer refused before a byte is unpacked."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import vectors_root
from oci_support import (
    Registry,
    guest_puller,
    push_blob,
    push_manifest,
    push_secret_message_image,
    skopeo_copy,
)
from trustpod.cli.main import main
from trustpod.errors import PolicyDenied, TrustpodError, VerificationError
from trustpod.oci import puller as puller_mod
from trustpod.oci.decrypt import LayerKeys, load_rsa_private_key
from trustpod.oci.encrypt_cli import DirKekStore
from trustpod.oci.puller import FileKeyLoader, ImagePuller
from trustpod.oci.registry import RegistryClient
from trustpod.oci.settings import OciSettings

VEC = vectors_root() / "guest-components/image-rs/test_data"
PUB, PRIV = VEC / "public_key_for_tests.pem", VEC / "private_key_for_tests.pem"
DENY_POLICY = (
    'package policy\ndefault allow = false\nallow if { data["resource-path"][2] != "denied" }\n'
)


@dataclass
class World:
    tmp: Path
    reg: Registry
    layout: Path
    keys: Path  # KBS-path-shaped key dir (the host's stand-in for the KBS)
    kek: bytes

    @property
    def host(self) -> str:
        return self.reg.host

    def settings(self) -> OciSettings:
        return OciSettings(insecure_http_registries=frozenset({self.host}))

    def puller(self, name: str, keys: LayerKeys | None) -> ImagePuller:
        return ImagePuller(
            RegistryClient(self.settings()),
            self.tmp / f"cache-{name}",
            policy=None,
            keys=FileKeyLoader(),
            pgp=None,
            layer_keys=keys,
        )

    def encrypt(self, *args: str) -> None:
        assert main(["image", "encrypt", *args, "--insecure-http-registry", self.host]) == 0


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    for tool, pkg in (("docker-registry", "docker-registry"), ("skopeo", "skopeo")):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (apt package {pkg})")
    if not Path("/bin/busybox").exists():
        pytest.skip("busybox not installed (apt package busybox-static)")
    tmp = tmp_path_factory.mktemp("ocienc")
    reg = Registry(tmp / "registry")
    try:
        layout = push_secret_message_image(tmp, reg.host, "only for attested pods\n", "plain")
        keys = tmp / "keys"
        (keys / "default" / "image-key").mkdir(parents=True)
        kek = bytes(range(100, 132))
        (keys / "default" / "image-key" / "app").write_bytes(kek)
        yield World(tmp, reg, layout, keys, kek)
    finally:
        reg.close()


def _layers(world: World, repo: str, ref: str) -> list[dict[str, Any]]:
    r = httpx.get(
        f"http://{world.host}/v2/{repo}/manifests/{ref}",
        headers={"accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    r.raise_for_status()
    return list(r.json()["layers"])


def _check_rootfs(rootfs: Path) -> None:
    assert (rootfs / "bin" / "busybox").is_file()
    assert (rootfs / "etc" / "secret-message").read_text() == "only for attested pods\n"


def _need_vectors() -> None:
    if not PUB.is_file():
        pytest.skip(f"guest-components vectors absent ({VEC})")


def test_encrypt_registry_to_registry_and_pull(world: World) -> None:
    """``trustpod image encrypt docker://… docker://… --key-uri``; the host puller decrypts it
    with the KEK (a KBS-shaped key dir); only the chosen layer is encrypted."""
    kid = "kbs:///default/image-key/app"
    key_file = str(world.keys / "default" / "image-key" / "app")
    src, dst = f"docker://{world.host}/plain/app:1", f"docker://{world.host}/enc/app:1"
    world.encrypt(src, dst, "--key-uri", kid, "--key-file", key_file)
    layers = _layers(world, "enc/app", "1")
    assert [x["mediaType"] for x in layers] == [
        "application/vnd.oci.image.layer.v1.tar+gzip+encrypted"
    ] * 2
    ann = layers[0]["annotations"]
    packet = json.loads(
        base64.b64decode(ann["org.opencontainers.image.enc.keys.provider.attestation-agent"])
    )
    assert packet["kid"] == kid and packet["wrap_type"] == "A256GCM"
    pub = json.loads(base64.b64decode(ann["org.opencontainers.image.enc.pubopts"]))
    assert pub["cipher"] == "AES_256_CTR_HMAC_SHA256"
    p = world.puller("a", LayerKeys(kbs=DirKekStore(world.keys)))
    try:
        _check_rootfs(p.pull(f"{world.host}/enc/app:1", world.tmp / "b-enc").rootfs)
    finally:
        p.close()
    # without a key source the encrypted image is refused, nothing unpacked
    p = world.puller("b", None)
    try:
        with pytest.raises(TrustpodError) as info:
            p.pull(f"{world.host}/enc/app:1", world.tmp / "b-nokey")
        assert info.value.reason == "image.layer_encrypted"
        assert not (world.tmp / "b-nokey" / "rootfs").exists()
    finally:
        p.close()
    world.encrypt(
        src, f"docker://{world.host}/enc/app:top", "--key-uri", kid, "--key-file", key_file,
        "--layers", "-1",
    )  # fmt: skip
    types = [x["mediaType"] for x in _layers(world, "enc/app", "top")]
    assert types[0].endswith("+gzip") and types[1].endswith("+encrypted")


def test_skopeo_jwe_encrypted_decrypts_in_our_puller(world: World) -> None:
    """Go ocicrypt (skopeo ``--encryption-key jwe:``, the vectors' RSA key) → our puller."""
    _need_vectors()
    skopeo_copy(
        f"oci:{world.layout}:plain",
        f"docker://{world.host}/jwe/skopeo:1",
        "--encryption-key",
        f"jwe:{PUB}",
    )
    assert ("org.opencontainers.image.enc.keys.jwe") in _layers(world, "jwe/skopeo", "1")[0][
        "annotations"
    ]
    priv = load_rsa_private_key(PRIV.read_bytes(), "vector")
    p = world.puller("jwe", LayerKeys(jwe_keys=[priv]))
    try:
        _check_rootfs(p.pull(f"{world.host}/jwe/skopeo:1", world.tmp / "b-jwe").rootfs)
    finally:
        p.close()


def test_our_encryption_decrypts_with_skopeo(world: World) -> None:
    """``trustpod image encrypt`` (provider packet + JWE recipient) → ``skopeo copy
    --decryption-key`` (Go ocicrypt) restores the original layer blobs byte for byte."""
    _need_vectors()
    out = world.tmp / "enc-layout"
    world.encrypt(
        f"oci:{world.layout}:plain", f"oci:{out}:x", "--jwe-recipient", str(PUB),
        "--key-uri", "kbs:///default/image-key/app",
        "--key-file", str(world.keys / "default" / "image-key" / "app"),
    )  # fmt: skip
    dec = world.tmp / "dec-layout"
    skopeo_copy(f"oci:{out}:x", f"oci:{dec}:x", "--decryption-key", str(PRIV))
    # and through the registry: ours pushed by trustpod, pulled and decrypted by skopeo
    world.encrypt(
        f"oci:{world.layout}:plain", f"docker://{world.host}/jwe/ours:1",
        "--jwe-recipient", str(PUB),
    )  # fmt: skip
    skopeo_copy(
        f"docker://{world.host}/jwe/ours:1", f"oci:{dec}:reg", "--decryption-key", str(PRIV)
    )

    def layer_digests(layout: Path, tag: str) -> list[str]:
        index = json.loads((layout / "index.json").read_text())
        (m,) = [
            m
            for m in index["manifests"]
            if m["annotations"]["org.opencontainers.image.ref.name"] == tag
        ]
        raw = (layout / "blobs" / "sha256" / m["digest"].split(":")[1]).read_text()
        return [x["digest"] for x in json.loads(raw)["layers"]]

    assert layer_digests(dec, "x") == layer_digests(world.layout, "plain")
    assert layer_digests(dec, "reg") == layer_digests(world.layout, "plain")
    assert layer_digests(out, "x") != layer_digests(world.layout, "plain")


def _skopeo_has_keyprovider() -> bool:
    r = subprocess.run(
        ["skopeo", "copy", "--encryption-key", "provider:attestation-agent:x", "oci:/nonexistent",
         "oci:/nonexistent2"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return "protocol not recognized" not in r.stderr


def test_skopeo_keyprovider_interop_both_ways(world: World) -> None:
    """skopeo ``provider:attestation-agent`` through ``trustpod keyprovider`` (cmd) → our puller,
    and ours → skopeo ``--decryption-key provider:attestation-agent``."""
    if not _skopeo_has_keyprovider():
        pytest.skip(
            "this skopeo's ocicrypt has no keyprovider support (Debian skopeo 1.9.3 vendors "
            "ocicrypt 1.0.3; keyprovider needs ocicrypt >= 1.1)"
        )
    import sys

    cfg = world.tmp / "ocicrypt.json"
    cfg.write_text(
        json.dumps(
            {
                "key-providers": {
                    "attestation-agent": {
                        "cmd": {
                            "path": sys.executable,
                            "args": ["-m", "trustpod.cli", "keyprovider", "--key-dir",
                                     str(world.keys)],
                        }
                    }
                }
            }
        )
    )  # fmt: skip
    env = {"OCICRYPT_KEYPROVIDER_CONFIG": str(cfg)}
    skopeo_copy(
        f"oci:{world.layout}:plain", f"docker://{world.host}/prov/skopeo:1", "--encryption-key",
        "provider:attestation-agent:keyid=kbs:///default/image-key/app", env=env,
    )  # fmt: skip
    p = world.puller("prov", LayerKeys(kbs=DirKekStore(world.keys)))
    try:
        _check_rootfs(p.pull(f"{world.host}/prov/skopeo:1", world.tmp / "b-prov").rootfs)
    finally:
        p.close()
    out = world.tmp / "prov-layout"
    world.encrypt(
        f"oci:{world.layout}:plain", f"oci:{out}:x", "--key-uri", "kbs:///default/image-key/app",
        "--key-file", str(world.keys / "default" / "image-key" / "app"),
    )  # fmt: skip
    skopeo_copy(
        f"oci:{out}:x", f"oci:{world.tmp / 'prov-dec'}:x", "--decryption-key",
        "provider:attestation-agent", env=env,
    )  # fmt: skip


def _tampered(world: World, src_repo: str, dst_repo: str) -> None:
    """The same manifest with one ciphertext byte flipped (digest recomputed, so only the HMAC
    can catch it)."""
    r = httpx.get(
        f"http://{world.host}/v2/{src_repo}/manifests/1",
        headers={"accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    manifest = r.json()
    for desc in [manifest["config"], *manifest["layers"]]:
        blob = httpx.get(f"http://{world.host}/v2/{src_repo}/blobs/{desc['digest']}").content
        if desc is manifest["layers"][0]:
            flipped = bytearray(blob)
            flipped[len(blob) // 2] ^= 0x40
            blob = bytes(flipped)
        desc["digest"] = push_blob(world.host, dst_repo, blob)
        desc["size"] = len(blob)
    push_manifest(world.host, dst_repo, "1", manifest)


def test_tampered_and_wrong_key_never_unpacked(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    kid = "kbs:///default/image-key/app"
    key_file = str(world.keys / "default" / "image-key" / "app")
    world.encrypt(
        f"docker://{world.host}/plain/app:1", f"docker://{world.host}/enc/src:1",
        "--key-uri", kid, "--key-file", key_file,
    )  # fmt: skip
    _tampered(world, "enc/src", "enc/tampered")
    calls: list[Any] = []
    real = puller_mod.unpack_layer

    def spy(blob: Any, *a: Any, **kw: Any) -> None:
        calls.append(blob)
        real(blob, *a, **kw)

    monkeypatch.setattr(puller_mod, "unpack_layer", spy)
    p = world.puller("t", LayerKeys(kbs=DirKekStore(world.keys)))
    try:
        with pytest.raises(VerificationError) as info:
            p.pull(f"{world.host}/enc/tampered:1", world.tmp / "b-t")
        assert info.value.reason == "image.decrypt_hmac"
        assert calls == []  # not one layer reached the unpacker
        assert not (world.tmp / "b-t" / "rootfs").exists()
        assert not (world.tmp / "b-t" / "rootfs.partial").exists()
        _check_rootfs(p.pull(f"{world.host}/enc/src:1", world.tmp / "b-ok").rootfs)
        assert len(calls) == 2
        calls.clear()
    finally:
        p.close()
    wrong = world.tmp / "wrong-keys"
    (wrong / "default" / "image-key").mkdir(parents=True)
    (wrong / "default" / "image-key" / "app").write_bytes(bytes(32))
    p = world.puller("w", LayerKeys(kbs=DirKekStore(wrong)))
    try:
        with pytest.raises(VerificationError) as info:
            p.pull(f"{world.host}/enc/src:1", world.tmp / "b-w")
        assert info.value.reason == "image.decrypt_key"
        assert calls == [] and not (world.tmp / "b-w" / "rootfs").exists()
    finally:
        p.close()


def test_guest_pull_through_attested_cdh(world: World, tmp_path: Path) -> None:
    """A real KBS over TLS; ``trustpod image encrypt --publish`` stores the KEK through the admin
    API; the guest (sample TEE, cdh.toml from initdata) pulls the encrypted image with the KEK
    fetched by the attested CDH; a key the resource policy denies stops the pull, naming the key;
    a JWE layer opens with a private key that is itself a KBS resource."""
    _need_vectors()
    import trustme

    from kbs_support import admin_jwt_kbs, serve

    app, core, token = admin_jwt_kbs(tmp_path, DENY_POLICY)
    core.set_resource("default/image-key/jwe", PRIV.read_bytes())
    core.set_resource("default/image-key/denied", bytes(32))
    ca = trustme.CA()
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    src = f"docker://{world.host}/plain/app:1"
    with serve(app, cert=ca.issue_cert("127.0.0.1")) as url:
        publish = ["--publish", url, "--token-file", str(token), "--cert-file", str(cafile)]
        world.encrypt(
            src, f"docker://{world.host}/guest/app:1", "--key-uri",
            "kbs:///default/image-key/guest", "--key-out", str(tmp_path / "kek"), *publish,
        )  # fmt: skip
        # (the published KEK is what the guest pull below fetches; --key-out keeps a copy)
        world.encrypt(
            src, f"docker://{world.host}/guest/denied:1", "--key-uri",
            "kbs:///default/image-key/denied", "--key-file", str(tmp_path / "kek"),
        )  # fmt: skip
        world.encrypt(src, f"docker://{world.host}/guest/jwe:1", "--jwe-recipient", str(PUB))
        image = (
            "[image]\n"
            f'work_dir = "{tmp_path / "work"}"\n'
            f'insecure_http_registries = ["{world.host}"]\n'
            'jwe_private_key_uris = ["kbs:///default/image-key/jwe"]\n'
        )
        with guest_puller(tmp_path, url, ca.cert_pem.bytes().decode(), image) as puller:
            _check_rootfs(puller.pull(f"{world.host}/guest/app:1", tmp_path / "b1"))
            with pytest.raises(PolicyDenied) as denied:
                puller.pull(f"{world.host}/guest/denied:1", tmp_path / "b2")
            assert denied.value.reason == "image.key_denied"
            assert "kbs:///default/image-key/denied" in str(denied.value)
            assert not (tmp_path / "b2" / "rootfs").exists()
            assert not (tmp_path / "b2" / "rootfs.partial").exists()
            _check_rootfs(puller.pull(f"{world.host}/guest/jwe:1", tmp_path / "b3"))


def test_host_pull_cli_decrypts(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world.encrypt(
        f"docker://{world.host}/plain/app:1", f"docker://{world.host}/enc/cli:1",
        "--key-uri", "kbs:///default/image-key/app",
        "--key-file", str(world.keys / "default" / "image-key" / "app"),
    )  # fmt: skip
    policy = tmp_path / "policy.json"
    policy.write_text('{"default": [{"type": "insecureAcceptAnything"}], "transports": {}}')
    base = ["image", "pull", f"{world.host}/enc/cli:1", "--policy", str(policy)]
    base += ["--insecure-http-registry", world.host]
    assert (
        main([*base, "--dest", str(tmp_path / "p"), "--decryption-key-dir", str(world.keys)]) == 0
    )
    _check_rootfs(tmp_path / "p" / "rootfs")
    missing = tmp_path / "nokeys"
    missing.mkdir()
    rc = main([*base, "--dest", str(tmp_path / "q"), "--decryption-key-dir", str(missing)])
    assert rc != 0 and not (tmp_path / "q" / "rootfs").exists()
    assert "kbs:///default/image-key/app" in capsys.readouterr().err
