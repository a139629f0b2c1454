"""Guest side of trustpod: attesters, the KBS client, the attestation agent and the CDH.

Never imports the server side (``trustpod.kbs``, ``trustpod.attestation``, ``trustpod.storage``,
``trustpod.verifiers``, ``trustpod.collateral``, ``trustpod.rvps``): the guest only shares the
pure wire protocol (``trustpod.protocol``) with the KBS.
"""

from __future__ import annotations

__all__: list[str] = []
