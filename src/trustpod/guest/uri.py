"""KBS resource URIs for the guest (pure): ``kbs:///repo/type/tag`` and ``kbs+plugin://`` (§3.2).

The parser lives in ``trustpod.sealed.resource_uri`` (sealed secrets carry these URIs); this
module is the guest-facing name and adds the api-server-rest path mapping.
"""

from __future__ import annotations

from trustpod.sealed.resource_uri import DEFAULT_PLUGIN, ResourceUri, is_resource_uri

__all__ = ["DEFAULT_PLUGIN", "ResourceUri", "is_resource_uri", "parse_resource", "rest_path"]


def parse_resource(uri: str) -> ResourceUri:
    """Parse a ``kbs://`` / ``kbs+<plugin>://`` URI (``EvidenceError`` ``uri.invalid`` if bad)."""
    return ResourceUri.parse(uri)


def rest_path(uri: ResourceUri) -> str:
    """The api-server-rest path for a ``resource``-plugin URI: ``/cdh/resource/<r>/<t>/<g>``."""
    return f"/cdh/resource/{uri.path}"
