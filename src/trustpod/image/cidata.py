"""The ``cidata`` disk: the userdata as an ISO 9660 volume labelled ``cidata`` (NoCloud), the
way CAA's libvirt provider hands the pod VM its cloud-config. Built with pycdlib (Rock Ridge +
Joliet so the names keep their dashes). The userdata is not measured (CAA): the initdata in it
is, by the agent binding its digest into PCR 8.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path

from trustpod.errors import DependencyError

__all__ = ["CIDATA_LABEL", "write_cidata"]

CIDATA_LABEL = "cidata"


def write_cidata(
    out: Path, user_data: bytes, instance_id: str, files: Mapping[str, bytes] | None = None
) -> None:
    """Write ``out`` (mode 0600: the userdata carries the initdata) with ``user-data``,
    ``meta-data`` and ``files`` (e.g. the emulated CVM's ``vcek.der``)."""
    try:
        import pycdlib
    except ImportError as exc:
        raise DependencyError(
            "pycdlib is not installed", reason="image.tool_missing", fix="pip install pycdlib"
        ) from exc
    meta = f"instance-id: {instance_id}\nlocal-hostname: {instance_id}\n".encode()
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=CIDATA_LABEL)
    entries = {"user-data": user_data, "meta-data": meta, **(files or {})}
    for name, data in entries.items():
        base = name.upper().replace("-", "_")
        iso_name = "/" + base + (";1" if "." in base else ".;1")
        iso.add_fp(io.BytesIO(data), len(data), iso_name, rr_name=name, joliet_path="/" + name)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        iso.write_fp(f)
    iso.close()
