"""PCR 11 model (systemd-stub UKI sections) checked against a real swtpm; RVPS messages and
publishing to a KBS-shaped HTTP endpoint over a real socket."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from trustpod.errors import AuthenticationError, ConfigError, DependencyError, EvidenceError
from trustpod.image import EmulatorPcrs, expected_pcr11, measure_uki_boot
from trustpod.image.cmdline import build_cmdline
from trustpod.image.manifest import BootManifest, FileEntry
from trustpod.image.measure import UKI_SECTION_ORDER, measured_digests, replay
from trustpod.image.reference_values import publish, reference_values, rvps_sample_message
from trustpod.verity.core import VerityParams

CMDLINE = build_cmdline(bytes(range(32)), VerityParams(data_blocks=10, salt=b"\x01"))


def _manifest(osrel: str | None = "ID=trustpod\n") -> BootManifest:
    entry = FileEntry("root.img", 40960, "00" * 32)
    return BootManifest.create(
        cmdline=CMDLINE, root_image=entry, hash_device=entry, filesystem="squashfs", osrel=osrel
    )


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def test_pcr11_by_hand() -> None:
    # name (with NUL) then contents, .osrel before .cmdline, from an all-zero PCR
    pcr = bytes(32)
    for item in (b".osrel\0", b"ID=trustpod\n", b".cmdline\0", CMDLINE.encode()):
        pcr = _h(pcr + _h(item))
    assert expected_pcr11(_manifest()) == pcr
    assert _manifest().pcr11_sha256 == pcr.hex()
    only_cmdline = _h(_h(bytes(32) + _h(b".cmdline\0")) + _h(CMDLINE.encode()))
    assert expected_pcr11(CMDLINE) == only_cmdline


def test_section_order_empty_and_unmeasured_sections() -> None:
    sections = {".cmdline": b"c", ".pcrsig": b"{}", ".osrel": b"o", ".initrd": b""}
    digests = measured_digests(sections, content_digests={".linux": _h(b"kernel")})
    names = [_h(n.encode() + b"\0") for n in (".linux", ".osrel", ".cmdline")]
    assert digests == [names[0], _h(b"kernel"), names[1], _h(b"o"), names[2], _h(b"c")]
    assert UKI_SECTION_ORDER[:3] == (".linux", ".osrel", ".cmdline")
    with pytest.raises(EvidenceError):
        measured_digests({".bogus": b"x"})
    with pytest.raises(EvidenceError):
        measured_digests({}, content_digests={".linux": b"short"})
    with pytest.raises(EvidenceError):
        replay([], bank="md5")


def test_emulator_adapter_extends_pcr11() -> None:
    calls: list[tuple[int, bytes]] = []

    class FakeCvm:
        def extend_pcr(self, index: int, digest: bytes) -> None:
            calls.append((index, digest))

    value = measure_uki_boot(EmulatorPcrs(FakeCvm()), _manifest())
    assert [i for i, _ in calls] == [11, 11, 11, 11]
    assert replay([d for _, d in calls]) == value == expected_pcr11(_manifest())


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 65535:
            continue
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair")


@pytest.fixture
def swtpm(tmp_path: Path) -> Iterator[str]:
    if shutil.which("swtpm") is None:
        pytest.skip("swtpm not installed")
    pytest.importorskip("tpm2_pytss")
    state = tmp_path / "tpm"
    state.mkdir()
    port = _free_port_pair()
    argv = ["swtpm", "socket", "--tpm2", "--server", f"type=tcp,port={port},bindaddr=127.0.0.1"]
    argv += ["--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1"]
    argv += ["--flags", "not-need-init,startup-clear", "--tpmstate", f"dir={state}"]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("swtpm did not start")
                time.sleep(0.05)
        yield f"swtpm:host=127.0.0.1,port={port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.swtpm
@pytest.mark.parametrize("osrel", ["ID=trustpod\n", None])
def test_expected_pcr11_matches_a_real_swtpm(swtpm: str, osrel: str | None) -> None:
    from trustpod.image.tpm import TpmPcrs

    manifest = _manifest(osrel)
    with TpmPcrs(swtpm) as tpm:
        assert tpm.read(11) == bytes(32)
        measure_uki_boot(tpm, manifest)
        assert tpm.read(11) == expected_pcr11(manifest)
        assert tpm.read(11).hex() == manifest.pcr11_sha256


def test_rvps_sample_message() -> None:
    values = reference_values(_manifest(), ["az-snp-vtpm", "az-tdx-vtpm", "tpm"])
    pcr = _manifest().pcr11_sha256
    assert values == {"snp_pcr11": [pcr], "tdx_pcr11": [pcr], "tpm_pcr11": [pcr]}
    msg = rvps_sample_message(values)
    assert set(msg) == {"version", "type", "payload"}
    assert (msg["version"], msg["type"]) == ("0.1.0", "sample")
    assert json.loads(base64.b64decode(msg["payload"], validate=True)) == values
    with pytest.raises(ConfigError):
        reference_values(_manifest(), ["sgx"])
    with pytest.raises(ConfigError):
        reference_values(_manifest(), [])


class _Kbs(BaseHTTPRequestHandler):
    received: list[tuple[str, str, bytes]] = []
    status = 200

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        _Kbs.received.append((self.path, self.headers.get("Authorization", ""), body))
        self.send_response(_Kbs.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def kbs() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Kbs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Kbs.received.clear()
    _Kbs.status = 200
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_publish_posts_with_admin_token(kbs: str, tmp_path: Path) -> None:
    from trustpod.cli.main import main

    msg = rvps_sample_message(reference_values(_manifest(), ["tpm"]))
    publish(kbs + "/", "tok123", msg)
    path, auth, body = _Kbs.received[-1]
    assert path == "/kbs/v0/reference-value" and auth == "Bearer tok123"
    assert json.loads(body) == msg
    _Kbs.status = 401
    with pytest.raises(AuthenticationError):
        publish(kbs, "bad", msg)
    _Kbs.status = 500
    with pytest.raises(DependencyError):
        publish(kbs, "tok123", msg)
    with pytest.raises(DependencyError):
        publish("http://127.0.0.1:1", "tok123", msg, timeout_s=2)
    # the CLI path: manifest file + token file
    _Kbs.status = 200
    (tmp_path / "m.json").write_text(_manifest().dumps())
    (tmp_path / "token").write_text("tok456\n")
    argv = ["image", "reference-values", str(tmp_path / "m.json"), "--tee", "az-snp-vtpm"]
    assert main([*argv, "--publish", kbs, "--token-file", str(tmp_path / "token")]) == 0
    assert _Kbs.received[-1][1] == "Bearer tok456"
    payload = json.loads(base64.b64decode(json.loads(_Kbs.received[-1][2])["payload"]))
    assert payload == {"snp_pcr11": [_manifest().pcr11_sha256]}


@pytest.fixture(scope="module")
def cvm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cvm")  # the emulated vendor chain is made once


@pytest.mark.parametrize("backend", ["software", "swtpm"])
def test_emulated_cvm_measures_pcr11(cvm_dir: Path, backend: str) -> None:
    """The emulated Azure CVM measures the command line into PCR 11 through the port."""
    cvm_mod = pytest.importorskip("trustpod.guest.emulator.cvm")
    if backend == "swtpm" and shutil.which("swtpm") is None:
        pytest.skip("swtpm not installed")
    cvm = cvm_mod.EmulatedAzureCvm.create(cvm_dir, backend=backend)
    with cvm:
        value = measure_uki_boot(EmulatorPcrs(cvm), _manifest())
        assert cvm.device.pcr_read([11])[0] == value == expected_pcr11(_manifest())
