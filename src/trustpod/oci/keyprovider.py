"""ocicrypt keyprovider protocol (pods-images-gpu.md §3.2) for ``attestation-agent`` — pure.

Requests (from Go ocicrypt or ocicrypt-rs): ``{"op":"keywrap","keywrapparams":{"ec":{"Parameters":
{"attestation-agent":["<b64 params>"]},...},"optsdata":"<b64>"}}`` and ``{"op":"keyunwrap",
"keyunwrapparams":{"dc":{...},"annotation":"<b64 packet>"}}``. Byte rules: every input byte
string (``optsdata``, ``annotation``, ``Parameters`` values) is accepted as a base64 string (Go
``[]byte``) or a JSON integer array (Rust ``Vec<u8>``); outputs are always integer arrays, which
both Go and Rust decode. Wrap parameters are coco_keyprovider's ``k=v::k=v`` (``keyid``,
``keypath``; ``algorithm`` other than A256GCM is refused rather than ignored).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Protocol

from trustpod.errors import ConfigError, EvidenceError
from trustpod.oci.ocicrypt import normalize_kid, parse_packet, unwrap_packet, wrap_packet
from trustpod.oci.ocicrypt import parse_private_options as _parse_private

__all__ = [
    "MAX_REQUEST_BYTES",
    "METHOD_OPS",
    "PROVIDER",
    "KekStore",
    "WrapParams",
    "handle_request",
    "parse_wrap_params",
]

PROVIDER = "attestation-agent"
#: keyprovider.KeyProviderService methods → the request op they carry.
METHOD_OPS = {"WrapKey": "keywrap", "UnWrapKey": "keyunwrap"}
MAX_REQUEST_BYTES = 1024 * 1024


class KekStore(Protocol):
    """Where the key-encryption keys come from (a KBS-mirroring key dir; the KBS)."""

    def kek(self, kid: str) -> bytes: ...

    def kek_from_path(self, keypath: str) -> bytes: ...


@dataclass(frozen=True, slots=True)
class WrapParams:
    keyid: str
    keypath: str | None


def _bad(what: str) -> EvidenceError:
    return EvidenceError(f"keyprovider request: {what}", reason="keyprovider.request")


def _bytes(value: object, what: str) -> bytes:
    """base64 string (Go) or integer array (Rust)."""
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _bad(f"{what} is not base64") from exc
    if isinstance(value, list) and all(
        isinstance(b, int) and not isinstance(b, bool) and 0 <= b < 256 for b in value
    ):
        return bytes(value)
    raise _bad(f"{what} must be a base64 string or a byte array")


def parse_wrap_params(text: str) -> WrapParams:
    vals: dict[str, str] = {}
    for item in text.split("::"):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise _bad(f"parameter {item!r} is not k=v")
        vals[key] = value
    unknown = set(vals) - {"keyid", "keypath", "algorithm"}
    if unknown:
        raise _bad(f"unknown parameters {sorted(unknown)} (keyid, keypath, algorithm)")
    if vals.get("algorithm", "A256GCM") != "A256GCM":
        raise _bad("only algorithm=A256GCM is supported")
    keyid = vals.get("keyid")
    if not keyid:
        raise _bad("keyid= is required (the KBS resource URI of the key)")
    return WrapParams(normalize_kid(keyid), vals.get("keypath") or None)


def _params(section: Any, what: str) -> list[bytes]:
    if not isinstance(section, dict):
        raise _bad(f"{what} missing")
    params = section.get("Parameters") or {}
    if not isinstance(params, dict):
        raise _bad(f"{what}.Parameters is not an object")
    values = params.get(PROVIDER) or []
    if not isinstance(values, list):
        raise _bad(f"{what}.Parameters.{PROVIDER} is not a list")
    return [_bytes(v, f"{what}.Parameters") for v in values]


def _wrap(req: dict[str, Any], store: KekStore) -> dict[str, Any]:
    kw = req.get("keywrapparams")
    if not isinstance(kw, dict):
        raise _bad("keywrapparams missing")
    params = _params(kw.get("ec"), "ec")
    if not params:
        raise _bad(f"no {PROVIDER} parameters (provider:{PROVIDER}:keyid=...)")
    p = parse_wrap_params(params[0].decode("utf-8", "replace"))
    optsdata = _bytes(kw.get("optsdata"), "optsdata")
    opts = _parse_private(optsdata)
    kek = store.kek_from_path(p.keypath) if p.keypath else store.kek(p.keyid)
    packet = wrap_packet(p.keyid, kek, opts)
    return {"keywrapresults": {"annotation": list(packet.to_json())}}


def _unwrap(req: dict[str, Any], store: KekStore) -> dict[str, Any]:
    ku = req.get("keyunwrapparams")
    if not isinstance(ku, dict):
        raise _bad("keyunwrapparams missing")
    packet = parse_packet(_bytes(ku.get("annotation"), "annotation"))
    opts = unwrap_packet(packet, store.kek(packet.kid))
    return {"keyunwrapresults": {"optsdata": list(opts.to_json())}}


def handle_request(raw: bytes, store: KekStore, *, expect_op: str | None = None) -> bytes:
    """One request JSON → the response JSON (raises on a malformed or refused request).
    ``expect_op``: the op the RPC method implies (``WrapKey`` = keywrap); another is refused."""
    if len(raw) > MAX_REQUEST_BYTES:
        raise _bad(f"larger than {MAX_REQUEST_BYTES} bytes")
    try:
        req = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(f"not JSON ({exc})") from exc
    if not isinstance(req, dict):
        raise _bad("not a JSON object")
    op = req.get("op")
    if expect_op is not None and op != expect_op:
        raise _bad(f"op {op!r} on the {expect_op} method")
    if op == "keywrap":
        out = _wrap(req, store)
    elif op == "keyunwrap":
        out = _unwrap(req, store)
    else:
        raise ConfigError(f"unsupported keyprovider op {op!r}", reason="keyprovider.op")
    return json.dumps(out, separators=(",", ":")).encode()
