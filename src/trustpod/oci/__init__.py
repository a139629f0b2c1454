"""OCI images pulled and verified the way image-rs does it (pods-images-gpu.md §2).

Pure parts: ``reference`` (docker references, policy scopes), ``manifest`` (manifests, indexes,
media types), ``policy`` (policy.json and signedIdentity), ``payload`` (simple-signing payloads),
``cosign`` (cosign signature manifests and ECDSA checks), ``decide`` (the requirement evaluation
over a ``SignatureSource`` port), ``auth`` (WWW-Authenticate, auth.json), ``settings``.
I/O parts: ``registry`` (distribution client; HTTP via ``transport``: ``http.client``, httpx as
fallback), ``unpack`` (layers → rootfs), ``gpg`` (gpgv), ``lookaside`` (simple-signing stores),
``puller`` (the service), ``guest`` (CDH wiring).
"""

from __future__ import annotations

__all__: list[str] = []
