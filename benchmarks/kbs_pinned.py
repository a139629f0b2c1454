"""Pinned KBS benchmark: one uvicorn worker on core 0, the load generator on core 1.

For each TEE (``sample``, then emulated ``az-snp-vtpm`` when the emulator is usable):
1. ``trustpod kbs init`` + ``taskset -c 0 trustpod kbs serve --workers 1`` (SQLite, plain HTTP);
2. provision as a user would: a secret, the sample reference values, and a custom Rego resource
   policy uploaded through ``POST /kbs/v0/resource-policy`` (az-snp-vtpm: the KBS names the
   emulated vendor roots in ``[trustpod] insecure_emulated_roots``, ADR 0600);
3. full flows (auth -> attest -> resource GET) from concurrent clients for ``--seconds``;
   server CPU ms/flow = (utime + stime of the server process, from ``/proc/<pid>/stat``) / flows;
4. p50 / p99 of one sequential client's flows;
5. resource GETs/s with a valid Bearer token (``wrk`` on core 1 if installed, else the Python
   client), server CPU ms per GET.

The generator is one Python process on core 1; when it saturates first (az-snp-vtpm: it signs a
P-384 HCL report and an RSA quote per flow), flows/s is generator-bound and the per-core
capacity of the server is ``1000 / (server CPU ms per flow)``, printed next to it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.kbs_load import (
    Conn,
    Evidence,
    attest_token,
    one_flow,
    provision,
    sample_evidence,
)

__all__ = ["CUSTOM_POLICY", "PinnedResult", "main", "run_pinned"]

RESOURCE = "default/bench/key"
SERVER_CORE = 0
LOAD_CORE = 1
#: A user's own resource policy (not a preset): plugin, repository and the EAR status of every
#: submod, like the examples in Trustee's docs.
CUSTOM_POLICY = """package policy
import rego.v1

default allow := false

allow if {
	data.plugin == "resource"
	data["resource-path"][0] == "default"
	count(input.submods) > 0
	every _, submod in input.submods {
		submod["ear.status"] in {"affirming", "warning"}
	}
}
"""


@dataclass
class PinnedResult:
    tee: str
    flows_per_s: float
    server_ms_per_flow: float
    p50_ms: float
    p99_ms: float
    gets_per_s: float
    server_ms_per_get: float
    flows: int
    errors: int
    metrics_ms: float


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _flows(
    url: str, tee: str, evidence: Evidence, clients: int, seconds: float
) -> tuple[list[float], int, str]:
    lat: list[float] = []
    errors = [0, ""]

    async def client(until: float) -> None:
        conn = await Conn.open(url, None)
        try:
            while time.perf_counter() < until:
                t0 = time.perf_counter()
                try:
                    await one_flow(conn, RESOURCE, tee, evidence)
                    lat.append(time.perf_counter() - t0)
                except (RuntimeError, OSError, asyncio.IncompleteReadError) as exc:
                    errors[0] = int(errors[0]) + 1
                    errors[1] = errors[1] or str(exc)
                    conn.close()
                    conn = await Conn.open(url, None)
        finally:
            conn.close()

    async def go() -> None:
        until = time.perf_counter() + seconds
        await asyncio.gather(*(client(until) for _ in range(clients)))

    asyncio.run(go())
    return lat, int(errors[0]), str(errors[1])


def _token(url: str, tee: str, evidence: Evidence) -> str:
    async def go() -> str:
        conn = await Conn.open(url, None)
        try:
            return await attest_token(conn, tee, evidence)
        except RuntimeError as exc:
            raise SystemExit(f"attest failed: {exc}") from exc
        finally:
            conn.close()

    return asyncio.run(go())


def _gets(url: str, token: str, seconds: float) -> float:
    """Resource GETs/s with one token: wrk (pinned to the load core) or the Python client."""
    target = f"{url}/kbs/v0/resource/{RESOURCE}"
    if shutil.which("wrk") and shutil.which("taskset"):
        wrk = ["taskset", "-c", str(LOAD_CORE), "wrk", "-t1", "-c16", f"-d{int(seconds)}s"]
        out = subprocess.run(
            [*wrk, "-H", f"Authorization: Bearer {token}", target],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        if "Non-2xx" in out:
            raise SystemExit("resource GETs failed:\n" + out)
        for line in out.splitlines():
            if line.startswith("Requests/sec:"):
                return float(line.split()[1])
        return float("nan")
    n = 0

    async def go() -> None:
        nonlocal n
        until = time.perf_counter() + seconds

        async def one() -> None:
            nonlocal n
            conn = await Conn.open(url, None)
            hdr = {"Authorization": f"Bearer {token}"}
            while time.perf_counter() < until:
                await conn.request("GET", f"/kbs/v0/resource/{RESOURCE}", headers=hdr)
                n += 1
            conn.close()

        await asyncio.gather(*(one() for _ in range(16)))

    asyncio.run(go())
    return n / seconds


#: az-snp-vtpm claim -> reference-value id of the default attestation policy.
_AZ_REFERENCE = {
    "measurement": "measurement",
    "reported_tcb_bootloader": "tcb_bootloader",
    "reported_tcb_microcode": "tcb_microcode",
    "reported_tcb_snp": "tcb_snp",
    "reported_tcb_tee": "tcb_tee",
    "platform_smt_enabled": "smt_enabled",
    "platform_tsme_enabled": "tsme_enabled",
    "policy_abi_major": "abi_major",
    "policy_abi_minor": "abi_minor",
    "policy_single_socket": "single_socket",
    "policy_smt_allowed": "smt_allowed",
}


def _register_az_references(url: str, admin_token: str, token: str) -> None:
    """Reference values for the emulated CVM, read from the claims of a first token (as an
    operator would take them from a known-good boot)."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    az = claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]["az-snp-vtpm"]
    values = {rv: [az[claim]] for claim, rv in _AZ_REFERENCE.items()}
    values["snp_pcr11"] = [az["tpm"]["pcr11"]]
    h = {"authorization": f"Bearer {admin_token}"}
    with httpx.Client(base_url=url, headers=h) as c:
        for name, value in values.items():
            body = base64.b64encode(json.dumps({name: value}).encode()).decode()
            r = c.post(
                "/kbs/v0/reference-value",
                json={"version": "0.1.0", "type": "sample", "payload": body},
            )
            assert r.status_code == 200, r.text


def _wait(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("the KBS exited during start-up:\n" + log.read_text()[-2000:])
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit("KBS did not start")


def _emulated_evidence(workdir: Path) -> tuple[Evidence, Path, Callable[[], None]] | None:
    """An emulated Azure CVM (software vTPM) and its roots file; ``None`` if unavailable."""
    try:
        from trustpod.guest.emulator.cvm import EmulatedAzureCvm
        from trustpod.guest.emulator.vendor import load_or_create_vendor
    except ImportError as exc:  # guest extra not installed
        print(f"az-snp-vtpm: skipped ({exc})")
        return None
    vendor = load_or_create_vendor(workdir / "vendor")
    cvm = EmulatedAzureCvm(vendor, backend="software").boot()
    attester = cvm.attester()

    def evidence(nonce: str, digest: bytes) -> Any:
        return attester.get_evidence(digest)

    return evidence, workdir / "vendor" / "roots.pem", cvm.shutdown


def _py_spy(pid: int, out: Path, seconds: float) -> subprocess.Popen[bytes] | None:
    """py-spy (``pip install py-spy``) sampling the server for the flow phase, collapsed stacks."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists():
        print("--profile needs py-spy: .venv/bin/pip install py-spy")
        return None
    cmd = [exe, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "250"]
    cmd += ["--gil", "--format", "raw", "--output", str(out), "--nonblocking"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_pinned(
    tee: str,
    evidence: Evidence,
    *,
    seconds: float,
    clients: int,
    roots: Path | None = None,
    profile: Path | None = None,
) -> PinnedResult:
    from trustpod.kbs.init_dir import init_kbs_dir

    tmp = Path(tempfile.mkdtemp(prefix=f"trustpod-pinned-{tee}-"))
    res = init_kbs_dir(tmp / "kbs", f"127.0.0.1:{_free_port()}", insecure_http=True)
    if roots is not None:
        with res.config.open("a") as fh:  # [trustpod] is the config's last table
            fh.write(f'insecure_emulated_roots = ["{roots}"]\n')
    cmd = ["taskset", "-c", str(SERVER_CORE), sys.executable, "-m", "trustpod.cli"]
    cmd += ["kbs", "serve", "--config", str(res.config), "--workers", "1"]
    log = (tmp / "server.log").open("wb")  # the server's log, as a service manager keeps it
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait(res.url, proc, tmp / "server.log")
        admin = res.admin_token.read_text().strip()
        provision(res.url, admin, RESOURCE, policy=CUSTOM_POLICY)
        if tee != "sample":
            _register_az_references(res.url, admin, _token(res.url, tee, evidence))
        os.sched_setaffinity(0, {LOAD_CORE})
        _flows(res.url, tee, evidence, 4, 1.0)  # warm-up: imports, policy compile, caches
        # (3) concurrent full flows (optionally under py-spy: --profile)
        spy = _py_spy(proc.pid, profile, seconds) if profile else None
        cpu0 = _cpu_s(proc.pid)
        t0 = time.perf_counter()
        lat, errors, first = _flows(res.url, tee, evidence, clients, seconds)
        wall = time.perf_counter() - t0
        cpu = _cpu_s(proc.pid) - cpu0
        if spy is not None:
            spy.wait(30)
        if errors:
            print(f"{tee}: {errors} flow errors; first: {first}")
        # (4) one sequential client
        seq, _, _ = _flows(res.url, tee, evidence, 1, min(seconds, 3.0))
        # (5) resource GETs with a token
        token = _token(res.url, tee, evidence)
        spy = _py_spy(proc.pid, profile.with_suffix(".gets"), seconds) if profile else None
        cpu1 = _cpu_s(proc.pid)
        g0 = time.perf_counter()
        gets = _gets(res.url, token, seconds)
        get_wall = time.perf_counter() - g0
        get_cpu = _cpu_s(proc.pid) - cpu1
        if spy is not None:
            spy.wait(30)
        # /metrics cost after the run (the registry is populated)
        with httpx.Client(base_url=res.url) as c:
            c.get("/metrics")
            m0 = time.perf_counter()
            for _ in range(50):
                c.get("/metrics")
            metrics_ms = (time.perf_counter() - m0) / 50 * 1000
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
        proc.send_signal(2)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)
    n_gets = gets * get_wall
    return PinnedResult(
        tee=tee,
        flows_per_s=len(lat) / wall,
        server_ms_per_flow=cpu / max(1, len(lat)) * 1000,
        p50_ms=_pct(seq, 0.5) * 1000,
        p99_ms=_pct(seq, 0.99) * 1000,
        gets_per_s=gets,
        server_ms_per_get=get_cpu / max(1.0, n_gets) * 1000,
        flows=len(lat),
        errors=errors,
        metrics_ms=metrics_ms,
    )


def report(r: PinnedResult) -> str:
    cap = 1000 / r.server_ms_per_flow if r.server_ms_per_flow > 0 else float("inf")
    return (
        f"pinned {r.tee} (custom Rego resource policy): {r.flows_per_s:.0f} full flows/s "
        f"observed, server CPU {r.server_ms_per_flow:.2f} ms/flow (= {cap:.0f} flows/s per "
        f"server core; {r.flows} flows, {r.errors} errors); sequential flow p50 "
        f"{r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms; resource GET with token "
        f"{r.gets_per_s:.0f} req/s, server CPU {r.server_ms_per_get * 1000:.0f} us/GET; "
        f"/metrics {r.metrics_ms:.2f} ms"
    )


def main(seconds: float = 6.0, clients: int = 16, tees: tuple[str, ...] = ()) -> list[PinnedResult]:
    if (os.cpu_count() or 1) < 2 or not shutil.which("taskset"):
        print("pinned KBS benchmark skipped: needs 2 cores and taskset (util-linux)")
        return []
    out: list[PinnedResult] = []
    if not tees or "sample" in tees:
        r = run_pinned("sample", sample_evidence, seconds=seconds, clients=clients)
        print(report(r), flush=True)
        out.append(r)
    if not tees or "az-snp-vtpm" in tees:
        work = Path(tempfile.mkdtemp(prefix="trustpod-pinned-cvm-"))
        try:
            emu = _emulated_evidence(work)
            if emu is not None:
                evidence, roots, stop = emu
                try:
                    r = run_pinned(
                        "az-snp-vtpm", evidence, seconds=seconds, clients=clients, roots=roots
                    )
                finally:
                    stop()
                print(report(r), flush=True)
                print(
                    f"  az-snp-vtpm: {r.server_ms_per_flow / 0.6:.1f}x the ~0.6 ms crypto floor "
                    f"(one P-384 + one RSA verify per flow), "
                    f"{r.server_ms_per_flow - 0.6:.2f} ms above it",
                    flush=True,
                )
                out.append(r)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    main(float(args[0]) if args else 6.0, tees=tuple(args[1:]))
