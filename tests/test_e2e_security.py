"""Kafka SASL (SCRAM-SHA-512) over TLS with client certificates, end to end on a real broker.

The broker (deploy/local/kafka.py) gets an extra SASL_SSL listener; the CA, its certificate and a client
certificate are generated here (deploy/local/certs.py, Python's cryptography); the SCRAM user is created when the
storage is formatted. The worker, the CLI and an aiokafka reader connect only through that listener, with the
settings of npsflow.kafka_security taken from the environment (password from a file)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from deploy.local.certs import make_pki
from deploy.local.kafka import LocalKafka, SaslSslListener
from npsflow.kafka_security import from_env
from tests.e2e_helpers import make_env, read_topic, wait_for, write_jsonl

USER = "npsflow-app"
PASSWORD = "scram-" + uuid.uuid4().hex  # unique: found nowhere unless leaked


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory):
    base = tmp_path_factory.mktemp("secure-kafka")
    pki = make_pki(base / "pki")
    kafka = LocalKafka(base / "kafka", sasl_ssl=SaslSslListener(pki.server_key, pki.server_chain,
                                                                client_ca=pki.ca, scram_users=((USER, PASSWORD),)))
    try:
        kafka.start(timeout=120)
        yield kafka, pki, base
    finally:
        kafka.stop()


def security_env(pki, base: Path, password: str = PASSWORD) -> dict:
    secret = base / f"kafka-password-{uuid.uuid4().hex[:6]}"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    return {"NPSFLOW_KAFKA_SASL_USERNAME": USER, "NPSFLOW_KAFKA_SASL_PASSWORD_FILE": str(secret),
            "NPSFLOW_KAFKA_CA_FILE": str(pki.ca), "NPSFLOW_KAFKA_CERT_FILE": str(pki.client_cert),
            "NPSFLOW_KAFKA_KEY_FILE": str(pki.client_key)}


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _no_secret(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text


def test_worker_and_cli_over_scram_tls_and_nothing_secret_shown(secure_kafka, tmp_path):
    kafka, pki, base = secure_kafka
    env = make_env(tmp_path, kafka.secure_bootstrap, **security_env(pki, base))
    assert from_env(env.vars).protocol == "SASL_SSL"  # implied by the SASL user
    t0 = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)
    answers = [{"response_id": f"sec-{i}", "survey_id": "s-1", "score": score, "responded_at": _iso(t0),
                "segment": {"location": "Espoo"}} for i, score in enumerate([10, 9, 9, 7, 3])]
    path = write_jsonl(tmp_path / "answers.jsonl", answers)
    try:
        info = env.start_worker()
        sent = env.cli("ingest", "responses", str(path))
        assert "sent 5 records" in sent.stdout
        report = wait_for(lambda: (r := env.cli_json("report", "--by", "location"))["total"]["responses"] == 5
                          and r, what="the report over SASL_SSL")
        assert report["rows"][0]["location"] == "Espoo" and report["rows"][0]["nps"] == 40.0
        # an aiokafka reader with the same settings sees the raw records on the broker
        records = read_topic(kafka.secure_bootstrap, env.settings.topics.raw_responses, 5,
                             security=env.settings.kafka_security)
        assert len(records) >= 5

        assert info["kafka_security"] == {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                                          "sasl_username": USER, "ca_file": str(pki.ca), "client_certificate": True}
        status_json = env.cli("stack", "status", "--format", "json").stdout
        status_table = env.cli("stack", "status").stdout
        assert json.loads(status_json)["kafka"]["security"]["security_protocol"] == "SASL_SSL"
        assert "SASL_SSL SCRAM-SHA-512 user npsflow-app" in status_table
        for text in (status_json, status_table, (env.home / "worker.json").read_text(),
                     (env.home / "worker.log").read_text(errors="replace"), sent.stdout, sent.stderr):
            _no_secret(text, PASSWORD)
    finally:
        env.stop_worker()


def test_cli_with_a_wrong_password_fails_in_one_line(secure_kafka, tmp_path):
    kafka, pki, base = secure_kafka
    wrong = "wrong-" + uuid.uuid4().hex
    env = make_env(tmp_path, kafka.secure_bootstrap, **security_env(pki, base, password=wrong))
    path = write_jsonl(tmp_path / "one.jsonl", [{"response_id": "x-1", "score": 9,
                                                 "responded_at": _iso(datetime.now(timezone.utc))}])
    proc = env.cli("ingest", "responses", str(path), check=False, timeout=90)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "authentication failed" in lines[0] and USER in lines[0] and "SCRAM-SHA-512" in lines[0]
    _no_secret(proc.stdout + proc.stderr, wrong, PASSWORD)


def test_worker_with_a_wrong_password_fails_in_one_line(secure_kafka, tmp_path):
    kafka, pki, base = secure_kafka
    wrong = "wrong-" + uuid.uuid4().hex
    env = make_env(tmp_path, kafka.secure_bootstrap, **security_env(pki, base, password=wrong))
    proc = env.cli("worker", check=False, timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "authentication failed" in lines[0] and kafka.secure_bootstrap in lines[0]
    _no_secret(proc.stdout + proc.stderr, wrong, PASSWORD)
    assert not (env.home / "worker.json").exists()


def test_tls_without_the_client_certificate_is_named(secure_kafka, tmp_path):
    kafka, pki, base = secure_kafka
    settings = security_env(pki, base)
    del settings["NPSFLOW_KAFKA_CERT_FILE"], settings["NPSFLOW_KAFKA_KEY_FILE"]
    env = make_env(tmp_path, kafka.secure_bootstrap, **settings)
    path = write_jsonl(tmp_path / "one.jsonl", [{"response_id": "x-1", "score": 9,
                                                 "responded_at": _iso(datetime.now(timezone.utc))}])
    proc = env.cli("ingest", "responses", str(path), check=False, timeout=90)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "client certificate" in lines[0], proc.stderr


def test_librdkafka_settings_reach_the_broker(secure_kafka):
    """What the Quix peer (bench/quix_peer.py: ConnectionConfig.from_librdkafka_dict) and any confluent-kafka
    client get from npsflow.kafka_security works against the same listener."""
    import confluent_kafka  # the test extra has it: never skipped
    from confluent_kafka.admin import AdminClient

    kafka, pki, base = secure_kafka
    security = from_env(security_env(pki, base))
    admin = AdminClient({"bootstrap.servers": kafka.secure_bootstrap, **security.librdkafka_config()})
    metadata = admin.list_topics(timeout=20)
    assert metadata.brokers and confluent_kafka is not None
