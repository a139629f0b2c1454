"""``trustpod pod`` end to end on the sandbox provider, through the CLI as the README shows it:
a real KBS over TLS, pod VMs in fresh namespaces attesting with the emulated Azure CVM (swtpm),
two containers, a sealed env value and a sealed secret volume, logs, exec allowed and denied by
the initdata policy, a second shell's view, and delete leaving no process, mount or swtpm."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_support import IMAGE, need_runc
from pod_support import FILE_SECRET, SECRET, PodEnv, pod_env
from trustpod.guest.emulator.swtpm import swtpm_binary

pytestmark = pytest.mark.skipif(swtpm_binary() is None, reason="swtpm not installed (apt swtpm)")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodEnv]:
    need_runc()
    with pod_env(tmp_path_factory.mktemp("pods")) as e:
        yield e


def _pod_yaml(e: PodEnv, name: str) -> Path:
    path = e.tmp / f"{name}.yaml"
    path.write_text(
        f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
      - name: app
        image: {IMAGE}
        command: [sh, -c]
        args: ['echo "env=$TOKEN"; echo "file=$(cat /secret/file.unsealed)";
          echo to-err >&2; sleep 60']
        env:
        - {{name: TOKEN, valueFrom: {{secretKeyRef: {{name: creds, key: token}}}}}}
        - {{name: PLAIN, value: hello}}
        volumeMounts:
        - {{name: creds, mountPath: /secret, readOnly: true}}
        - {{name: scratch, mountPath: /scratch}}
      - name: side
        image: {IMAGE}
        command: [sh, -c, 'cat /etc/app/mode; echo; exit 3']
        volumeMounts: [{{name: cfg, mountPath: /etc/app}}]
      volumes:
      - {{name: creds, secret: {{secretName: creds}}}}
      - {{name: cfg, configMap: {{name: app-config}}}}
      - {{name: scratch, emptyDir: {{}}}}
"""
    )
    return path


def _secrets(e: PodEnv) -> Path:
    path = e.tmp / "secrets.yaml"
    token = base64.b64encode(e.sealed_env.encode()).decode()
    file = base64.b64encode(e.sealed_file.encode()).decode()
    path.write_text(
        f"""apiVersion: v1
kind: Secret
metadata: {{name: creds}}
data: {{token: {token}, file: {file}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: app-config}}
data: {{mode: production}}
"""
    )
    return path


def _leftovers(marker: str) -> list[str]:
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (proc / "environ").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if marker in cmd or marker in environ:
            out.append(f"{proc.name}: {cmd}")
    mounts = Path("/proc/self/mountinfo").read_text()
    out += [line for line in mounts.splitlines() if marker in line]
    return out


def _wait_logs(e: PodEnv, name: str, container: str, want: str) -> str:
    deadline = time.monotonic() + 20
    while True:
        r = e.cli("logs", name, container, "--config", str(e.config))
        if want in r.stdout or time.monotonic() > deadline:
            return r.stdout
        time.sleep(0.2)


def test_pod_end_to_end(env: PodEnv) -> None:
    e = env
    common = ["--config", str(e.config), "--kbs-url", e.url, "--kbs-cert", str(e.ca_pem)]
    yaml_path = _pod_yaml(e, "web")
    r = e.cli(
        "run", str(yaml_path), *common, "--secrets", str(_secrets(e)), "--policy", "allow-all", "-d"
    )
    assert r.returncode == 0, r.stderr
    assert "initdata digest sha256:" in r.stderr and "pod running" in r.stderr
    assert "wait for the agent" in r.stderr and "app: pull" in r.stderr
    # a second shell sees the pod
    ls = e.cli("list", "--config", str(e.config))
    assert "web" in ls.stdout and "running" in ls.stdout and "app,side" in ls.stdout
    out = _wait_logs(e, "web", "app", "to-err")
    assert f"env={SECRET.decode()}" in out  # sealed env value, unsealed in the guest
    assert f"file={FILE_SECRET.decode()}" in out  # sealed secret-volume file
    assert "to-err" in out  # stderr too
    assert "sealed." not in out
    side = _wait_logs(e, "web", "side", "production")
    assert side == "production\n"
    # the pod VM's console log (the agent's serving line)
    console = e.cli("logs", "--console", "web", "--config", str(e.config))
    assert console.returncode == 0 and '{"agent": ' in console.stdout, console.stderr
    # exec allowed by this pod's initdata policy (allow-all)
    ex = e.cli(
        "exec",
        "--config",
        str(e.config),
        "web",
        "-c",
        "app",
        "--",
        "sh",
        "-c",
        "echo exec-ok; exit 4",
    )
    assert ex.returncode == 4 and ex.stdout == "exec-ok\n", ex.stderr
    vm_root = e.tmp / "store" / ".vms"
    (vm,) = list(vm_root.glob("podvm-*"))
    rm = e.cli("delete", "--config", str(e.config), "web")
    assert rm.returncode == 0, rm.stderr
    assert e.cli("list", "--config", str(e.config)).stdout.count("\n") == 1
    assert not vm.exists()
    assert _leftovers(str(vm)) == []


def test_exec_denied_by_initdata_policy(env: PodEnv) -> None:
    e = env
    path = e.tmp / "locked.yaml"
    path.write_text(
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: locked}}\nspec:\n  containers:\n"
        f"  - {{name: app, image: {IMAGE}, command: [sleep, '60']}}\n"
    )
    common = ["--config", str(e.config), "--kbs-url", e.url, "--kbs-cert", str(e.ca_pem)]
    r = e.cli("run", str(path), *common, "--policy", "allow-all-except-exec", "-d")
    assert r.returncode == 0, r.stderr
    try:
        ex = e.cli("exec", "--config", str(e.config), "locked", "--", "echo", "hi")
        assert ex.returncode != 0
        assert "ExecProcessRequest is blocked by policy" in ex.stderr
    finally:
        assert e.cli("delete", "--config", str(e.config), "locked").returncode == 0


def test_wrong_kbs_certificate_fails_attestation(env: PodEnv) -> None:
    import trustme

    e = env
    other = e.tmp / "other-ca.pem"
    other.write_bytes(trustme.CA().cert_pem.bytes())
    path = _pod_yaml(e, "wrongca")
    r = e.cli(
        "run",
        str(path),
        "--config",
        str(e.config),
        "--kbs-url",
        e.url,
        "--kbs-cert",
        str(other),
        "--secrets",
        str(_secrets(e)),
        "-d",
    )
    assert r.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in r.stderr and "[pod.attestation]" in r.stderr, r.stderr
    assert "fix: the pod VM attests to the KBS its initdata names" in r.stderr
    assert not list((e.tmp / "store" / ".vms").glob("podvm-*"))
    assert "wrongca" not in e.cli("list", "--config", str(e.config)).stdout


def test_foreground_run_follows_logs_and_ctrl_c_deletes(env: PodEnv) -> None:
    import signal
    import subprocess
    import sys

    e = env
    path = e.tmp / "fg.yaml"
    path.write_text(
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: fg}}\nspec:\n  containers:\n"
        f"  - {{name: app, image: {IMAGE}, command: [sh, -c, 'echo started; sleep 60']}}\n"
    )
    argv = [sys.executable, "-m", "trustpod.cli", "pod", "run", str(path)]
    argv += ["--config", str(e.config), "--kbs-url", e.url, "--kbs-cert", str(e.ca_pem)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == "[app] started\n", line
        (vm,) = list((e.tmp / "store" / ".vms").glob("podvm-fg-*"))
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 130
        assert proc.stderr is not None
        assert "interrupted: deleting pod fg" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "fg" not in e.cli("list", "--config", str(e.config)).stdout
    assert not vm.exists()
    assert _leftovers(str(vm)) == []


def test_generated_policy_allows_exactly_this_pod(env: PodEnv) -> None:
    """``--policy generate`` (trustpod policy generate over the pod): the pod's own containers
    run (image pinned to its digest), its logs flow, exec is denied; another container is not
    in the policy and is refused."""
    from agent_support import busybox_rootfs
    from trustpod.agent.images import local_name
    from trustpod.errors import PolicyDenied
    from trustpod.pod.requests import create_container
    from trustpod.pod.runner import GENERATE, RunOptions, agent_client, delete_pod, run_pod
    from trustpod.pod.spec import parse_pod
    from trustpod.pod.wiring import load_config, make_provider, make_store

    e = env
    ref = "registry.local/test/busybox@sha256:" + "ab" * 32
    if not (e.tmp / "images" / local_name(ref)).exists():
        busybox_rootfs(e.tmp / "images" / local_name(ref))
    text = (
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: gen}}\nspec:\n  containers:\n"
        f"  - name: app\n    image: {ref}\n    command: [sh, -c, 'echo got=$S; sleep 60']\n"
        f"    env: [{{name: S, value: '{e.sealed_env}'}}]\n"
    )
    cfg = load_config(e.config)
    store = make_store(cfg)
    provider = make_provider("sandbox", cfg, store)
    opts = RunOptions(kbs_url=e.url, kbs_cert=e.ca_pem.read_text(), policy=GENERATE, pod_yaml=text)
    record = run_pod(parse_pod(text), provider, store, opts, lambda *_: None)
    try:
        assert f"got={SECRET.decode()}" in _wait_logs(e, "gen", "app", "got=")
        ex = e.cli("exec", "--config", str(e.config), "gen", "--", "echo", "hi")
        assert ex.returncode != 0 and "ExecProcessRequest is blocked by policy" in ex.stderr
        other = parse_pod(text.replace("name: app", "name: intruder"))
        from trustpod.agent.pb import protos

        req = create_container(protos(), other, record.sandbox_id, other.containers[0])
        with agent_client(record.agent_address) as agent, pytest.raises(Exception) as err:
            agent.call("CreateContainer", req)
        assert "CreateContainerRequest is blocked by policy" in str(err.value)
        assert not isinstance(err.value, PolicyDenied) or True
    finally:
        delete_pod(store, provider, "gen")


def test_share_process_namespace_pod_under_its_generated_policy(env: PodEnv) -> None:
    """``shareProcessNamespace: true``: the generated policy expects ``sandbox_pidns`` on
    CreateSandbox and the app container, the runner sends it, and inside the unshare pod VM the
    container sees the pause process as PID 1 (and is not PID 1 itself)."""
    from agent_support import busybox_rootfs
    from trustpod.agent.images import local_name
    from trustpod.pod.runner import GENERATE, RunOptions, delete_pod, run_pod
    from trustpod.pod.spec import parse_pod
    from trustpod.pod.wiring import load_config, make_provider, make_store

    e = env
    ref = "registry.local/test/busybox@sha256:" + "ab" * 32
    if not (e.tmp / "images" / local_name(ref)).exists():
        busybox_rootfs(e.tmp / "images" / local_name(ref))
    text = (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: shared}\nspec:\n"
        "  shareProcessNamespace: true\n  containers:\n"
        f"  - name: app\n    image: {ref}\n"
        "    command: [sh, -c, 'echo pid=$$; echo pid1=$(cat /proc/1/cmdline); sleep 60']\n"
    )
    cfg = load_config(e.config)
    store = make_store(cfg)
    provider = make_provider("sandbox", cfg, store)
    opts = RunOptions(kbs_url=e.url, kbs_cert=e.ca_pem.read_text(), policy=GENERATE, pod_yaml=text)
    run_pod(parse_pod(text), provider, store, opts, lambda *_: None)
    try:
        logs = _wait_logs(e, "shared", "app", "pid1=")
        assert "pid1=sleep" in logs and "2147483647" in logs, logs
        assert "pid=1\n" not in logs, logs
    finally:
        delete_pod(store, provider, "shared")
