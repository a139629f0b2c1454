"""``trustpod guest run --config-dir D``: AA + CDH + REST API as one supervised process.

Config directory (the layout the Kata agent extracts from initdata, §1.4)::

    D/initdata.toml   optional; its digest is bound into the TEE and it is sent to the KBS
    D/aa.toml         used when the initdata has no "aa.toml" entry
    D/cdh.toml        used when the initdata has no "cdh.toml" entry
    D/guest.toml      optional trustpod settings (attester, api_listen, key_dir)

When the initdata carries ``aa.toml``/``cdh.toml`` those (measured) entries are used, and a
different file next to it is a ``ConfigError``: the KBS must see the config the guest really runs.
Shutdown on SIGTERM/SIGINT is uvicorn's graceful shutdown, then the KBS clients and the attester
(e.g. the emulated CVM's swtpm) are closed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import uvicorn

from trustpod._internal.unix_socket import bind_unix_socket as _bind_unix_socket
from trustpod.errors import ConfigError, DependencyError
from trustpod.guest.aa import AttestationAgent
from trustpod.guest.api import create_app
from trustpod.guest.attesters.base import Attester
from trustpod.guest.attesters.nvidia import NvidiaAttester, detect_gpu
from trustpod.guest.cdh import ConfidentialDataHub
from trustpod.guest.config import (
    AaConfig,
    CdhConfig,
    GuestSettings,
    parse_aa,
    parse_cdh,
    parse_guest,
    read_optional,
)
from trustpod.guest.kbs_client import DEFAULT_TIMEOUT_S, KbsClient
from trustpod.guest.tee_key import TeeKeyPair
from trustpod.initdata import InitData

__all__ = [
    "API_SOCKET_MODE",
    "GuestConfig",
    "GuestRuntime",
    "SerializedAttester",
    "bind_unix_socket",
    "http_client",
    "load_config_dir",
    "settings_summary",
    "tee_key",
]

log = logging.getLogger(__name__)

#: Mode of the guest API unix socket: owner only (it hands out the AA token and the TEE key).
API_SOCKET_MODE = 0o600


def bind_unix_socket(path: str, *, mode: int = API_SOCKET_MODE) -> socket.socket:
    """A listening unix socket at ``path`` created with ``mode`` (bound under a umask, so it is
    never wider, not even briefly); a stale socket file left by a crash is replaced."""
    try:
        sock = _bind_unix_socket(path, mode)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the guest API socket {path}: {exc.strerror}",
            reason="guest.api_listen",
            fix="choose a writable path in api_listen = 'unix:<path>'",
        ) from exc
    sock.listen(128)
    return sock


_LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True, slots=True)
class GuestConfig:
    initdata: InitData | None
    aa: AaConfig
    cdh: CdhConfig
    settings: GuestSettings


def _entry(initdata: InitData | None, directory: Path, name: str) -> tuple[str, str] | None:
    measured = None if initdata is None else initdata.data.get(name)
    local = read_optional(directory, name)
    if measured is not None and local is not None and local != measured:
        raise ConfigError(
            f"{directory / name} differs from the {name!r} entry of the initdata",
            reason="guest.config_conflict",
            fix=f"remove {directory / name}: the measured initdata entry is authoritative",
        )
    if measured is not None:
        return measured, f"initdata[{name}]"
    return None if local is None else (local, str(directory / name))


def load_config_dir(directory: Path) -> GuestConfig:
    raw = read_optional(directory, "initdata.toml")
    initdata = None if raw is None else InitData.parse(raw.encode("utf-8"))
    aa_src = _entry(initdata, directory, "aa.toml")
    cdh_src = _entry(initdata, directory, "cdh.toml")
    if cdh_src is None:
        raise ConfigError(
            f"no cdh.toml in {directory} nor in the initdata",
            reason="guest.no_cdh",
            fix="create one with `trustpod initdata new --kbs-url URL`",
        )
    aa = parse_aa(*aa_src) if aa_src else AaConfig()
    guest = read_optional(directory, "guest.toml")
    settings = parse_guest(guest, str(directory / "guest.toml")) if guest else GuestSettings()
    return GuestConfig(initdata, aa, parse_cdh(*cdh_src), settings)


def http_client(cert_pem: str | None, timeout: float = DEFAULT_TIMEOUT_S) -> httpx.Client:
    """httpx client trusting the system roots plus ``cert_pem`` (upstream's extra root CA)."""
    verify: ssl.SSLContext | bool = True
    if cert_pem:
        verify = ssl.create_default_context()
        try:
            verify.load_verify_locations(cadata=cert_pem)
        except ssl.SSLError as exc:
            raise ConfigError(
                f"KBS certificate does not load: {exc}", reason="config.cert"
            ) from exc
    return httpx.Client(timeout=timeout, verify=verify)


def tee_key(algorithm: str | None) -> TeeKeyPair:
    """A fresh TEE key for ``aa.toml``'s ``tee_key_algorithm`` (default EC P-256)."""
    if algorithm == "ECDH-ES+A256KW-P521":
        return TeeKeyPair.generate_ec("P-521")
    if algorithm == "RSA-OAEP-256":
        return TeeKeyPair.generate_rsa()
    return TeeKeyPair.generate_ec("P-256")


class SerializedAttester:
    """Serializes every call into one attester: the AA, the CDH's KBS client and the API threads
    share it, and a vTPM attester's write-user-data → read-HCL-report → quote sequence must not
    interleave."""

    def __init__(self, inner: Attester) -> None:
        self.inner = inner
        self.tee = inner.tee
        self._lock = threading.Lock()

    def get_evidence(self, report_data: bytes) -> Any:
        with self._lock:
            return self.inner.get_evidence(report_data)

    def bind_init_data(self, digest: bytes) -> None:
        with self._lock:
            self.inner.bind_init_data(digest)

    def extend_runtime_measurement(self, event_digest: bytes, register_index: int) -> None:
        with self._lock:
            self.inner.extend_runtime_measurement(event_digest, register_index)

    def close(self) -> None:
        closer = getattr(self.inner, "close", None)
        if callable(closer):
            closer()


class _GuestServer(uvicorn.Server):
    """uvicorn server whose SIGTERM/SIGINT handling ends ``run()`` normally: uvicorn >= 0.29
    re-raises the captured signal after its graceful shutdown, which would skip our cleanup and
    exit with -SIGTERM instead of 0."""

    def __init__(self, config: uvicorn.Config, unix_path: str | None = None) -> None:
        super().__init__(config)
        self.unix_path = unix_path

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        """Serve; a unix socket is bound here with ``API_SOCKET_MODE`` (uvicorn's own ``uds``
        binding would chmod it to 0666) and removed at shutdown."""
        if sockets is not None or self.unix_path is None:
            super().run(sockets=sockets)
            return
        sock = bind_unix_socket(self.unix_path)
        try:
            super().run(sockets=[sock])
        finally:
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.unix_path)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        log.info("signal %d: shutting down the guest API", sig)
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


class GuestRuntime:
    """The wired AA + CDH (+ API server); ``run()`` blocks until SIGTERM/SIGINT."""

    def __init__(self, config: GuestConfig, attester: Attester) -> None:
        self.config = config
        self.attester = attester = SerializedAttester(attester)
        toml = None if config.initdata is None else config.initdata.raw.decode("utf-8")
        margin = float(config.settings.token_refresh_margin_s)
        retry: dict[str, Any] = {
            "max_retries": config.settings.kbs_max_retries,
            "retry_delay_s": config.settings.kbs_retry_delay_ms / 1000,
        }
        # GPUs (NVML, or TRUSTPOD_EMULATED_GPU): their evidence rides as additional_evidence
        gpu = NvidiaAttester.from_environment()
        retry["device_attesters"] = [gpu] if gpu is not None else []
        if gpu is None:
            log.info("GPU attestation: %s", detect_gpu().reason)

        def aa_client(cfg: AaConfig, att: Attester, init_toml: str | None) -> KbsClient:
            if cfg.kbs is None:
                raise ConfigError("aa.toml has no [token_configs.kbs]", reason="aa.no_kbs")
            return KbsClient(
                cfg.kbs.url,
                att,
                init_data_toml=init_toml,
                tee_key=tee_key(cfg.kbs.tee_key_algorithm),
                http_client=http_client(cfg.kbs.cert),
                token_refresh_margin_s=margin,
                **retry,
            )

        self.aa = AttestationAgent(
            attester, config.aa, initdata=config.initdata, client_factory=aa_client
        )
        kbc = config.cdh.kbc
        self._cdh_client = KbsClient(
            kbc.url,
            attester,
            init_data_toml=toml,
            tee_key=tee_key(config.aa.kbs.tee_key_algorithm if config.aa.kbs else None),
            http_client=http_client(kbc.kbs_cert),
            token_refresh_margin_s=margin,
            **retry,
        )
        self.cdh = ConfidentialDataHub(
            config.cdh, self._cdh_client, key_dir=Path(config.settings.key_dir)
        )
        self.server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_dir(cls, directory: Path, attester: Attester | None = None) -> GuestRuntime:
        config = load_config_dir(directory)
        if attester is None:
            from trustpod.guest.attesters.detect import make_attester

            attester = make_attester(config.settings.attester, config.settings.attester_settings)
        return cls(config, attester)

    def start(self) -> None:
        """Bind initdata (stops here on mismatch), then fetch the CDH credentials."""
        self.aa.start()
        self.cdh.start()

    def _server(self, listen: str | None = None) -> _GuestServer:
        listen = listen or self.config.settings.api_listen
        app = create_app(self.aa, self.cdh)
        kwargs: dict[str, Any] = {"log_level": "warning", "lifespan": "off"}
        if listen.startswith("unix:"):
            path = listen.removeprefix("unix:").removeprefix("//")
            return _GuestServer(uvicorn.Config(app, **kwargs), unix_path=path)
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"api_listen {listen!r} must be HOST:PORT or unix:PATH")
        host = host.strip("[]")
        if host not in _LOOPBACK:
            # The API hands out resources and tokens to whoever can connect: containers of this
            # pod only (upstream api-server-rest binds 127.0.0.1).
            raise ConfigError(
                f"api_listen {listen!r} is not a loopback address",
                reason="guest.api_listen",
                fix="use 127.0.0.1:<port> or unix:<path>",
            )
        return _GuestServer(uvicorn.Config(app, host=host, port=int(port), **kwargs))

    def run(self, listen: str | None = None) -> None:
        """Start, serve the API until a signal, then shut down cleanly."""
        try:
            self.start()
            self.server = self._server(listen)
            log.info("guest API listening on %s", listen or self.config.settings.api_listen)
            self.server.run()
        finally:
            self.close()

    def serve_in_thread(self, listen: str, *, timeout_s: float = 10.0) -> str:
        """Serve the API from a background thread (tests, demo) and return its base URL
        (``http://127.0.0.1:<port>``; ``unix:<path>`` for a socket). Stop with ``stop()``."""
        server = self._server(listen)
        self.server = server
        self._thread = threading.Thread(target=server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise DependencyError("guest API did not start", reason="guest.api_start")
            time.sleep(0.01)
        if listen.startswith("unix:"):
            return listen
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def close(self) -> None:
        self.aa.close()
        self._cdh_client.close()
        self.attester.close()


def settings_summary(config: GuestConfig) -> Mapping[str, Any]:
    """What ``trustpod guest run`` prints at start (no secrets)."""
    return {
        "initdata_digest": None if config.initdata is None else config.initdata.digest.hex(),
        "kbs": config.cdh.kbc.url,
        "attester": config.settings.attester,
        "api": config.settings.api_listen,
        "credentials": [str(c.resource_uri) for c in config.cdh.credentials],
    }
