"""``make demo``: a KBS and a sample-TEE guest, end to end, on 127.0.0.1.

Steps (each printed with its timing): create a KBS directory (``trustpod kbs init``: TLS cert,
signer key, admin key + token, SQLite), start the KBS on an ephemeral port, provision a secret,
the resource policy and the sample reference values through the admin API, run a guest (RCAR with
the ``sample`` attester, then a resource GET decrypted with the guest's TEE key), show a denial
and its explanation, print a metrics excerpt, and shut down cleanly (exit 0).

Structured for growth: ``Demo.run`` takes a list of guest scenarios (``GuestScenario``); the
emulated Azure CVM flow can be added as another scenario without touching the KBS steps.
"""

from __future__ import annotations

import base64
import json
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["SAMPLE_REFERENCE_VALUES", "Demo", "GuestScenario", "RunningKbs", "main"]

#: What the default attestation policy checks for the sample TEE (upstream's sample rules).
SAMPLE_REFERENCE_VALUES: dict[str, Any] = {
    "launch_digest": ["abcde"],
    "svn": ["1"],
    "major_version": 1,
    "minimum_minor_version": 4,
}
DEMO_RESOURCE = "default/demo/secret"
SECRET = b"the demo secret: only an attested guest can read this"


@dataclass
class RunningKbs:
    url: str
    cafile: str
    admin_token: str
    directory: Path
    stop: Callable[[], None]

    def admin(self) -> Any:
        import ssl

        import httpx

        ctx = ssl.create_default_context(cafile=self.cafile)
        headers = {"authorization": f"Bearer {self.admin_token}"}
        return httpx.Client(base_url=self.url, verify=ctx, headers=headers, timeout=30)


@dataclass
class GuestScenario:
    name: str
    run: Callable[[RunningKbs, Demo], None]


@dataclass
class Demo:
    """``trustpod_settings``: extra ``[trustpod]`` lines for the KBS config (e.g.
    ``insecure_emulated_roots = ["/path/ark.pem"]`` for an emulated-CVM scenario);
    ``reference_values``: RVPS sample values provisioned before the guests run."""

    out: Callable[[str], None] = print
    timings: list[tuple[str, float]] = field(default_factory=list)
    trustpod_settings: str = ""
    reference_values: dict[str, Any] = field(default_factory=lambda: dict(SAMPLE_REFERENCE_VALUES))
    emulated_cvm: bool = False
    #: extra names in the KBS certificate (``make demo-vm``: the address the pod VM uses)
    kbs_sans: tuple[str, ...] = ()

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        n = len(self.timings) + 1
        self.out(f"[{n}] {title} ...")
        t0 = time.perf_counter()
        yield
        ms = (time.perf_counter() - t0) * 1000
        self.timings.append((title, ms))
        self.out(f"    ok ({ms:.1f} ms)")

    def run(self, scenarios: list[GuestScenario]) -> int:
        with tempfile.TemporaryDirectory(prefix="trustpod-demo-") as tmp:
            kbs = self.start_kbs(Path(tmp))
            try:
                self.provision(kbs)
                for scenario in scenarios:
                    self.out(f"--- guest: {scenario.name}")
                    scenario.run(kbs, self)
                self.metrics_excerpt(kbs)
            finally:
                with self.step("shut the KBS down"):
                    kbs.stop()
        total = sum(ms for _, ms in self.timings)
        self.out(f"demo finished: {len(self.timings)} steps, {total:.0f} ms")
        return 0

    # -- KBS side ------------------------------------------------------------------------------
    def start_kbs(self, tmp: Path) -> RunningKbs:
        from trustpod.kbs.config import load_config
        from trustpod.kbs.init_dir import init_kbs_dir

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with self.step(f"trustpod kbs init --dir {tmp} --listen 127.0.0.1:{port}"):
            res = init_kbs_dir(tmp, f"127.0.0.1:{port}", sans=self.kbs_sans)
            if self.trustpod_settings:  # [trustpod] is the config's last table
                with res.config.open("a") as f:
                    f.write(self.trustpod_settings.rstrip() + "\n")
        if self.emulated_cvm:
            from trustpod.guest.demo_flow import emulated_root

            with self.step("emulated AMD vendor chain; KBS trusts it (insecure_emulated_roots)"):
                roots = emulated_root(tmp)
                with res.config.open("a") as fh:  # [trustpod] is the config's last table
                    fh.write(f'insecure_emulated_roots = ["{roots}"]\n')
        with self.step("start the KBS (TLS, SQLite, built-in attestation service)"):
            import uvicorn

            from trustpod.kbs.wiring import build_app

            cfg = load_config(res.config)
            server = uvicorn.Server(
                uvicorn.Config(
                    build_app(cfg),
                    host="127.0.0.1",
                    port=port,
                    log_level="warning",
                    access_log=False,
                    ssl_keyfile=str(cfg.http_server.private_key),
                    ssl_certfile=str(cfg.http_server.certificate),
                )
            )
            thread = threading.Thread(target=server.run, daemon=True)
            thread.start()
            deadline = time.monotonic() + 20
            while not server.started:
                if time.monotonic() > deadline or not thread.is_alive():
                    raise RuntimeError("the KBS did not start")
                time.sleep(0.01)

        def stop() -> None:
            server.should_exit = True
            thread.join(20)

        assert res.certificate is not None
        self.out(f"    KBS at {res.url}")
        token = res.admin_token.read_text().strip()
        return RunningKbs(res.url, str(res.certificate), token, tmp, stop)

    def provision(self, kbs: RunningKbs) -> None:
        from trustpod.kbs.resource_policy import PRESETS

        with kbs.admin() as a:
            with self.step(f"admin: set-resource --path {DEMO_RESOURCE}"):
                _ok(a.post(f"/kbs/v0/resource/{DEMO_RESOURCE}", content=SECRET))
            with self.step("admin: set-resource-policy --affirming"):
                policy = base64.urlsafe_b64encode(PRESETS["affirming"].encode()).rstrip(b"=")
                _ok(a.post("/kbs/v0/resource-policy", json={"policy": policy.decode()}))
            with self.step("admin: set-reference-value (sample launch_digest, svn, versions)"):
                for name, value in self.reference_values.items():
                    payload = base64.b64encode(json.dumps({name: value}).encode()).decode()
                    body = {"version": "0.1.0", "type": "sample", "payload": payload}
                    _ok(a.post("/kbs/v0/reference-value", json=body))

    def metrics_excerpt(self, kbs: RunningKbs) -> None:
        with kbs.admin() as a, self.step("metrics excerpt (GET /metrics)"):
            text = a.get("/metrics").text
        for line in text.splitlines():
            if line.startswith("kbs_") and "_bucket" not in line and not line.endswith(" 0.0"):
                self.out(f"    {line}")


def _ok(response: Any) -> Any:
    if response.status_code != 200:
        raise RuntimeError(
            f"{response.request.method} {response.request.url}: "
            f"{response.status_code} {response.text[:300]}"
        )
    return response


def sample_guest(kbs: RunningKbs, demo: Demo) -> None:
    """A sample-TEE guest: attest, fetch and decrypt the secret; then a refused request."""
    from trustpod.guest.attesters.sample import SampleAttester
    from trustpod.guest.kbs_client import KbsClient

    with KbsClient(kbs.url, SampleAttester(), cert_file=kbs.cafile) as client:
        with demo.step("guest: RCAR handshake (auth -> challenge -> sample evidence -> token)"):
            token = client.attest()
        claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        status = {k: v.get("ear.status") for k, v in claims.get("submods", {}).items()}
        demo.out(f"    token: EAR, iss={claims.get('iss')}, submods ear.status={status}")
        with demo.step(f"guest: get-resource {DEMO_RESOURCE} (JWE, decrypted with the TEE key)"):
            secret = client.get_resource(DEMO_RESOURCE)
        demo.out(f"    secret: {secret.decode()!r}")
        if secret != SECRET:
            raise RuntimeError("the guest received the wrong secret")
    import ssl

    import httpx

    with demo.step("a forged token is refused; the admin reads why (trustpod admin explain)"):
        ctx = ssl.create_default_context(cafile=kbs.cafile)
        forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        r = httpx.get(
            f"{kbs.url}/kbs/v0/resource/{DEMO_RESOURCE}",
            headers={"authorization": f"Bearer {forged}"},
            verify=ctx,
        )
        rid = r.headers.get("x-request-id", "")
        with kbs.admin() as a:
            why = _ok(a.get(f"/kbs/v0/trustpod/explain/{rid}")).json()
    demo.out(f"    client saw {r.status_code}: {r.json().get('detail')}")
    demo.out(f"    explain {rid}: reason={why.get('reason')} message={why.get('message')!r}")


def main() -> int:
    import logging

    logging.basicConfig(level=logging.ERROR)
    scenarios = [GuestScenario("sample TEE", sample_guest)]
    from trustpod.guest.emulator.swtpm import swtpm_binary

    if swtpm_binary() is not None:  # emulated Azure CVM with initdata + sealed secrets
        from trustpod.guest.demo_flow import emulated_cvm_scenario

        name = "emulated Azure CVM (swtpm): initdata, attestation, sealed secrets"
        scenarios.append(GuestScenario(name, emulated_cvm_scenario))
        import os
        import shutil

        if shutil.which("runc") and os.geteuid() == 0:  # a whole confidential pod
            from trustpod.pod.demo import pod_scenario

            name = "confidential pod: trustpod pod run (sandbox pod VM), attest, pull, unseal"
            scenarios.append(GuestScenario(name, pod_scenario))
    return Demo(emulated_cvm=len(scenarios) > 1).run(scenarios)


if __name__ == "__main__":
    sys.exit(main())
