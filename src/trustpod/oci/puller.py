"""The image puller: resolve → decide → fetch → unpack (image-rs ``pull_image``) — service layer.

``ImagePuller.pull(ref, bundle_dir)``:

1. resolve the reference to a manifest (platform chosen from an index; digests checked);
2. when a signature policy is configured, ``trustpod.oci.decide.evaluate`` — a refusal raises
   ``ImageRefused`` before any layer or config blob is fetched;
3. fetch the config and every layer into the blob cache (by digest; verified before it gets its
   name; cached blobs are reused);
4. unpack the layers in order into ``bundle_dir/rootfs.partial`` (diff_ids checked), then rename
   it to ``bundle_dir/rootfs``; on any failure the partial tree is removed.

Encrypted layers (``+encrypted``, ``trustpod.oci.decrypt``): every layer key is unwrapped after
step 2 and before any layer is fetched (a denied or missing key refuses the image with nothing
fetched or unpacked); each cached ciphertext is read twice through one open file — its whole
HMAC checked first, then AES-CTR plaintext streamed into the unpacker (no plaintext copy kept).

Without a policy every image is accepted, as image-rs does when no ``image_security_policy`` is
set; that is logged as a warning at construction.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, cast

from trustpod.errors import (
    ConfigError,
    EvidenceError,
    TrustpodError,
    VerificationError,
)
from trustpod.oci.decide import Decision, KeyLoader, OpenPgpVerifier, evaluate
from trustpod.oci.lookaside import RegistrySignatureSource
from trustpod.oci.manifest import (
    CONFIG_TYPES,
    Descriptor,
    ImageConfig,
    compression_of,
    parse_config,
)
from trustpod.oci.policy import Policy
from trustpod.oci.reference import ImageReference, parse_reference
from trustpod.oci.registry import RegistryClient, ResolvedImage
from trustpod.oci.sigstore_config import SigstoreConfig
from trustpod.oci.stores import BlobCache, FileKeyLoader
from trustpod.oci.unpack import UnpackBudget, remove_tree, unpack_layer

if TYPE_CHECKING:  # cryptography is imported only for encrypted images (start-up time)
    from trustpod.oci.decrypt import LayerKeys
    from trustpod.oci.ocicrypt import PrivateOptions, PublicOptions

__all__ = ["BlobCache", "FileKeyLoader", "ImagePuller", "PulledImage"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PulledImage:
    reference: str
    manifest_digest: str
    index_digest: str | None
    config: ImageConfig
    rootfs: Path
    decision: Decision | None

    @property
    def pinned(self) -> str:
        """``repo@<digest>`` of what was pulled (the index digest when there was one)."""
        ref = parse_reference(self.reference)
        return f"{ref.name}@{self.index_digest or self.manifest_digest}"


class ImagePuller:
    """Pull, verify and unpack images for one pod (one policy, one cache)."""

    def __init__(
        self,
        registry: RegistryClient,
        cache_dir: Path,
        *,
        policy: Policy | None,
        keys: KeyLoader,
        pgp: OpenPgpVerifier | None,
        lookaside: SigstoreConfig | None = None,
        layer_keys: LayerKeys | None = None,
    ) -> None:
        self.registry, self.policy = registry, policy
        self.layer_keys = layer_keys
        self._keys, self._pgp = keys, pgp
        self._signatures = RegistrySignatureSource(registry, lookaside)
        self.cache = BlobCache(cache_dir)
        if policy is None:
            log.warning("no image security policy: every image is accepted (image-rs default)")

    def close(self) -> None:
        self._signatures.close()
        self.registry.close()

    def check(self, image: ImageReference) -> tuple[Decision | None, ResolvedImage]:
        """Resolve and decide only (nothing fetched beyond manifests and signatures)."""
        resolved = self.registry.resolve(image)
        decision = None
        if self.policy is not None:
            decision = evaluate(
                self.policy,
                image,
                resolved.manifest.digest,
                resolved.index.digest if resolved.index else None,
                self._signatures,
                self._keys,
                self._require_pgp(),
            )
            log.info("image %s accepted by policy scope %s", image, decision.scope)
        return decision, resolved

    def _require_pgp(self) -> OpenPgpVerifier:
        if self._pgp is None:
            from trustpod.oci.gpg import GpgvVerifier

            self._pgp = GpgvVerifier()
        return self._pgp

    def _layer_keys(
        self, layers: tuple[Descriptor, ...]
    ) -> tuple[list[str], list[tuple[PrivateOptions, PublicOptions] | None]]:
        """Compression per layer and, for encrypted layers, the unwrapped key (or raises)."""
        comps: list[str] = []
        keys: list[tuple[PrivateOptions, PublicOptions] | None] = []
        if self.layer_keys is None:
            return [compression_of(layer) for layer in layers], [None] * len(layers)
        from trustpod.oci.ocicrypt import base_media_type, is_encrypted

        for layer in layers:
            if not is_encrypted(layer.media_type):
                comps.append(compression_of(layer))
                keys.append(None)
                continue
            base = dataclasses.replace(layer, media_type=base_media_type(layer.media_type))
            comps.append(compression_of(base))
            keys.append(self.layer_keys.unwrap(layer))
        return comps, keys

    def _streamed_layer(
        self,
        layers: tuple[Descriptor, ...],
        keys: list[tuple[PrivateOptions, PublicOptions] | None],
    ) -> int | None:
        """Index of the layer to unpack straight from the registry: the first one not in the
        cache, when it is plain (an encrypted layer needs its whole HMAC first) and listed once."""
        for i, (layer, key) in enumerate(zip(layers, keys, strict=True)):
            if self.cache.cached(layer) is not None:
                continue
            if key is None and sum(x.digest == layer.digest for x in layers) == 1:
                return i
            return None
        return None

    def _unpack_streamed(
        self,
        image: ImageReference,
        layer: Descriptor,
        comp: str,
        diff_id: str,
        partial: Path,
        budget: UnpackBudget,
        opened: Callable[[], None],
    ) -> None:
        """Unpack ``layer`` while it downloads (``opened`` is called once its response is open).
        Its entries land in ``rootfs.partial`` only, which is removed on any failure; a blob that
        fails its digest is reported as such, not by the symptom (bad gzip, wrong diff_id) it
        caused."""
        with self.registry.stream_blob(image, layer, self.cache.path(layer.digest)) as blob:
            opened()
            try:
                unpack_layer(blob, comp, diff_id, partial, budget, name=layer.digest)
            except TrustpodError as exc:
                try:
                    blob.finish()
                except VerificationError as mismatch:
                    raise mismatch from exc
                except TrustpodError:
                    pass
                raise

    def pull(self, ref: str, bundle_dir: Path) -> PulledImage:
        image = parse_reference(ref)
        rootfs = bundle_dir / "rootfs"
        if rootfs.exists() and any(rootfs.iterdir()):
            raise ConfigError(
                f"{rootfs} already exists and is not empty", reason="image.dest_exists"
            )
        decision, resolved_obj = self.check(image)
        manifest = resolved_obj.manifest
        s = self.registry.settings
        total = manifest.config.size + sum(layer.size for layer in manifest.layers)
        if total > s.max_image_bytes:
            raise ConfigError(
                f"image {image} is {total} bytes (limit {s.max_image_bytes})",
                reason="image.too_large",
            )
        if manifest.config.media_type not in CONFIG_TYPES:
            raise EvidenceError(
                f"{image} is not a container image (config type {manifest.config.media_type})",
                reason="image.not_an_image",
            )
        config = parse_config(
            self.registry.get_blob(image, manifest.config, s.max_config_bytes), manifest, s
        )
        compressions, keys = self._layer_keys(manifest.layers)
        bundle_dir.mkdir(parents=True, exist_ok=True)
        partial = bundle_dir / "rootfs.partial"
        if partial.exists():
            remove_tree(partial)
        os.mkdir(partial, 0o755)
        # The first plain layer not in the cache is unpacked from the registry stream itself
        # (tee'd to the cache, its digest checked before anything is committed: ADR 1000) while
        # the others download concurrently into the cache; those unpack, in order, once verified.
        streamed = self._streamed_layer(manifest.layers, keys)
        pool = ThreadPoolExecutor(max_workers=s.max_concurrent_layer_downloads)
        by_digest: dict[str, Future[Path]] = {}
        n = len(manifest.layers)

        def submit(indices: range) -> None:
            for i in indices:
                layer = manifest.layers[i]
                if layer.digest not in by_digest and i != streamed:
                    by_digest[layer.digest] = pool.submit(
                        self.cache.ensure, self.registry, image, layer
                    )

        try:
            # the layers after the streamed one start downloading once its response is open,
            # not before: they would delay its first bytes (~25 ms of 0.28 s, ADR 1001); the ones
            # before it are in the cache
            submit(range(n) if streamed is None else range(streamed))
            budget = UnpackBudget(s)
            for i, (layer, comp, key, diff_id) in enumerate(
                zip(manifest.layers, compressions, keys, config.diff_ids, strict=True)
            ):
                if i == streamed:
                    later = functools.partial(submit, range(i + 1, n))
                    self._unpack_streamed(image, layer, comp, diff_id, partial, budget, later)
                    continue
                blob = by_digest[layer.digest].result()
                if key is None:
                    unpack_layer(blob, comp, diff_id, partial, budget)
                    continue
                from trustpod.oci.decrypt import DecryptingReader, verify_layer_hmac

                # one open file: the whole HMAC first, then the plaintext streams into unpack
                with blob.open("rb") as f:
                    verify_layer_hmac(f, *key)
                    # the reader has read(n) only, which is all tarfile and the decompressors use
                    stream = cast(IO[bytes], DecryptingReader(f, key[0]))
                    unpack_layer(stream, comp, diff_id, partial, budget, name=blob.name)
            if rootfs.exists():
                rootfs.rmdir()
            os.replace(partial, rootfs)
        except BaseException:
            for pending in by_digest.values():
                pending.cancel()
            pool.shutdown(wait=True)
            remove_tree(partial)
            raise
        pool.shutdown(wait=True)
        meta = {
            "reference": str(image),
            "manifest_digest": manifest.digest,
            "index_digest": resolved_obj.index.digest if resolved_obj.index else None,
            "policy_scope": decision.scope if decision else None,
        }
        fd = os.open(bundle_dir / "image.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(meta, out, indent=2)
        return PulledImage(
            str(image), manifest.digest, meta["index_digest"], config, rootfs, decision
        )
