"""The qemu provider's vTPM paravisor without a VM: TPM2_NV_Write parsing (hypothesis: never
raises on junk), the HCL report rebuilt for the guest's user data (verifier steps 4 and 5), and
the relay over real unix sockets between a fake qemu (CMD_INIT, CMD_SET_DATAFD with an fd, raw
TPM commands) and a real swtpm whose state ``provision`` filled before "boot"."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trustpod.errors import ConfigError, TrustpodError
from trustpod.evidence.hcl import HCL_REPORT_SIZE, HclReport
from trustpod.guest.attesters.az_vtpm import VTPM_HCL_REPORT_NV_INDEX, VTPM_USER_DATA_NV_INDEX
from trustpod.guest.emulator.cvm import CvmProfile
from trustpod.guest.emulator.vendor import load_or_create_vendor
from trustpod.pod.providers.qemu_vtpm import (
    AK_FILE,
    Paravisor,
    VtpmRelay,
    nv_write_command,
    parse_nv_write,
    provision,
)
from trustpod.verifiers.az_common import check_hcl_report_data, check_user_data

ROOT = Path(__file__).resolve().parents[1]


def test_nv_write_round_trip_and_junk() -> None:
    cmd = nv_write_command(VTPM_USER_DATA_NV_INDEX, b"\x01" * 64, 0)
    assert parse_nv_write(cmd) == (VTPM_USER_DATA_NV_INDEX, b"\x01" * 64, 0)
    assert parse_nv_write(cmd[:-1]) is None  # size field no longer matches
    assert parse_nv_write(cmd[:8] + b"\x00\x00\x01\x4e" + cmd[12:]) is None  # NV_Read
    assert parse_nv_write(b"") is None


@given(st.binary(max_size=200))
def test_parse_nv_write_never_raises(data: bytes) -> None:
    parse_nv_write(data)
    parse_nv_write(nv_write_command(1, b"x", 0)[:10] + data)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("emu")
    load_or_create_vendor(d / "vendor")
    return d


def _ak_der() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_paravisor_report_binds_user_data(emulator: Path) -> None:
    vendor = load_or_create_vendor(emulator / "vendor")
    para = Paravisor(vendor, _ak_der(), CvmProfile())
    nonce = bytes(range(48))
    hcl = HclReport.from_bytes(para.write(nonce, 0).ljust(HCL_REPORT_SIZE, b"\0"))
    check_hcl_report_data(hcl, hcl.snp_report().report_data)  # (4)
    check_user_data(hcl, nonce)  # (5)
    with pytest.raises(TrustpodError):
        check_user_data(hcl, b"\xff" * 48)
    with pytest.raises(ConfigError):
        para.write(b"x" * 10, 60)  # beyond the 64-byte index


def _ctrl(sock: socket.socket, cmd: int, payload: bytes = b"", fds: list[int] | None = None) -> int:
    msg = struct.pack(">I", cmd) + payload
    if fds:
        socket.send_fds(sock, [msg], fds)
    else:
        sock.sendall(msg)
    return int(struct.unpack(">I", sock.recv(4))[0])


def _tpm(sock: socket.socket, cmd: bytes) -> bytes:
    sock.sendall(cmd)
    head = sock.recv(6, socket.MSG_WAITALL)
    size = struct.unpack_from(">I", head, 2)[0]
    return head + sock.recv(size - 6, socket.MSG_WAITALL)


def _nv_read(index: int, size: int, offset: int) -> bytes:
    auth = struct.pack(">IHBH", 0x40000009, 0, 1, 0)
    body = (
        struct.pack(">III", 0x40000001, index, len(auth)) + auth + struct.pack(">HH", size, offset)
    )
    return struct.pack(">HII", 0x8002, 10 + len(body), 0x14E) + body


@pytest.fixture
def relay(tmp_path: Path, emulator: Path) -> Iterator[tuple[Path, Paravisor]]:
    if shutil.which("swtpm") is None:
        pytest.skip("swtpm not installed (apt-get install swtpm)")
    vm = Path(os.path.relpath(tmp_path / "vm", Path.cwd()))  # sun_path: keep it short
    (tmp_path / "vm" / "tpm").mkdir(parents=True)
    vcek = provision(tmp_path / "vm" / "tpm", emulator)
    assert vcek == load_or_create_vendor(emulator / "vendor").vcek_der
    ctrl = vm / "tpm" / "ctrl.sock"
    argv = ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={tmp_path / 'vm' / 'tpm'}"]
    argv += ["--ctrl", f"type=unixio,path={ctrl}", "--flags", "startup-clear"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not ctrl.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "swtpm did not start"
            time.sleep(0.02)
        ak = (tmp_path / "vm" / "tpm" / AK_FILE).read_bytes()
        para = Paravisor(load_or_create_vendor(emulator / "vendor"), ak, CvmProfile())
        r = VtpmRelay(vm / "tpm" / "para.sock", ctrl, para)
        threading.Thread(target=r.serve_forever, daemon=True).start()
        yield vm / "tpm" / "para.sock", para
        r.close()
    finally:
        proc.terminate()
        proc.wait(10)


def test_relay_regenerates_the_report_in_swtpm(relay: tuple[Path, Paravisor]) -> None:
    path, _ = relay
    qemu = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    qemu.connect(str(path))
    qemu.settimeout(20)
    ours, theirs = socket.socketpair()
    ours.settimeout(20)
    with qemu, ours:
        assert _ctrl(qemu, 2, struct.pack(">I", 0)) == 0  # CMD_INIT
        assert _ctrl(qemu, 16, fds=[theirs.fileno()]) == 0  # CMD_SET_DATAFD
        theirs.close()
        startup = _tpm(ours, struct.pack(">HIIH", 0x8001, 12, 0x144, 0))  # as the guest kernel
        assert struct.unpack_from(">I", startup, 6)[0] in (0, 0x100)
        # the provisioned report is there before any write (the guest's TEE detection)
        first = _tpm(ours, _nv_read(VTPM_HCL_REPORT_NV_INDEX, 1024, 0))
        assert struct.unpack_from(">I", first, 6)[0] == 0
        nonce = os.urandom(64)
        rsp = _tpm(ours, nv_write_command(VTPM_USER_DATA_NV_INDEX, nonce, 0))
        assert struct.unpack_from(">I", rsp, 6)[0] == 0
        raw = b""
        for off in (0, 1024):
            rsp = _tpm(ours, _nv_read(VTPM_HCL_REPORT_NV_INDEX, 1024, off))
            assert struct.unpack_from(">I", rsp, 6)[0] == 0
            n = struct.unpack_from(">H", rsp, 14)[0]
            raw += rsp[16 : 16 + n]
    hcl = HclReport.from_bytes(raw.ljust(HCL_REPORT_SIZE, b"\0"))
    check_user_data(hcl, nonce)
    check_hcl_report_data(hcl, hcl.snp_report().report_data)
