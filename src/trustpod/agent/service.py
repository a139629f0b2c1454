"""``grpc.AgentService`` handlers: thin translations from kata's messages to ``Sandbox`` calls.

Every handler is wrapped by ``guarded``: the ``PolicyGate`` decides the request first (kata's
``is_allowed``, keyed by the request's message name), except

- ReadStdout/ReadStderr: read, then check; a refused read returns empty data (kata redacts
  log output rather than failing the call);
- SetPolicy: checked as ``SetPolicyRequest``, then the gate's ``set_policy`` (INVALID_ARGUMENT
  when the new policy does not load).

Network RPCs record what the host asks (there is no network to configure in this runtime) and
return it, as kata returns the applied interface/routes.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from trustpod import __version__
from trustpod.agent.copyfile import copy_file
from trustpod.agent.gate import PolicyGate
from trustpod.agent.oci import SHARED_CONTAINERS_DIR, to_runtime_json
from trustpod.agent.pb import AGENT_SERVICE, HEALTH_SERVICE, Protos
from trustpod.agent.rpc import Code, RpcError
from trustpod.agent.sandbox import Sandbox
from trustpod.agent.server import Route
from trustpod.errors import ConfigError, EvidenceError, PolicyDenied, TrustpodError

__all__ = ["EXTRA_FEATURES", "INLINE_METHODS", "AgentService"]

log = logging.getLogger(__name__)

#: ``AgentDetails.extra_features`` this agent reports.
EXTRA_FEATURES = ("agent-policy", "guest-pull", "sealed-secret")
#: kata's ``API_VERSION`` (the agent protocol version reported by Health.Version).
API_VERSION = "0.0.1"
#: RPCs answered on the ttRPC event loop (``Route.inline``): bounded work under short locks only,
#: never the sandbox's (a CreateContainer may hold it while runc runs).
INLINE_METHODS = frozenset(
    {"GetGuestDetails", "UpdateInterface", "UpdateRoutes", "ListInterfaces", "ListRoutes"}
)
#: ``struct winsize`` holds unsigned shorts (kata truncates with ``as c_ushort``; refused here).
_MAX_WINSIZE = 0xFFFF


class AgentService:
    def __init__(
        self,
        pb: Protos,
        sandbox: Sandbox,
        gate: PolicyGate,
        *,
        policy_thread: Executor | None = None,
    ) -> None:
        self.pb = pb
        self.sandbox = sandbox
        self.gate = gate
        #: Every gate call runs on this one thread: decisions are serialized (kata's
        #: AGENT_POLICY mutex) and an engine bound to its creating thread (regorus) works.
        self.policy_thread = policy_thread or ThreadPoolExecutor(1, thread_name_prefix="policy")
        self._net = threading.Lock()
        self.interfaces: dict[str, Any] = {}
        self.routes: Any = pb.grpc.Routes()

    # -- policy --
    def _check(self, request: Any) -> None:
        name = request.DESCRIPTOR.name
        try:
            self.policy_thread.submit(self.gate.check, name, request).result()
        except PolicyDenied as exc:
            raise RpcError(
                Code.PERMISSION_DENIED, f"{name} is blocked by policy: {exc.message}"
            ) from exc
        except TrustpodError as exc:
            raise RpcError(Code.INTERNAL, f"{name}: internal error {exc.message}") from exc

    def routes_table(self) -> dict[tuple[str, str], Route]:
        table: dict[tuple[str, str], Route] = {}
        for name, method in self.pb.methods(AGENT_SERVICE).items():
            handler: Callable[[Any], Any] = getattr(self, name)
            request_type = self.pb.message(method.input_type.full_name)
            inline = name in INLINE_METHODS
            if name in ("ReadStdout", "ReadStderr", "SetPolicy"):
                table[(AGENT_SERVICE, name)] = Route(request_type, handler)
            else:
                table[(AGENT_SERVICE, name)] = Route(request_type, self._guarded(handler), inline)
        # kata's grpc.Health: answered without a policy check (the shim's liveness probe)
        check = self.pb.grpc.CheckRequest
        table[(HEALTH_SERVICE, "Check")] = Route(check, self.HealthCheck, inline=True)
        table[(HEALTH_SERVICE, "Version")] = Route(check, self.HealthVersion, inline=True)
        return table

    def HealthCheck(self, req: Any) -> Any:
        return self.pb.grpc.HealthCheckResponse(status=1)  # SERVING

    def HealthVersion(self, req: Any) -> Any:
        return self.pb.grpc.VersionCheckResponse(
            grpc_version=API_VERSION, agent_version=__version__
        )

    def _guarded(self, handler: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def run(request: Any) -> Any:
            self._check(request)
            return handler(request)

        return run

    def _empty(self) -> Any:
        return self.pb.empty.Empty()

    # -- sandbox --
    def CreateSandbox(self, req: Any) -> Any:
        self.sandbox.sandbox_id = req.sandbox_id
        self.sandbox.hostname = req.hostname
        self.sandbox.dns = list(req.dns)
        log.info("sandbox %s created", req.sandbox_id)
        return self._empty()

    def DestroySandbox(self, req: Any) -> Any:
        self.sandbox.destroy()
        return self._empty()

    # -- containers --
    def CreateContainer(self, req: Any) -> Any:
        config = to_runtime_json(req.OCI)
        self.sandbox.create_container(
            req.container_id,
            req.exec_id,
            config,
            list(req.storages),
            sandbox_pidns=req.sandbox_pidns,
        )
        return self._empty()

    def StartContainer(self, req: Any) -> Any:
        self.sandbox.start_container(req.container_id)
        return self._empty()

    def RemoveContainer(self, req: Any) -> Any:
        self.sandbox.remove_container(req.container_id, float(req.timeout))
        return self._empty()

    def ExecProcess(self, req: Any) -> Any:
        if not req.HasField("process"):
            raise EvidenceError("ExecProcess without a process", reason="agent.no_process")
        process = to_runtime_json(req.process)
        if not process.get("args"):
            raise EvidenceError("ExecProcess process has no args", reason="agent.no_args")
        self.sandbox.exec_process(req.container_id, req.exec_id, process)
        return self._empty()

    def SignalProcess(self, req: Any) -> Any:
        self.sandbox.signal_process(req.container_id, req.exec_id, int(req.signal))
        return self._empty()

    def WaitProcess(self, req: Any) -> Any:
        status = self.sandbox.wait_process(req.container_id, req.exec_id)
        return self.pb.grpc.WaitProcessResponse(status=status)

    def StatsContainer(self, req: Any) -> Any:
        data = self.sandbox.stats(req.container_id)
        resp = self.pb.grpc.StatsContainerResponse()
        cg = resp.cgroup_stats
        cpu = data.get("cpu", {})
        usage = cpu.get("usage", {})
        cg.cpu_stats.cpu_usage.total_usage = int(usage.get("total", 0))
        cg.cpu_stats.cpu_usage.percpu_usage.extend(int(x) for x in usage.get("percpu", []))
        cg.cpu_stats.cpu_usage.usage_in_kernelmode = int(usage.get("kernel", 0))
        cg.cpu_stats.cpu_usage.usage_in_usermode = int(usage.get("user", 0))
        thr = cpu.get("throttling", {})
        cg.cpu_stats.throttling_data.periods = int(thr.get("periods", 0))
        cg.cpu_stats.throttling_data.throttled_periods = int(thr.get("throttledPeriods", 0))
        cg.cpu_stats.throttling_data.throttled_time = int(thr.get("throttledTime", 0))
        mem = data.get("memory", {})
        cg.memory_stats.cache = int(mem.get("cache", 0))
        for key, target in (("usage", "usage"), ("swap", "swap_usage"), ("kernel", "kernel_usage")):
            src = mem.get(key, {})
            dst = getattr(cg.memory_stats, target)
            dst.usage = int(src.get("usage", 0))
            dst.max_usage = int(src.get("max", 0))
            dst.failcnt = int(src.get("failcnt", 0))
            dst.limit = int(src.get("limit", 0))
        for k, v in (mem.get("raw") or {}).items():
            cg.memory_stats.stats[k] = int(v)
        pids = data.get("pids", {})
        cg.pids_stats.current = int(pids.get("current", 0))
        cg.pids_stats.limit = int(pids.get("limit", 0))
        return resp

    # -- stdio --
    def WriteStdin(self, req: Any) -> Any:
        proc = self.sandbox.process(req.container_id, req.exec_id)
        if not req.data:  # kata (runtime-rs): empty data is the EOF of stdin
            proc.close_stdin()
            return self.pb.grpc.WriteStreamResponse(len=0)
        return self.pb.grpc.WriteStreamResponse(len=proc.write(bytes(req.data)))

    def _read(self, req: Any, stdout: bool) -> Any:
        proc = self.sandbox.process(req.container_id, req.exec_id)
        n = min(int(req.len), self.sandbox.settings.max_read_bytes)
        resp = self.pb.grpc.ReadStreamResponse(data=proc.read(stdout, n))
        try:
            self._check(req)
        except RpcError:
            # kata: `if is_allowed(&req).await.is_err() { response.clear_data() }`
            resp.ClearField("data")
        return resp

    def ReadStdout(self, req: Any) -> Any:
        return self._read(req, True)

    def ReadStderr(self, req: Any) -> Any:
        return self._read(req, False)

    def CloseStdin(self, req: Any) -> Any:
        self.sandbox.process(req.container_id, req.exec_id).close_stdin()
        return self._empty()

    def TtyWinResize(self, req: Any) -> Any:
        proc = self.sandbox.process(req.container_id, req.exec_id)
        rows, columns = int(req.row), int(req.column)
        if rows > _MAX_WINSIZE or columns > _MAX_WINSIZE:
            raise EvidenceError(
                f"window size {rows}x{columns} out of range", reason="agent.winsize"
            )
        if not proc.resize(rows, columns):
            raise RpcError(Code.UNAVAILABLE, "no tty")  # kata's answer for a process without one
        return self._empty()

    # -- network (recorded) --
    def UpdateInterface(self, req: Any) -> Any:
        iface = self.pb.types.Interface()
        iface.CopyFrom(req.interface)
        with self._net:
            self.interfaces[iface.name] = iface
        return iface

    def UpdateRoutes(self, req: Any) -> Any:
        routes = self.pb.grpc.Routes()
        routes.CopyFrom(req.routes)
        with self._net:
            self.routes = routes
        return routes

    def ListInterfaces(self, req: Any) -> Any:
        with self._net:
            return self.pb.grpc.Interfaces(Interfaces=list(self.interfaces.values()))

    def ListRoutes(self, req: Any) -> Any:
        with self._net:
            out = self.pb.grpc.Routes()
            out.CopyFrom(self.routes)
            return out

    # -- misc --
    def GetGuestDetails(self, req: Any) -> Any:
        resp = self.pb.grpc.GuestDetailsResponse()
        if req.mem_block_size:
            try:
                text = Path("/sys/devices/system/memory/block_size_bytes").read_text()
                resp.mem_block_size_bytes = int(text.strip(), 16)
            except (OSError, ValueError):
                resp.mem_block_size_bytes = 0
        if req.mem_hotplug_probe:
            resp.support_mem_hotplug_probe = os.path.exists("/sys/devices/system/memory/probe")
        details = resp.agent_details
        details.version = __version__
        details.init_daemon = os.getpid() == 1
        details.storage_handlers.extend(["image_guest_pull"])
        details.extra_features.extend(EXTRA_FEATURES)
        return resp

    def CopyFile(self, req: Any) -> Any:
        self.sandbox.shared_path(req.path)  # under kata's shared dir, absolute and canonical
        root = self.sandbox.run_dir / "shared" / "containers"
        rel = req.path[len(SHARED_CONTAINERS_DIR) + 1 :]
        try:
            copy_file(root, rel, req, max_bytes=self.sandbox.settings.max_copy_file_bytes)
        except OSError as exc:  # e.g. ELOOP: a symlink where a directory was expected
            raise EvidenceError(
                f"CopyFile {req.path}: {exc.strerror or exc}", reason="agent.copy_file"
            ) from exc
        return self._empty()

    def GetOOMEvent(self, req: Any) -> Any:
        cid = self.sandbox.next_oom()
        if cid is None:
            raise RpcError(Code.INTERNAL, "agent is shutting down")
        return self.pb.grpc.OOMEvent(container_id=cid)

    def SetPolicy(self, req: Any) -> Any:
        self._check(req)
        try:
            self.policy_thread.submit(self.gate.set_policy, req.policy).result()
        except (ConfigError, EvidenceError) as exc:
            raise RpcError(Code.INVALID_ARGUMENT, exc.message) from exc
        return self._empty()
