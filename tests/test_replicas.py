"""Replicas on a shared PostgreSQL or Redis: three ``trustpod kbs serve`` processes made by three
separate ``trustpod kbs init --storage-url`` runs (each with its own TLS certificate, the token
signer key shared through the store), whole RCAR flows spread over them, and failures: kill -9 of
a replica under load, PostgreSQL restarted under load, kill -9 of a single SQLite KBS while it
acknowledges resource writes. Real servers on 127.0.0.1, started by the fixtures."""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("trustpod.attestation.service")

from replica_support import (
    Replica,
    ca_bundle,
    flow,
    init_replicas,
    provision_reference_values,
)

SECRET = b"replicated secret \x00\xff"


def _fresh_store_url(kind: str, request: pytest.FixtureRequest, name: str) -> str:
    """A store of its own for one test: a new database (PostgreSQL) / db index (Redis)."""
    if kind == "postgres":
        import psycopg

        pg = request.getfixturevalue("pg_server")
        with psycopg.connect(pg.conninfo, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgres://postgres@127.0.0.1:{pg.port}/{name}"
    import redis

    rs = request.getfixturevalue("redis_server")
    db = 1 + sum(map(ord, name)) % 14
    redis.Redis(port=rs.port, db=db).flushdb()
    return f"redis://127.0.0.1:{rs.port}/{db}"


class Cluster:
    def __init__(self, replicas: list[Replica], verify: Any) -> None:
        self.replicas = replicas
        self.verify = verify
        self.token = replicas[0].admin_token

    def clients(self, timeout: float = 10.0) -> list[httpx.Client]:
        return [
            httpx.Client(base_url=r.url, verify=self.verify, timeout=timeout) for r in self.replicas
        ]

    def admin(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}


@contextlib.contextmanager
def _cluster(root: Path, url: str, n: int = 3, *, tls: bool = True) -> Iterator[Cluster]:
    replicas = init_replicas(root, n, url, tls=tls)
    verify = ca_bundle(replicas, root / "ca-bundle.pem")
    try:
        for r in replicas:
            r.start()
        for r in replicas:
            r.wait_ready(verify)
        yield Cluster(replicas, verify)
    finally:
        for r in replicas:
            r.stop()


@pytest.fixture(params=["postgres", "redis"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    url = _fresh_store_url(request.param, request, "replicas")
    with _cluster(tmp_path, url) as c:
        yield c


def test_flows_spread_over_three_replicas(cluster: Cluster) -> None:
    cs = cluster.clients()
    try:
        # admin writes on replica 0 and 1; the admin token of init #1 works on replicas 2 and 3
        r = cs[0].post("/kbs/v0/resource/default/key/r", content=SECRET, headers=cluster.admin())
        assert r.status_code == 200, r.text
        provision_reference_values(cs[1], cluster.token)
        # every rotation: auth on i, attest on i+1, resource on i+2 (tokens cross replicas)
        for start in range(3):
            assert flow(cs, "default/key/r", start) == SECRET
        # separate inits: three different TLS certificates, one signer key (in the store)
        certs = {r.cert.read_bytes() for r in cluster.replicas if r.cert is not None}
        assert len(certs) == 3
    finally:
        for c in cs:
            c.close()


def _live(cs: list[httpx.Client]) -> list[httpx.Client]:
    """What a load balancer's health check leaves in rotation."""
    out = []
    for c in cs:
        try:
            if c.get("/healthz", timeout=0.5).status_code == 200:
                out.append(c)
        except httpx.HTTPError:
            pass
    return out or cs


def _retry_flow(cs: list[httpx.Client], start: int, resource: str, attempts: int = 6) -> bool:
    """A client behind a load balancer: on any failure, the whole flow again over the replicas
    still in rotation (up to ``attempts``)."""
    pool = cs
    for k in range(attempts):
        try:
            return flow(pool, resource, start + k) == SECRET
        except (httpx.HTTPError, AssertionError, KeyError, ValueError):
            time.sleep(0.05)
            pool = _live(cs)
    return False


@pytest.mark.parametrize("kind", ["postgres", "redis"])
def test_kill9_one_replica_under_load(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = _fresh_store_url(kind, request, "kill9")
    with _cluster(tmp_path, url, tls=False) as cluster:
        cs = cluster.clients(timeout=3.0)
        assert (
            cs[0]
            .post("/kbs/v0/resource/default/key/r", content=SECRET, headers=cluster.admin())
            .status_code
            == 200
        )
        provision_reference_values(cs[0], cluster.token)
        stop = threading.Event()
        results: list[bool] = []
        acked: list[str] = []
        counter = itertools.count()

        def flows() -> None:
            local = cluster.clients(timeout=3.0)
            while not stop.is_set():
                results.append(_retry_flow(local, next(counter), "default/key/r"))

        def writes() -> None:
            local = cluster.clients(timeout=3.0)
            for i in itertools.count():
                if stop.is_set():
                    return
                path = f"default/written/k{i}"
                for k in range(6):  # an admin tool retrying on another replica
                    try:
                        r = local[(i + k) % 3].post(
                            f"/kbs/v0/resource/{path}", content=b"v%d" % i, headers=cluster.admin()
                        )
                    except httpx.HTTPError:
                        continue
                    if r.status_code == 200:
                        acked.append(path)
                        break

        threads = [threading.Thread(target=flows) for _ in range(3)]
        threads.append(threading.Thread(target=writes))
        for t in threads:
            t.start()
        time.sleep(1.5)
        cluster.replicas[1].kill9()
        time.sleep(2.0)
        stop.set()
        for t in threads:
            t.join(30)
        assert results and all(results), f"{results.count(False)} of {len(results)} flows failed"
        assert len(acked) >= 3, acked
        # every acknowledged admin write is there, read through an attested client
        survivors = [cs[0], cs[2]]
        token = _token(survivors)
        for path in acked:
            r = survivors[hash(path) % 2].get(
                f"/kbs/v0/resource/{path}", headers={"authorization": f"Bearer {token[0]}"}
            )
            assert r.status_code == 200, (path, r.text)
            assert token[1].decrypt(r.json()) == b"v" + path.rsplit("k", 1)[1].encode()


def _token(cs: list[httpx.Client]) -> tuple[str, Any]:
    from replica_support import sample_attest_body
    from trustpod.guest.tee_key import TeeKeyPair

    tee = TeeKeyPair.generate_ec()
    r = cs[0].post("/kbs/v0/auth", json={"version": "0.4.0", "tee": "sample", "extra-params": ""})
    cookie = r.headers["set-cookie"].split(";")[0]
    r = cs[-1].post(
        "/kbs/v0/attest",
        json=sample_attest_body(r.json()["nonce"], tee),
        headers={"cookie": cookie},
    )
    assert r.status_code == 200, r.text
    return r.json()["token"], tee


def test_postgres_restarted_under_load(tmp_path: Path) -> None:
    from storage_servers import Postgres

    try:
        pg = Postgres()
    except FileNotFoundError as exc:
        pytest.skip(f"{exc} not installed")
    try:
        url = f"postgres://postgres@127.0.0.1:{pg.port}/postgres"
        with _cluster(tmp_path, url, n=2, tls=False) as cluster:
            cs = cluster.clients(timeout=3.0)
            h = cluster.admin()
            assert cs[0].post("/kbs/v0/resource/default/key/r", content=SECRET, headers=h)
            provision_reference_values(cs[0], cluster.token)
            assert flow(cs, "default/key/r") == SECRET
            pids = [r.proc.pid for r in cluster.replicas if r.proc is not None]
            # load during the whole outage: every failure must be a 503 naming PostgreSQL
            stop = threading.Event()
            outcomes: list[str] = []

            def load() -> None:
                local = cluster.clients(timeout=5.0)
                for k in itertools.count():
                    if stop.is_set():
                        return
                    try:
                        flow(local, "default/key/r", k)
                        outcomes.append("ok")
                    except AssertionError as exc:
                        outcomes.append(str(exc))
                    except httpx.HTTPError as exc:
                        outcomes.append(f"transport {exc!r}")

            threads = [threading.Thread(target=load) for _ in range(2)]
            for t in threads:
                t.start()
            time.sleep(0.5)
            pg.stop()
            # while down: clear 503s naming the backend, on the RCAR and admin endpoints alike
            r = cs[0].post(
                "/kbs/v0/auth", json={"version": "0.4.0", "tee": "sample", "extra-params": ""}
            )
            assert r.status_code == 503 and "PostgreSQL" in r.json()["detail"], r.text
            r = cs[1].post("/kbs/v0/resource/default/key/x", content=b"x", headers=h)
            assert r.status_code == 503 and "PostgreSQL" in r.json()["detail"], r.text
            pg.start()
            # recovery without restarting the KBS: the first flows after the restart succeed
            t0 = time.monotonic()
            for start in range(4):
                assert flow(cs, "default/key/r", start) == SECRET
            assert time.monotonic() - t0 < 10
            stop.set()
            for t in threads:
                t.join(30)
            failures = [o for o in outcomes if o != "ok"]
            assert "ok" in outcomes and failures, outcomes[:5]
            for f in failures:
                assert " 503 " in f and "PostgreSQL" in f, f
            assert outcomes[-1] == "ok"  # the load recovered too
            assert [r.proc.pid for r in cluster.replicas if r.proc is not None] == pids
            assert all(r.proc is not None and r.proc.poll() is None for r in cluster.replicas)
    finally:
        pg.close()


def test_kill9_sqlite_kbs_during_1000_writes(tmp_path: Path) -> None:
    import subprocess

    from replica_support import CLI
    from storage_servers import free_port

    d = tmp_path / "single"
    listen = f"127.0.0.1:{free_port()}"
    subprocess.run(
        [*CLI, "kbs", "init", "--dir", str(d), "--listen", listen, "--insecure-http"],
        check=True,
        capture_output=True,
    )
    kbs = Replica(d, listen, tls=False)
    kbs.start()
    kbs.wait_ready(False)
    h = {"authorization": f"Bearer {kbs.admin_token}"}
    acked: list[int] = []
    lock = threading.Lock()
    ids = iter(range(1000))

    def writer() -> None:
        with httpx.Client(base_url=kbs.url, timeout=5) as c:
            for i in ids:
                try:
                    r = c.post(f"/kbs/v0/resource/default/w/k{i}", content=b"%d" % i, headers=h)
                except httpx.HTTPError:
                    return
                if r.status_code == 200:
                    with lock:
                        acked.append(i)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while len(acked) < 300 and time.monotonic() < deadline:
        time.sleep(0.005)
    kbs.kill9()  # mid-stream: some writes acknowledged, some in flight, some never sent
    for t in threads:
        t.join(30)
    assert 300 <= len(acked) < 1000
    kbs.start()
    try:
        kbs.wait_ready(False)
        with httpx.Client(base_url=kbs.url, timeout=5) as c:
            provision_reference_values(c, kbs.admin_token)
            token, tee = _token([c])
            for i in acked:
                r = c.get(
                    f"/kbs/v0/resource/default/w/k{i}", headers={"authorization": f"Bearer {token}"}
                )
                assert r.status_code == 200, (i, r.text)
                assert tee.decrypt(r.json()) == b"%d" % i
    finally:
        kbs.stop()
