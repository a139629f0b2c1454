"""Run the KBS under uvicorn: TLS from ``[http_server]``, every socket, ``worker_count`` processes.

With several workers each process builds its own app from the config (``app_factory``); they
share sessions, resources and policies through the storage backend, so the storage must not be
``Memory``.
"""

from __future__ import annotations

import logging
import logging.config
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

from trustpod.errors import ConfigError
from trustpod.kbs.config import KbsConfig, load_config

__all__ = ["CONFIG_ENV", "app_factory", "bind_sockets", "serve"]

CONFIG_ENV = "TRUSTPOD_KBS_CONFIG"
_log = logging.getLogger(__name__)


def app_factory() -> Any:
    """ASGI app for the config named by ``$TRUSTPOD_KBS_CONFIG`` (used by worker processes)."""
    from trustpod.kbs.wiring import build_app

    return build_app(load_config(os.environ[CONFIG_ENV]))


def _split(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(
            f"http_server.sockets entry {addr!r} is not HOST:PORT", reason="config.sockets"
        )
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - upstream's own default form


def bind_sockets(addrs: tuple[str, ...]) -> list[socket.socket]:
    out: list[socket.socket] = []
    for addr in addrs:
        host, port = _split(addr)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"cannot listen on {addr}: {exc.strerror}",
                reason="config.sockets",
                fix="choose a free port in http_server.sockets",
            ) from exc
        sock.listen(2048)
        sock.set_inheritable(True)
        out.append(sock)
    return out


def _tls_kwargs(cfg: KbsConfig) -> dict[str, Any]:
    http = cfg.http_server
    if http.insecure_http:
        _log.warning("http_server.insecure_http = true: serving plain HTTP. Testing only.")
        return {}
    for what, p in (("private_key", http.private_key), ("certificate", http.certificate)):
        if p is None or not Path(p).is_file():
            raise ConfigError(
                f"{cfg.source}: http_server.{what} {p} does not exist",
                reason="config.tls_files",
                fix="point it at a PEM file (trustpod kbs init generates a pair)",
            )
    from trustpod.kbs.tls import server_context

    server_context(http)  # refuse to start on what cannot be applied, before listening
    # KbsUvicornConfig replaces uvicorn's context with server_context(http) in every worker
    return {"ssl_keyfile": str(http.private_key), "ssl_certfile": str(http.certificate)}


def _log_config(cfg: KbsConfig, override: str | None = None) -> dict[str, Any]:
    """The logging setup uvicorn applies in the supervisor and in every worker process."""
    from trustpod.kbs.logsetup import uvicorn_log_config

    return uvicorn_log_config(
        trustpod_level=logging.getLogger("trustpod").getEffectiveLevel(),
        root_level=logging.getLogger().getEffectiveLevel(),
        fmt=override or cfg.trustpod.log_format,
    )


def serve(
    config_path: str | Path, *, workers: int | None = None, log_format: str | None = None
) -> None:
    """Serve until SIGINT/SIGTERM; ``log_format`` overrides ``[trustpod] log_format``."""
    import uvicorn

    from trustpod.kbs.tls import KbsUvicornConfig

    cfg = load_config(config_path)
    log_config = _log_config(cfg, log_format)
    logging.config.dictConfig(log_config)  # this process's lines in the workers' format
    shared = cfg.storage_backend.storage_type != "Memory"
    # upstream's default is one worker per CPU; Memory storage cannot be shared by processes
    n = workers or cfg.http_server.worker_count or ((os.cpu_count() or 1) if shared else 1)
    if n > 1 and not shared:
        raise ConfigError(
            f"{cfg.source}: worker_count = {n} needs a shared storage backend",
            reason="config.workers_memory",
            fix='use storage_type = "Sqlite" (or set worker_count = 1)',
        )
    os.environ[CONFIG_ENV] = str(cfg.source)
    common: dict[str, Any] = {
        "log_level": "warning",
        "log_config": log_config,
        "access_log": False,
        "lifespan": "off",
        "http": cfg.http_server,
        **_tls_kwargs(cfg),
    }
    from trustpod.kbs.wiring import build_app

    # Fail before listening when the config cannot be served (a wrong at-rest key, a bad
    # signer key ...): with several workers each would otherwise die and be restarted forever.
    # This also runs the one-time at-rest migration once, before the workers start.
    app: Any = build_app(cfg)
    if n > 1:
        app = None
    sockets = bind_sockets(cfg.http_server.sockets)
    scheme = "http" if cfg.http_server.insecure_http else "https"
    for addr in cfg.http_server.sockets:
        _log.info("trustpod KBS listening on %s://%s (%d worker(s))", scheme, addr, n)
    if app is not None:
        uvicorn.Server(KbsUvicornConfig(app, **common)).run(sockets=sockets)
        return
    from uvicorn.supervisors import Multiprocess

    from trustpod.kbs.metrics import MULTIPROC_ENV

    # Workers write their metrics to files here; /metrics on any worker aggregates them all.
    metrics_dir = tempfile.mkdtemp(prefix="trustpod-kbs-metrics-")
    os.environ[MULTIPROC_ENV] = metrics_dir
    config = KbsUvicornConfig("trustpod.kbs.serve:app_factory", factory=True, workers=n, **common)
    try:
        Multiprocess(config, sockets=sockets).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
