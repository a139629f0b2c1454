"""A unix stream socket bound with a mode under a umask (never wider, not even briefly)."""

from __future__ import annotations

import contextlib
import os
import socket
import stat

__all__ = ["bind_unix_socket"]


def bind_unix_socket(path: str, mode: int) -> socket.socket:
    """A socket bound (not listening) at ``path`` with ``mode``: bound under ``umask(~mode)``
    rather than chmod-ed afterwards; a stale socket file left by a crash is replaced (any other
    kind of file is left alone and the bind fails). A failed bind closes the socket and raises
    the ``OSError``; callers turn it into their own ``ConfigError``."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o777 & ~mode)
    try:
        sock.bind(path)
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old)
    return sock
