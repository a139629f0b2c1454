"""ttRPC endpoint addresses: ``unix:PATH``, ``tcp:HOST:PORT``, ``vsock:PORT`` / ``vsock:CID:PORT``.

Kata's agent listens on ``vsock://-1:1024`` in the VM; the shim connects with ``vsock://CID:1024``
or, for peer pods, the cloud-api-adaptor forwarder over TCP. ``vsock://`` and ``unix://``
spellings are accepted too. Parsing is pure; sockets are made by ``server``/``client``.
"""

from __future__ import annotations

from dataclasses import dataclass

from trustpod.errors import ConfigError

__all__ = ["VMADDR_CID_ANY", "Address", "parse_address"]

#: ``-1`` in kata's ``vsock://-1:PORT``: listen on any CID.
VMADDR_CID_ANY = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Address:
    kind: str  # "unix" | "tcp" | "vsock"
    path: str = ""
    host: str = ""
    port: int = 0
    cid: int = VMADDR_CID_ANY

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "tcp":
            host = f"[{self.host}]" if ":" in self.host else self.host
            return f"tcp:{host}:{self.port}"
        return f"vsock:{'-1' if self.cid == VMADDR_CID_ANY else self.cid}:{self.port}"


def _port(text: str, spec: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 0xFFFFFFFF:
        raise ConfigError(f"bad port in listen address {spec!r}", reason="agent.listen")
    return int(text)


def parse_address(spec: str) -> Address:
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise ConfigError(
            f"listen address {spec!r} has no scheme",
            reason="agent.listen",
            fix="use unix:PATH, tcp:HOST:PORT or vsock:PORT",
        )
    rest = rest.removeprefix("//")
    if kind == "unix":
        return Address("unix", path=rest)
    if kind == "tcp":
        host, sep, port = rest.rpartition(":")
        if not sep or not host:
            raise ConfigError(f"tcp address {spec!r} must be tcp:HOST:PORT", reason="agent.listen")
        port_n = _port(port, spec)
        if port_n > 0xFFFF:
            raise ConfigError(f"bad port in listen address {spec!r}", reason="agent.listen")
        return Address("tcp", host=host.strip("[]"), port=port_n)
    if kind == "vsock":
        cid_text, sep, port = rest.rpartition(":")
        cid = VMADDR_CID_ANY
        if sep:
            cid = VMADDR_CID_ANY if cid_text == "-1" else _port(cid_text, spec)
        return Address("vsock", port=_port(port, spec), cid=cid)
    raise ConfigError(
        f"unknown scheme {kind!r} in listen address {spec!r}",
        reason="agent.listen",
        fix="use unix:PATH, tcp:HOST:PORT or vsock:PORT",
    )
