"""The image puller against a real docker-registry on 127.0.0.1, images pushed and GPG-signed by
skopeo; trustpod's decision compared with ``skopeo copy --policy`` on the same inputs."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from conftest import vectors_root
from oci_support import (
    GpgKey,
    Registry,
    build_image,
    busybox_rootfs,
    cosign_sign,
    guest_puller,
    load_cosign_private_key,
    push_manifest,
    skopeo_allows,
    skopeo_copy,
)
from trustpod.cli.main import main
from trustpod.errors import AuthenticationError, PolicyDenied, VerificationError
from trustpod.oci.auth import parse_auth_json
from trustpod.oci.config import parse_image_section
from trustpod.oci.decide import ImageRefused
from trustpod.oci.guest import GuestImagePuller
from trustpod.oci.layout import tar_tree
from trustpod.oci.policy import parse_policy
from trustpod.oci.puller import FileKeyLoader, ImagePuller
from trustpod.oci.reference import parse_reference
from trustpod.oci.registry import RegistryClient, resolve_digest
from trustpod.oci.settings import OciSettings
from trustpod.oci.sigstore_config import SigstoreConfig

COSIGN2 = vectors_root() / "guest-components/image-rs/test_data/signature/cosign/cosign2.pub"


@dataclass
class World:
    tmp: Path
    reg: Registry
    key: GpgKey
    regd: Path
    sigs: Path
    digests: dict[str, str] = field(default_factory=dict)
    cosign_pub: Path | None = None

    @property
    def host(self) -> str:
        return self.reg.host

    def settings(self) -> OciSettings:
        return OciSettings(insecure_http_registries=frozenset({self.host}))

    def policy(self, name: str, docker: dict[str, object], default: str = "reject") -> Path:
        path = self.tmp / f"{name}.json"
        path.write_text(
            json.dumps({"default": [{"type": default}], "transports": {"docker": docker}})
        )
        return path

    def puller(self, policy: Path | None, cache: str = "cache") -> ImagePuller:
        return ImagePuller(
            RegistryClient(self.settings()),
            self.tmp / cache,
            policy=parse_policy(policy.read_bytes()) if policy else None,
            keys=FileKeyLoader(),
            pgp=None,
            lookaside=SigstoreConfig(None, {self.host: f"file://{self.sigs}"}),
        )


def _need(tool: str, pkg: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not installed (apt package {pkg})")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    for tool, pkg in (
        ("docker-registry", "docker-registry"),
        ("skopeo", "skopeo"),
        ("gpg", "gnupg"),
        ("gpgv", "gpgv"),
    ):
        _need(tool, pkg)
    if not Path("/bin/busybox").exists():
        pytest.skip("busybox not installed (apt package busybox-static)")
    tmp = tmp_path_factory.mktemp("oci")
    reg = Registry(tmp / "registry")
    key = GpgKey(tmp / "gnupg")
    sigs = tmp / "sigs"
    regd = tmp / "registries.d"
    regd.mkdir()
    (regd / "test.yaml").write_text(
        f"docker:\n  {reg.host}:\n    sigstore: file://{sigs}\n    sigstore-staging: file://{sigs}\n"
    )
    w = World(tmp, reg, key, regd, sigs)
    try:
        root = busybox_rootfs(tmp / "rootfs")
        layout = tmp / "layout"
        w.digests["a"] = build_image(layout, root, "a")
        (root / "etc" / "variant").write_text("b")
        w.digests["b"] = build_image(layout, root, "b")
        (root / "etc" / "variant").write_text("c")
        w.digests["c"] = build_image(layout, root, "c")
        (root / "etc" / "variant").write_text("d")
        w.digests["d"] = build_image(layout, root, "d")
        # a two-layer zstd image whose second layer deletes a file and makes /etc opaque
        top = tmp / "top"
        (top / "etc").mkdir(parents=True)
        (top / "etc" / ".wh..wh..opq").write_text("")
        (top / "etc" / "motd").write_text("layer 2\n")
        (top / "bin").mkdir()
        (top / "bin" / ".wh.ls").write_text("")
        w.digests["z"] = build_image(
            layout, root, "z", extra_layers=[tar_tree(top)], compression="zstd"
        )
        base = f"docker://{reg.host}/gpg/app"
        sign = ("--sign-by", key.fingerprint, "--registries.d", str(regd))
        skopeo_copy(f"oci:{layout}:a", f"{base}:signed", *sign, env=key.env)
        skopeo_copy(f"oci:{layout}:b", f"{base}:unsigned")
        skopeo_copy(f"oci:{layout}:a", f"{base}:retag")
        skopeo_copy(f"oci:{layout}:c", f"{base}:tampered")
        skopeo_copy(f"oci:{layout}:d", f"{base}:corrupt", *sign, env=key.env)
        skopeo_copy(f"oci:{layout}:z", f"docker://{reg.host}/open/zstd:1")
        skopeo_copy(f"oci:{layout}:a", f"docker://{reg.host}/cosign/app:signed")
        skopeo_copy(f"oci:{layout}:b", f"docker://{reg.host}/cosign/app:unsigned")
        # tampered: A's valid signature placed where C's signatures are looked up
        a_dir = sigs / "gpg" / f"app@{w.digests['a'].replace(':', '=')}"
        c_dir = sigs / "gpg" / f"app@{w.digests['c'].replace(':', '=')}"
        c_dir.mkdir(parents=True)
        shutil.copy(a_dir / "signature-1", c_dir / "signature-1")
        d_sig = sigs / "gpg" / f"app@{w.digests['d'].replace(':', '=')}" / "signature-1"
        raw = bytearray(d_sig.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        d_sig.write_bytes(bytes(raw))
        (tmp / "pub.gpg").write_bytes(key.public)
        ck = ec.generate_private_key(ec.SECP256R1())
        w.cosign_pub = tmp / "cosign.pub"
        w.cosign_pub.write_bytes(
            ck.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        cosign_sign(reg.host, "cosign/app", w.digests["a"], ck, f"{reg.host}/cosign/app")
        key2 = COSIGN2.with_name("cosign2.key")
        if key2.exists():
            try:
                k2 = load_cosign_private_key(key2)  # the vector's key, empty password
            except ImportError:
                k2 = None
            if k2 is not None:
                skopeo_copy(f"oci:{layout}:c", f"docker://{reg.host}/cosign/app:key2")
                cosign_sign(reg.host, "cosign/app", w.digests["c"], k2, f"{reg.host}/cosign/app")
                w.digests["key2"] = w.digests["c"]
        yield w
    finally:
        key.stop_agent()
        reg.close()


def _signed_by(w: World, identity: dict[str, str] | None = None) -> dict[str, object]:
    req: dict[str, object] = {
        "type": "signedBy",
        "keyType": "GPGKeys",
        "keyPath": str(w.tmp / "pub.gpg"),
    }
    if identity:
        req["signedIdentity"] = identity
    return {f"{w.host}/gpg": [req], f"{w.host}/open": [{"type": "insecureAcceptAnything"}]}


def _trustpod_allows(w: World, ref: str, policy: Path) -> tuple[bool, str]:
    puller = w.puller(policy)
    try:
        decision, _ = puller.check(parse_reference(ref))
        return True, decision.scope if decision else ""
    except PolicyDenied as exc:
        return False, exc.reason
    finally:
        puller.close()


CASES = [
    # (tag, policy variant, expected, trustpod reason when refused)
    ("gpg/app:signed", "default", True, None),
    ("gpg/app:unsigned", "default", False, "image.signature_missing"),
    ("gpg/app:tampered", "default", False, "image.signature_digest"),
    ("gpg/app:corrupt", "default", False, "image.signature_invalid"),
    ("gpg/app:retag", "default", False, "image.signature_identity"),
    ("gpg/app:retag", "repository", True, None),
    ("gpg/app:signed", "wrongkey", False, "image.signature_invalid"),
    ("gpg/app:signed", "exactref-other", False, "image.signature_identity"),
    ("open/zstd:1", "default", True, None),
    ("cosign/app:signed", "default", False, "image.rejected"),
]


def _policy_for(w: World, variant: str) -> Path:
    if variant == "repository":
        return w.policy(variant, _signed_by(w, {"type": "matchRepository"}))
    if variant == "exactref-other":
        return w.policy(
            variant,
            _signed_by(w, {"type": "exactReference", "dockerReference": f"{w.host}/gpg/app:other"}),
        )
    if variant == "wrongkey":
        wrong = w.tmp / "wrong.gpg"
        gc_key = (
            vectors_root() / "guest-components/image-rs/test_data/simple-signing-scheme/pubkey.gpg"
        )
        if not gc_key.exists():
            pytest.skip("guest-components vectors absent (set TRUSTPOD_VECTORS)")
        wrong.write_bytes(gc_key.read_bytes())
        doc = _signed_by(w)
        doc[f"{w.host}/gpg"][0]["keyPath"] = str(wrong)  # type: ignore[index]
        return w.policy(variant, doc)
    return w.policy(variant, _signed_by(w))


@pytest.mark.parametrize(("repo", "variant", "expected", "reason"), CASES)
def test_decision_matches_skopeo(
    world: World, repo: str, variant: str, expected: bool, reason: str | None
) -> None:
    policy = _policy_for(world, variant)
    ref = f"{world.host}/{repo}"
    ours, detail = _trustpod_allows(world, ref, policy)
    theirs, err = skopeo_allows(
        ref, policy, world.regd, world.tmp / f"skopeo-{variant}-{repo.replace('/', '_')}"
    )
    assert ours is expected, detail
    assert theirs is expected, err
    if reason:
        assert detail == reason


def test_pull_unpacks_and_runs(world: World) -> None:
    policy = _policy_for(world, "default")
    dest = world.tmp / "pull-signed"
    rc = main(
        [
            "image",
            "pull",
            f"{world.host}/gpg/app:signed",
            "--policy",
            str(policy),
            "--dest",
            str(dest),
            "--registries-d",
            str(world.regd),
            "--insecure-http-registry",
            world.host,
        ]
    )
    assert rc == 0
    meta = json.loads((dest / "image.json").read_text())
    assert meta["manifest_digest"] == world.digests["a"]
    assert meta["policy_scope"] == f"{world.host}/gpg"
    out = subprocess.run(
        [str(dest / "rootfs/bin/busybox"), "echo", "hi"], capture_output=True, check=True
    )
    assert out.stdout == b"hi\n"
    # refused: exit 1 and nothing unpacked, nothing fetched into the cache
    dest2 = world.tmp / "pull-unsigned"
    rc = main(
        [
            "image",
            "pull",
            f"{world.host}/gpg/app:unsigned",
            "--policy",
            str(policy),
            "--dest",
            str(dest2),
            "--registries-d",
            str(world.regd),
            "--insecure-http-registry",
            world.host,
        ]
    )
    assert rc == 1
    assert not (dest2 / "rootfs").exists()
    assert not (dest2 / ".blobs").exists() or not list((dest2 / ".blobs").rglob("*.partial"))


def test_zstd_whiteouts_and_layer_cache(world: World) -> None:
    puller = world.puller(world.policy("open", _signed_by(world)), cache="zcache")
    try:
        pulled = puller.pull(f"{world.host}/open/zstd:1", world.tmp / "z1")
        root = pulled.rootfs
        assert sorted(p.name for p in (root / "etc").iterdir()) == ["motd"]  # opaque /etc
        assert not (root / "bin" / "ls").exists() and (root / "bin" / "busybox").exists()
        blobs = sorted((world.tmp / "zcache" / "blobs" / "sha256").iterdir())
        assert len(blobs) == 2
        # the second pull takes layers from the cache: delete them from the registry first
        data = world.tmp / "registry/data/docker/registry/v2/blobs/sha256"
        for b in blobs:
            shutil.rmtree(data / b.name[:2] / b.name)
        pulled2 = puller.pull(f"{world.host}/open/zstd:1", world.tmp / "z2")
        assert (pulled2.rootfs / "etc" / "motd").read_text() == "layer 2\n"
    finally:
        puller.close()


def test_tampered_blob_never_unpacked(world: World) -> None:
    skopeo_copy(f"oci:{world.tmp / 'layout'}:b", f"docker://{world.host}/open/tamper:1")
    manifest = httpx.get(
        f"http://{world.host}/v2/open/tamper/manifests/1",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    ).json()
    layer = manifest["layers"][0]["digest"].split(":", 1)[1]
    blob = world.tmp / "registry/data/docker/registry/v2/blobs/sha256" / layer[:2] / layer / "data"
    raw = bytearray(blob.read_bytes())
    raw[100] ^= 0xFF
    blob.write_bytes(bytes(raw))
    puller = world.puller(None, cache="tcache")
    try:
        with pytest.raises(VerificationError) as info:
            puller.pull(f"{world.host}/open/tamper:1", world.tmp / "t1")
        assert info.value.reason == "image.digest_mismatch"
        assert not (world.tmp / "t1" / "rootfs").exists()
        # the layer was unpacked from the stream into rootfs.partial, which is gone with it
        assert not (world.tmp / "t1" / "rootfs.partial").exists()
        assert not list((world.tmp / "tcache" / "blobs" / "sha256").iterdir())
    finally:
        puller.close()


def test_index_platform_and_resolve_digest(world: World) -> None:
    a, b = world.digests["a"], world.digests["b"]

    def size(d: str) -> int:
        return len(
            httpx.get(
                f"http://{world.host}/v2/gpg/app/manifests/{d}",
                headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
            ).content
        )

    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": b,
                "size": size(b),
                "platform": {"os": "linux", "architecture": "arm64"},
            },
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": a,
                "size": size(a),
                "platform": {"os": "linux", "architecture": "amd64"},
            },
        ],
    }
    idx = push_manifest(world.host, "gpg/app", "multi", index)
    assert resolve_digest(f"{world.host}/gpg/app:multi", settings=world.settings()) == idx
    assert resolve_digest(f"{world.host}/gpg/app:signed", settings=world.settings()) == a
    puller = world.puller(None, cache="icache")
    try:
        pulled = puller.pull(f"{world.host}/gpg/app@{idx}", world.tmp / "i1")
        assert (pulled.manifest_digest, pulled.index_digest) == (a, idx)
        assert pulled.pinned == f"{world.host}/gpg/app@{idx}"
    finally:
        puller.close()


def test_cosign_signatures(world: World) -> None:
    assert world.cosign_pub is not None
    ref = f"{world.host}/cosign/app"

    def pol(key: Path, ident: str | None = "matchRepository") -> Path:
        req: dict[str, object] = {"type": "sigstoreSigned", "keyPath": str(key)}
        if ident:
            req["signedIdentity"] = (
                {"type": ident}
                if ident != "exactRepository"
                else {"type": ident, "dockerRepository": f"{world.host}/elsewhere"}
            )
        return world.policy(f"cosign-{key.name}-{ident}", {f"{world.host}/cosign": [req]})

    assert _trustpod_allows(world, f"{ref}:signed", pol(world.cosign_pub))[0]
    assert _trustpod_allows(world, f"{ref}:signed", pol(world.cosign_pub, None))[0]
    assert _trustpod_allows(world, f"{ref}:unsigned", pol(world.cosign_pub)) == (
        False,
        "image.signature_missing",
    )
    assert _trustpod_allows(world, f"{ref}:signed", pol(world.cosign_pub, "exactRepository")) == (
        False,
        "image.signature_identity",
    )
    if "key2" in world.digests:  # signed with the vector's cosign2.key
        assert _trustpod_allows(world, f"{ref}:key2", pol(COSIGN2))[0]
        assert _trustpod_allows(world, f"{ref}:key2", pol(world.cosign_pub)) == (
            False,
            "image.signature_invalid",
        )
    if COSIGN2.exists():
        assert _trustpod_allows(world, f"{ref}:signed", pol(COSIGN2)) == (
            False,
            "image.signature_invalid",
        )
    # skopeo reads cosign signatures only with use-sigstore-attachments; Debian's skopeo 1.9.3 is
    # built with sigstore disabled and refuses every sigstoreSigned policy, so no parity here.
    regd = world.tmp / "registries-sigstore.d"
    regd.mkdir(exist_ok=True)
    (regd / "t.yaml").write_text(f"docker:\n  {world.host}:\n    use-sigstore-attachments: true\n")
    ok, err = skopeo_allows(f"{ref}:signed", pol(world.cosign_pub), regd, world.tmp / "sk-cosign")
    if not ok:
        assert "sigstore disabled" in err, err
    ok2, _ = skopeo_allows(f"{ref}:signed", pol(COSIGN2), regd, world.tmp / "sk-cosign2")
    assert not ok2


class _BearerProxy(BaseHTTPRequestHandler):
    upstream = ""
    creds = ("", "")
    token = "t0ken"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        host = self.headers["Host"]
        if self.path.startswith("/token"):
            want = "Basic " + base64.b64encode(f"{self.creds[0]}:{self.creds[1]}".encode()).decode()
            if self.headers.get("Authorization") != want or "scope=repository" not in self.path:
                self.send_response(401)
                self.end_headers()
                return
            body = json.dumps({"token": self.token}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.headers.get("Authorization") != f"Bearer {self.token}":
            self.send_response(401)
            self.send_header(
                "WWW-Authenticate", f'Bearer realm="http://{host}/token",service="test"'
            )
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        r = httpx.get(
            f"http://{self.upstream}{self.path}",
            headers={"Accept": self.headers.get("Accept", "*/*")},
        )
        self.send_response(r.status_code)
        for k in ("Content-Type", "Docker-Content-Digest"):
            if k in r.headers:
                self.send_header(k, r.headers[k])
        self.send_header("Content-Length", str(len(r.content)))
        self.end_headers()
        self.wfile.write(r.content)


def test_bearer_token_auth_with_kbs_credentials(world: World) -> None:
    _BearerProxy.upstream, _BearerProxy.creds = world.host, ("puller", "s3cret")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BearerProxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proxy = f"127.0.0.1:{server.server_address[1]}"
    try:
        auth = json.dumps(
            {"auths": {proxy: {"auth": base64.b64encode(b"puller:s3cret").decode()}}}
        ).encode()
        resources = {
            "kbs:///default/security-policy/test": json.dumps(
                {
                    "default": [{"type": "reject"}],
                    "transports": {
                        "docker": {
                            f"{proxy}/gpg": [
                                {
                                    "type": "signedBy",
                                    "keyType": "GPGKeys",
                                    "keyPath": "kbs:///default/gpg-public-key/test",
                                }
                            ]
                        }
                    },
                }
            ).encode(),
            "kbs:///default/gpg-public-key/test": world.key.public,
            "kbs:///default/credential/test": auth,
        }
        fetched: list[str] = []

        class Cdh:
            def get_resource(self, uri: str) -> bytes:
                fetched.append(uri)
                return resources[uri]

        # the proxy serves the signatures of the upstream registry host under its own name
        section = parse_image_section(
            {
                "work_dir": str(world.tmp / "guest-work"),
                "image_security_policy_uri": "kbs:///default/security-policy/test",
                "sigstore_config": f"docker:\n  {proxy}:\n    sigstore: file://{world.sigs}\n",
                "authenticated_registry_credentials_uri": "kbs:///default/credential/test",
                "insecure_http_registries": [proxy],
            }
        )
        guest = GuestImagePuller(Cdh(), section)
        try:
            with pytest.raises(ImageRefused) as info:  # identity names the upstream host: refused
                guest.pull(f"{proxy}/gpg/app:signed", world.tmp / "g1")
            assert info.value.reason == "image.signature_identity"
            assert set(fetched) == set(resources)
        finally:
            guest.close()
        section2 = parse_image_section(
            {
                **{k: getattr(section, k) for k in ("work_dir", "sigstore_config")},
                "insecure_http_registries": [proxy],
            }
        )
        anon = GuestImagePuller(Cdh(), section2)
        try:
            with pytest.raises(AuthenticationError):
                anon.pull(f"{proxy}/gpg/app:signed", world.tmp / "g2")
        finally:
            anon.close()
        creds = parse_auth_json(auth)
        with RegistryClient(
            OciSettings(insecure_http_registries=frozenset({proxy})), creds
        ) as client:
            resolved = client.resolve(parse_reference(f"{proxy}/gpg/app:signed"))
            assert resolved.manifest.digest == world.digests["a"]
    finally:
        server.shutdown()
        server.server_close()


def test_guest_pull_with_policy_and_key_from_kbs(world: World, tmp_path: Path) -> None:
    """initdata's cdh.toml [image] → policy, GPG key and auth.json from a real KBS over TLS via
    the attested CDH (sample TEE) → signed image pulled, unsigned refused."""
    import time
    import tomllib

    import trustme

    from kbs_support import builtin_kbs, serve
    from trustpod._internal.clock import FixedClock
    from trustpod.kbs.config import parse_config

    ca = trustme.CA()
    config = parse_config(
        tomllib.loads("[http_server]\ninsecure_http = true\n[attestation_service]\ntimeout = 5\n"),
        tmp_path / "kbs-config.toml",
    )
    app, core = builtin_kbs(config, clock=FixedClock(time.time()))
    policy = _signed_by(world)
    policy[f"{world.host}/gpg"][0]["keyPath"] = "kbs:///default/gpg-public-key/test"  # type: ignore[index]
    core.set_resource(
        "default/security-policy/test",
        json.dumps({"default": [{"type": "reject"}], "transports": {"docker": policy}}).encode(),
    )
    core.set_resource("default/gpg-public-key/test", world.key.public)
    core.set_resource("default/credential/test", b'{"auths": {}}')
    with serve(app, cert=ca.issue_cert("127.0.0.1")) as url:
        image = (
            "[image]\n"
            f'work_dir = "{tmp_path / "work"}"\n'
            'image_security_policy_uri = "kbs:///default/security-policy/test"\n'
            'authenticated_registry_credentials_uri = "kbs:///default/credential/test"\n'
            f'insecure_http_registries = ["{world.host}"]\n'
            f"sigstore_config = \"docker: {{'{world.host}': {{sigstore: 'file://{world.sigs}'}}}}\"\n"
        )
        with guest_puller(tmp_path, url, ca.cert_pem.bytes().decode(), image) as puller:
            rootfs = puller.pull(f"{world.host}/gpg/app:signed", tmp_path / "b1")
            assert (rootfs / "bin" / "busybox").is_file()
            with pytest.raises(ImageRefused) as info:
                puller.pull(f"{world.host}/gpg/app:unsigned", tmp_path / "b2")
            assert info.value.scope == f"{world.host}/gpg"
            assert info.value.reason == "image.signature_missing"
            assert not (tmp_path / "b2" / "rootfs").exists()


def test_http_lookaside_store_through_cli(world: World) -> None:
    import functools
    from http.server import SimpleHTTPRequestHandler

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(world.sigs))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    store = f"http://127.0.0.1:{server.server_address[1]}"
    policy = _policy_for(world, "default")
    try:
        for tag, rc in (("signed", 0), ("unsigned", 1), ("corrupt", 1)):
            dest = world.tmp / f"http-{tag}"
            argv = [
                "image",
                "pull",
                f"{world.host}/gpg/app:{tag}",
                "--policy",
                str(policy),
                "--dest",
                str(dest),
                "--signature-store",
                store,
                "--insecure-http-registry",
                world.host,
            ]
            assert main(argv) == rc, tag
            assert (dest / "rootfs").exists() is (rc == 0)
    finally:
        server.shutdown()
        server.server_close()


def test_tls_registry_with_extra_root_certificates(world: World, tmp_path: Path) -> None:
    import trustme

    from trustpod.errors import DependencyError

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    reg = Registry(tmp_path / "tls-registry", tls=(tmp_path / "cert.pem", tmp_path / "key.pem"))
    try:
        skopeo_copy(f"oci:{world.tmp / 'layout'}:a", f"docker://{reg.host}/tls/app:1")
        ref = f"{reg.host}/tls/app:1"
        with pytest.raises(DependencyError):
            resolve_digest(ref)  # the registry's CA is not trusted by default
        trusted = OciSettings(extra_root_certificates=(ca.cert_pem.bytes().decode(),))
        assert resolve_digest(ref, settings=trusted) == world.digests["a"]
        with RegistryClient(trusted) as client:  # layer blobs over the pooled https connections
            image = parse_reference(ref)
            for layer in client.resolve(image).manifest.layers:
                client.fetch_blob(image, layer, tmp_path / layer.digest[7:])
                assert (tmp_path / layer.digest[7:]).stat().st_size == layer.size
    finally:
        reg.close()


def test_docker_v2s2_media_types(world: World) -> None:
    skopeo_copy(
        f"oci:{world.tmp / 'layout'}:a", f"docker://{world.host}/docker/app:1", "--format", "v2s2"
    )
    puller = world.puller(None, cache="v2cache")
    try:
        resolved = puller.registry.resolve(parse_reference(f"{world.host}/docker/app:1"))
        assert (
            resolved.manifest.media_type == "application/vnd.docker.distribution.manifest.v2+json"
        )
        assert resolved.manifest.layers[0].media_type.startswith(
            "application/vnd.docker.image.rootfs"
        )
        pulled = puller.pull(f"{world.host}/docker/app:1", world.tmp / "v2")
        assert (pulled.rootfs / "bin" / "busybox").is_file()
    finally:
        puller.close()
