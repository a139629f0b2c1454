"""The pod sequence, as the kata shim + cloud-api-adaptor run it (I/O: provider, agent, store).

1. initdata: the pod's ``cc_init_data`` annotation, else built (aa.toml + cdh.toml naming the
   KBS and its certificate, the agent policy); its digest is reported so a KBS policy pins it;
2. the provider creates the pod VM with the cloud-config (``CreateInstance``);
3. wait for the agent (connect until ``agent_timeout_s``);
4. ``CreateSandbox``, then the sandbox (pause) container;
5. per container: ``CopyFile`` of its secret/configMap volumes, ``CreateContainer`` (the agent
   pulls, verifies and unpacks the image in the guest, unseals sealed env/volumes through the
   attested CDH), ``StartContainer``;
6. a log pump (``trustpod.pod.logpump``) copies each container's output into the store.

Any failure deletes the instance and the record: nothing is left behind.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trustpod.errors import DependencyError, PolicyDenied, TrustpodError
from trustpod.pod.provider import InstanceTypeSpec, Provider
from trustpod.pod.requests import container_id, copy_file_ops, create_container, create_sandbox
from trustpod.pod.spec import INITDATA_ANNOTATION, PodSpec
from trustpod.pod.store import PodRecord, PodStore
from trustpod.pod.userdata import DaemonConfig, build_cloud_config, decode_initdata

__all__ = [
    "GENERATE",
    "IMAGE_ANNOTATION",
    "MACHINE_TYPE_ANNOTATION",
    "Begin",
    "RunOptions",
    "Step",
    "agent_client",
    "delete_pod",
    "generated_policy",
    "pod_initdata",
    "run_pod",
]

Step = Callable[[str, float], None]
#: Called with a step's label when it starts (a terminal's progress display shows it running).
Begin = Callable[[str], None]
#: ``RunOptions.policy`` value: generate the agent policy from the pod (F2's generator).
GENERATE = "generate"
#: Kata's pod annotations CAA sizes the VM by.
MACHINE_TYPE_ANNOTATION = "io.katacontainers.config.hypervisor.machine_type"
IMAGE_ANNOTATION = "io.katacontainers.config.hypervisor.image"


@dataclass(frozen=True, slots=True)
class RunOptions:
    kbs_url: str | None = None
    kbs_cert: str | None = None
    policy: str | None = None
    #: the Pod YAML as given (``policy = GENERATE`` derives the agent policy from it)
    pod_yaml: str | None = None
    agent_timeout_s: float = 60.0
    pull_timeout_s: float = 120.0


def pod_initdata(pod: PodSpec, options: RunOptions) -> str:
    """The annotation's initdata, else one built for the pod's KBS."""
    from trustpod.initdata import InitData

    note = pod.annotation(INITDATA_ANNOTATION)
    if note is not None:
        text = decode_initdata(note).decode("utf-8")
        InitData.parse(text.encode())
        return text
    if not options.kbs_url:
        raise TrustpodError(
            "the pod has no initdata annotation and no --kbs-url",
            reason="pod.no_kbs",
            fix="give --kbs-url URL --kbs-cert PEM, or the cc_init_data annotation",
        )
    from trustpod.cli.initdata import build_initdata

    policy = options.policy
    if policy == GENERATE:
        policy = generated_policy(options.pod_yaml or "")
    return build_initdata(options.kbs_url, kbs_cert=options.kbs_cert, policy=policy)


def generated_policy(pod_yaml: str) -> str:
    """``trustpod policy generate`` for this pod: exactly its containers (images pinned to
    digests), container logs allowed (the log pump reads them), no exec."""
    from trustpod.agent.policy_gen import GeneratorSettings, generate_policy
    from trustpod.agent.policy_gen import parse_pod as parse_for_policy

    return generate_policy(parse_for_policy(pod_yaml), GeneratorSettings(allow_logs=True))


def agent_client(address: str, timeout_s: float = 10.0) -> Any:
    from trustpod.agent.client import AgentClient

    return AgentClient(address, timeout_s=timeout_s)


def _wait_agent(address: str, timeout_s: float, alive: Callable[[], str | None]) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return agent_client(address)
        except (OSError, TrustpodError) as exc:
            why = alive()
            if why is not None:
                raise DependencyError(f"the pod VM stopped before its agent served: {why}") from exc
            if time.monotonic() > deadline:
                raise DependencyError(
                    f"the pod VM's agent did not answer at {address} in {timeout_s:.0f} s"
                ) from exc
            time.sleep(0.05)


def _call(agent: Any, method: str, req: Any, timeout_s: float | None = None) -> Any:
    from trustpod.agent.rpc import Code, RpcError

    try:
        return agent.call(method, req, timeout_s=timeout_s)
    except RpcError as exc:
        if exc.code == Code.PERMISSION_DENIED:
            raise PolicyDenied(exc.status_message, reason="pod.policy_denied") from exc
        if "KBS" in exc.status_message:
            raise DependencyError(
                f"{method}: {exc.status_message}",
                reason="pod.attestation",
                fix="the pod VM attests to the KBS its initdata names: check the URL and the KBS "
                "certificate (--kbs-url/--kbs-cert or the cc_init_data annotation) and the "
                "KBS's attestation/resource policy for this initdata digest",
            ) from exc
        raise


def _timed(step: Step, label: str, fn: Callable[[], Any], begin: Begin | None = None) -> Any:
    if begin is not None:
        begin(label)
    t = time.monotonic()
    out = fn()
    step(label, time.monotonic() - t)
    return out


def _vm_died(provider: Provider, instance_id: str) -> Callable[[], str | None]:
    def check() -> str | None:
        fn = getattr(provider, "instance_error", None)
        if fn is None:
            return None
        why: str | None = fn(instance_id)
        return why

    return check


def run_pod(
    pod: PodSpec,
    provider: Provider,
    store: PodStore,
    options: RunOptions,
    step: Step,
    *,
    start_pump: bool = True,
    begin: Begin | None = None,
) -> PodRecord:
    from trustpod.agent.pb import protos
    from trustpod.initdata import InitData

    pb = protos()
    t0 = time.monotonic()
    initdata = _timed(step, "initdata", lambda: pod_initdata(pod, options), begin)
    digest = InitData.parse(initdata.encode()).digest.hex()
    step(f"initdata digest sha256:{digest}", 0.0)
    sandbox_id = secrets.token_hex(32)
    record = PodRecord(pod.name, pod.namespace, provider.name, sandbox_id, created=time.time())
    record.initdata_digest = digest
    store.create(record)
    instance_id = ""
    try:
        listen = getattr(provider, "agent_listen_for", None)
        from trustpod.pod.provider import instance_name

        name = instance_name(pod.name, sandbox_id)
        agent_listen = listen(name) if listen else f"unix:{store.pod_dir(pod.name)}/agent.sock"
        userdata = build_cloud_config(initdata, DaemonConfig(pod.name, pod.namespace, agent_listen))
        inst = _timed(
            step,
            f"create pod VM ({provider.name})",
            lambda: provider.create_instance(pod.name, sandbox_id, userdata, _size(pod)),
            begin,
        )
        instance_id = inst.id
        record.instance_id, record.agent_address = inst.id, inst.agent_address
        store.save(record)
        agent = _timed(
            step,
            "wait for the agent (boot, attest, initdata bound)",
            lambda: _wait_agent(
                inst.agent_address, options.agent_timeout_s, _vm_died(provider, inst.id)
            ),
            begin,
        )
        with agent:
            req = create_sandbox(pb, pod, sandbox_id)
            _timed(step, "CreateSandbox", lambda: _call(agent, "CreateSandbox", req), begin)
            pause = create_container(pb, pod, sandbox_id, None)
            _timed(
                step,
                "pause container",
                lambda: _start(pb, agent, pause, sandbox_id, 30),
                begin,
            )
            for c in pod.containers:
                cid = container_id(sandbox_id, c.name)
                for op in copy_file_ops(pod, sandbox_id, c):
                    _copy(pb, agent, op)
                creq = create_container(pb, pod, sandbox_id, c)
                _timed(
                    step,
                    f"{c.name}: pull {c.image} + CreateContainer",
                    functools.partial(
                        _call, agent, "CreateContainer", creq, options.pull_timeout_s
                    ),
                    begin,
                )
                sreq = pb.grpc.StartContainerRequest(container_id=cid)
                _timed(
                    step,
                    f"{c.name}: StartContainer",
                    functools.partial(_call, agent, "StartContainer", sreq),
                    begin,
                )
                record.containers[c.name] = cid
        record.state = "running"
        if start_pump:
            record.pump_pid = start_log_pump(store, pod.name)
        store.save(record)
        step("pod running", time.monotonic() - t0)
        return record
    except BaseException:
        with contextlib.suppress(Exception):
            if instance_id:
                provider.delete_instance(instance_id)
        store.remove(pod.name)
        raise


def _size(pod: PodSpec) -> InstanceTypeSpec:
    """CAA's sizing inputs: machine_type / image annotations, else the summed resources."""
    vcpus, mem = pod.instance_size()
    return InstanceTypeSpec(
        instance_type=pod.annotation(MACHINE_TYPE_ANNOTATION) or "",
        vcpus=vcpus,
        memory_mib=mem,
        image=pod.annotation(IMAGE_ANNOTATION) or "",
    )


def _start(pb: Any, agent: Any, req: Any, cid: str, timeout_s: float) -> None:
    _call(agent, "CreateContainer", req, timeout_s)
    _call(agent, "StartContainer", pb.grpc.StartContainerRequest(container_id=cid))


def _copy(pb: Any, agent: Any, op: Any) -> None:
    if op.data is None:
        _call(agent, "CopyFile", pb.grpc.CopyFileRequest(path=op.path, file_mode=op.mode))
        return
    req = pb.grpc.CopyFileRequest(
        path=op.path, file_mode=op.mode, file_size=len(op.data), offset=0, data=op.data
    )
    _call(agent, "CopyFile", req)


def start_log_pump(store: PodStore, name: str) -> int:
    argv = [sys.executable, "-m", "trustpod.pod.logpump", str(store.root), name]
    log = os.open(store.pod_dir(name) / "pump.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    finally:
        os.close(log)
    return proc.pid


def delete_pod(store: PodStore, provider: Provider, name: str) -> None:
    """Stop the log pump, delete the instance, forget the pod."""
    import signal

    record = store.get(name)
    if record.pump_pid:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(record.pump_pid, signal.SIGTERM)
    if record.instance_id:
        provider.delete_instance(record.instance_id)
    store.remove(name)
