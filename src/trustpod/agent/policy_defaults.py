"""The agent's built-in default policies, written from kata's semantics (pods-images-gpu.md §1.5).

Kata's pod VM image installs ``/etc/kata-opa/allow-all.rego`` as the default policy: package
``agent_policy`` with ``default <Name> := true`` for a fixed list of 39 entry points. Requests not
in that list (``GetIPTablesRequest``, ``VolumeStatsRequest``, ...) are *undefined*, which the agent
reports as an internal error, not a denial (§1.3). ``allow-all-except-exec-process`` is the same
list minus ``GetDiagnosticDataRequest`` with ``ExecProcessRequest`` false. Our texts are generated
from those name lists so they decide exactly as kata's do.
"""

from __future__ import annotations

__all__ = [
    "ALLOW_ALL",
    "ALLOW_ALL_ENTRYPOINTS",
    "ALLOW_ALL_EXCEPT_EXEC_PROCESS",
    "ALLOW_SET_POLICY",
    "IMAGE_DEFAULT_POLICY",
    "defaults_policy",
]

#: The entry points kata's allow-all policy defines (all ``true``).
ALLOW_ALL_ENTRYPOINTS: tuple[str, ...] = (
    "AddARPNeighborsRequest",
    "AddSwapRequest",
    "CloseStdinRequest",
    "CopyFileRequest",
    "CreateContainerRequest",
    "CreateSandboxRequest",
    "DestroySandboxRequest",
    "ExecProcessRequest",
    "GetDiagnosticDataRequest",
    "GetMetricsRequest",
    "GetOOMEventRequest",
    "GuestDetailsRequest",
    "ListInterfacesRequest",
    "ListRoutesRequest",
    "MemAgentCompactConfig",
    "MemAgentMemcgConfig",
    "MemHotplugByProbeRequest",
    "OnlineCPUMemRequest",
    "PauseContainerRequest",
    "PullImageRequest",
    "ReadStreamRequest",
    "RemoveContainerRequest",
    "RemoveStaleVirtiofsShareMountsRequest",
    "ReseedRandomDevRequest",
    "ResumeContainerRequest",
    "SetGuestDateTimeRequest",
    "SetPolicyRequest",
    "SignalProcessRequest",
    "StartContainerRequest",
    "StartTracingRequest",
    "StatsContainerRequest",
    "StopTracingRequest",
    "TtyWinResizeRequest",
    "UpdateContainerRequest",
    "UpdateEphemeralMountsRequest",
    "UpdateInterfaceRequest",
    "UpdateRoutesRequest",
    "WaitProcessRequest",
    "WriteStreamRequest",
)


def defaults_policy(values: dict[str, bool], *, header: str = "") -> str:
    """``package agent_policy`` with one ``default <name> := <bool>`` line per entry point."""
    lines = [f"# {header}" if header else "", "package agent_policy", ""]
    lines += [f"default {name} := {'true' if v else 'false'}" for name, v in sorted(values.items())]
    return "\n".join(lines).lstrip("\n") + "\n"


#: Kata's allow-all behaviour (the pod VM image default).
ALLOW_ALL = defaults_policy(
    dict.fromkeys(ALLOW_ALL_ENTRYPOINTS, True), header="trustpod: kata's allow-all semantics"
)
#: Kata's allow-all-except-exec-process behaviour.
ALLOW_ALL_EXCEPT_EXEC_PROCESS = defaults_policy(
    {
        **{n: True for n in ALLOW_ALL_ENTRYPOINTS if n != "GetDiagnosticDataRequest"},
        "ExecProcessRequest": False,
    },
    header="trustpod: kata's allow-all-except-exec-process semantics",
)
#: Kata's allow-set-policy behaviour (only SetPolicy defined).
ALLOW_SET_POLICY = defaults_policy(
    {"SetPolicyRequest": True}, header="trustpod: kata's allow-set-policy semantics"
)
#: What the agent starts with when neither a policy file nor initdata names one.
IMAGE_DEFAULT_POLICY = ALLOW_ALL
