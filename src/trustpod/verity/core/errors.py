"""The corruption error: names the first corrupted data block and where the mismatch was found."""

from __future__ import annotations

from trustpod.errors import VerificationError

__all__ = ["ROOT_LEVEL", "VerityCorruption"]

#: ``level`` value when the top block (or the single data block) does not match the root hash
ROOT_LEVEL = -1


class VerityCorruption(VerificationError):
    """Verification failed; ``data_block`` is the first data block whose hash path is broken.

    ``level`` is the tree level holding the mismatched digest, as the kernel numbers them:
    0 = the digests of data blocks (so the data block itself changed), ``n`` >= 1 = digests of
    level ``n - 1`` hash blocks (a hash block changed), ``ROOT_LEVEL`` = the root hash itself
    (wrong root hash, or the top hash block changed).
    """

    def __init__(self, data_block: int, level: int, levels: int, *, detail: str = "") -> None:
        self.data_block = data_block
        self.level = level
        self.levels = levels
        if level == ROOT_LEVEL:
            where = "the root hash"
            reason = "verity.root_hash_mismatch"
            fix = "check the root hash, or the data/hash device was modified"
        elif level == 0:
            where = "tree level 0 (digests of data blocks): the data block was modified"
            reason = "verity.data_corrupted"
            fix = "the data device was modified after format; rebuild or restore the image"
        else:
            where = (
                f"tree level {level} (digests of level {level - 1} hash blocks): "
                "the hash tree was modified"
            )
            reason = "verity.hash_tree_corrupted"
            fix = "the hash device was modified after format; rebuild or restore it"
        message = (
            f"verification failed: first corrupted data block {data_block}, mismatch at {where}"
        )
        if detail:
            message += f" ({detail})"
        super().__init__(message, reason=reason, fix=fix)
