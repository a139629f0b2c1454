"""The image port CreateContainer gets a container's rootfs from (image-rs' job in kata/CoCo).

In a confidential pod the host never shares a rootfs: the shim sends a ``Storage`` with driver
``image_guest_pull`` whose ``source`` is the image reference (and the same reference in the
``io.kubernetes.cri.image-name`` annotation), and the agent pulls, verifies and unpacks it
inside the guest. ``ImagePuller`` is that step; the guest image puller (``trustpod.oci``)
implements it with signature policy. ``LocalDirPuller`` serves images from local directories
(tests, offline pods, and the pause container that ships in the pod VM image).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Protocol

from trustpod.errors import ConfigError, NotFoundError

__all__ = ["ImagePuller", "LocalDirPuller", "local_name"]


class ImagePuller(Protocol):
    """Pull ``image_ref``, check it against the pod's image policy and unpack its rootfs."""

    def pull(self, image_ref: str, dest: Path) -> Path:
        """Unpack the image's root filesystem into ``dest`` (an empty directory the agent
        created) and return the rootfs path (``dest`` itself or a directory under it).

        Raises ``PolicyDenied`` when the image policy refuses it (the message names the image,
        the policy scope and what failed; nothing is unpacked), ``NotFoundError`` when it does
        not exist and ``DependencyError`` when the registry fails."""


_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def local_name(image_ref: str) -> str:
    """Directory name for an image reference: ``docker.io/library/busybox:1.36`` →
    ``docker.io_library_busybox_1.36`` (every character outside ``[A-Za-z0-9_.-]`` is ``_``)."""
    name = _SAFE.sub("_", image_ref)
    if not name.strip("._"):
        raise ConfigError(f"image reference {image_ref!r} has no usable name")
    return name


class LocalDirPuller:
    """Images as unpacked root filesystems under ``root``: ``root/<local_name(ref)>/``.

    There is no signature to check: use it only for images that are part of the measured pod
    VM image or for tests."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def pull(self, image_ref: str, dest: Path) -> Path:
        src = self.root / local_name(image_ref)
        if not src.is_dir():
            raise NotFoundError(
                f"image {image_ref!r} is not in the local image directory {self.root}",
                reason="agent.image_not_found",
                fix=f"unpack its root filesystem into {src}",
            )
        rootfs = dest / "rootfs"
        shutil.copytree(src, rootfs, symlinks=True)
        return rootfs
