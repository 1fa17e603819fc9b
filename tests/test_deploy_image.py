"""deploy/Dockerfile and .dockerignore, offline (no Docker engine here): pinned base, multi-stage with the locked
dependencies, non-root, the /readyz HEALTHCHECK, npsflow as entrypoint, no Kafka jar and no secret in the image.
Each rule returns problems; a broken copy shows that the rule catches what it is about."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
PINNED_BASE = re.compile(r"^[a-z0-9][a-z0-9._/-]*:\d+\.\d+\.\d+[0-9A-Za-z._-]*@sha256:[0-9a-f]{64}$")


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, pending = [], ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip("\\").strip() + " " if line.endswith("\\") else line.strip()
        if not line.endswith("\\"):
            word, _, rest = pending.partition(" ")
            out.append((word.upper(), rest.strip()))
            pending = ""
    return out


def dockerfile_problems(text: str) -> list[str]:
    steps, problems = instructions(text), []
    args = {}
    for word, rest in steps:
        if word == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            args.setdefault(name, value)
    froms = [rest for word, rest in steps if word == "FROM"]
    if len(froms) < 2:
        problems.append("not multi-stage (a build stage and a runtime stage)")
    for rest in froms:
        image = rest.split()[0]
        resolved = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), image)
        if not PINNED_BASE.match(resolved):
            problems.append(f"FROM {image} ({resolved}) is not pinned to an exact tag and digest")
    if not re.search(r"--constraint requirements\.lock|-c requirements\.lock", text):
        problems.append("the wheels are not built with the pinned requirements.lock")
    users = [rest for word, rest in steps if word == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("the runtime does not end on a non-root USER")
    health = [rest for word, rest in steps if word == "HEALTHCHECK"]
    if not health or '"npsflow.healthcheck", "readyz"' not in health[-1]:
        problems.append("no HEALTHCHECK on the role's /readyz (python -m npsflow.healthcheck readyz)")
    entry = [json.loads(rest) for word, rest in steps if word == "ENTRYPOINT"]
    cmd = [json.loads(rest) for word, rest in steps if word == "CMD"]
    if entry[-1:] != [["npsflow"]] or cmd[-1:] != [["worker"]]:
        problems.append(f"ENTRYPOINT/CMD are {entry[-1:]}/{cmd[-1:]}, wanted [\"npsflow\"]/[\"worker\"]")
    env = " ".join(rest for word, rest in steps if word == "ENV")
    for wanted in ("NPSFLOW_PUBLIC_BIND=0.0.0.0:8080", "NPSFLOW_INTERNAL_BIND=0.0.0.0:8081"):
        if wanted not in env:
            problems.append(f"ENV lacks {wanted}")
    if any(re.search(r"(?i)(PASSWORD|TOKEN|SECRET)(?!_FILE)\w*=", rest) for word, rest in steps if word in ("ENV", "ARG")):
        problems.append("a secret in ENV/ARG (secrets come as *_FILE at run time)")
    if set(" ".join(rest for word, rest in steps if word == "EXPOSE").split()) != {"8080", "8081"}:
        problems.append("EXPOSE is not 8080 8081")
    for word, rest in steps:
        if word not in ("COPY", "ADD"):
            continue
        sources = [s for s in rest.split()[:-1] if not s.startswith("--")]
        if word == "ADD":
            problems.append(f"ADD {rest} (use COPY)")
        for source in sources:
            if source in (".", "./", "deploy", "deploy/", "deploy/local", "deploy/local/") or ".jar" in source \
                    or "secrets" in source or source.startswith("deploy/local/target"):
                problems.append(f"{word} {rest}: copies the Kafka jars, secrets or the whole context")
    return problems


def included(path: str, patterns: list[str]) -> bool:
    """Whether the build context keeps ``path`` under .dockerignore (last match wins; ``!`` re-includes)."""
    keep = True
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        candidates = [pattern, pattern.replace("**/", "")]
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(fnmatch.fnmatchcase(p, c) for c in candidates for p in prefixes) or \
                any(fnmatch.fnmatchcase(parts[-1], c) for c in candidates if c.startswith("*.") or "/" not in c and "*" in c and c != "*"):
            keep = negate
    return keep


def dockerignore_patterns() -> list[str]:
    return [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")]


# ---------------------------------------------------------------------------------------------------- the real file
def test_the_dockerfile_keeps_every_rule():
    assert dockerfile_problems(DOCKERFILE.read_text()) == []


def test_the_build_command_and_version_are_documented():
    text = DOCKERFILE.read_text()
    assert f"docker build -f deploy/Dockerfile -t npsflow:{VERSION} ." in text
    assert f"ARG VERSION={VERSION}" in text


def test_the_build_context_holds_what_the_wheel_needs_and_no_jar_or_secret():
    patterns = dockerignore_patterns()
    for needed in ("pyproject.toml", "requirements.lock", "README.md", "npsflow/cli.py", "sinks/migrations/0001_init.sql",
                   "schemas/catalog.json", "deploy/__init__.py", "deploy/local/kafka.py", "deploy/local/pom.xml",
                   "deploy/programs.example.yaml", "web/server.py", "streams/app.py"):
        assert included(needed, patterns), needed
    for kept_out in ("deploy/secrets/npsflow_secret", "deploy/local/target/kafka_2.13-4.4.0.jar", "x/libs/kafka.jar",
                     ".venv/bin/python", ".npsflow/secret.key", "tests/test_init.py", ".git/config",
                     "npsflow/__pycache__/cli.cpython-311.pyc", "deploy/compose.yaml"):
        assert not included(kept_out, patterns), kept_out
    for word, rest in instructions(DOCKERFILE.read_text()):  # every COPY source is in the context
        if word == "COPY" and "--from" not in rest:
            for source in rest.split()[:-1]:
                assert included(source.rstrip("/"), patterns) or (ROOT / source).is_dir(), source


def test_package_data_the_image_needs_ships_in_the_wheel():
    """The runtime reads migrations, Avro schemas and templates from the installed package (no source tree)."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "migrations/*.sql" in data["sinks"] and "*.avsc" in data["schemas"]
    assert not any(".jar" in p for patterns in data.values() for p in patterns)


# -------------------------------------------------------------------------------------------------- broken copies
@pytest.mark.parametrize("old,new,expected", [
    ("ARG BASE=python:3.11.14-slim-bookworm@sha256:", "ARG BASE=python:3.11-slim@sha256:", "FROM ${BASE}"),
    ("FROM ${BASE} AS runtime", "FROM python:3.11.14-slim-bookworm AS runtime", "FROM python:3.11.14-slim-bookworm"),
    ("USER 10001:10001", "USER root", "the runtime does not end on a non-root USER"),
    ("USER 10001:10001\n", "", "the runtime does not end on a non-root USER"),
    ('CMD ["python", "-m", "npsflow.healthcheck", "readyz"]', "CMD true", "no HEALTHCHECK"),
    ("COPY deploy/local/__init__.py", "COPY deploy/local/ ./deploy/local/\nCOPY deploy/local/__init__.py",
     "COPY deploy/local/"),
    ("COPY npsflow ./npsflow", "COPY . .", "COPY . ."),
    ("--constraint requirements.lock", "", "the wheels are not built"),
    ('ENTRYPOINT ["npsflow"]', 'ENTRYPOINT ["python"]', "ENTRYPOINT/CMD"),
    ("NPSFLOW_CACHE=/var/lib/npsflow/cache", "NPSFLOW_CACHE=/var/lib/npsflow/cache NPSFLOW_SECRET=abc",
     "a secret in ENV/ARG"),
    ("EXPOSE 8080 8081", "EXPOSE 8080 8081 9092", "EXPOSE"),
])
def test_a_broken_copy_breaks_a_rule(old, new, expected):
    text = DOCKERFILE.read_text()
    assert old in text
    problems = dockerfile_problems(text.replace(old, new, 1))
    assert any(p.startswith(expected) for p in problems), problems
