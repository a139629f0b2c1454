"""policy.json as image-rs applies it (pods-images-gpu.md §2.1, containers-policy.json(5)) — pure.

Parsing is fail-closed where image-rs and containers/image differ: unknown keys and empty
requirement lists are errors (containers/image), ``keyPaths``/``fulcio``/``rekor*`` are errors
(image-rs has no such fields), ``sigstoreSigned`` accepts only ``matchRepository``/
``exactRepository`` or no identity (image-rs). Both ``default`` and ``transports`` are required
(image-rs). ``sigstoreSigned.keyData`` is PEM text (image-rs) or base64 of it (upstream).

Identity matching follows containers/image ``policy_reference_match.go``; ``matchExact`` refuses
a digest reference (image-rs: "Can not reference the image with the digest").
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from trustpod.errors import ConfigError, EvidenceError
from trustpod.oci.reference import ImageReference, is_canonical_name, parse_reference

__all__ = [
    "IDENTITY_TYPES",
    "InsecureAcceptAnything",
    "Policy",
    "Reject",
    "Requirement",
    "SignedBy",
    "SignedIdentity",
    "SigstoreSigned",
    "identity_matches",
    "parse_policy",
]

IDENTITY_TYPES = (
    "matchExact",
    "matchRepoDigestOrExact",
    "matchRepository",
    "exactReference",
    "exactRepository",
    "remapIdentity",
)


def _bad(msg: str, source: str) -> ConfigError:
    return ConfigError(
        f"{source}: {msg}",
        reason="image.policy_invalid",
        fix="see containers-policy.json(5) and docs/compat.md for the subset image-rs applies",
    )


@dataclass(frozen=True, slots=True)
class SignedIdentity:
    type: str = "matchRepoDigestOrExact"
    docker_reference: str | None = None
    docker_repository: str | None = None
    prefix: str | None = None
    signed_prefix: str | None = None

    def describe(self) -> str:
        extra = self.docker_reference or self.docker_repository
        if self.type == "remapIdentity":
            extra = f"{self.prefix} -> {self.signed_prefix}"
        return f"{self.type}({extra})" if extra else self.type


@dataclass(frozen=True, slots=True)
class InsecureAcceptAnything:
    type: str = "insecureAcceptAnything"


@dataclass(frozen=True, slots=True)
class Reject:
    type: str = "reject"


@dataclass(frozen=True, slots=True)
class SignedBy:
    key_path: str | None
    key_data: bytes | None
    signed_identity: SignedIdentity
    type: str = "signedBy"


@dataclass(frozen=True, slots=True)
class SigstoreSigned:
    key_path: str | None
    key_data: bytes | None
    #: None: image-rs checks only the digest.
    signed_identity: SignedIdentity | None
    type: str = "sigstoreSigned"


Requirement = InsecureAcceptAnything | Reject | SignedBy | SigstoreSigned


@dataclass(frozen=True, slots=True)
class Policy:
    default: tuple[Requirement, ...]
    #: docker transport scopes → requirements.
    docker: dict[str, tuple[Requirement, ...]]

    def requirements_for(self, ref: ImageReference) -> tuple[str, tuple[Requirement, ...]]:
        """(scope, requirements): identity, namespaces, wildcards, ``""``, then ``default``."""
        for scope in ref.policy_scopes():
            if scope in self.docker:
                return scope, self.docker[scope]
        if "" in self.docker:
            return 'docker:""', self.docker[""]
        return "default", self.default


def _keys(obj: dict[str, Any], allowed: set[str], where: str, source: str) -> None:
    extra = sorted(set(obj) - allowed)
    if extra:
        raise _bad(f"unknown key {extra[0]!r} in {where}", source)


def _str(obj: dict[str, Any], key: str, where: str, source: str) -> str | None:
    value = obj.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise _bad(f"{where}.{key} must be a non-empty string", source)
    return value


def _identity(obj: Any, where: str, source: str) -> SignedIdentity:
    if not isinstance(obj, dict) or obj.get("type") not in IDENTITY_TYPES:
        raise _bad(f"{where}.type must be one of {', '.join(IDENTITY_TYPES)}", source)
    kind = obj["type"]
    fields = {
        "exactReference": {"dockerReference"},
        "exactRepository": {"dockerRepository"},
        "remapIdentity": {"prefix", "signedPrefix"},
    }.get(kind, set())
    _keys(obj, {"type", *fields}, where, source)
    vals = {f: _str(obj, f, where, source) for f in fields}
    if any(v is None for v in vals.values()):
        raise _bad(f"{where} ({kind}) needs {', '.join(sorted(fields))}", source)
    try:
        if kind == "exactReference":
            r = parse_reference(vals["dockerReference"] or "", default_tag=None)
            if r.tag is None and r.digest is None:
                raise _bad(f"{where}.dockerReference must have a tag or digest", source)
        elif kind == "exactRepository":
            parse_reference(vals["dockerRepository"] or "", default_tag=None)
    except EvidenceError as exc:
        raise _bad(f"{where}: {exc.message}", source) from exc
    if kind == "remapIdentity" and not all(
        is_canonical_name(v or "") for v in (vals["prefix"], vals["signedPrefix"])
    ):
        raise _bad(f"{where}: prefix/signedPrefix must be host[:port][/namespace]", source)
    return SignedIdentity(
        kind,
        vals.get("dockerReference"),
        vals.get("dockerRepository"),
        vals.get("prefix"),
        vals.get("signedPrefix"),
    )


def _key_source(
    obj: dict[str, Any], where: str, source: str, *, pem_ok: bool
) -> tuple[str | None, bytes | None]:
    path, data = _str(obj, "keyPath", where, source), _str(obj, "keyData", where, source)
    if (path is None) == (data is None):
        raise _bad(f"{where} needs exactly one of keyPath, keyData", source)
    if data is None:
        return path, None
    if pem_ok and data.lstrip().startswith("-----BEGIN"):
        return None, data.encode()
    try:
        return None, base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _bad(f"{where}.keyData is not base64", source) from exc


def _requirement(obj: Any, where: str, source: str) -> Requirement:
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise _bad(f"{where} must be an object with a type", source)
    kind = obj["type"]
    if kind == "insecureAcceptAnything":
        _keys(obj, {"type"}, where, source)
        return InsecureAcceptAnything()
    if kind == "reject":
        _keys(obj, {"type"}, where, source)
        return Reject()
    if kind == "signedBy":
        if "keyPaths" in obj:
            raise _bad(f"{where}.keyPaths is not supported (image-rs); use keyPath", source)
        _keys(obj, {"type", "keyType", "keyPath", "keyData", "signedIdentity"}, where, source)
        if obj.get("keyType") != "GPGKeys":
            raise _bad(f"{where}.keyType must be 'GPGKeys'", source)
        path, data = _key_source(obj, where, source, pem_ok=False)
        ident = SignedIdentity()
        if obj.get("signedIdentity") is not None:
            ident = _identity(obj["signedIdentity"], f"{where}.signedIdentity", source)
        return SignedBy(path, data, ident)
    if kind == "sigstoreSigned":
        for k in ("fulcio", "rekorPublicKeyPath", "rekorPublicKeyData", "keyPaths"):
            if k in obj:
                raise _bad(
                    f"{where}.{k} is not supported (image-rs: key-based cosign only)", source
                )
        _keys(obj, {"type", "keyPath", "keyData", "signedIdentity"}, where, source)
        path, data = _key_source(obj, where, source, pem_ok=True)
        sid = None
        if obj.get("signedIdentity") is not None:
            sid = _identity(obj["signedIdentity"], f"{where}.signedIdentity", source)
            if sid.type not in ("matchRepository", "exactRepository"):
                raise _bad(
                    f"{where}.signedIdentity {sid.type} is not supported for sigstoreSigned "
                    "(image-rs: matchRepository or exactRepository)",
                    source,
                )
        return SigstoreSigned(path, data, sid)
    raise _bad(f"{where}.type {kind!r} is unknown", source)


def _requirements(obj: Any, where: str, source: str) -> tuple[Requirement, ...]:
    if not isinstance(obj, list) or not obj:
        raise _bad(f"{where} must be a non-empty list of requirements", source)
    return tuple(_requirement(r, f"{where}[{i}]", source) for i, r in enumerate(obj))


def parse_policy(
    raw: bytes, source: str = "policy.json", *, max_bytes: int = 1024 * 1024
) -> Policy:
    """Parse policy.json bytes into a ``Policy`` (``ConfigError`` ``image.policy_invalid``)."""
    if len(raw) > max_bytes:
        raise _bad(f"larger than {max_bytes} bytes", source)
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(f"not JSON ({exc})", source) from exc
    if not isinstance(doc, dict):
        raise _bad("not a JSON object", source)
    _keys(doc, {"default", "transports"}, "the top level", source)
    if "default" not in doc or "transports" not in doc:
        raise _bad("both 'default' and 'transports' are required (image-rs)", source)
    default = _requirements(doc["default"], "default", source)
    transports = doc["transports"]
    if not isinstance(transports, dict):
        raise _bad("transports must be an object", source)
    docker: dict[str, tuple[Requirement, ...]] = {}
    for name, scopes in transports.items():
        if not isinstance(scopes, dict):
            raise _bad(f"transports.{name} must be an object", source)
        for scope, reqs in scopes.items():
            parsed = _requirements(reqs, f"transports.{name}[{scope!r}]", source)
            if name == "docker":
                # containers/image does not validate docker scopes; one that is not in canonical
                # form (``docker.io/busybox``) simply never matches.
                docker[scope] = parsed
    return Policy(default, docker)


def _repo(text: str) -> ImageReference | None:
    try:
        return parse_reference(text, default_tag=None)
    except EvidenceError:
        return None


def _has_prefix(text: str, prefix: str) -> bool:
    return text.startswith(prefix) and (len(text) == len(prefix) or text[len(prefix)] in "/:@")


def identity_matches(ident: SignedIdentity, image: ImageReference, signed: str) -> bool:
    """Does the signature's ``docker-reference`` (``signed``) satisfy ``ident`` for ``image``?"""
    sig = _repo(signed)
    if sig is None:
        return False
    if ident.type == "matchRepository":
        return sig.name == image.name
    if ident.type == "exactRepository":
        want = _repo(ident.docker_repository or "")
        return want is not None and sig.name == want.name
    if ident.type == "exactReference":
        want = _repo(ident.docker_reference or "")
        return want is not None and str(sig) == str(want)
    if ident.type == "matchExact":
        if image.digest is not None or image.tag is None or sig.tag is None or sig.digest:
            return False
        return str(sig) == str(image)
    if ident.type == "remapIdentity":
        text = str(image)
        if _has_prefix(text, ident.prefix or ""):
            remapped = _repo((ident.signed_prefix or "") + text[len(ident.prefix or "") :])
            if remapped is None:
                return False
            image = remapped
    # matchRepoDigestOrExact (the default, and remapIdentity after remapping)
    if image.digest is not None:
        return sig.name == image.name
    if image.tag is None or sig.tag is None or sig.digest is not None:
        return False
    return str(sig) == str(image)
