"""OpenPGP verification of simple-signing signatures with ``gpgv`` (docs/adr/1000) — I/O.

``GpgvVerifier.verify(keyring, signature)``:

1. the keyring (binary or ASCII-armored transferable public keys, what ``keyPath``/``keyData``
   hold) is written de-armored to a fresh 0700 temp directory, which is also gpgv's homedir (no
   state survives, nothing of the user's ~/.gnupg is read);
2. ``gpgv --status-fd 1 --keyring K --output P SIG`` verifies the signed message and writes its
   literal data (the payload);
3. exactly one ``VALIDSIG`` line is required and the signing key must be the **primary** key
   (its fingerprint equals the primary-key fingerprint field), as image-rs verifies against primary
   keys only; gpgv's exit status must be 0. Anything else is ``image.signature_invalid``.
"""

from __future__ import annotations

import base64
import binascii
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from trustpod.errors import ConfigError, DependencyError, VerificationError

__all__ = ["GpgvVerifier", "dearmor"]

MAX_PAYLOAD_BYTES = 1024 * 1024


def dearmor(data: bytes) -> bytes:
    """Binary OpenPGP data from ASCII armor (concatenated blocks allowed); binary passes through."""
    if b"-----BEGIN PGP" not in data:
        return data
    out = bytearray()
    lines = data.decode("ascii", "replace").splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("-----BEGIN PGP"):
            i += 1
            while i < len(lines) and lines[i].strip() and ":" in lines[i]:
                i += 1  # armor headers
            body = []
            while i < len(lines) and not lines[i].startswith("-----END PGP"):
                line = lines[i].strip()
                if line and not line.startswith("="):
                    body.append(line)
                i += 1
            try:
                out += base64.b64decode("".join(body), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ConfigError(
                    "OpenPGP key armor is not base64", reason="image.gpg_key"
                ) from exc
        i += 1
    return bytes(out)


class GpgvVerifier:
    """``OpenPgpVerifier`` backed by the ``gpgv`` binary (Debian package ``gpgv``)."""

    def __init__(self, gpgv: str | None = None, *, timeout_s: float = 30.0) -> None:
        found = gpgv or shutil.which("gpgv")
        if found is None:
            raise DependencyError(
                "gpgv is not installed; signedBy (GPG) policies cannot be checked",
                reason="image.gpgv_missing",
                fix="apt-get install gpgv",
            )
        self._gpgv, self._timeout = found, timeout_s

    def verify(self, keyring: bytes, signature: bytes) -> tuple[bytes, str]:
        with tempfile.TemporaryDirectory(prefix="trustpod-gpgv-") as tmp:
            home = Path(tmp)
            ring, sig, out = home / "keyring.gpg", home / "signature", home / "payload"
            for path, data in ((ring, dearmor(keyring)), (sig, signature)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
            try:
                proc = subprocess.run(
                    [
                        self._gpgv,
                        "--homedir",
                        tmp,
                        "--status-fd",
                        "1",
                        "--keyring",
                        str(ring),
                        "--output",
                        str(out),
                        str(sig),
                    ],
                    capture_output=True,
                    timeout=self._timeout,
                    check=False,
                    env={"LC_ALL": "C", "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise DependencyError(f"gpgv failed to run: {exc}", reason="image.gpgv") from exc
            status = proc.stdout.decode("utf-8", "replace").splitlines()
            valid = [ln.split() for ln in status if ln.startswith("[GNUPG:] VALIDSIG ")]
            if proc.returncode != 0 or len(valid) != 1 or not out.is_file():
                reason = next(
                    (
                        ln.split()[1]
                        for ln in status
                        if ln.startswith("[GNUPG:] ")
                        and ln.split()[1]
                        in ("NO_PUBKEY", "BADSIG", "ERRSIG", "EXPKEYSIG", "REVKEYSIG")
                    ),
                    "no valid signature",
                )
                raise VerificationError(
                    f"GPG signature does not verify with the policy's keyring ({reason})",
                    reason="image.signature_invalid",
                )
            fields = valid[0]
            fingerprint, primary = fields[2], fields[-1]
            if fingerprint != primary:
                raise VerificationError(
                    f"GPG signature made by subkey {fingerprint}; "
                    "only primary keys are trusted (image-rs)",
                    reason="image.signature_invalid",
                )
            if out.stat().st_size > MAX_PAYLOAD_BYTES:
                raise VerificationError(
                    "signed payload too large", reason="image.signature_payload"
                )
            return out.read_bytes(), primary
