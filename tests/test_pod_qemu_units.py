"""The qemu provider's pieces without a VM: the cidata ISO read back with pycdlib, the in-guest
forwarder relaying over real sockets, the ``[qemu]`` settings and the qemu argv."""

from __future__ import annotations

import io
import socket
import threading
from pathlib import Path

import pytest

from trustpod.errors import ConfigError
from trustpod.image.apf import serve
from trustpod.image.cidata import write_cidata
from trustpod.image.qemu import QemuConfig, qemu_argv
from trustpod.pod.providers.qemu import qemu_provider


def test_cidata_iso_reads_back(tmp_path: Path) -> None:
    pycdlib = pytest.importorskip("pycdlib")
    iso_path = tmp_path / "cidata.iso"
    write_cidata(iso_path, b"#cloud-config\nwrite_files: []\n", "podvm-x")
    assert iso_path.stat().st_mode & 0o777 == 0o600
    iso = pycdlib.PyCdlib()
    iso.open(str(iso_path))
    try:
        assert iso.pvd.volume_identifier.strip() == b"cidata"
        for name, want in (("user-data", b"#cloud-config\nwrite_files: []\n"), ("meta-data", None)):
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
            if want is not None:
                assert out.getvalue() == want
            else:
                assert b"instance-id: podvm-x" in out.getvalue()
    finally:
        iso.close()


def test_forwarder_relays_to_the_unix_socket(tmp_path: Path) -> None:
    sock_path = tmp_path / "agent.sock"
    agent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    agent.bind(str(sock_path))
    agent.listen()

    def echo() -> None:
        conn, _ = agent.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data.upper())

    threading.Thread(target=echo, daemon=True).start()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    threading.Thread(target=serve, args=("127.0.0.1", port, str(sock_path)), daemon=True).start()
    for _ in range(200):
        try:
            client = socket.create_connection(("127.0.0.1", port), timeout=5)
            break
        except OSError:
            threading.Event().wait(0.01)
    with client:
        payload = b"ttrpc frame " * 10000
        client.sendall(payload)
        client.shutdown(socket.SHUT_WR)
        got = b""
        while data := client.recv(65536):
            got += data
    assert got == payload.upper()
    agent.close()


def test_qemu_settings_fail_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRUSTPOD_POD_VM_IMAGE", raising=False)
    with pytest.raises(ConfigError, match="image_dir"):
        qemu_provider({}, tmp_path)
    with pytest.raises(ConfigError, match="not a setting"):
        qemu_provider({"image_dir": str(tmp_path), "nope": 1}, tmp_path)


def test_qemu_argv_read_only_root_and_no_network_by_default(tmp_path: Path) -> None:
    cfg = QemuConfig(tmp_path / "k", tmp_path / "i", tmp_path / "d", "roothash=00", tmp_path / "c")
    argv = qemu_argv(cfg)
    assert argv[argv.index("-machine") + 1] == "q35,accel=tcg"
    assert f"file={tmp_path / 'd'},if=virtio,format=raw,readonly=on" in argv
    assert argv[argv.index("-net") + 1] == "none"
    assert "-no-reboot" in argv
    assert argv[argv.index("-append") + 1] == "roothash=00"
