"""The Kubernetes deployment: the Helm chart under deploy/helm/trustpod-kbs rendered (by
tests/helm_lite.py; by ``helm template`` too when a helm binary exists, which Debian and PyPI do
not ship), every object schema-checked with ``kubernetes-validate`` (strict, the Kubernetes
version it bundles), the chart's ConfigMap a valid trustpod kbs-config.toml, the committed plain
manifests current, and the Containerfile's non-root / read-only contract. No cluster runs here."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from helm_lite import manifest_text, render_chart

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "deploy" / "helm" / "trustpod-kbs"
MANIFESTS = ROOT / "deploy" / "kubernetes"
RELEASE, NAMESPACE = "trustpod-kbs", "trustpod"
VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "redis": {"storage": {"type": "Redis", "existingSecret": "redis-url"}, "replicaCount": 5},
    "azure": {
        "resourceBackend": {
            "type": "AzureKeyVault",
            "vaultUrl": "https://kbs-secrets.vault.azure.net",
        },
        "serviceAccountName": "trustpod-kbs",
        "podLabels": {"azure.workload.identity/use": "true"},
    },
    "vault": {
        "resourceBackend": {
            "type": "Vault",
            "vaultUrl": "https://vault.vault.svc:8200",
            "existingSecret": "kbs-vault-token",
        },
        "serviceMonitor": {"enabled": True},
        "podDisruptionBudget": {"enabled": False},
        "extraConfig": "[attestation_service.verifier_config]\ntpm_verifier = {}\n",
        "nodeSelector": {"kubernetes.io/arch": "amd64"},
    },
}


def _objects(values: dict[str, Any]) -> list[dict[str, Any]]:
    files = render_chart(CHART, release=RELEASE, namespace=NAMESPACE, values=values)
    docs: list[dict[str, Any]] = []
    for name, text in files.items():
        assert "<no value>" not in text, f"{name} uses a value that does not exist"
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def _kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind]
    return found


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_chart_objects_pass_schema_validation(variant: str) -> None:
    import kubernetes_validate

    docs = _objects(VARIANTS[variant])
    kinds = sorted(d["kind"] for d in docs)
    expected = {"ConfigMap", "Deployment", "Service"}
    if variant != "vault":
        expected.add("PodDisruptionBudget")
    else:
        expected.add("ServiceMonitor")
    assert set(kinds) == expected
    for d in docs:
        if d["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: checked below
        kubernetes_validate.validate(d, kubernetes_validate.latest_version(), strict=True)


def test_deployment_contract() -> None:
    docs = _objects({})
    dep = _kind(docs, "Deployment")
    spec = dep["spec"]["template"]["spec"]
    assert dep["spec"]["replicas"] == 3
    pod_sc = spec["securityContext"]
    assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] == 10001
    (c,) = spec["containers"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "https", "scheme": "HTTPS"}
    assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"]}
    assert set(env) == {"POSTGRES_URL", "TRUSTPOD_AT_REST_KEY"}  # credentials only via Secrets
    assert {m["mountPath"] for m in c["volumeMounts"]} >= {"/tmp", "/etc/trustpod/keys"}
    pdb = _kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    svc = _kind(docs, "Service")
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    redis = _kind(_objects(VARIANTS["redis"]), "Deployment")["spec"]["template"]["spec"]
    assert {e["name"] for e in redis["containers"][0]["env"]} == {
        "REDIS_URL",
        "TRUSTPOD_AT_REST_KEY",
    }


def test_servicemonitor_scrapes_metrics_over_tls() -> None:
    docs = _objects(VARIANTS["vault"])
    sm = _kind(docs, "ServiceMonitor")
    svc = _kind(docs, "Service")
    assert sm["spec"]["selector"]["matchLabels"] == svc["metadata"]["labels"]
    (ep,) = sm["spec"]["endpoints"]
    assert ep["port"] == svc["spec"]["ports"][0]["name"]
    assert (ep["path"], ep["scheme"]) == ("/metrics", "https")
    assert ep["tlsConfig"]["serverName"] == f"{RELEASE}.{NAMESPACE}.svc"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_configmap_is_a_valid_kbs_config(
    variant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trustpod.kbs.config import parse_config

    cm = _kind(_objects(VARIANTS[variant]), "ConfigMap")
    monkeypatch.setenv("POSTGRES_URL", "postgresql://kbs@db:5432/kbs")
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/0")
    monkeypatch.setenv("VAULT_TOKEN", "hvs.x")
    cfg = parse_config(tomllib.loads(cm["data"]["kbs-config.toml"]), tmp_path / "kbs-config.toml")
    assert cfg.storage_backend.storage_type in ("Postgres", "Redis")
    assert cfg.trustpod.at_rest_key_env == "TRUSTPOD_AT_REST_KEY"
    assert cfg.http_server.sockets == ("0.0.0.0:8080",)
    if variant == "azure":
        assert cfg.resource_backend is not None
        assert cfg.resource_backend.vault_url == "https://kbs-secrets.vault.azure.net"
    if variant == "vault":
        assert cfg.resource_backend is not None
        assert cfg.attestation_service.verifier_config == {"tpm_verifier": {}}


def test_committed_manifests_are_current() -> None:
    committed = (MANIFESTS / "trustpod-kbs.yaml").read_text()
    assert committed == manifest_text(CHART, RELEASE, NAMESPACE), (
        "regenerate: .venv/bin/python tests/helm_lite.py"
    )


def test_helm_template_agrees_when_helm_exists(tmp_path: Path) -> None:
    helm = shutil.which("helm")
    if helm is None:
        pytest.skip("helm is not installed (no Debian or PyPI package); helm_lite renders it")
    out = subprocess.run(
        [helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    theirs = sorted(
        (yaml.safe_dump(d, sort_keys=True) for d in yaml.safe_load_all(out) if d), key=str
    )
    ours = sorted((yaml.safe_dump(d, sort_keys=True) for d in _objects({})), key=str)
    assert theirs == ours


def test_containerfile_runs_unprivileged_with_read_only_root() -> None:
    text = (ROOT / "Containerfile").read_text()
    final = text.rsplit("\nFROM ", 1)[1]
    users = [line.split()[1] for line in final.splitlines() if line.startswith("USER ")]
    assert users == ["10001:10001"]
    assert 'ENTRYPOINT ["trustpod"]' in final
    assert 'VOLUME ["/tmp"]' in final  # the only writable path
    dep = _kind(_objects({}), "Deployment")["spec"]["template"]["spec"]
    assert dep["securityContext"]["runAsUser"] == int(users[0].split(":")[0])


def test_container_image_builds_when_a_base_image_is_present(tmp_path: Path) -> None:
    """Slow (pip install in the build): only with TRUSTPOD_IMAGE_BUILD=1 (`make image-test`).
    Builds the Containerfile, then runs ``kbs init`` and ``kbs serve`` in the image with a
    read-only root filesystem and checks /healthz over TLS."""
    if os.environ.get("TRUSTPOD_IMAGE_BUILD") != "1":
        pytest.skip("image build is opt-in: TRUSTPOD_IMAGE_BUILD=1 (make image-test)")
    podman = shutil.which("podman")
    if podman is None:
        pytest.skip("podman is not installed (apt-get install podman buildah)")
    base = "docker.io/library/python:3.11-slim-bookworm"
    base = os.environ.get("TRUSTPOD_PYTHON_IMAGE", base)
    if subprocess.run([podman, "image", "exists", base], capture_output=True).returncode != 0:
        pytest.skip(f"base image {base} is not present and no container registry is reachable")
    # sandboxes that forbid setrlimit: let the runtime keep the current limits
    conf = tmp_path / "containers.conf"
    conf.write_text("[containers]\ndefault_ulimits = []\n")
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    tag = "localhost/trustpod-kbs:test"
    build = [podman, "build", "-q", "--network=host", "-f", "Containerfile", "-t", tag]
    build += ["--build-arg", f"PYTHON_IMAGE={base}"]
    if Path("/etc/ssl/certs/ca-certificates.crt").exists():  # the host's CAs (proxies)
        build += ["-v", "/etc/ssl/certs:/host-certs:ro"]
        build += ["--build-arg", "PIP_CERT=/host-certs/ca-certificates.crt"]
    subprocess.run([*build, "."], cwd=ROOT, env=env, check=True, capture_output=True, timeout=900)
    run = [podman, "run", "--rm", "--read-only", "--tmpfs", "/tmp"]
    uid = subprocess.run(
        [*run, "--entrypoint", "id", tag, "-u"], env=env, check=True, capture_output=True, text=True
    ).stdout.strip()
    assert uid == "10001"
    d = tmp_path / "etc"
    d.mkdir(mode=0o777)
    d.chmod(0o777)
    from storage_servers import free_port

    listen = f"127.0.0.1:{free_port()}"
    vol = ["-v", f"{d}:/etc/trustpod"]
    subprocess.run(
        [*run, *vol, tag, "kbs", "init", "--dir", "/etc/trustpod/kbs", "--listen", listen],
        env=env,
        check=True,
        capture_output=True,
    )
    proc = subprocess.Popen(
        [
            *run,
            "--network=host",
            *vol,
            tag,
            "kbs",
            "serve",
            "--config",
            "/etc/trustpod/kbs/kbs-config.toml",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import ssl

        import httpx

        ctx = ssl.create_default_context(cafile=str(d / "kbs" / "kbs-cert.pem"))
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"https://{listen}/healthz", verify=ctx, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the KBS in the image did not come up"
            time.sleep(0.3)
    finally:
        proc.terminate()
        proc.wait(30)


def test_schema_validation_catches_a_broken_object() -> None:
    import kubernetes_validate

    dep = _kind(_objects({}), "Deployment")
    dep["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["prot"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, kubernetes_validate.latest_version(), strict=True)
    dep = _kind(_objects({}), "Deployment")
    dep["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, kubernetes_validate.latest_version(), strict=True)
