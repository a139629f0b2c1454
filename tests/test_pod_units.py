"""Pure parts of ``trustpod pod``: the Pod parser, CAA's userdata (cloud-config and
process-user-data), the kata requests, the store's modes and the pod config."""

from __future__ import annotations

import base64
import re
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustpod.agent.pb import protos
from trustpod.cli.initdata import build_initdata
from trustpod.errors import ConfigError, TrustpodError
from trustpod.initdata import InitData, encode_annotation
from trustpod.pod.config import parse_pod_config
from trustpod.pod.provider import instance_name
from trustpod.pod.requests import container_id, copy_file_ops, create_container, create_sandbox
from trustpod.pod.spec import INITDATA_ANNOTATION, parse_pod
from trustpod.pod.store import PodRecord, PodStore
from trustpod.pod.userdata import (
    DaemonConfig,
    build_cloud_config,
    decode_initdata,
    provision_files,
    write_provisioned,
)

POD = """apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: shop
  annotations: {a: b}
spec:
  securityContext: {runAsUser: 1000}
  containers:
  - name: app
    image: registry.local/app:1
    command: [/bin/server]
    args: [--port, "8080"]
    env:
    - {name: MODE, value: prod}
    - {name: TOKEN, valueFrom: {secretKeyRef: {name: creds, key: token}}}
    - {name: LEVEL, valueFrom: {configMapKeyRef: {name: cfg, key: level}}}
    volumeMounts:
    - {name: creds, mountPath: /secret, readOnly: true}
    - {name: cache, mountPath: /cache}
    resources: {limits: {cpu: 1500m, memory: 2Gi}}
    securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true}
  volumes:
  - {name: creds, secret: {secretName: creds}}
  - {name: cache, emptyDir: {}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {level: debug}
"""
SECRETS = f"""apiVersion: v1
kind: Secret
metadata: {{name: creds}}
data: {{token: {base64.b64encode(b"sealed.x.y.z").decode()}}}
"""


def test_pod_parsed_into_frozen_dataclasses() -> None:
    pod = parse_pod(POD, SECRETS)
    assert (pod.name, pod.namespace, pod.annotation("a")) == ("web", "shop", "b")
    (c,) = pod.containers
    assert c.command == ("/bin/server",) and c.args == ("--port", "8080")
    assert [(e.name, e.value) for e in c.env] == [
        ("MODE", "prod"),
        ("TOKEN", "sealed.x.y.z"),
        ("LEVEL", "debug"),
    ]
    assert c.run_as_user == 1000 and c.read_only_root and c.no_new_privileges
    assert pod.instance_size() == (2, 2048)
    assert [(v.name, v.kind) for v in pod.volumes] == [("creds", "secret"), ("cache", "emptyDir")]
    assert pod.volumes[0].files == (("token", b"sealed.x.y.z"),)
    with pytest.raises(AttributeError):
        pod.name = "x"  # type: ignore[misc]


def test_deployment_template() -> None:
    text = (
        "kind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 1\n  template:\n"
        "    metadata: {labels: {app: web}}\n    spec:\n      containers:\n"
        "      - {name: a, image: busybox}\n"
    )
    pod = parse_pod(text)
    assert pod.name == "web" and pod.labels == (("app", "web"),)


@pytest.mark.parametrize(
    ("mutation", "field"),
    [
        (("  securityContext:", "  hostNetwork: true\n  securityContext:"), "spec.hostNetwork"),
        (
            ("    command:", "    livenessProbe: {}\n    command:"),
            "spec.containers[0].livenessProbe",
        ),
        (
            ("  - {name: cache, emptyDir: {}}", "  - {name: cache, hostPath: {path: /}}"),
            "spec.volumes[1].hostPath",
        ),
        (
            ("allowPrivilegeEscalation: false", "privileged: true"),
            "spec.containers[0].securityContext.privileged",
        ),
        (("key: token", "key: missing"), "valueFrom.secretKeyRef"),
        (("name: web\n", "name: Web_1\n"), "metadata.name"),
        (("memory: 2Gi", "memory: lots"), "resources.limits.memory"),
    ],
)
def test_unsupported_or_bad_fields_are_named(mutation: tuple[str, str], field: str) -> None:
    old, new = mutation
    assert old in POD
    with pytest.raises(ConfigError) as err:
        parse_pod(POD.replace(old, new, 1), SECRETS)
    assert field in str(err.value)


def test_secret_needed_but_not_given() -> None:
    with pytest.raises(ConfigError, match="--secrets"):
        parse_pod(POD)


@given(st.binary(max_size=300))
@settings(max_examples=150, deadline=None)
def test_pod_parser_fails_closed(data: bytes) -> None:
    try:
        parse_pod(data)
    except TrustpodError:
        pass


INITDATA = build_initdata("https://kbs.example:8080", kbs_cert=None, policy=None)


def test_cloud_config_round_trip_is_caas_shape() -> None:
    daemon = DaemonConfig("web", "shop", "unix:/run/agent.sock")
    text = build_cloud_config(INITDATA, daemon)
    assert text.startswith("#cloud-config\n")
    result = provision_files(text.encode())
    files = dict(result.files)
    digest = InitData.parse(INITDATA.encode()).digest
    assert files["run/peerpod/initdata"] == INITDATA.encode()
    assert files["run/peerpod/initdata.digest"] == digest.hex().encode()
    assert b"kbs.example" in files["run/peerpod/aa.toml"]
    assert b"kbs.example" in files["run/peerpod/cdh.toml"]
    assert "policy.rego" in str(list(files))
    assert result.daemon == daemon


def test_process_user_data_is_strict_and_allow_listed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exactly write_files"):
        provision_files(b"#cloud-config\nruncmd: [reboot]\nwrite_files: []\n")
    with pytest.raises(ConfigError, match="only path and content"):
        provision_files(b"write_files:\n- {path: /run/peerpod/apf.json, owner: root}\n")
    evil = (
        b"write_files:\n- {path: /etc/shadow, content: x}\n"
        b"- {path: /run/peerpod/auth.json, content: '{}'}\n"
    )
    result = provision_files(evil)
    assert dict(result.files) == {"run/peerpod/auth.json": b"{}"}
    write_provisioned(result, tmp_path)
    f = tmp_path / "run/peerpod/auth.json"
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert stat.S_IMODE(f.parent.stat().st_mode) == 0o700
    assert not (tmp_path / "etc").exists()
    with pytest.raises(ConfigError, match="larger"):
        provision_files(b"x" * (64 * 1024 + 1))


def test_initdata_annotation_plain_or_gzip() -> None:
    assert decode_initdata(INITDATA) == INITDATA.encode()
    assert decode_initdata(encode_annotation(INITDATA.encode())) == INITDATA.encode()
    pod = parse_pod(
        "kind: Pod\nmetadata:\n  name: p\n  annotations:\n"
        f"    {INITDATA_ANNOTATION}: {encode_annotation(INITDATA.encode())}\n"
        "spec: {containers: [{name: a, image: b}]}\n"
    )
    assert pod.annotation(INITDATA_ANNOTATION)


@given(st.binary(max_size=400))
@settings(max_examples=150, deadline=None)
def test_provision_fails_closed(data: bytes) -> None:
    try:
        provision_files(data)
    except TrustpodError:
        pass


def test_requests_shaped_like_the_kata_shim() -> None:
    pb = protos()
    pod = parse_pod(POD, SECRETS)
    sid = "a" * 64
    req = create_container(pb, pod, sid, pod.containers[0])
    cid = container_id(sid, "app")
    assert len(cid) == 64 and req.container_id == cid
    a = req.OCI.Annotations
    assert a["io.kubernetes.cri.container-type"] == "container"
    assert a["io.kubernetes.cri.sandbox-id"] == sid
    assert a["io.kubernetes.cri.image-name"] == "registry.local/app:1"
    assert list(req.OCI.Process.Args) == ["/bin/server", "--port", "8080"]
    assert "TOKEN=sealed.x.y.z" in list(req.OCI.Process.Env)
    assert req.OCI.Process.User.UID == 1000 and req.OCI.Root.Readonly
    drivers = [s.driver for s in req.storages]
    assert drivers == ["local", "image_guest_pull"]
    mounts = {m.destination: m for m in req.OCI.Mounts}
    src = mounts["/secret"].source
    assert re.fullmatch(rf"/run/kata-containers/shared/containers/{cid}-[0-9a-f]{{16}}-creds", src)
    assert "ro" in mounts["/secret"].options
    assert req.OCI.Root.Path == f"/run/kata-containers/{cid}/rootfs"
    assert [n.Type for n in req.OCI.Linux.Namespaces] == ["ipc", "uts", "mount"]
    ops = copy_file_ops(pod, sid, pod.containers[0])
    assert [o.data for o in ops] == [None, b"sealed.x.y.z"]
    pause = create_container(pb, pod, sid, None)
    assert pause.container_id == sid and list(pause.OCI.Process.Args) == ["/pause"]
    assert pause.OCI.Annotations["io.kubernetes.cri.container-type"] == "sandbox"
    assert pause.OCI.Process.User.UID == 65535 and pause.OCI.Root.Readonly


def test_share_process_namespace_in_the_requests() -> None:
    pb = protos()
    sid = "b" * 64
    plain = parse_pod(POD, SECRETS)
    text = POD.replace("  securityContext:", "  shareProcessNamespace: true\n  securityContext:", 1)
    shared = parse_pod(text, SECRETS)
    assert shared.share_process_namespace and not plain.share_process_namespace
    # kata's shim: every app container says sandbox_pidns; the pause and CreateSandbox do not
    assert not create_sandbox(pb, shared, sid).sandbox_pidns
    assert not create_sandbox(pb, plain, sid).sandbox_pidns
    assert create_container(pb, shared, sid, shared.containers[0]).sandbox_pidns
    assert not create_container(pb, shared, sid, None).sandbox_pidns
    assert not create_container(pb, plain, sid, plain.containers[0]).sandbox_pidns
    req = create_container(pb, shared, sid, shared.containers[0])
    assert "/dev/pts" in [m.destination for m in req.OCI.Mounts]  # a terminal's devpts
    with pytest.raises(ConfigError, match="shareProcessNamespace"):
        parse_pod(text.replace("Namespace: true", "Namespace: 'yes'"), SECRETS)


def test_instance_name_is_caas() -> None:
    assert instance_name("web", "0123456789abcdef") == "podvm-web-01234567"
    assert len(instance_name("x" * 100, "f" * 64)) == 63


def test_store_modes_and_second_view(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = PodStore(root)
    store.create(PodRecord("web", "default", "sandbox", "s" * 64))
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "web.json").stat().st_mode) == 0o600
    with pytest.raises(ConfigError, match="exists"):
        store.create(PodRecord("web", "default", "sandbox", "t" * 64))
    assert [r.name for r in PodStore(root).list()] == ["web"]  # another process's view
    store.remove("web")
    assert list(store.list()) == []
    with pytest.raises(ConfigError):
        store.get("../etc")


def test_pod_config_names() -> None:
    c = parse_pod_config({"pod": {"burst": "when-local-full", "local_capacity": 2}})
    assert c.burst == "when-local-full" and c.local_capacity == 2
    with pytest.raises(ConfigError, match=r"pod\.burst"):
        parse_pod_config({"pod": {"burst": "sometimes"}})
    with pytest.raises(ConfigError, match=r"sandbox\.nope"):
        parse_pod_config({"sandbox": {"nope": 1}})


def test_userdata_from_config_drive_or_imds(tmp_path: Path) -> None:
    """process-user-data's channels: the cidata file wins; else Azure IMDS (``Metadata: true``,
    base64 text), retried until the fetch timeout."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from trustpod.errors import DependencyError
    from trustpod.pod.guest_boot import fetch_userdata

    doc = b"#cloud-config\nwrite_files: []\n"
    seen: list[str | None] = []

    class Imds(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            seen.append(self.headers.get("Metadata"))
            body = base64.b64encode(doc) if self.headers.get("Metadata") == "true" else b""
            self.send_response(200 if body else 400)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Imds)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/metadata/instance/compute/userData"
    try:
        drive = tmp_path / "user-data"
        assert fetch_userdata(drive, url, timeout_s=2, retry_s=0.05) == doc
        assert seen == ["true"]
        drive.write_bytes(b"from the drive")
        assert fetch_userdata(drive, url, timeout_s=2) == b"from the drive"
        with pytest.raises(DependencyError, match="no userdata"):
            fetch_userdata(tmp_path / "absent", None, timeout_s=0.2, retry_s=0.05)
    finally:
        server.shutdown()
        server.server_close()
