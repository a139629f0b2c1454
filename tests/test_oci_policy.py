"""Image signature policy: references, policy.json, identities, payloads, the decision (pure), and
the guest-components simple-signing vectors verified with gpgv."""

from __future__ import annotations

import base64
import json
import tarfile
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import vectors_root
from trustpod.errors import ConfigError, EvidenceError, TrustpodError, VerificationError
from trustpod.oci.auth import parse_auth_json, parse_challenge
from trustpod.oci.decide import ImageRefused, evaluate
from trustpod.oci.manifest import parse_manifest_or_index
from trustpod.oci.payload import COSIGN_TYPE, SIMPLE_SIGNING_TYPE, parse_payload
from trustpod.oci.policy import SignedIdentity, identity_matches, parse_policy
from trustpod.oci.reference import ImageReference, parse_reference
from trustpod.oci.settings import OciSettings
from trustpod.oci.sigstore_config import parse_sigstore_configs

GC = vectors_root() / "guest-components" / "image-rs" / "test_data"


@pytest.fixture(scope="module")
def gc() -> Path:
    if not GC.is_dir():
        pytest.skip(f"guest-components vectors not found at {GC} (set TRUSTPOD_VECTORS)")
    return GC


# -- references ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("index.docker.io/foo/bar:1", "docker.io/foo/bar:1"),
        ("localhost/x", "localhost/x:latest"),
        ("127.0.0.1:5000/a/b:c", "127.0.0.1:5000/a/b:c"),
        ("quay.io/a/b@sha256:" + "a" * 64, "quay.io/a/b@sha256:" + "a" * 64),
        ("quay.io/a/b:t@sha256:" + "b" * 64, "quay.io/a/b:t@sha256:" + "b" * 64),
    ],
)
def test_reference_normalization(text: str, expected: str) -> None:
    assert str(parse_reference(text)) == expected


@pytest.mark.parametrize(
    "text", ["", "quay.io/UPPER", "a/../b", "quay.io/a:b:c", "x@sha256:abc", "a//b", "-a/b", "a/b:"]
)
def test_reference_refused(text: str) -> None:
    with pytest.raises(EvidenceError):
        parse_reference(text)


def test_policy_scopes_in_containers_image_order() -> None:
    ref = parse_reference("registry.access.redhat.com:5000/ns/app:1")
    assert ref.policy_scopes() == [
        "registry.access.redhat.com:5000/ns/app:1",
        "registry.access.redhat.com:5000/ns/app",
        "registry.access.redhat.com:5000/ns",
        "registry.access.redhat.com:5000",
        "*.access.redhat.com",
        "*.redhat.com",
        "*.com",
    ]


_COMP = st.from_regex(r"[a-z0-9]{1,8}([._-][a-z0-9]{1,5})?", fullmatch=True)


@given(
    host=st.sampled_from(["quay.io", "127.0.0.1:5000", "localhost", "docker.io", "a.b.c:1"]),
    path=st.lists(_COMP, min_size=1, max_size=4),
    tag=st.none() | st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True),
)
def test_reference_roundtrip(host: str, path: list[str], tag: str | None) -> None:
    text = f"{host}/{'/'.join(path)}" + (f":{tag}" if tag else "")
    ref = parse_reference(text)
    assert parse_reference(str(ref)) == ref
    assert ref.policy_scopes()[0] == str(ref)


@given(st.text(max_size=80))
def test_reference_parser_only_raises_evidence_error(text: str) -> None:
    try:
        parse_reference(text)
    except EvidenceError:
        pass


# -- manifests ----------------------------------------------------------------------------------


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_manifest_parser_fails_closed(raw: bytes) -> None:
    try:
        parse_manifest_or_index(raw, None, OciSettings())
    except EvidenceError:
        pass


@given(
    st.recursive(
        st.none() | st.integers() | st.text(max_size=5),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    )
)
def test_manifest_parser_on_json_values(doc: object) -> None:
    try:
        parse_manifest_or_index(
            json.dumps({"schemaVersion": 2, "layers": doc, "config": doc}).encode(),
            None,
            OciSettings(),
        )
    except EvidenceError:
        pass


# -- policy.json --------------------------------------------------------------------------------


def test_vector_policies_parse(gc: Path) -> None:
    p = parse_policy((gc / "signature" / "policy.json").read_bytes())
    assert (
        p.requirements_for(parse_reference("example.com/playground/x"))[0]
        == "example.com/playground"
    )
    assert p.requirements_for(parse_reference("a.access.redhat.com/x"))[0] == "*.access.redhat.com"
    assert p.requirements_for(parse_reference("quay.io/x"))[0] == "default"
    kinds = {
        r.signed_identity.type
        for reqs in p.docker.values()
        for r in reqs
        if hasattr(r, "signed_identity")
    }
    assert {"matchExact", "exactReference", "exactRepository", "remapIdentity"} <= kinds
    sec = parse_policy((gc / "simple-signing-scheme" / "security_policy.json").read_bytes())
    scope, _ = sec.requirements_for(
        parse_reference("quay.io/kata-containers/confidential-containers:signed")
    )
    assert scope == "quay.io/kata-containers/confidential-containers"


@pytest.mark.parametrize(
    "doc",
    [
        {"default": []},  # empty list, and no transports (image-rs requires both keys)
        {"default": [], "transports": {}},
        {"default": [{"type": "reject"}], "transports": {}, "extra": 1},
        {"default": [{"type": "unknown"}], "transports": {}},
        {"default": [{"type": "reject", "x": 1}], "transports": {}},
        {"default": [{"type": "signedBy", "keyType": "GPGKeys"}], "transports": {}},
        {"default": [{"type": "signedBy", "keyType": "X509", "keyPath": "/k"}], "transports": {}},
        {
            "default": [{"type": "signedBy", "keyType": "GPGKeys", "keyPaths": ["/k"]}],
            "transports": {},
        },
        {
            "default": [
                {"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/k", "keyData": "eA=="}
            ],
            "transports": {},
        },
        {"default": [{"type": "sigstoreSigned", "fulcio": {}}], "transports": {}},
        {
            "default": [
                {
                    "type": "sigstoreSigned",
                    "keyPath": "/k",
                    "signedIdentity": {"type": "matchExact"},
                }
            ],
            "transports": {},
        },
        {
            "default": [
                {
                    "type": "signedBy",
                    "keyType": "GPGKeys",
                    "keyPath": "/k",
                    "signedIdentity": {"type": "exactReference", "dockerReference": "quay.io/a"},
                }
            ],
            "transports": {},
        },
        {"default": [{"type": "reject"}], "transports": {"docker": {"x": []}}},
    ],
)
def test_policy_refused(doc: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_policy(json.dumps(doc).encode())
    assert info.value.reason == "image.policy_invalid"


def test_sigstore_keydata_pem_or_base64() -> None:
    pem = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
    for data in (pem, base64.b64encode(pem.encode()).decode()):
        p = parse_policy(
            json.dumps(
                {"default": [{"type": "sigstoreSigned", "keyData": data}], "transports": {}}
            ).encode()
        )
        assert p.default[0].key_data == pem.encode()  # type: ignore[union-attr]


@settings(max_examples=150)
@given(st.binary(max_size=200))
def test_policy_parser_fails_closed(raw: bytes) -> None:
    try:
        parse_policy(raw)
    except ConfigError:
        pass


_TAGGED = parse_reference("quay.io/ns/app:1")
_DIGESTED = parse_reference("quay.io/ns/app@sha256:" + "c" * 64)


@pytest.mark.parametrize(
    ("ident", "image", "signed", "ok"),
    [
        (SignedIdentity("matchRepoDigestOrExact"), _TAGGED, "quay.io/ns/app:1", True),
        (SignedIdentity("matchRepoDigestOrExact"), _TAGGED, "quay.io/ns/app:2", False),
        (SignedIdentity("matchRepoDigestOrExact"), _DIGESTED, "quay.io/ns/app:any", True),
        (SignedIdentity("matchRepoDigestOrExact"), _DIGESTED, "quay.io/ns/other:any", False),
        (SignedIdentity("matchExact"), _TAGGED, "quay.io/ns/app:1", True),
        (SignedIdentity("matchExact"), _DIGESTED, "quay.io/ns/app@sha256:" + "c" * 64, False),
        (SignedIdentity("matchRepository"), _TAGGED, "quay.io/ns/app:9", True),
        (SignedIdentity("matchRepository"), _TAGGED, "quay.io/ns/app", True),
        (SignedIdentity("matchRepository"), _TAGGED, "quay.io/ns/apx", False),
        (
            SignedIdentity("exactReference", docker_reference="docker.io/x/y:1"),
            _TAGGED,
            "x/y:1",
            True,
        ),
        (
            SignedIdentity("exactReference", docker_reference="docker.io/x/y:1"),
            _TAGGED,
            "x/y:2",
            False,
        ),
        (
            SignedIdentity("exactRepository", docker_repository="docker.io/x/y"),
            _TAGGED,
            "x/y:7",
            True,
        ),
        (
            SignedIdentity("remapIdentity", prefix="quay.io/ns", signed_prefix="mirror.io/up"),
            _TAGGED,
            "mirror.io/up/app:1",
            True,
        ),
        (
            SignedIdentity("remapIdentity", prefix="quay.io/ns", signed_prefix="mirror.io/up"),
            _TAGGED,
            "quay.io/ns/app:1",
            False,
        ),
        (
            SignedIdentity("remapIdentity", prefix="quay.io/n", signed_prefix="mirror.io/up"),
            _TAGGED,
            "quay.io/ns/app:1",
            True,
        ),  # "quay.io/n" is not a prefix at a component boundary
        (SignedIdentity("matchRepository"), _TAGGED, "NOT A REF", False),
    ],
)
def test_identity_matches(
    ident: SignedIdentity, image: ImageReference, signed: str, ok: bool
) -> None:
    assert identity_matches(ident, image, signed) is ok


# -- payloads, auth, lookaside config -------------------------------------------------------------


def _payload(ref: str, digest: str, kind: str = SIMPLE_SIGNING_TYPE, **extra: object) -> bytes:
    crit: dict[str, object] = {
        "identity": {"docker-reference": ref},
        "image": {"docker-manifest-digest": digest},
        "type": kind,
        **extra,
    }
    return json.dumps({"critical": crit, "optional": {"creator": "t"}}).encode()


def test_payload_strict() -> None:
    d = "sha256:" + "d" * 64
    assert parse_payload(_payload("a/b:1", d), SIMPLE_SIGNING_TYPE).manifest_digest == d
    for bad in (
        _payload("a/b:1", d, COSIGN_TYPE),
        _payload("a/b:1", d, extra=1),
        _payload("a/b:1", "sha256:zz"),
        b"[]",
        b"{",
    ):
        with pytest.raises(VerificationError):
            parse_payload(bad, SIMPLE_SIGNING_TYPE)


@given(st.binary(max_size=200))
def test_payload_parser_fails_closed(raw: bytes) -> None:
    try:
        parse_payload(raw, COSIGN_TYPE)
    except VerificationError:
        pass


def test_challenge_and_auth_json() -> None:
    ch = parse_challenge(
        'Bearer realm="https://auth.example/token",service="reg",scope="repository:a:pull"'
    )
    assert ch.scheme == "bearer" and ch.params["service"] == "reg"
    assert parse_challenge('Basic realm="x"').scheme == "basic"
    for bad in ("Negotiate x", 'Bearer service="x"', 'Bearer realm="http://x" junk'):
        with pytest.raises(EvidenceError):
            parse_challenge(bad)
    creds = parse_auth_json(
        json.dumps(
            {
                "auths": {
                    "https://quay.io/v2/": {"auth": base64.b64encode(b"u:p:w").decode()},
                    "quay.io/private": {"username": "a", "password": "b"},
                }
            }
        ).encode()
    )
    assert creds.lookup(parse_reference("quay.io/private/x")) == ("a", "b")
    assert creds.lookup(parse_reference("quay.io/public/x")) == ("u", "p:w")
    assert creds.lookup(parse_reference("ghcr.io/x/y")) is None
    assert "u" not in repr(creds)


def test_sigstore_config_merge_vectors(gc: Path) -> None:
    base = gc / "signature" / "sigstore_config"
    for case, res in (("test_case_1", "res1"), ("test_case_2", "res2"), ("test_case_3", "res3")):
        docs = [(str(p), p.read_text()) for p in sorted((base / case).glob("*.yaml"))]
        merged = parse_sigstore_configs(docs)
        want = parse_sigstore_configs([("r", (base / "merged_result" / f"{res}.yaml").read_text())])
        assert merged == want
    conflict = [
        ("a", "default-docker: {sigstore: file:///a}"),
        ("b", "default-docker: {sigstore: file:///b}"),
    ]
    with pytest.raises(ConfigError):
        parse_sigstore_configs(conflict)


# -- the decision on the guest-components simple-signing vector ----------------------------------


class _Store:
    """SignatureSource over an unpacked lookaside tree (signature-N files)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def simple_signatures(self, image: ImageReference, digest: str) -> Sequence[bytes]:
        d = self.root / f"{image.repository}@{digest.replace(':', '=')}"
        return [p.read_bytes() for p in sorted(d.glob("signature-*"))]

    def cosign_signatures(
        self, image: ImageReference, digest: str
    ) -> Sequence[tuple[bytes, bytes]]:
        return []


class _Keys:
    def __init__(self, keys: dict[str, bytes]) -> None:
        self.keys = keys

    def load_key(self, key_path: str) -> bytes:
        return self.keys[key_path]


SIGNED_DIGEST = "sha256:febcf61cd6e1ac9628f6ac14fa40836d16f3c6ddef3b303ff0321606e55ddd0b"
OTHER_DIGEST = "sha256:7250923ba3543110040462388756ef099331822c6172a050b12c7a38361ea46f"


@pytest.fixture(scope="module")
def vector_store(gc: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lookaside")
    with tarfile.open(gc / "simple-signing-scheme" / "signatures.tar") as tar:
        tar.extractall(root, filter="data")
    return root


def test_simple_signing_vector(gc: Path, vector_store: Path) -> None:
    from trustpod.oci.gpg import GpgvVerifier

    try:
        pgp = GpgvVerifier()
    except TrustpodError:
        pytest.skip("gpgv not installed (apt package gpgv)")
    policy = parse_policy((gc / "simple-signing-scheme" / "security_policy.json").read_bytes())
    keys = _Keys(
        {
            "/run/image-security/simple_signing/pubkey.gpg": (
                gc / "simple-signing-scheme" / "pubkey.gpg"
            ).read_bytes()
        }
    )
    src = _Store(vector_store)
    signed = parse_reference("quay.io/kata-containers/confidential-containers:signed")
    decision = evaluate(policy, signed, SIGNED_DIGEST, None, src, keys, pgp)
    assert decision.scope == "quay.io/kata-containers/confidential-containers"
    assert decision.evidence == (("signedBy", "67B24AACC459679E0283D7EE58F6ED07EEA6B429"),)
    other = parse_reference("quay.io/kata-containers/confidential-containers:other_signed")
    with pytest.raises(ImageRefused) as info:
        evaluate(policy, other, OTHER_DIGEST, None, src, keys, pgp)
    assert info.value.reason == "image.signature_invalid"
    assert info.value.scope == "quay.io/kata-containers/confidential-containers"
    assert "other_signed" in info.value.message and "signedBy" in info.value.message
    # the valid signature does not carry over to another digest, tag or key
    with pytest.raises(ImageRefused) as info:
        evaluate(policy, signed, OTHER_DIGEST, None, src, keys, pgp)
    assert info.value.reason == "image.signature_invalid"
    retagged = parse_reference("quay.io/kata-containers/confidential-containers:v2")
    (vector_store / "kata-containers" / f"confidential-containers@sha256={'e' * 64}").mkdir()
    with pytest.raises(ImageRefused) as info:
        evaluate(policy, retagged, SIGNED_DIGEST, None, src, keys, pgp)
    assert info.value.reason == "image.signature_identity"
    with pytest.raises(ImageRefused) as info:
        evaluate(policy, signed, "sha256:" + "e" * 64, None, src, keys, pgp)
    assert info.value.reason == "image.signature_missing"
    wrong_ring = _Keys(
        {
            "/run/image-security/simple_signing/pubkey.gpg": (
                gc / "signature" / "pubring.gpg"
            ).read_bytes()
        }
    )
    with pytest.raises(ImageRefused):
        evaluate(policy, signed, SIGNED_DIGEST, None, src, wrong_ring, pgp)
    # a byte flip anywhere in the signature is refused
    sig = (
        vector_store
        / "kata-containers"
        / f"confidential-containers@{SIGNED_DIGEST.replace(':', '=')}"
        / "signature-1"
    )
    good = sig.read_bytes()
    for pos in (10, len(good) // 2, len(good) - 5):
        sig.write_bytes(good[:pos] + bytes([good[pos] ^ 1]) + good[pos + 1 :])
        with pytest.raises(ImageRefused):
            evaluate(policy, signed, SIGNED_DIGEST, None, src, keys, pgp)
    sig.write_bytes(good)
    # outside the signedBy scope the vector policy accepts anything
    assert (
        evaluate(policy, parse_reference("busybox"), SIGNED_DIGEST, None, src, keys, pgp).scope
        == "default"
    )


def test_cosign_vector_keys_load(gc: Path) -> None:
    from trustpod.oci.cosign import load_public_key

    for name in ("cosign1.pub", "cosign2.pub", "cosign3.pub", "nv.pub"):
        assert (
            load_public_key((gc / "signature" / "cosign" / name).read_bytes(), name).curve.key_size
            == 256
        )
    with pytest.raises(ConfigError):
        load_public_key((gc / "signature" / "cosign" / "cosign.key").read_bytes(), "cosign.key")


def test_reject_names_scope() -> None:
    policy = parse_policy(
        json.dumps(
            {
                "default": [{"type": "insecureAcceptAnything"}],
                "transports": {"docker": {"quay.io/bad": [{"type": "reject"}]}},
            }
        ).encode()
    )
    with pytest.raises(ImageRefused) as info:
        evaluate(
            policy,
            parse_reference("quay.io/bad/x:1"),
            SIGNED_DIGEST,
            None,
            _Store(Path("/")),
            _Keys({}),
            None,
        )  # type: ignore[arg-type]
    assert info.value.reason == "image.rejected" and info.value.scope == "quay.io/bad"
    assert "quay.io/bad/x:1" in info.value.message


@given(st.text(max_size=120))
def test_challenge_parser_fails_closed(text: str) -> None:
    try:
        parse_challenge(text)
    except EvidenceError:
        pass


@given(st.binary(max_size=200))
def test_auth_json_parser_fails_closed(raw: bytes) -> None:
    try:
        parse_auth_json(raw)
    except ConfigError:
        pass


@given(st.text(max_size=200))
def test_sigstore_config_parser_fails_closed(text: str) -> None:
    try:
        parse_sigstore_configs([("t", text)])
    except ConfigError:
        pass


def test_pubring_vector_signatures_and_key_forms(gc: Path) -> None:
    """signature/pubring.gpg verifies signature-1/-2 (image-rs' unit vectors); the same keyring
    as policy keyData (base64) and ASCII-armored gives the same decision."""
    from trustpod.oci.gpg import GpgvVerifier, dearmor

    try:
        pgp = GpgvVerifier()
    except TrustpodError:
        pytest.skip("gpgv not installed (apt package gpgv)")
    ring = (gc / "signature" / "pubring.gpg").read_bytes()
    digest = "sha256:69704ef328d05a9f806b6b8502915e6a0a4faa4d72018dc42343f511490daf8a"
    image = parse_reference("quay.io/ali_os_security/alpine:latest")
    b64 = base64.encodebytes(ring).decode()
    armored = (
        "-----BEGIN PGP PUBLIC KEY BLOCK-----\nComment: x\n\n"
        f"{b64}=AAAA\n-----END PGP PUBLIC KEY BLOCK-----\n"
    )
    assert dearmor(armored.encode()) == ring

    class Store(_Store):
        def simple_signatures(self, image: ImageReference, digest: str) -> Sequence[bytes]:
            return [
                (gc / "signature" / "signatures" / n).read_bytes()
                for n in ("signature-1", "signature-2")
            ]

    for key_data in (base64.b64encode(ring).decode(), base64.b64encode(armored.encode()).decode()):
        policy = parse_policy(
            json.dumps(
                {
                    "default": [{"type": "signedBy", "keyType": "GPGKeys", "keyData": key_data}],
                    "transports": {},
                }
            ).encode()
        )
        decision = evaluate(policy, image, digest, None, Store(Path("/")), _Keys({}), pgp)
        assert decision.evidence == (("signedBy", "2183156095E072685518F8A97EFD4C926F9311E2"),)
        with pytest.raises(ImageRefused) as info:
            evaluate(
                policy,
                parse_reference("quay.io/ali_os_security/alpine:3"),
                digest,
                None,
                Store(Path("/")),
                _Keys({}),
                pgp,
            )
        assert info.value.reason == "image.signature_identity"
