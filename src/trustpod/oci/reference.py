"""Docker image references (distribution/reference grammar) and their policy scopes (pure).

``parse_reference("busybox")`` normalizes like ``reference.ParseNormalizedNamed`` plus the docker
transport's ``TagNameOnly``: ``docker.io/library/busybox:latest``. ``policy_scopes()`` lists the
scopes a ``docker`` transport policy is searched in, in containers/image's order (identity, the
repository and each parent namespace, the host, then ``*.`` wildcard domains without the port).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from trustpod.errors import EvidenceError

__all__ = [
    "DEFAULT_REGISTRY",
    "DIGEST_RE",
    "ImageReference",
    "is_canonical_name",
    "parse_digest",
    "parse_reference",
]

DEFAULT_REGISTRY = "docker.io"
_LEGACY_REGISTRY = "index.docker.io"
MAX_NAME_LENGTH = 255
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_PATH_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_DOMAIN_RE = re.compile(_DOMAIN)
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}")
#: Only the digests we can check: sha256 (64 hex) and sha512 (128 hex), lowercase.
DIGEST_RE = re.compile(r"(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})")


def parse_digest(value: str) -> str:
    """A ``sha256:<hex>``/``sha512:<hex>`` digest, or ``EvidenceError`` ``image.digest_format``."""
    if not isinstance(value, str) or not DIGEST_RE.fullmatch(value):
        raise EvidenceError(
            f"{value!r} is not a sha256/sha512 digest", reason="image.digest_format"
        )
    return value


@dataclass(frozen=True, slots=True)
class ImageReference:
    """A normalized reference: ``registry/repository[:tag][@digest]``."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """``registry/repository`` (``reference.Named.Name()``)."""
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    @property
    def manifest_ref(self) -> str:
        """What to ask the registry for: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def with_digest(self, digest: str) -> ImageReference:
        return ImageReference(self.registry, self.repository, None, parse_digest(digest))

    def policy_scopes(self) -> list[str]:
        """Scopes in lookup order (containers/image ``docker`` transport), without ``""``."""
        scopes = [str(self)]
        name = self.name
        while True:
            scopes.append(name)
            slash = name.rfind("/")
            if slash == -1:
                break
            name = name[:slash]
        if not name.startswith("["):
            host = name.split(":", 1)[0]
            while "." in host:
                host = host.split(".", 1)[1]
                scopes.append(f"*.{host}")
        return scopes


def _split_domain(name: str) -> tuple[str, str]:
    i = name.find("/")
    first = name[:i] if i != -1 else ""
    if i == -1 or (
        not any(c in first for c in ".:") and first != "localhost" and first.lower() == first
    ):
        domain, rest = DEFAULT_REGISTRY, name
    else:
        domain, rest = first, name[i + 1 :]
    if domain == _LEGACY_REGISTRY:
        domain = DEFAULT_REGISTRY
    if domain == DEFAULT_REGISTRY and "/" not in rest:
        rest = f"library/{rest}"
    return domain, rest


def parse_reference(
    text: str, *, normalize: bool = True, default_tag: str | None = "latest"
) -> ImageReference:
    """Parse ``[registry/]repo[:tag][@digest]``.

    ``normalize=False`` requires the fully qualified form (what a policy scope must be).
    ``default_tag=None`` keeps a name-only reference name-only.
    """
    if not isinstance(text, str) or not text or len(text) > 1024:
        raise EvidenceError(
            "an image reference must be a non-empty string", reason="image.reference"
        )
    rest, digest = text, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not DIGEST_RE.fullmatch(digest):
            raise EvidenceError(
                f"image reference {text!r}: {digest!r} is not a sha256/sha512 digest",
                reason="image.reference",
            )
    tag = None
    colon, slash = rest.rfind(":"), rest.rfind("/")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG_RE.fullmatch(tag):
            raise EvidenceError(
                f"image reference {text!r}: bad tag {tag!r}", reason="image.reference"
            )
    if normalize:
        domain, path = _split_domain(rest)
    else:
        if "/" not in rest:
            raise EvidenceError(f"{text!r} is not fully qualified", reason="image.reference")
        domain, path = rest.split("/", 1)
        if _split_domain(rest) != (domain, path):
            raise EvidenceError(
                f"{text!r} is not in canonical form (expected {'/'.join(_split_domain(rest))})",
                reason="image.reference",
            )
    if not _DOMAIN_RE.fullmatch(domain) or not _PATH_RE.fullmatch(path):
        raise EvidenceError(f"image reference {text!r} is malformed", reason="image.reference")
    if len(domain) + 1 + len(path) > MAX_NAME_LENGTH:
        raise EvidenceError(f"image reference {text!r} is too long", reason="image.reference")
    if tag is None and digest is None:
        tag = default_tag
    return ImageReference(domain, path, tag, digest)


def is_canonical_name(text: str) -> bool:
    """True for ``host[:port]/path`` or a bare ``host[:port]`` (a namespace or repository scope)."""
    if "/" not in text:
        return bool(_DOMAIN_RE.fullmatch(text))
    domain, path = text.split("/", 1)
    return bool(_DOMAIN_RE.fullmatch(domain) and _PATH_RE.fullmatch(path))
