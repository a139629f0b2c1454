"""``trustpod agent serve``: AA + CDH + guest API + the kata agent API in one process.

Start order (kata's agent starts the AA and CDH before it serves the shim):

1. ``GuestRuntime.start()``: the initdata digest is bound into the TEE (a mismatch stops here)
   and the CDH's credentials are fetched — exactly what ``trustpod guest run`` does;
2. the AA/CDH REST API (api-server-rest paths) on ``api_listen`` of guest.toml
   (``127.0.0.1:8006``): containers share the agent's network namespace and reach it there;
3. the policy gate: kata's allow-all default, then the initdata's ``policy.rego``;
4. the agent becomes the child subreaper (it reaps runc's detached containers);
5. the ttRPC server on every ``--listen`` address.

Config directory additions (next to guest run's files)::

    D/pause/rootfs/    the pause container's root filesystem (from the pod VM image)
    D/state/           agent state: runc root, bundles (created 0700)
    D/state/run/       what kata calls /run/kata-containers (CopyFile, shared mounts)

Images come from the CDH-configured guest image puller (``trustpod.oci.guest``), or with
``--local-images DIR`` from unpacked root filesystems in DIR (no signature policy: tests and
images that are part of the measured pod VM image).
"""

from __future__ import annotations

import logging
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from trustpod.agent.gate import PolicyGate
from trustpod.agent.images import ImagePuller, LocalDirPuller
from trustpod.agent.pb import protos
from trustpod.agent.runc import RuncRuntime, become_subreaper
from trustpod.agent.sandbox import AgentSettings, Sandbox
from trustpod.agent.server import ServerSettings, TtrpcServer
from trustpod.agent.service import AgentService
from trustpod.guest.run import GuestRuntime

__all__ = ["AgentOptions", "AgentProcess", "build_gate", "build_puller"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentOptions:
    listen: tuple[str, ...]
    config_dir: Path
    local_images: Path | None = None
    runc: str = "runc"
    server: ServerSettings = field(default_factory=ServerSettings)
    agent: AgentSettings = field(default_factory=AgentSettings)


def build_gate(runtime: GuestRuntime) -> PolicyGate:
    """Kata's policy sources: the allow-all default, then the initdata's ``policy.rego``."""
    from trustpod.agent.policy import build_gate as kata_gate

    initdata = runtime.config.initdata
    rego = None if initdata is None else initdata.data.get("policy.rego")
    return kata_gate(initdata_policy=rego)


def build_puller(runtime: GuestRuntime, options: AgentOptions) -> ImagePuller:
    if options.local_images is not None:
        log.warning(
            "images come from %s without a signature policy (--local-images)",
            options.local_images,
        )
        return LocalDirPuller(options.local_images)
    from trustpod.oci.guest import GuestImagePuller

    return GuestImagePuller.from_cdh(runtime.cdh, dict(runtime.config.cdh.image))


class AgentProcess:
    def __init__(
        self,
        runtime: GuestRuntime,
        options: AgentOptions,
        *,
        gate: PolicyGate | None = None,
        puller: ImagePuller | None = None,
    ) -> None:
        self.runtime = runtime
        self.options = options
        self._gate = gate
        self._puller = puller
        self._stop = threading.Event()
        self.server: TtrpcServer | None = None
        self.sandbox: Sandbox | None = None
        self.addresses: list[str] = []
        self.api_url = ""

    def start(self) -> list[str]:
        """Steps 1-5; returns the bound ttRPC addresses."""
        self.runtime.start()
        self.api_url = self.runtime.serve_in_thread(self.runtime.config.settings.api_listen)
        policy_thread = ThreadPoolExecutor(1, thread_name_prefix="policy")
        gate = self._gate or policy_thread.submit(build_gate, self.runtime).result()
        puller = self._puller or build_puller(self.runtime, self.options)
        state = self.options.config_dir / "state"
        state.mkdir(mode=0o700, exist_ok=True)
        pause = self.options.config_dir / "pause" / "rootfs"
        become_subreaper()
        self.sandbox = Sandbox(
            RuncRuntime(state, binary=self.options.runc),
            puller,
            state_dir=state,
            run_dir=state / "run",
            pause_rootfs=pause if pause.is_dir() else None,
            unsealer=self.runtime.cdh,
            settings=self.options.agent,
        )
        pb = protos()
        service = AgentService(pb, self.sandbox, gate, policy_thread=policy_thread)
        self.server = TtrpcServer(pb, service.routes_table(), self.options.server)
        self.addresses = self.server.start(*self.options.listen)
        return self.addresses

    def _signal(self, sig: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping the agent", sig)
        self._stop.set()

    def run(self, ready: Any = None) -> None:
        """Start, call ``ready(addresses, api_url)``, serve until SIGTERM/SIGINT, stop."""
        old = {s: signal.signal(s, self._signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            addresses = self.start()
            if ready is not None:
                ready(addresses, self.api_url)
            self._stop.wait()
        finally:
            self.stop()
            for s, h in old.items():
                signal.signal(s, h)

    def stop(self) -> None:
        self._stop.set()
        if self.server is not None:
            self.server.stop()
        if self.sandbox is not None:
            self.sandbox.destroy()
        self.runtime.stop()
        self.runtime.close()
