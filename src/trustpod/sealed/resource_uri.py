"""KBS resource URIs (pure; guest-and-control-plane.md §3.2, upstream ``deps/resource_uri``).

``kbs://<host>/<repo>/<type>/<tag>[?query]`` names a resource of the KBS ``resource`` plugin; the
host is usually empty (``kbs:///default/key/1``) and is ignored: requests always go to the
configured KBS. ``kbs+<plugin>://<host>/<path>[?query]`` selects another KBS plugin. The HTTP
mapping is ``GET <kbs_url>/kbs/v0/<plugin>/<path>[?query]``.

Sealed secrets use these URIs in three places (``kid``, vault ``name``, envelope ``key_id``), so the
parser lives in the pure ``trustpod.sealed`` package; ``trustpod.guest.uri`` re-exports it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from trustpod.errors import EvidenceError

__all__ = [
    "DEFAULT_PLUGIN",
    "MAX_URI_CHARS",
    "ResourceUri",
    "is_resource_uri",
]

DEFAULT_PLUGIN = "resource"
#: Upper bound on a resource URI (named limit).
MAX_URI_CHARS = 1024
#: One path segment, as the KBS resource backend accepts it (trustee §1.7): cannot start with ".".
_SEGMENT = re.compile(r"[A-Za-z0-9_\-]+[A-Za-z0-9_\-.]*")
_PLUGIN = re.compile(r"[a-z0-9][a-z0-9_\-]{0,63}")
_HOST = re.compile(r"[A-Za-z0-9.\-]*(:[0-9]{1,5})?")
_QUERY = re.compile(r"[A-Za-z0-9_\-.~=&%,:/]*")
_SCHEME = re.compile(r"kbs(\+(?P<plugin>[^:/]*))?://")
#: The ``resource`` plugin needs exactly repo/type/tag.
RESOURCE_SEGMENTS = 3


def _bad(uri: str, why: str) -> EvidenceError:
    return EvidenceError(
        f"invalid KBS resource URI {uri[:80]!r}: {why}",
        reason="uri.invalid",
        fix="use kbs:///<repo>/<type>/<tag> (or kbs+<plugin>:///<path>)",
    )


def is_resource_uri(text: str) -> bool:
    """True when ``text`` uses a ``kbs://`` or ``kbs+<plugin>://`` scheme (it may still be bad)."""
    return _SCHEME.match(text) is not None


@dataclass(frozen=True, slots=True)
class ResourceUri:
    """A parsed resource URI; ``segments`` are the path components after the host."""

    plugin: str
    host: str
    segments: tuple[str, ...]
    query: str

    @classmethod
    def parse(cls, uri: str) -> ResourceUri:
        """Parse strictly: known scheme, clean segments (no ``..``, no empty), bounded length."""
        if len(uri) > MAX_URI_CHARS:
            raise _bad(uri, f"longer than {MAX_URI_CHARS} characters")
        # (1) scheme: kbs:// (resource plugin) or kbs+<plugin>://
        m = _SCHEME.match(uri)
        if m is None:
            raise _bad(uri, "scheme must be kbs:// or kbs+<plugin>://")
        plugin = m.group("plugin")
        if plugin is None:
            plugin = DEFAULT_PLUGIN
        elif not _PLUGIN.fullmatch(plugin):
            raise _bad(uri, "plugin name must be lower-case letters, digits, '-' or '_'")
        rest = uri[m.end() :]
        rest, _, query = rest.partition("?")
        if not _QUERY.fullmatch(query):
            raise _bad(uri, "query contains characters outside the allowed set")
        # (2) host (ignored by the client, but it must be well-formed)
        host, slash, path = rest.partition("/")
        if not slash or not _HOST.fullmatch(host):
            raise _bad(uri, "expected kbs://<host>/<path> (host usually empty)")
        # (3) path: every segment matches the KBS resource backend's regex
        segments = tuple(path.split("/"))
        if not all(_SEGMENT.fullmatch(s) for s in segments):
            raise _bad(uri, "path segments must match [A-Za-z0-9_-][A-Za-z0-9_.-]*")
        if plugin == DEFAULT_PLUGIN and len(segments) != RESOURCE_SEGMENTS:
            raise _bad(uri, "the resource plugin needs exactly <repo>/<type>/<tag>")
        return cls(plugin=plugin, host=host, segments=segments, query=query)

    @classmethod
    def resource(cls, repo: str, type_: str, tag: str) -> ResourceUri:
        """``kbs:///<repo>/<type>/<tag>``, validated."""
        return cls.parse(f"kbs:///{repo}/{type_}/{tag}")

    @property
    def path(self) -> str:
        """The path after the host, e.g. ``default/key/1``."""
        return "/".join(self.segments)

    @property
    def kbs_path(self) -> str:
        """Path under ``/kbs/v0/``: ``<plugin>/<path>[?query]``."""
        tail = f"{self.plugin}/{self.path}"
        return f"{tail}?{self.query}" if self.query else tail

    def __str__(self) -> str:
        scheme = "kbs" if self.plugin == DEFAULT_PLUGIN else f"kbs+{self.plugin}"
        tail = f"?{self.query}" if self.query else ""
        return f"{scheme}://{self.host}/{self.path}{tail}"
