"""The policy port every agent RPC goes through before it runs (kata's ``is_allowed``).

Kata checks each request against ``data.agent_policy.<RequestName>`` where the name is the
request message's protobuf type name (``CreateContainerRequest``, ``ExecProcessRequest``,
``ReadStreamRequest`` for both ReadStdout and ReadStderr, ...). The agent calls
``gate.check(name, request)`` before the handler runs; a ``PolicyDenied`` becomes ttRPC status
PERMISSION_DENIED (7) with the error's message, any other ``TrustpodError`` from the gate
INTERNAL (13), as kata's ``allow_request`` maps them. Two kata special cases live in the agent,
not in the gate: ReadStdout/ReadStderr read first and *clear the data* when the check fails
(never an error), and SetPolicy is ``check("SetPolicyRequest", req)`` then ``set_policy``.

The per-pod policy engine (``trustpod.agent.policy``) implements this Protocol; kata's
allow-all image default is its starting policy until another is installed.
"""

from __future__ import annotations

from typing import Protocol

from google.protobuf.message import Message

__all__ = ["PolicyGate"]


class PolicyGate(Protocol):
    """Decides each agent request. Implementations must be thread-safe: RPCs run concurrently."""

    def check(self, request_name: str, request: Message) -> None:
        """Return if allowed; raise ``PolicyDenied`` (message shown to the caller) if not."""

    def set_policy(self, policy: str) -> None:
        """Replace the policy with the Rego text of a SetPolicy request (already checked by
        ``check("SetPolicyRequest", ...)``); raise ``ConfigError`` if it does not load."""
