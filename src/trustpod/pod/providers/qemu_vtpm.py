"""The emulated Azure CVM behind the ``qemu`` provider's vTPM: provisioning and the paravisor.

Azure's paravisor (HCL) owns the vTPM: it persists the AK at ``0x81000003``, publishes the HCL
report in NV ``0x01400001`` and regenerates it whenever the guest writes user data to NV
``0x01400002``. Here:

1. ``provision(state_dir, emulator_dir)`` boots the emulated CVM (``trustpod.guest.emulator``)
   on the VM's swtpm state directory *before* the VM starts: AK, both NV indices and a first HCL
   report land in the swtpm state the VM's ``tpm-crb`` then serves, and the AK's public key is
   written to ``ak.der`` for the paravisor.
2. ``VtpmRelay`` sits between qemu and swtpm (``python -m trustpod.pod.providers.qemu_vtpm``,
   its own process so it lives as long as the VM): qemu's control channel is relayed byte for
   byte, the data socket qemu passes with ``CMD_SET_DATAFD`` is replaced by one of ours, and
   TPM commands are relayed one request/response at a time. After a successful
   ``TPM2_NV_Write`` to ``0x01400002`` it rebuilds the HCL report for the new user data (SNP
   report signed by the emulated VCEK, ``REPORT_DATA = SHA-256(var_data)``) and writes it to
   ``0x01400001`` with owner authorization before the guest sees the response.

So the in-guest ``az-snp-vtpm`` attester runs unchanged against ``/dev/tpmrm0``; its evidence
verifies only where the KBS names the emulated roots in ``insecure_emulated_roots``. INSECURE:
an emulation for tests and demos, no confidentiality from this host.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import struct
import sys
import threading
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from trustpod._internal.unix_socket import bind_unix_socket
from trustpod.errors import ConfigError
from trustpod.guest.attesters.az_vtpm import (
    VTPM_AK_HANDLE,
    VTPM_HCL_REPORT_NV_INDEX,
    VTPM_USER_DATA_NV_INDEX,
    VTPM_USER_DATA_SIZE,
)
from trustpod.guest.emulator.cvm import CvmProfile, EmulatedAzureCvm
from trustpod.guest.emulator.vendor import EmulatedVendor, load_or_create_vendor

__all__ = [
    "AK_FILE",
    "MAX_TPM_MESSAGE",
    "Paravisor",
    "VtpmRelay",
    "main",
    "nv_write_command",
    "parse_nv_write",
    "provision",
]

_log = logging.getLogger(__name__)

AK_FILE = "ak.der"
#: largest TPM command/response relayed (libtpms: 4096 bytes)
MAX_TPM_MESSAGE = 8192
#: TPM2_PT_NV_BUFFER_MAX of libtpms: one NV_Write carries at most this much
NV_CHUNK = 1024
_CTRL_CHUNK = 4096
_CMD_SET_DATAFD = 16
_TPM_ST_SESSIONS = 0x8002
_TPM_CC_NV_WRITE = 0x00000137
_TPM_RH_OWNER = 0x40000001
_TPM_RS_PW = 0x40000009


def provision(state_dir: Path, emulator_dir: Path) -> bytes:
    """Boot the emulated CVM on ``state_dir`` (swtpm state), leave AK + NV indices + a first
    HCL report there, write ``state_dir/ak.der``; return the emulated VCEK (DER)."""
    vendor = load_or_create_vendor(emulator_dir / "vendor")
    cvm = EmulatedAzureCvm(vendor, backend="swtpm", state_dir=state_dir)
    cvm.boot()
    try:
        ak = cvm.device.ak_public_der(VTPM_AK_HANDLE)
    finally:
        cvm.shutdown()
    fd = os.open(state_dir / AK_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(ak)
    return vendor.vcek_der


class Paravisor:
    """Rebuilds the HCL report for the guest's user data (as ``EmulatedAzureCvm`` does)."""

    def __init__(self, vendor: EmulatedVendor, ak_der: bytes, profile: CvmProfile) -> None:
        self.vendor, self.profile = vendor, profile
        self.ak = serialization.load_der_public_key(ak_der)
        self.user_data = bytearray(VTPM_USER_DATA_SIZE)
        self._report_id = os.urandom(32)

    def write(self, data: bytes, offset: int) -> bytes:
        """Apply a guest write to the user-data index; return the new HCL report (NV part)."""
        if offset + len(data) > VTPM_USER_DATA_SIZE:
            raise ConfigError("user-data write beyond the index", reason="emulator.user_data")
        self.user_data[offset : offset + len(data)] = data
        return self.profile.nv_hcl_report(
            self.vendor, self.ak, bytes(self.user_data), self._report_id
        )


def parse_nv_write(cmd: bytes) -> tuple[int, bytes, int] | None:
    """``(nv_index, data, offset)`` of a ``TPM2_NV_Write`` command, else ``None``."""
    if len(cmd) < 22:
        return None
    tag, size, cc = struct.unpack_from(">HII", cmd)
    if tag != _TPM_ST_SESSIONS or cc != _TPM_CC_NV_WRITE or size != len(cmd):
        return None
    _auth, index, auth_size = struct.unpack_from(">III", cmd, 10)
    p = 22 + auth_size
    if p + 2 > len(cmd):
        return None
    (n,) = struct.unpack_from(">H", cmd, p)
    if p + 2 + n + 2 != len(cmd):
        return None
    (offset,) = struct.unpack_from(">H", cmd, p + 2 + n)
    return index, cmd[p + 2 : p + 2 + n], offset


def nv_write_command(index: int, data: bytes, offset: int) -> bytes:
    """``TPM2_NV_Write(TPM_RH_OWNER, index)`` with an empty password session."""
    auth = struct.pack(">IHBH", _TPM_RS_PW, 0, 1, 0)
    body = struct.pack(">III", _TPM_RH_OWNER, index, len(auth)) + auth
    body += struct.pack(">H", len(data)) + data + struct.pack(">H", offset)
    return struct.pack(">HII", _TPM_ST_SESSIONS, 10 + len(body), _TPM_CC_NV_WRITE) + body


def _read_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        part = sock.recv(n - len(buf))
        if not part:
            return None
        buf += part
    return bytes(buf)


def _read_message(sock: socket.socket) -> bytes | None:
    head = _read_exact(sock, 6)
    if head is None:
        return None
    (size,) = struct.unpack_from(">I", head, 2)
    if not 10 <= size <= MAX_TPM_MESSAGE:
        raise ConfigError(f"TPM message of {size} bytes", reason="emulator.tpm_message")
    rest = _read_exact(sock, size - 6)
    return None if rest is None else head + rest


def _rc(rsp: bytes) -> int:
    return int(struct.unpack_from(">I", rsp, 6)[0]) if len(rsp) >= 10 else -1


class VtpmRelay:
    """qemu <-> swtpm, with the paravisor on the data channel (see the module doc)."""

    def __init__(self, listen: Path, swtpm_ctrl: Path, paravisor: Paravisor) -> None:
        self.listen, self.swtpm_ctrl, self.paravisor = listen, swtpm_ctrl, paravisor
        self._srv = bind_unix_socket(str(self.listen), 0o700)
        self._srv.listen(1)

    def serve_forever(self) -> None:
        """Serve qemu's control connections one after the other until ``close()``."""
        while True:
            try:
                conn, _ = self._srv.accept()
            except OSError:  # closed
                return
            self._control(conn)

    def close(self) -> None:
        self._srv.close()

    def _control(self, qemu: socket.socket) -> None:
        up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        up.connect(str(self.swtpm_ctrl))
        threading.Thread(target=_copy, args=(up, qemu), daemon=True).start()
        with qemu, up:
            while True:
                msg, fds, _flags, _addr = socket.recv_fds(qemu, _CTRL_CHUNK, 4)
                if not msg:
                    return
                if not fds:
                    up.sendall(msg)
                    continue
                if msg[:4] != struct.pack(">I", _CMD_SET_DATAFD) or len(fds) != 1:
                    for fd in fds:
                        os.close(fd)
                    raise ConfigError("unexpected fds on the vTPM control channel")
                ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                socket.send_fds(up, [msg], [theirs.fileno()])
                theirs.close()
                guest = socket.socket(fileno=fds[0])
                threading.Thread(target=self._data, args=(guest, ours), daemon=True).start()

    def _data(self, guest: socket.socket, tpm: socket.socket) -> None:
        with guest, tpm:
            while True:
                cmd = _read_message(guest)
                if cmd is None:
                    return
                tpm.sendall(cmd)
                rsp = _read_message(tpm)
                if rsp is None:
                    return
                write = parse_nv_write(cmd)
                if write is not None and write[0] == VTPM_USER_DATA_NV_INDEX and _rc(rsp) == 0:
                    self._publish(tpm, write[1], write[2])
                guest.sendall(rsp)

    def _publish(self, tpm: socket.socket, data: bytes, offset: int) -> None:
        hcl = self.paravisor.write(data, offset)
        for off in range(0, len(hcl), NV_CHUNK):
            tpm.sendall(nv_write_command(VTPM_HCL_REPORT_NV_INDEX, hcl[off : off + NV_CHUNK], off))
            rsp = _read_message(tpm)
            if rsp is None or _rc(rsp) != 0:
                _log.error("HCL report write at %d failed (rc %s)", off, rsp and hex(_rc(rsp)))
                return
        _log.info("HCL report regenerated for user data %s...", data[:8].hex())


def _copy(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(_CTRL_CHUNK)
            if not data:
                return
            dst.sendall(data)
    except OSError:
        return


def main(argv: list[str] | None = None) -> int:
    """``--vm DIR`` (cwd: relative socket paths fit sun_path) ``--emulator-dir E``."""
    parser = argparse.ArgumentParser(prog="trustpod-qemu-paravisor")
    parser.add_argument("--vm", type=Path, required=True)
    parser.add_argument("--emulator-dir", type=Path, required=True)
    parser.add_argument("--listen", default="tpm/para.sock")
    parser.add_argument("--swtpm-ctrl", default="tpm/ctrl.sock")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="paravisor: %(message)s", stream=sys.stderr)
    vendor = load_or_create_vendor(args.emulator_dir / "vendor")
    ak = (args.vm / "tpm" / AK_FILE).read_bytes()
    relay = VtpmRelay(Path(args.listen), Path(args.swtpm_ctrl), Paravisor(vendor, ak, CvmProfile()))
    _log.warning("EMULATED Azure CVM paravisor for %s (insecure_emulated_roots only)", args.vm)
    relay.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
