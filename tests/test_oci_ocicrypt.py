"""ocicrypt layer format, CoCo annotation packets, JWE recipients and the keyprovider JSON
(pure): round trips, exact shapes, byte flips and wrong keys refused."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import vectors_root
from trustpod.errors import EvidenceError, NotFoundError, VerificationError
from trustpod.oci.decrypt import LayerKeys, load_rsa_private_key
from trustpod.oci.keyprovider import handle_request, parse_wrap_params
from trustpod.oci.manifest import Descriptor
from trustpod.oci.ocicrypt import (
    ANNOTATION_JWE,
    ANNOTATION_PROVIDER_AA,
    ANNOTATION_PUBOPTS,
    LayerDecrypter,
    LayerEncrypter,
    PublicOptions,
    b64d,
    base_media_type,
    new_private_options,
    normalize_kid,
    parse_packet,
    parse_private_options,
    parse_public_options,
    unwrap_packet,
    wrap_packet,
)
from trustpod.oci.ocicrypt_jwe import jwe_decrypt, jwe_encrypt

KEK = bytes(range(32))
VEC = vectors_root() / "guest-components/image-rs/test_data"


def _encrypt(data: bytes) -> tuple[bytes, object, PublicOptions]:
    opts = new_private_options("sha256:" + "0" * 64)
    enc = LayerEncrypter(opts)
    ct = b"".join(enc.update(data[i : i + 4096]) for i in range(0, len(data), 4096))
    tail, pub = enc.finish()
    return ct + tail, opts, pub


def _decrypt(ct: bytes, opts: object, pub: PublicOptions) -> bytes:
    dec = LayerDecrypter(opts, pub)  # type: ignore[arg-type]
    out = dec.update(ct)
    return out + dec.finish()


def test_layer_round_trip_and_every_region_flip_refused() -> None:
    data = os.urandom(100_000)
    ct, opts, pub = _encrypt(data)
    assert ct != data and len(ct) == len(data)
    assert _decrypt(ct, opts, pub) == data
    for pos in (0, 1, 4095, 4096, 50_000, len(ct) - 1):
        bad = bytearray(ct)
        bad[pos] ^= 0x01
        with pytest.raises(VerificationError) as info:
            _decrypt(bytes(bad), opts, pub)
        assert info.value.reason == "image.decrypt_hmac"
    with pytest.raises(VerificationError):  # truncated
        _decrypt(ct[:-1], opts, pub)
    other = new_private_options("sha256:" + "0" * 64)  # wrong layer key
    with pytest.raises(VerificationError):
        _decrypt(ct, other, pub)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=3000), st.data())
def test_hypothesis_any_single_flip_refused(data: bytes, draw: st.DataObject) -> None:
    ct, opts, pub = _encrypt(data)
    assert _decrypt(ct, opts, pub) == data
    if ct:
        pos = draw.draw(st.integers(0, len(ct) - 1))
        bit = draw.draw(st.integers(0, 7))
        bad = bytearray(ct)
        bad[pos] ^= 1 << bit
        with pytest.raises(VerificationError):
            _decrypt(bytes(bad), opts, pub)


def test_pubopts_and_private_options_shapes() -> None:
    _, opts, pub = _encrypt(b"abc")
    doc = json.loads(base64.b64decode(pub.to_annotation()))
    assert list(doc) == ["cipher", "hmac", "cipheroptions"]
    assert doc["cipher"] == "AES_256_CTR_HMAC_SHA256" and doc["cipheroptions"] == {}
    assert parse_public_options(pub.to_annotation()) == pub
    priv = json.loads(opts.to_json())  # type: ignore[attr-defined]
    assert list(priv) == ["symkey", "cipheroptions", "digest"]
    assert len(base64.b64decode(priv["cipheroptions"]["nonce"])) == 16
    assert parse_private_options(opts.to_json()) == opts  # type: ignore[attr-defined]
    bad_cipher = base64.b64encode(json.dumps({**doc, "cipher": "AES_128_GCM"}).encode()).decode()
    for bad in (None, "", "!!", bad_cipher, base64.b64encode(b"[]").decode()):
        with pytest.raises(EvidenceError):
            parse_public_options(bad)
    assert base_media_type("application/vnd.oci.image.layer.v1.tar+gzip+encrypted") == (
        "application/vnd.oci.image.layer.v1.tar+gzip"
    )


def test_annotation_packet_wrap_unwrap_and_wrong_key() -> None:
    opts = new_private_options("sha256:" + "1" * 64)
    packet = wrap_packet("kbs:///default/image-key/app", KEK, opts)
    doc = json.loads(packet.to_json())
    assert list(doc) == ["kid", "wrapped_data", "iv", "wrap_type"]
    assert doc["wrap_type"] == "A256GCM" and len(base64.b64decode(doc["iv"])) == 12
    # wrapped_data = GCM ciphertext || 16-byte tag of the private options JSON
    assert len(base64.b64decode(doc["wrapped_data"])) == len(opts.to_json()) + 16
    again = parse_packet(packet.to_json())
    assert unwrap_packet(again, KEK) == opts
    with pytest.raises(VerificationError) as info:
        unwrap_packet(again, bytes(32))
    assert info.value.reason == "image.decrypt_key"
    # the v0.1.0 superset (guest-and-control-plane.md §5.2) is read too
    v2 = {**doc, "version": "0.1.0", "provider": "kbs", "provider_settings": {}, "annotations": {}}
    assert unwrap_packet(parse_packet(json.dumps(v2).encode()), KEK) == opts
    for bad in ({**doc, "wrap_type": "A256CTR"}, {**doc, "provider": "aliyun"}):
        with pytest.raises(EvidenceError):
            unwrap_packet(parse_packet(json.dumps(bad).encode()), KEK)
    with pytest.raises(EvidenceError):
        parse_packet(json.dumps({**doc, "kid": ""}).encode())


@pytest.mark.parametrize(
    ("kid", "want"),
    [
        ("kbs:///default/key/1", "kbs:///default/key/1"),
        ("kbs://1.2.3.4:8080/default/key/1", "kbs://1.2.3.4:8080/default/key/1"),
        ("/default/key/1", "kbs:///default/key/1"),
        ("1.2.3.4:8080/default/key/1", "kbs://1.2.3.4:8080/default/key/1"),
    ],
)
def test_kid_forms(kid: str, want: str) -> None:
    assert normalize_kid(kid) == want


def test_jwe_round_trip_multi_recipient_and_wrong_key() -> None:
    k1 = rsa.generate_private_key(65537, 2048)
    k2 = rsa.generate_private_key(65537, 2048)
    blob = jwe_encrypt(b"secret opts", [k1.public_key()])
    assert "encrypted_key" in json.loads(blob)  # flattened, as go-jose with one recipient
    assert jwe_decrypt(blob, [k1]) == b"secret opts"
    both = jwe_encrypt(b"x", [k1.public_key(), k2.public_key()])
    assert len(json.loads(both)["recipients"]) == 2
    assert jwe_decrypt(both, [k2]) == b"x"
    with pytest.raises(VerificationError):
        jwe_decrypt(blob, [k2])
    doc = json.loads(blob)
    doc["ciphertext"] = doc["ciphertext"][:-2] + ("AA" if doc["ciphertext"][-2:] != "AA" else "BB")
    with pytest.raises(VerificationError):
        jwe_decrypt(json.dumps(doc).encode(), [k1])


def test_jwe_with_vector_key_pair() -> None:
    if not VEC.is_dir():
        pytest.skip(f"guest-components vectors absent ({VEC})")
    from cryptography.hazmat.primitives import serialization

    pub = serialization.load_pem_public_key((VEC / "public_key_for_tests.pem").read_bytes())
    priv = load_rsa_private_key((VEC / "private_key_for_tests.pem").read_bytes(), "vector")
    assert isinstance(pub, rsa.RSAPublicKey)
    opts = new_private_options("sha256:" + "2" * 64)
    ann = base64.b64encode(jwe_encrypt(opts.to_json(), [pub])).decode()
    _, _, pubopts = _encrypt(b"")
    desc = Descriptor(
        "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
        "sha256:" + "3" * 64,
        1,
        annotations=((ANNOTATION_JWE, ann), (ANNOTATION_PUBOPTS, pubopts.to_annotation())),
    )
    got, _ = LayerKeys(jwe_keys=[priv]).unwrap(desc)
    assert got == opts


class _Store:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp

    def kek(self, kid: str) -> bytes:
        if kid != "kbs:///default/image-key/app":
            raise NotFoundError(f"no key {kid}")
        return KEK

    def kek_from_path(self, keypath: str) -> bytes:
        return Path(keypath).read_bytes()


def _go_wrap_request(params: str, opts: bytes) -> bytes:
    """The request Go ocicrypt sends: every []byte as a base64 string."""
    return json.dumps(
        {
            "op": "keywrap",
            "keywrapparams": {
                "ec": {
                    "Parameters": {
                        "attestation-agent": [base64.b64encode(params.encode()).decode()]
                    },
                    "DecryptConfig": {"Parameters": {}},
                },
                "optsdata": base64.b64encode(opts).decode(),
            },
            "keyunwrapparams": {"dc": None, "annotation": None},
        }
    ).encode()


def _unwrap_request(annotation: object) -> bytes:
    return json.dumps(
        {
            "op": "keyunwrap",
            "keywrapparams": {"ec": None, "optsdata": None},
            "keyunwrapparams": {
                "dc": {"Parameters": {"attestation-agent": [""]}},
                "annotation": annotation,
            },
        }
    ).encode()


def test_keyprovider_json_both_byte_encodings(tmp_path: Path) -> None:
    opts = new_private_options("sha256:" + "4" * 64)
    store = _Store(tmp_path)
    out = json.loads(
        handle_request(
            _go_wrap_request("keyid=kbs:///default/image-key/app", opts.to_json()), store
        )
    )
    ann = out["keywrapresults"]["annotation"]
    assert isinstance(ann, list) and all(isinstance(b, int) for b in ann)  # Vec<u8> form
    packet = bytes(ann)
    assert json.loads(packet)["kid"] == "kbs:///default/image-key/app"
    # unwrap: Go sends base64, Rust (ocicrypt-rs) may send an int array: both accepted
    for form in (base64.b64encode(packet).decode(), list(packet)):
        res = json.loads(handle_request(_unwrap_request(form), store))
        assert parse_private_options(bytes(res["keyunwrapresults"]["optsdata"])) == opts
    kp = tmp_path / "kek"
    kp.write_bytes(KEK)
    res = json.loads(
        handle_request(
            _go_wrap_request(f"keyid=/default/image-key/app::keypath={kp}", opts.to_json()), store
        )
    )
    assert unwrap_packet(parse_packet(bytes(res["keywrapresults"]["annotation"])), KEK) == opts
    for bad in (b"[]", b"{", b'{"op":"keywrap"}', _unwrap_request("%%%"), _unwrap_request([256])):
        with pytest.raises(EvidenceError):
            handle_request(bad, store)
    with pytest.raises(EvidenceError):
        parse_wrap_params("keyid=kbs:///a/b/c::algorithm=A256CTR")  # refused, not ignored
    with pytest.raises(EvidenceError):
        parse_wrap_params("keypath=/x")


def test_keyprovider_cmd_transport(tmp_path: Path) -> None:
    """``trustpod keyprovider`` as ocicrypt runs it: JSON on stdin, JSON on stdout."""
    keys = tmp_path / "keys" / "default" / "image-key"
    keys.mkdir(parents=True)
    (keys / "app").write_bytes(KEK)
    opts = new_private_options("sha256:" + "5" * 64)
    cmd = [sys.executable, "-m", "trustpod.cli", "keyprovider", "--key-dir", str(tmp_path / "keys")]
    wrap = subprocess.run(
        cmd,
        input=_go_wrap_request("keyid=kbs:///default/image-key/app", opts.to_json()),
        capture_output=True,
        check=True,
        timeout=60,
    )
    packet = bytes(json.loads(wrap.stdout)["keywrapresults"]["annotation"])
    unwrap = subprocess.run(
        cmd,
        input=_unwrap_request(base64.b64encode(packet).decode()),
        capture_output=True,
        check=True,
        timeout=60,
    )
    got = bytes(json.loads(unwrap.stdout)["keyunwrapresults"]["optsdata"])
    assert parse_private_options(got) == opts
    (keys / "app").write_bytes(bytes(32))  # the key dir now holds another key
    bad = subprocess.run(
        cmd,
        input=_unwrap_request(base64.b64encode(packet).decode()),
        capture_output=True,
        timeout=60,
    )
    assert bad.returncode != 0 and b"wrong key" in bad.stderr


def test_layer_keys_errors() -> None:
    _, _, pub = _encrypt(b"")
    opts = new_private_options("sha256:" + "6" * 64)
    packet = base64.b64encode(wrap_packet("kbs:///default/image-key/app", KEK, opts).to_json())
    desc = Descriptor(
        "application/vnd.oci.image.layer.v1.tar+encrypted",
        "sha256:" + "7" * 64,
        1,
        annotations=(
            (ANNOTATION_PROVIDER_AA, packet.decode()),
            (ANNOTATION_PUBOPTS, pub.to_annotation()),
        ),
    )

    class Kbs:
        def __init__(self, value: bytes) -> None:
            self.value = value

        def get_resource(self, uri: str) -> bytes:
            return self.value

    assert LayerKeys(kbs=Kbs(KEK)).unwrap(desc)[0] == opts
    with pytest.raises(VerificationError):
        LayerKeys(kbs=Kbs(bytes(32))).unwrap(desc)
    no_pub = Descriptor(desc.media_type, desc.digest, 1, annotations=desc.annotations[:1])
    with pytest.raises(EvidenceError):
        LayerKeys(kbs=Kbs(KEK)).unwrap(no_pub)
    assert b64d(base64.b64encode(b"x").decode(), "x") == b"x"


def test_keyprovider_grpc_transport(tmp_path: Path) -> None:
    """``keyprovider.KeyProviderService`` over a real gRPC socket on 127.0.0.1."""
    grpc = pytest.importorskip("grpc")
    from trustpod.oci.keyprovider_grpc import call, start_server

    server, port = start_server("127.0.0.1:0", _Store(tmp_path))
    addr = f"127.0.0.1:{port}"
    try:
        opts = new_private_options("sha256:" + "8" * 64)
        wrap = json.loads(
            call(
                addr,
                "WrapKey",
                _go_wrap_request("keyid=kbs:///default/image-key/app", opts.to_json()),
            )
        )
        packet = bytes(wrap["keywrapresults"]["annotation"])
        res = json.loads(
            call(addr, "UnWrapKey", _unwrap_request(base64.b64encode(packet).decode()))
        )
        assert parse_private_options(bytes(res["keyunwrapresults"]["optsdata"])) == opts
        doc = json.loads(packet)
        doc["wrapped_data"] = base64.b64encode(bytes(40)).decode()  # not made with this KEK
        with pytest.raises(grpc.RpcError) as info:
            call(
                addr,
                "UnWrapKey",
                _unwrap_request(base64.b64encode(json.dumps(doc).encode()).decode()),
            )
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as info:
            call(addr, "UnWrapKey", b"not json")
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as info:  # a wrap request on the unwrap method
            call(addr, "UnWrapKey", _go_wrap_request("keyid=kbs:///a/b/c", opts.to_json()))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        server.stop(grace=None)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=12), c, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.binary(max_size=200), _json.map(lambda v: json.dumps(v).encode())))
def test_hypothesis_parsers_fail_closed(raw: bytes) -> None:
    """Random bytes / JSON into every parser: a trustpod error or a value, never a crash."""
    from trustpod.errors import TrustpodError

    for fn in (
        lambda: handle_request(raw, _Store(Path("."))),
        lambda: parse_packet(raw),
        lambda: parse_private_options(raw),
        lambda: parse_public_options(base64.b64encode(raw).decode()),
        lambda: jwe_decrypt(raw, []),
    ):
        try:
            fn()
        except TrustpodError:
            pass


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["op", "keywrapparams", "keyunwrapparams", "annotation", "ec"]), _json)
def test_hypothesis_keyprovider_fields(field: str, value: object) -> None:
    """A valid unwrap request with one field replaced by random JSON fails closed."""
    from trustpod.errors import TrustpodError

    opts = new_private_options("sha256:" + "9" * 64)
    packet = wrap_packet("kbs:///default/image-key/app", KEK, opts).to_json()
    req = json.loads(_unwrap_request(base64.b64encode(packet).decode()))
    if field == "annotation":
        req["keyunwrapparams"]["annotation"] = value
    elif field == "ec":
        req["keywrapparams"]["ec"] = value
        req["op"] = "keywrap"
    else:
        req[field] = value
    try:
        handle_request(json.dumps(req).encode(), _Store(Path(".")))
    except TrustpodError:
        pass


def test_keyprovider_ttrpc_transport(tmp_path: Path) -> None:
    """The same service over ttRPC on a unix socket (``{"ttrpc": "unix:///…"}``)."""
    from trustpod.agent.rpc import Code, RpcError
    from trustpod.oci.keyprovider_ttrpc import call_ttrpc, start_ttrpc

    sock = f"unix://{tmp_path / 'kp.sock'}"
    server = start_ttrpc(sock, _Store(tmp_path))
    try:
        opts = new_private_options("sha256:" + "a" * 64)
        req = _go_wrap_request("keyid=kbs:///default/image-key/app", opts.to_json())
        packet = bytes(json.loads(call_ttrpc(sock, "WrapKey", req))["keywrapresults"]["annotation"])
        res = json.loads(
            call_ttrpc(sock, "UnWrapKey", _unwrap_request(base64.b64encode(packet).decode()))
        )
        assert parse_private_options(bytes(res["keyunwrapresults"]["optsdata"])) == opts
        with pytest.raises(RpcError) as info:
            call_ttrpc(sock, "UnWrapKey", req)  # a wrap request on the unwrap method
        assert info.value.code == Code.INVALID_ARGUMENT
        other = json.loads(packet)
        other["kid"] = "kbs:///default/image-key/other"
        with pytest.raises(RpcError) as info:
            call_ttrpc(
                sock,
                "UnWrapKey",
                _unwrap_request(base64.b64encode(json.dumps(other).encode()).decode()),
            )
        assert info.value.code == Code.NOT_FOUND
    finally:
        server.stop()


def test_encrypt_options() -> None:
    from trustpod.errors import ConfigError
    from trustpod.oci.encrypt import Recipients, select_layers

    assert select_layers(None, 3) == {0, 1, 2}
    assert select_layers("0,-1", 3) == {0, 2}
    for bad in ("3", "-4", "x", "1,,2"):
        with pytest.raises(ConfigError):
            select_layers(bad, 3)
    with pytest.raises(ConfigError):
        Recipients()  # nobody could open the layers
    with pytest.raises(ConfigError):
        Recipients(kid="kbs:///a/b/c")  # a key URI without its key
    assert Recipients(kid="kbs:///a/b/c", kek=KEK).kid == "kbs:///a/b/c"


def test_image_encrypt_cli_refuses_a_key_that_would_be_lost(tmp_path: Path) -> None:
    from trustpod.cli.main import main

    argv = ["image", "encrypt", f"oci:{tmp_path}/src:1", f"oci:{tmp_path}/dst:1"]
    assert main([*argv, "--key-uri", "kbs:///default/image-key/x"]) != 0  # no --key-out/--publish
    short = tmp_path / "short"
    short.write_bytes(b"0" * 16)
    assert main([*argv, "--key-uri", "kbs:///default/image-key/x", "--key-file", str(short)]) != 0
