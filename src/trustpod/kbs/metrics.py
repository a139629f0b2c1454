"""Prometheus metrics with upstream's names and labels (reference §7), one registry per app.

Differences from upstream (docs/compat.md): response sizes go to ``kbs_http_response_size_bytes``
(upstream observes them into the request-size histogram); the ``resource_path`` label takes at
most ``[trustpod] max_resource_path_labels`` distinct values of at most
``max_resource_path_label_chars`` characters, other paths are
counted under ``__other__``; and ``kbs_attestation_duration_seconds{tee_type}`` is added.
"""

from __future__ import annotations

import os
import threading

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from trustpod import __version__

__all__ = ["MULTIPROC_ENV", "OVERFLOW_LABEL", "KbsMetrics"]

OVERFLOW_LABEL = "__other__"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_DURATION_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.5, 1.0)
_SIZE_BUCKETS = (32, 128, 512, 2048, 8192)
_ATTEST_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0)

prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]


class KbsMetrics:
    """All KBS metrics in a private ``CollectorRegistry``."""

    def __init__(self, max_resource_path_labels: int, max_label_chars: int = 128) -> None:
        self.registry = r = CollectorRegistry(auto_describe=False)
        self._max_paths = max_resource_path_labels
        self._max_chars = max_label_chars
        self._paths: set[str] = set()
        self._paths_lock = threading.Lock()
        info = Gauge(
            "kbs_build_info",
            "KBS build information",
            ["version", "git_hash", "build_date"],
            registry=r,
            multiprocess_mode="max",
        )
        info.labels(__version__, "unknown", "unknown").set(1)
        self.http_requests = Counter("kbs_http_requests_total", "HTTP requests", registry=r)
        self.http_duration = Histogram(
            "kbs_http_request_duration_seconds",
            "HTTP request duration",
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.http_request_size = Histogram(
            "kbs_http_request_size_bytes", "HTTP request size", buckets=_SIZE_BUCKETS, registry=r
        )
        self.http_response_size = Histogram(
            "kbs_http_response_size_bytes", "HTTP response size", buckets=_SIZE_BUCKETS, registry=r
        )
        self.active = Gauge(
            "kbs_http_active_connections",
            "In-flight requests",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.resource_reads = Counter(
            "kbs_resource_reads_total", "Resource reads", ["resource_path"], registry=r
        )
        self.resource_writes = Counter(
            "kbs_resource_writes_total", "Resource writes", ["resource_path"], registry=r
        )
        self.resource_deletes = Counter(
            "kbs_resource_deletes_total", "Resource deletes", ["resource_path"], registry=r
        )
        self.policy_evaluations = Counter(
            "kbs_policy_evaluations_total", "Resource policy evaluations", registry=r
        )
        self.policy_approvals = Counter(
            "kbs_policy_approvals_total", "Resource policy approvals", registry=r
        )
        self.policy_violations = Counter(
            "kbs_policy_violations_total", "Resource policy violations", registry=r
        )
        self.policy_errors = Counter(
            "kbs_policy_errors_total", "Resource policy errors", registry=r
        )
        self.attestation_requests = Counter(
            "kbs_attestation_requests_total", "Attestation requests", registry=r
        )
        self.attestation_successes = Counter(
            "kbs_attestation_successes_total", "Attestation successes", ["tee_type"], registry=r
        )
        self.attestation_failures = Counter(
            "kbs_attestation_failures_total", "Attestation failures", ["tee_type"], registry=r
        )
        self.attestation_errors = Counter(
            "kbs_attestation_errors_total", "Malformed attestation requests", registry=r
        )
        self.attestation_duration = Histogram(
            "kbs_attestation_duration_seconds",
            "Evidence verification + token issue time",
            ["tee_type"],
            buckets=_ATTEST_BUCKETS,
            registry=r,
        )
        self.auth_requests = Counter("kbs_auth_requests_total", "Auth requests", registry=r)
        self.auth_successes = Counter("kbs_auth_successes_total", "Auth successes", registry=r)
        self.auth_errors = Counter("kbs_auth_errors_total", "Auth errors", registry=r)
        self.insecure_evidence = Counter(
            "kbs_insecure_evidence_accepted_total",
            "Attestations accepted through an insecure path (sample TEE, emulated roots)",
            ["tee_type", "reason"],
            registry=r,
        )

    def path_label(self, path: str) -> str:
        """``path`` while fewer than the configured number of distinct paths were seen; paths
        longer than ``[trustpod] max_resource_path_label_chars`` count under ``__other__``."""
        if path in self._paths:
            return path
        if len(path) > self._max_chars:
            return OVERFLOW_LABEL
        with self._paths_lock:
            if len(self._paths) < self._max_paths:
                self._paths.add(path)
                return path
        return OVERFLOW_LABEL

    def render(self) -> bytes:
        """The exposition text; with several worker processes (``PROMETHEUS_MULTIPROC_DIR`` set
        by ``trustpod kbs serve``) the values of all workers, aggregated."""
        if os.environ.get(MULTIPROC_ENV):
            from prometheus_client import multiprocess

            merged = CollectorRegistry(auto_describe=False)
            multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            return generate_latest(merged)
        return generate_latest(self.registry)
