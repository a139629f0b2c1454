"""The per-pod agent policy: kata's ``is_allowed`` in front of every RPC (a ``PolicyGate``).

Policy sources, in kata's order (pods-images-gpu.md §1.4):

1. the image default — kata's allow-all behaviour (``policy_defaults.IMAGE_DEFAULT_POLICY``) or
   the agent's configured ``policy_file``; a default that does not load is fatal;
2. ``policy.rego`` of the measured initdata, installed **without** a policy check;
3. ``SetPolicy``: the agent first checks ``SetPolicyRequest`` against the current policy
   (``check``), then ``set_policy`` replaces the policy and resets the state.

``check(name, message)`` converts the message to kata's serde JSON (``serde.to_input``;
``CopyFileRequest`` → ``PolicyCopyFileRequest``) and evaluates ``data.agent_policy.<name>``
(``policy_engine.AgentPolicy``). A denial raises ``PolicyDenied`` carrying the policy's
``print()`` output (the agent prefixes ``"<name> is blocked by policy: "``, PERMISSION_DENIED);
an evaluation error (an undefined rule, a malformed result) raises ``ConfigError``
(``agent_policy.eval``; the agent answers INTERNAL). ReadStream redaction is the agent's job:
it reads first and clears the data when ``check`` raises anything.

A failed ``set_policy`` keeps the current policy (kata leaves an empty engine that fails every
request; docs/compat.md). The debug input log (kata's ``/tmp/policy.jsonl``) is an injected
callable receiving ``{"kind", "request"}`` lines, never for Stats/ReadStream/SetPolicy.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf.message import Message

from trustpod.agent.policy_defaults import IMAGE_DEFAULT_POLICY
from trustpod.agent.policy_engine import AgentPolicy, Decision, PolicySettings
from trustpod.agent.serde import COPY_FILE_REQUEST, copy_file_input, to_input
from trustpod.errors import PolicyDenied

__all__ = ["UNLOGGED_REQUESTS", "KataPolicyGate", "build_gate", "policy_input"]

#: Requests kata never writes to the debug input log (frequent, or carry a whole policy).
UNLOGGED_REQUESTS = frozenset({"StatsContainerRequest", "ReadStreamRequest", "SetPolicyRequest"})


def policy_input(request_name: str, request: Message) -> dict[str, Any]:
    """The Rego ``input`` kata evaluates for this request."""
    if request_name == COPY_FILE_REQUEST:
        return copy_file_input(request)
    return to_input(request)


class KataPolicyGate:
    """Thread-safe holder of the current ``AgentPolicy`` (kata's ``AGENT_POLICY`` mutex)."""

    def __init__(
        self,
        default_policy: str = IMAGE_DEFAULT_POLICY,
        *,
        settings: PolicySettings | None = None,
        input_log: Callable[[str], None] | None = None,
    ) -> None:
        self._settings = settings or PolicySettings()
        self._lock = threading.Lock()
        self._policy = AgentPolicy(default_policy, settings=self._settings)
        self._input_log = input_log
        #: Where the current policy came from: "default", "initdata" or "set_policy".
        self.source = "default"

    # -- sources 2 and 3 --------------------------------------------------------------------

    def apply_initdata_policy(self, text: str) -> None:
        """Install the measured initdata's ``policy.rego`` (no check; kata main.rs)."""
        policy = AgentPolicy(text, settings=self._settings)
        with self._lock:
            self._policy = policy
            self.source = "initdata"

    def set_policy(self, policy: str) -> None:
        """Replace the policy (the agent has already checked ``SetPolicyRequest``). Raises
        ``ConfigError`` when the text does not load; the current policy then stays."""
        new = AgentPolicy(policy, settings=self._settings)
        with self._lock:
            self._policy = new
            self.source = "set_policy"

    # -- decisions ----------------------------------------------------------------------------

    def evaluate(self, request_name: str, input: Mapping[str, Any]) -> Decision:
        """Evaluate one request given in serde shape (JSON-compatible values only, as ``serde``
        builds them; handed to regorus without a JSON round trip)."""
        with self._lock:
            if self._input_log is not None and request_name not in UNLOGGED_REQUESTS:
                text = json.dumps(input, separators=(",", ":"))
                self._input_log(f'{{"kind":"{request_name}","request":{text}}}\n')
            value = input if isinstance(input, dict) else dict(input)
            return self._policy.allow_request(request_name, input_value=value)

    def check(self, request_name: str, request: Message) -> None:
        """``PolicyGate.check``: return when allowed, raise ``PolicyDenied`` when denied."""
        decision = self.evaluate(request_name, policy_input(request_name, request))
        if not decision.allowed:
            raise PolicyDenied(
                decision.prints,
                reason="agent_policy.denied",
                fix="the pod's agent policy (initdata policy.rego) does not allow this request",
            )

    def allows(self, request_name: str, request: Message) -> bool:
        """True when allowed; False on a denial *or* an error (kata's ReadStream redaction)."""
        try:
            self.check(request_name, request)
        except Exception:  # kata: `is_allowed(&req).await.is_err()`
            return False
        return True

    @property
    def state(self) -> dict[str, Any]:
        """The current policy's data document (``pstate`` and what ``ops`` added)."""
        with self._lock:
            return self._policy.data

    @property
    def allow_failures(self) -> bool:
        with self._lock:
            return self._policy.allow_failures


def build_gate(
    *,
    initdata_policy: str | None = None,
    default_policy: str | None = None,
    settings: PolicySettings | None = None,
    input_log: Callable[[str], None] | None = None,
) -> KataPolicyGate:
    """The agent's gate from its sources: ``default_policy`` (the configured ``policy_file``'s
    text, else kata's allow-all), then the initdata ``policy.rego`` when present."""
    gate = KataPolicyGate(
        IMAGE_DEFAULT_POLICY if default_policy is None else default_policy,
        settings=settings,
        input_log=input_log,
    )
    if initdata_policy is not None:
        gate.apply_initdata_policy(initdata_policy)
    return gate
