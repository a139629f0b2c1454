"""Default attestation policies shipped as package data (``default_cpu``, ``default_gpu``)."""

from __future__ import annotations

from importlib import resources

__all__ = ["DEFAULT_POLICY_IDS", "default_policy"]

DEFAULT_POLICY_IDS = ("default_cpu", "default_gpu")


def default_policy(policy_id: str) -> str:
    """The text of a shipped default policy."""
    return resources.files(__name__).joinpath(f"{policy_id}.rego").read_text("utf-8")
