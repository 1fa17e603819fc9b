"""Kubernetes manifests (deploy/k8s): both overlays rendered by the pinned kustomize (`make kustomize` builds it
into the venv) and every object validated strictly, offline, against the Kubernetes JSON schemas shipped in
kubernetes-validate; then what the schemas cannot see: public paths only at the edge, pinned images, probes,
resources, non-root pods, the advertised URL from the pod IP, secrets as mounted files with placeholder values.

Nothing here talks to a cluster. A missing kustomize fails (it is part of `make setup`), it does not skip."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
KUSTOMIZE_VERSION = "v5.7.1"  # = KUSTOMIZE_VERSION in the Makefile
K8S_VERSION = "1.33.0"  # the oldest Kubernetes the manifests are meant for (preStop sleep: ≥ 1.30)
OVERLAYS = ("dev", "prod")
ROLES = ("process", "sink", "web")
PUBLIC_PORT, INTERNAL_PORT = 8080, 8081


# ------------------------------------------------------------------------------------------------ rendering
def kustomize() -> str:
    """The pinned kustomize: $NPSFLOW_KUSTOMIZE, else the one `make kustomize` puts beside this Python."""
    candidates = [os.environ.get("NPSFLOW_KUSTOMIZE"), ROOT / ".venv" / "bin" / "kustomize",
                  Path(sys.prefix) / "bin" / "kustomize"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.fail(f"kustomize {KUSTOMIZE_VERSION} not found: run `make kustomize` (or set NPSFLOW_KUSTOMIZE)")


def tree_copy(tmp: Path) -> Path:
    """deploy/k8s copied, with the prod Secrets' files made from secrets.example (what an operator does with
    real values); git never holds deploy/k8s/overlays/prod/secrets."""
    dst = tmp / "k8s"
    shutil.copytree(K8S, dst, ignore=shutil.ignore_patterns("secrets"))
    shutil.copytree(dst / "overlays" / "prod" / "secrets.example", dst / "overlays" / "prod" / "secrets")
    return dst


def render(overlay_dir: Path) -> list[dict]:
    done = subprocess.run([kustomize(), "build", str(overlay_dir)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"kustomize build {overlay_dir} failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return tree_copy(tmp_path_factory.mktemp("k8s"))


@pytest.fixture(scope="module")
def rendered(tree) -> dict[str, list[dict]]:
    return {name: render(tree / "overlays" / name) for name in OVERLAYS}


def validate_all(docs: list[dict]) -> None:
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


# ------------------------------------------------------------------------------------------------ helpers
def of_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def one(docs, kind, name):
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def by_prefix(docs, kind, prefix):
    """A generated object (ConfigMap, Secret) whose name kustomize suffixed with a content hash."""
    found = [d for d in docs if d["kind"] == kind and re.fullmatch(rf"{prefix}-[a-z0-9]{{10}}", d["metadata"]["name"])]
    assert len(found) == 1, f"{kind}/{prefix}-<hash>: {len(found)} found"
    return found[0]


def deployment(docs, role):
    return one(docs, "Deployment", f"npsflow-{role}")


def pod_spec(obj):
    return obj["spec"]["template"]["spec"]


def containers(obj):
    spec = pod_spec(obj)
    return spec.get("initContainers", []) + spec["containers"]


def workloads(docs):
    return of_kind(docs, "Deployment") + of_kind(docs, "Job")


def selects(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, f"only matchLabels selectors are checked here: {selector}"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def pod_labels(obj):
    return obj["spec"]["template"]["metadata"]["labels"]


def config(docs) -> dict[str, str]:
    return by_prefix(docs, "ConfigMap", "npsflow-config")["data"]


def env_of(docs, obj, container) -> dict[str, str]:
    """The container's environment as the kubelet builds it (envFrom first, env over it; $(VAR) expanded)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        env.update(one(docs, "ConfigMap", ref)["data"])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), var["value"])
        else:
            env[var["name"]] = "<from " + ",".join(var["valueFrom"]) + ">"
    return env


def port_number(container, port) -> int:
    if isinstance(port, int):
        return port
    numbers = [p["containerPort"] for p in container.get("ports", []) if p["name"] == port]
    assert len(numbers) == 1, f"port {port!r} is not one named container port"
    return numbers[0]


# ------------------------------------------------------------------------------------------------ tests
def test_kustomize_is_the_pinned_version():
    done = subprocess.run([kustomize(), "version"], capture_output=True, text=True, timeout=30)
    assert done.stdout.strip() == KUSTOMIZE_VERSION, done.stdout + done.stderr


def test_makefile_pins_the_same_kustomize():
    assert f"KUSTOMIZE_VERSION := {KUSTOMIZE_VERSION}" in (ROOT / "Makefile").read_text()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates_strictly(rendered, overlay):
    docs = rendered[overlay]
    validate_all(docs)
    kinds = sorted({d["kind"] for d in docs})
    expected = {"ConfigMap", "Secret", "ServiceAccount", "Deployment", "Job", "Service", "Ingress",
                "PodDisruptionBudget", "NetworkPolicy"} | ({"HorizontalPodAutoscaler"} if overlay == "prod" else set())
    assert set(kinds) == expected
    assert {d["metadata"]["name"] for d in of_kind(docs, "Deployment")} == {f"npsflow-{r}" for r in ROLES}
    namespace = {"dev": "npsflow-dev", "prod": "npsflow"}[overlay]
    assert {d["metadata"].get("namespace") for d in docs} == {namespace}


def test_base_has_no_secret_and_no_namespace():
    docs = render(K8S / "base")
    assert not of_kind(docs, "Secret") and not of_kind(docs, "Namespace")
    assert all("namespace" not in d["metadata"] for d in docs)


BREAKAGES = {
    "misspelled container field": lambda d: d["spec"]["template"]["spec"]["containers"][0].update(
        imagePulPolicy=d["spec"]["template"]["spec"]["containers"][0].pop("imagePullPolicy")),
    "misspelled pod field": lambda d: d["spec"]["template"]["spec"].update(
        terminationGracePeriodSecond=d["spec"]["template"]["spec"].pop("terminationGracePeriodSeconds")),
    "replicas as a string": lambda d: d["spec"].update(replicas="six"),
    "probe port as a list": lambda d: d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"][
        "httpGet"].update(port=[8081]),
    "env as a mapping": lambda d: d["spec"]["template"]["spec"]["containers"][0].update(
        env={"NPSFLOW_ROLE": "process"}),
    "unknown key in securityContext": lambda d: d["spec"]["template"]["spec"]["containers"][0][
        "securityContext"].update(readOnlyRootFileSystem=True),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_a_broken_deployment_fails_validation(rendered, breakage):
    import copy

    doc = copy.deepcopy(deployment(rendered["prod"], "process"))
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # fine as rendered
    BREAKAGES[breakage](doc)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_a_broken_file_fails_end_to_end(tmp_path):
    """A misspelled field in base/process.yaml: kustomize still renders it, the schema check refuses it."""
    tree = tree_copy(tmp_path)
    process = tree / "base" / "process.yaml"
    text = process.read_text()
    assert text.count("containerPort: 8081") == 1
    process.write_text(text.replace("containerPort: 8081", "containerPrt: 8081"))
    docs = render(tree / "overlays" / "dev")
    with pytest.raises(kubernetes_validate.ValidationError, match="containerPrt"):
        validate_all(docs)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_image_is_pinned(rendered, overlay):
    images = [c["image"] for w in workloads(rendered[overlay]) for c in containers(w)]
    assert images
    for image in images:
        name, _, digest = image.partition("@")
        tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else None
        assert digest.startswith("sha256:") or (tag and tag != "latest"), f"unpinned image {image}"
        assert "/" in name, f"{image}: the kustomize `images` entry did not apply"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingress_routes_only_public_paths_to_the_public_port(rendered, overlay):
    docs = rendered[overlay]
    (ingress,) = of_kind(docs, "Ingress")
    assert "defaultBackend" not in ingress["spec"]
    routes = set()
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            routes.add((path["path"], path["pathType"]))
            backend = path["backend"]["service"]
            assert backend["name"] == "npsflow-web", f"{path['path']} routed to {backend['name']}"
            service = one(docs, "Service", backend["name"])
            (port,) = [p for p in service["spec"]["ports"]
                       if p.get("name") == backend["port"].get("name") or p["port"] == backend["port"].get("number")]
            web = deployment(docs, "web")
            assert selects({"matchLabels": service["spec"]["selector"]}, pod_labels(web))
            for role in ("process", "sink"):
                assert not selects({"matchLabels": service["spec"]["selector"]}, pod_labels(deployment(docs, role)))
            assert port_number(web["spec"]["template"]["spec"]["containers"][0], port["targetPort"]) == PUBLIC_PORT
    assert routes == {("/s/", "Prefix"), ("/api/v1/responses", "Exact")}
    # the survey links' host is the Ingress host (the public listener answers to that name only)
    hosts = {rule["host"] for rule in ingress["spec"]["rules"]}
    survey_host = re.match(r"https://([^/:]+)", config(docs)["NPSFLOW_SURVEY_URL"]).group(1)
    assert hosts == {survey_host}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_internal_listener_is_cluster_internal(rendered, overlay):
    docs = rendered[overlay]
    internal = one(docs, "Service", "npsflow-internal")
    assert internal["spec"]["type"] == "ClusterIP"
    for port in internal["spec"]["ports"]:
        for role in ROLES:
            dep = deployment(docs, role)
            if selects({"matchLabels": internal["spec"]["selector"]}, pod_labels(dep)):
                assert port_number(pod_spec(dep)["containers"][0], port["targetPort"]) == INTERNAL_PORT
    routed = {p["backend"]["service"]["name"] for i in of_kind(docs, "Ingress") for r in i["spec"]["rules"]
              for p in r["http"]["paths"]}
    assert routed == {"npsflow-web"}
    for service in of_kind(docs, "Service"):
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert "npsflow-internal" in config(docs)["NPSFLOW_ALLOWED_HOSTS"].split(",")


PLACEHOLDER = re.compile(r"placeholder|replace", re.I)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_hold_placeholders_only(rendered, overlay):
    secrets = of_kind(rendered[overlay], "Secret")
    assert secrets
    for secret in secrets:
        assert "stringData" not in secret
        for key, value in secret["data"].items():
            text = base64.b64decode(value).decode()
            assert PLACEHOLDER.search(text), f"{secret['metadata']['name']}/{key} does not look like a placeholder"
            assert "PRIVATE KEY" not in text and "BEGIN CERTIFICATE" not in text


def test_no_secret_in_committed_files():
    done = subprocess.run(["git", "ls-files", "deploy/k8s"], cwd=ROOT, capture_output=True, text=True, check=True)
    files = done.stdout.split()
    assert files and not any("/overlays/prod/secrets/" in f for f in files)
    for name in files:
        text = (ROOT / name).read_text()
        assert "PRIVATE KEY" not in text and "BEGIN CERTIFICATE" not in text, name
        if not name.endswith("kustomization.yaml"):
            continue
        kustomization = yaml.safe_load(text)
        for generator in kustomization.get("secretGenerator", []):
            for literal in generator.get("literals", []):
                key, _, value = literal.partition("=")
                assert PLACEHOLDER.search(value), f"{name}: secret literal {key} is not a placeholder"
            for entry in generator.get("files", []):
                path = entry.partition("=")[2] or entry
                assert path.startswith("secrets/"), f"{name}: {path} is not in the git-ignored secrets/"
        for generator in kustomization.get("configMapGenerator", []):
            for literal in generator.get("literals", []):
                key = literal.partition("=")[0]
                assert not re.search(r"SECRET|TOKEN|PASSWORD", key) or key.endswith("_FILE"), f"{name}: {key}"
    assert "deploy/k8s/overlays/prod/secrets/" in (ROOT / ".gitignore").read_text()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_in_the_environment(rendered, overlay):
    docs = rendered[overlay]
    for workload in workloads(docs):
        for container in containers(workload):
            for name, value in env_of(docs, workload, container).items():
                if re.search(r"SECRET|TOKEN|PASSWORD", name) and not name.endswith("_FILE"):
                    pytest.fail(f"{workload['metadata']['name']}: {name} in the environment (use {name}_FILE)")
            assert not re.search(r"://[^/@:]+:[^/@]+@", env_of(docs, workload, container).get(
                "NPSFLOW_CLICKHOUSE_DSN", "")), "a password in the DSN"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_file_settings_name_mounted_secret_files(rendered, overlay):
    """npsflow refuses to start when a *_FILE setting names no readable file: each must be a key of a mounted
    Secret (and listed, where the volume lists items)."""
    docs = rendered[overlay]
    for workload in workloads(docs):
        volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
        for container in containers(workload):
            env = env_of(docs, workload, container)
            assert env.get("NPSFLOW_SECRET_FILE"), "every worker shares NPSFLOW_SECRET through its file"
            assert env.get("NPSFLOW_INTERNAL_TOKEN_FILE")
            for name, path in env.items():
                if not name.endswith("_FILE"):
                    continue
                mounts = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")]
                assert len(mounts) == 1, f"{workload['metadata']['name']}: {name}={path} is not in a mounted volume"
                volume = volumes[mounts[0]["name"]]
                assert "secret" in volume, f"{name}: {path} is not from a Secret"
                key = path[len(mounts[0]["mountPath"].rstrip("/")) + 1:]
                items = volume["secret"].get("items")
                if items:
                    assert key in {i["path"] for i in items}, f"{workload['metadata']['name']}: {key} not mounted"
                    key = {i["path"]: i["key"] for i in items}[key]
                secret = one(docs, "Secret", volume["secret"]["secretName"])
                assert key in secret["data"], f"{name}: Secret {secret['metadata']['name']} has no key {key}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workloads_are_hardened_and_sized(rendered, overlay):
    docs = rendered[overlay]
    for workload in workloads(docs):
        name = workload["metadata"]["name"]
        spec = pod_spec(workload)
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["enableServiceLinks"] is False, name  # else NPSFLOW_*_PORT variables from the Services
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in containers(workload):
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"], name
            assert sc.get("runAsUser", 1) != 0, name
            resources = container["resources"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[kind]), f"{name}: {kind}"
            assert resources["requests"]["memory"] == resources["limits"]["memory"] or overlay == "dev", name
            home = env_of(docs, workload, container)["NPSFLOW_HOME"]
            (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == home]
            assert "emptyDir" in volumes[mount["name"]], f"{name}: NPSFLOW_HOME is not an emptyDir"
            assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"]), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_has_both_probes_and_its_role(rendered, overlay):
    docs = rendered[overlay]
    cfg = config(docs)
    assert cfg["NPSFLOW_PUBLIC_BIND"] == f"0.0.0.0:{PUBLIC_PORT}"
    assert cfg["NPSFLOW_INTERNAL_BIND"] == f"0.0.0.0:{INTERNAL_PORT}"
    for role in ROLES:
        dep = deployment(docs, role)
        (container,) = pod_spec(dep)["containers"]
        assert container["args"] == ["worker", "--role", role]
        expected_port = PUBLIC_PORT if role == "web" else INTERNAL_PORT  # web: the port its Service routes to
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            get = container[probe]["httpGet"]
            assert get["path"] == path, f"{role}: {probe}"
            assert port_number(container, get["port"]) == expected_port, f"{role}: {probe}"
        assert {p["containerPort"] for p in container["ports"]} == {PUBLIC_PORT, INTERNAL_PORT}
    (job,) = of_kind(docs, "Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["init"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_worker_advertises_its_pod_ip(rendered, overlay):
    docs = rendered[overlay]
    for role in ROLES:
        (container,) = pod_spec(deployment(docs, role))["containers"]
        names = [v["name"] for v in container["env"]]
        pod_ip = container["env"][names.index("POD_IP")]
        assert pod_ip["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
        advertised = container["env"][names.index("NPSFLOW_INTERNAL_ADVERTISED_URL")]
        assert names.index("POD_IP") < names.index("NPSFLOW_INTERNAL_ADVERTISED_URL")  # $(POD_IP) needs it first
        assert advertised["value"] == f"http://$(POD_IP):{INTERNAL_PORT}", role


def test_sizes_per_overlay(rendered):
    for overlay, process, partitions, rf, isr in (("dev", 1, 6, 1, 1), ("prod", 6, 24, 3, 2)):
        docs = rendered[overlay]
        cfg = config(docs)
        assert deployment(docs, "process")["spec"]["replicas"] == process
        assert process <= int(cfg["NPSFLOW_PARTITIONS"]) == partitions
        assert (int(cfg["NPSFLOW_REPLICATION_FACTOR"]), int(cfg["NPSFLOW_MIN_ISR"])) == (rf, isr)
        assert pod_spec(deployment(docs, "process"))["terminationGracePeriodSeconds"] >= 60
    dev = rendered["dev"]
    assert all(deployment(dev, r)["spec"]["replicas"] == 1 for r in ROLES)
    assert "NPSFLOW_KAFKA_SECURITY_PROTOCOL" not in config(dev)  # plaintext
    prod = rendered["prod"]
    cfg = config(prod)
    assert cfg["NPSFLOW_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert cfg["NPSFLOW_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert cfg["NPSFLOW_CLICKHOUSE_DSN"].startswith("https://")
    (hpa,) = of_kind(prod, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "npsflow-web"}
    assert "replicas" not in deployment(prod, "web")["spec"]  # the HPA owns them


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_has_a_disruption_budget(rendered, overlay):
    docs = rendered[overlay]
    pdbs = of_kind(docs, "PodDisruptionBudget")
    for role in ROLES:
        covering = [p for p in pdbs if selects(p["spec"]["selector"], pod_labels(deployment(docs, role)))]
        assert len(covering) == 1, role
        assert covering[0]["spec"].get("maxUnavailable") == 1, role


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies(rendered, overlay):
    docs = rendered[overlay]
    policies = of_kind(docs, "NetworkPolicy")
    labels = {role: pod_labels(deployment(docs, role)) for role in ROLES}

    def applying(role, direction):
        return [p for p in policies if direction in p["spec"]["policyTypes"]
                and selects(p["spec"]["podSelector"], labels[role])]

    npsflow_pods = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "npsflow"}}}
    for role in ROLES:
        assert any(not p["spec"].get("ingress") and not p["spec"].get("egress")
                   and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"} for p in applying(role, "Ingress"))
        rules = [r for p in applying(role, "Ingress") for r in p["spec"].get("ingress", [])]
        ports = {port["port"] for r in rules for port in r["ports"]}
        assert ports == ({PUBLIC_PORT, INTERNAL_PORT} if role == "web" else {INTERNAL_PORT}), role
        for rule in rules:
            if any(port["port"] == INTERNAL_PORT for port in rule["ports"]):
                assert rule.get("from") == [npsflow_pods], f"{role}: 8081 open to more than npsflow pods"
            if overlay == "prod" and any(port["port"] == PUBLIC_PORT for port in rule["ports"]):
                assert rule.get("from") == [{"namespaceSelector": {"matchLabels": {
                    "kubernetes.io/metadata.name": "ingress-nginx"}}}]
        egress = [r for p in applying(role, "Egress") for r in p["spec"].get("egress", [])]
        egress_ports = {port["port"] for r in egress for port in r["ports"]}
        assert {53, INTERNAL_PORT} <= egress_ports, role
        assert all(r.get("ports") for r in egress), f"{role}: an egress rule without ports"
        if overlay == "prod":
            assert all(r.get("to") for r in egress), f"{role}: prod egress to anywhere"


def test_npsflow_reads_the_secret_from_its_file(tmp_path):
    """The manifests give every pod NPSFLOW_SECRET_FILE (never the value in the environment). Without support for
    it each pod would make its own random key in its emptyDir: links signed by one pod invalid on the next,
    pseudonyms differing per pod. The same key through the file as through the variable."""
    from npsflow import config as cfg

    key = "0123456789abcdef" * 4
    (tmp_path / "secret").write_text(key + "\n")
    by_value = cfg.load({"NPSFLOW_HOME": str(tmp_path / "a"), "NPSFLOW_SECRET": key})
    by_file = cfg.load({"NPSFLOW_HOME": str(tmp_path / "b"), "NPSFLOW_SECRET_FILE": str(tmp_path / "secret")})
    assert by_file.secret == by_value.secret, "NPSFLOW_SECRET_FILE is not read (deploy/k8s depends on it)"
    assert not (tmp_path / "b" / "secret.key").exists()
