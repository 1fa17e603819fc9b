"""deploy/compose.yaml, offline (no Docker engine here): valid against the vendored compose-spec JSON schema, every
image pinned, secrets only from files, only the public port published, /readyz healthchecks, `npsflow init` first.
Each rule is a function returning problems, and a broken copy shows that the rule catches what it is about."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
SCHEMA = DEPLOY / "schemas" / "compose-spec.json"
SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"  # deploy/schemas/README.md
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
JOBS = {"init", "simulate"}  # npsflow services that run once
# an exact version (major.minor.patch, optionally more parts or a suffix such as -alpine) and/or a digest
PINNED = re.compile(r"^[a-z0-9][a-z0-9._/-]*:(?!latest\b)\d+\.\d+\.\d+[0-9A-Za-z._-]*(@sha256:[0-9a-f]{64})?$"
                    r"|^[a-z0-9][a-z0-9._/-]*(:[0-9A-Za-z._-]+)?@sha256:[0-9a-f]{64}$")


def load() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def schema_errors(doc: dict) -> list[str]:
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:160]}" for e in validator.iter_errors(doc)]


def npsflow_services(doc: dict) -> dict:
    return {n: s for n, s in doc["services"].items() if str(s.get("image", "")).startswith("npsflow:")}


def image_problems(doc: dict) -> list[str]:
    problems = []
    for name, service in doc["services"].items():
        image = service.get("image")
        if not image:
            problems.append(f"{name}: no image")
        elif not PINNED.match(image):
            problems.append(f"{name}: image {image} is not pinned to an exact version or digest")
    for name, service in npsflow_services(doc).items():
        if service["image"] != f"npsflow:{VERSION}":
            problems.append(f"{name}: {service['image']} is not npsflow:{VERSION} (pyproject.toml)")
    return problems


def port_problems(doc: dict) -> list[str]:
    problems = []
    for name, service in npsflow_services(doc).items():
        ports = [str(p if not isinstance(p, dict) else f"{p.get('published')}:{p.get('target')}")
                 for p in service.get("ports", [])]
        wanted = ["8080:8080"] if name == "web" else []
        if ports != wanted:
            problems.append(f"{name}: publishes {ports}, wanted {wanted} (the internal listener 8081 never)")
    return problems


def health_problems(doc: dict) -> list[str]:
    problems = []
    for name, service in doc["services"].items():
        check = service.get("healthcheck")
        if not check:
            problems.append(f"{name}: no healthcheck")
            continue
        if name in JOBS:
            if check.get("disable") is not True:
                problems.append(f"{name}: a job's healthcheck should be disabled (its exit code is its health)")
        elif name in npsflow_services(doc):
            test = check.get("test") or []
            if test != ["CMD", "python", "-m", "npsflow.healthcheck", "readyz"]:
                problems.append(f"{name}: healthcheck {test} is not the role's /readyz")
        elif check.get("disable") or not check.get("test"):
            problems.append(f"{name}: healthcheck without a test")
    return problems


def init_problems(doc: dict) -> list[str]:
    services, problems = doc["services"], []
    init = services.get("init", {})
    if init.get("command") != ["init"] or not init.get("image", "").startswith("npsflow:"):
        problems.append(f"init: runs {init.get('command')}, not `npsflow init` (the image's entrypoint is npsflow)")
    if init.get("restart") != "no":
        problems.append("init: restart must be \"no\"")
    for dep in ("kafka", "clickhouse"):
        if (init.get("depends_on") or {}).get(dep, {}).get("condition") != "service_healthy":
            problems.append(f"init: does not wait for a healthy {dep}")
    for name in set(npsflow_services(doc)) - {"init"}:
        condition = (services[name].get("depends_on") or {}).get("init", {}).get("condition")
        if condition != "service_completed_successfully":
            problems.append(f"{name}: does not wait for init to complete successfully")
    return problems


def role_problems(doc: dict) -> list[str]:
    services, problems = doc["services"], []
    for name, role in (("process", "process"), ("sink", "sink"), ("web", "web")):
        if services.get(name, {}).get("command") != ["worker", "--role", role]:
            problems.append(f"{name}: does not run `npsflow worker --role {role}`")
    for name in ("process", "sink"):
        if not isinstance((services.get(name, {}).get("deploy") or {}).get("replicas"), int):
            problems.append(f"{name}: no deploy.replicas")
    simulate = services.get("simulate", {})
    if simulate.get("profiles") != ["simulate"] or (simulate.get("command") or [None])[0] != "simulate":
        problems.append("simulate: must run `npsflow simulate` under the profile simulate only")
    return problems


SECRETISH = re.compile(r"(PASSWORD|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY)", re.I)


def secret_problems(doc: dict) -> list[str]:
    """Secrets come from files: every secret-named variable is a *_FILE / *__FILE path under /run/secrets/ naming a
    secret the service mounts; every top-level secret is a file under deploy/secrets (git-ignored)."""
    problems = []
    declared = doc.get("secrets") or {}
    for name, spec in declared.items():
        if set(spec) != {"file"} or not spec["file"].startswith("./secrets/"):
            problems.append(f"secret {name}: must be `file: ./secrets/…` (make compose-secrets), got {spec}")
    for name, service in doc["services"].items():
        env = service.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env)
        mounted = {s if isinstance(s, str) else s["source"] for s in service.get("secrets") or []}
        for key, value in env.items():
            if not SECRETISH.search(key):
                continue
            if not key.endswith("_FILE"):
                problems.append(f"{name}: {key} holds a secret directly; use {key}_FILE and a compose secret")
                continue
            match = re.fullmatch(r"/run/secrets/([A-Za-z0-9_.-]+)", str(value))
            if not match or match.group(1) not in mounted or match.group(1) not in declared:
                problems.append(f"{name}: {key}={value} is not a secret this service mounts")
        for secret in mounted - set(declared):
            problems.append(f"{name}: mounts the undeclared secret {secret}")
        if name in ("process", "simulate") and ("clickhouse_npsflow_password" in mounted
                                                or "NPSFLOW_CLICKHOUSE_PASSWORD_FILE" in env):
            problems.append(f"{name}: gets the ClickHouse password but uses no ClickHouse")
    return problems


def all_problems(doc: dict) -> list[str]:
    return [*schema_errors(doc), *image_problems(doc), *port_problems(doc), *health_problems(doc),
            *init_problems(doc), *role_problems(doc), *secret_problems(doc)]


# ---------------------------------------------------------------------------------------------------- the real file
def test_the_vendored_schema_is_the_one_named_in_its_readme():
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256
    assert SCHEMA_SHA256 in (DEPLOY / "schemas" / "README.md").read_text()
    assert json.loads(SCHEMA.read_text())["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_the_compose_file_validates_and_keeps_every_rule():
    assert all_problems(load()) == []


def test_compose_stack_has_kafka_clickhouse_grafana_and_the_roles():
    services = load()["services"]
    assert {"kafka", "clickhouse", "grafana", "init", "process", "sink", "web", "simulate"} <= set(services)
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert kafka["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"  # npsflow init creates them
    assert services["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")
    assert set(load()["volumes"]) == {"kafka-data", "clickhouse-data", "grafana-data"}
    for name in ("init", "process", "sink", "web", "simulate"):
        env = services[name]["environment"]
        assert env["NPSFLOW_KAFKA"] == "kafka:9092" and env["NPSFLOW_CLICKHOUSE_DSN"].startswith("http://npsflow@clickhouse:")
        assert "NPSFLOW_INTERNAL_TOKEN_FILE" in env and "NPSFLOW_SECRET_FILE" in env  # all workers share them
        assert ("NPSFLOW_CLICKHOUSE_PASSWORD_FILE" in env) == (name in ("init", "sink", "web")), name


def test_grafana_gets_our_provisioning_the_pinned_plugin_and_the_read_only_user():
    from npsflow.grafana import DASHBOARD_DIR

    grafana = load()["services"]["grafana"]
    assert grafana["image"].startswith("grafana/grafana-oss:")
    assert re.fullmatch(r"grafana-clickhouse-datasource@\d+\.\d+\.\d+", grafana["environment"]["GF_PLUGINS_PREINSTALL_SYNC"])
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"] if v.startswith("./")}
    assert mounts == {"/etc/grafana/provisioning": "./grafana/provisioning", DASHBOARD_DIR: "./grafana/dashboards"}
    assert (DEPLOY / "grafana" / "dashboards").is_dir()
    provisioning = (DEPLOY / "grafana" / "provisioning" / "datasources" / "clickhouse.yaml").read_text()
    wanted = set(re.findall(r"\$([A-Z_]+)", provisioning.split("apiVersion", 1)[1]))
    given = set(grafana["environment"]) | {"CLICKHOUSE_PASSWORD"}  # the password: from the secret, at start
    assert wanted <= given, wanted - given
    assert grafana["environment"]["CLICKHOUSE_USER"] == "npsflow_reader"
    assert "/run/secrets/clickhouse_reader_password" in " ".join(grafana["entrypoint"])


def test_clickhouse_users_from_the_secret_files(tmp_path):
    """deploy/compose/clickhouse/users.sh (the ClickHouse entrypoint wrapper), run here with stand-in paths: the
    writer and the read-only reader of sinks/README.md, password hashes of the secret files only, no default user."""
    secrets, users_d = tmp_path / "secrets", tmp_path / "users.d"
    secrets.mkdir()
    (secrets / "clickhouse_npsflow_password").write_text("w" * 40 + "\n")
    (secrets / "clickhouse_reader_password").write_text("r" * 40)
    proc = subprocess.run(["bash", str(DEPLOY / "compose" / "clickhouse" / "users.sh"), "--started"],
                          env={"PATH": "/usr/bin:/bin", "NPSFLOW_SECRETS_DIR": str(secrets),
                               "CLICKHOUSE_USERS_D": str(users_d), "CLICKHOUSE_ENTRYPOINT": "/bin/echo"},
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "--started"  # then the image's entrypoint, with the arguments
    text = (users_d / "npsflow-users.xml").read_text()
    assert "w" * 40 not in text and "r" * 40 not in text
    users = ET.fromstring(text).find("users")
    assert users.find("default").get("remove") == "remove"
    writer, reader = users.find("npsflow"), users.find("npsflow_reader")
    assert writer.findtext("password_sha256_hex") == hashlib.sha256(b"w" * 40).hexdigest()
    assert reader.findtext("password_sha256_hex") == hashlib.sha256(b"r" * 40).hexdigest()
    assert [q.text for q in writer.find("grants")] == ["GRANT ALL ON npsflow.*"]
    assert [q.text for q in reader.find("grants")] == ["GRANT SELECT ON npsflow.*"]
    profile = ET.fromstring(text).find("profiles").find(reader.findtext("profile"))
    assert profile.findtext("readonly") == "1"
    assert profile.find("constraints/max_execution_time/changeable_in_readonly") is not None
    (secrets / "clickhouse_reader_password").write_text("")
    proc = subprocess.run(["bash", str(DEPLOY / "compose" / "clickhouse" / "users.sh")],
                          env={"PATH": "/usr/bin:/bin", "NPSFLOW_SECRETS_DIR": str(secrets),
                               "CLICKHOUSE_USERS_D": str(users_d), "CLICKHOUSE_ENTRYPOINT": "/bin/echo"},
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "clickhouse_reader_password is missing or empty" in proc.stderr


def test_secret_files_are_git_ignored_and_generated_by_make():
    ignored = subprocess.run(["git", "check-ignore", "-q", "deploy/secrets/npsflow_secret"], cwd=ROOT)
    assert ignored.returncode == 0
    kept = subprocess.run(["git", "check-ignore", "-q", "deploy/secrets/README.md"], cwd=ROOT)
    assert kept.returncode == 1
    makefile = (ROOT / "Makefile").read_text()
    for name in load()["secrets"]:
        assert name in makefile.split("COMPOSE_SECRETS :=", 1)[1].splitlines()[0], name


# -------------------------------------------------------------------------------------------------- broken copies
def _broken(edit) -> dict:
    doc = json.loads(json.dumps(load()))  # YAML aliases unshared: an edit touches one service only
    edit(doc)
    return doc


@pytest.mark.parametrize("edit,expected", [
    (lambda d: d["services"]["web"].update(healtcheck=d["services"]["web"].pop("healthcheck")),
     "services/web: Unevaluated properties are not allowed ('healtcheck' was unexpected)"),
    (lambda d: d["services"]["process"]["deploy"].update(replicas=[2]), "services/process/deploy/replicas"),
    (lambda d: d["services"]["process"]["depends_on"]["init"].update(condition="service_finished"),
     "services/process/depends_on"),
    (lambda d: d["services"]["kafka"].update(environment="KAFKA_NODE_ID=1"), "services/kafka/environment"),
    (lambda d: d.update(volumes=["kafka-data"]), "volumes"),
])
def test_a_broken_copy_fails_the_schema(edit, expected):
    errors = schema_errors(_broken(edit))
    assert any(e.startswith(expected) for e in errors), errors


@pytest.mark.parametrize("edit,expected", [
    (lambda d: d["services"]["grafana"].update(image="grafana/grafana-oss:latest"), "grafana: image"),
    (lambda d: d["services"]["kafka"].update(image="apache/kafka:4"), "kafka: image"),
    (lambda d: d["services"]["clickhouse"].update(image="clickhouse/clickhouse-server"), "clickhouse: image"),
    (lambda d: d["services"]["web"].update(image="npsflow:0.0.9"), "web: npsflow:0.0.9 is not"),
    (lambda d: d["services"]["web"]["ports"].append("8081:8081"), "web: publishes"),
    (lambda d: d["services"]["sink"].update(ports=["8080"]), "sink: publishes"),
    (lambda d: d["services"]["sink"].pop("healthcheck"), "sink: no healthcheck"),
    (lambda d: d["services"]["process"]["healthcheck"].update(test=["CMD", "true"]), "process: healthcheck"),
    (lambda d: d["services"]["init"].update(command=["worker"]), "init: runs ['worker']"),
    (lambda d: d["services"]["web"]["depends_on"].pop("init"), "web: does not wait for init"),
    (lambda d: d["services"]["simulate"].pop("profiles"), "simulate: must run"),
    (lambda d: d["services"]["sink"].update(environment={**d["services"]["sink"]["environment"],
                                                         "NPSFLOW_SECRET": "0123456789abcdef0123"}),
     "sink: NPSFLOW_SECRET holds a secret directly"),
    (lambda d: d["services"]["grafana"]["environment"].update(GF_SECURITY_ADMIN_PASSWORD="admin"),
     "grafana: GF_SECURITY_ADMIN_PASSWORD holds a secret directly"),
    (lambda d: d["services"]["web"].update(secrets=["npsflow_secret"]),
     "web: NPSFLOW_CLICKHOUSE_PASSWORD_FILE=/run/secrets/clickhouse_npsflow_password is not a secret"),
    (lambda d: d["secrets"].update(npsflow_secret={"environment": "NPSFLOW_SECRET"}), "secret npsflow_secret"),
    (lambda d: d["services"]["process"]["secrets"].append("clickhouse_npsflow_password"),
     "process: gets the ClickHouse password"),
])
def test_a_broken_copy_breaks_a_rule(edit, expected):
    problems = all_problems(_broken(edit))
    assert any(p.startswith(expected) for p in problems), problems


# ----------------------------------------------------------------------------------- no secret in any deploy/ file
_ASSIGNED = re.compile(r"""(?i)\b([\w.-]*(password|passwd|secret|token|api[_-]?key)[\w.-]*)["']?\s*[:=]\s*["']?([^\s"'#,}]+)""")
_REFERENCE_KEY = re.compile(r"(?i)(name|ref|_file|__file|secrets)$")  # names a secret, does not hold one
_PLACEHOLDER = re.compile(r"(?i)^(\$|\{\w+|\[|[&*][\w-]+$|change-me|replace|<|…|\.\.\.|none|null|true|false|"
                          r"[A-Z_]+_FILE$|NPSFLOW_[A-Z_]+$|[a-z_]+$)|/|placeholder|example")
_HEX_KEY = re.compile(r"(?<![0-9a-f])[0-9a-f]{40,}(?![0-9a-f])")


def secret_looking(text: str) -> list[str]:
    """Lines assigning a literal value to something named password/secret/token/api key (not a file path, a
    reference by name, an environment reference or an obvious placeholder), and long hex strings that are not a
    sha256 digest named as one."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for match in _ASSIGNED.finditer(line):
            value = match.group(3).strip("\\")  # a shell-escaped quote before the value
            if value and not _REFERENCE_KEY.search(match.group(1)) and not _PLACEHOLDER.search(value):
                found.append(f"{number}: {line.strip()[:120]}")
        for match in _HEX_KEY.finditer(line):
            if not re.search(r"(sha256[:\s`]+|password_sha256_hex>)$", line[:match.start()]):
                found.append(f"{number}: long hex {match.group()[:12]}…")
    return found


def _deploy_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "deploy", ".dockerignore"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    skip = {".json", ".jar", ".pyc", ".png", ".svg"}  # dashboards and schemas: generated or vendored, no settings
    return [ROOT / p for p in listed if Path(p).suffix not in skip and (ROOT / p).is_file()]


def test_no_secret_in_any_deploy_file():
    files = _deploy_files()
    assert DEPLOY / "compose.yaml" in files and DEPLOY / "Dockerfile" in files
    found = {str(p.relative_to(ROOT)): hits for p in files if (hits := secret_looking(p.read_text(errors="replace")))}
    assert found == {}


def test_the_secret_scan_finds_what_it_is_for():
    assert secret_looking("  password: hunter2hunter2") and secret_looking("NPSFLOW_SECRET=abcdefabcdef0123456789")
    assert secret_looking("GF_SECURITY_ADMIN_PASSWORD: s3cr3t-Value") and secret_looking("x " + "ab12" * 16)
    assert not secret_looking("  password: change-me") and not secret_looking("NPSFLOW_SECRET_FILE: /run/secrets/x")
    assert not secret_looking("python:3.11@sha256:" + "ab" * 32)
    assert secret_looking("  - clickhouse-password=Xy7pQ2rT9wLm") and secret_looking('"token": "ghp_abcdefgh12345678"')
    assert not secret_looking("secretName: npsflow-secrets") and not secret_looking("- password=secrets/kafka-password")
    assert not secret_looking("- secret=dev-placeholder-secret-not-for-production")
