"""Evidence producers, one per TEE (upstream guest-components ``attestation-agent/attester``).

Each attester satisfies ``trustpod.guest.attesters.base.Attester``. ``sample`` is always
available; the hardware/vTPM attesters and platform detection live next to it (``tpm``,
``az_vtpm``, ``tsm``, ``detect``).
"""

from __future__ import annotations

from trustpod.guest.attesters.base import Attester, UnsupportedAttesterFeature
from trustpod.guest.attesters.sample import SampleAttester

__all__ = ["Attester", "SampleAttester", "UnsupportedAttesterFeature"]
