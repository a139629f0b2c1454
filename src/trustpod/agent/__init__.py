"""The pod's agent: kata's ``grpc.AgentService`` over ttRPC, containers run with runc.

Guest side: it runs inside the pod VM next to the AA and CDH and never imports the server side
(KBS, attestation service). Layout:

- ``framing``: ttRPC's 10-byte frame header and stream parser (pure).
- ``protos`` / ``pb``: the kata/ttRPC ``.proto`` files and their compiled descriptors.
- ``server`` / ``client``: ttRPC over unix, TCP and vsock sockets (guest server, host client).
- ``gate``: the ``PolicyGate`` port each RPC is checked by (the per-pod policy implements it).
- ``images``: the ``ImagePuller`` port CreateContainer gets a rootfs from.
- ``runc`` / ``sandbox`` / ``service``: containers, processes and the RPC handlers.
"""

from __future__ import annotations

__all__: list[str] = []
