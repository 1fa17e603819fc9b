"""Security settings without a broker: NPSFLOW_KAFKA_* parsing and what each client gets, ClickHouse password and
CA files, redaction in worker.json / `stack status` / errors, `grafana push` secrets from the environment."""

from __future__ import annotations

import json
import os
import ssl

import pytest
from click.testing import CliRunner

from deploy.local.certs import make_pki
from npsflow import config, stack
from npsflow.cli import main
from npsflow.kafka_security import ConnectionDiagnosis, KafkaSecurity, KafkaSecurityError, from_env
from npsflow.redact import redact_dsn
from sinks.clickhouse import parse_dsn

PW = "p4ss-Wörd:@/x"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def secret_file(tmp_path, value=PW, name="pw"):
    path = tmp_path / name
    path.write_text(value + "\n")
    return path


def test_default_is_plaintext_and_changes_nothing():
    sec = from_env({})
    assert sec == KafkaSecurity() and sec.aiokafka_kwargs() == {"security_protocol": "PLAINTEXT"}
    assert sec.faust_credentials() is None and sec.to_env() == {}


def test_sasl_ssl_from_a_password_file(tmp_path, pki):
    env = {"NPSFLOW_KAFKA_SASL_USERNAME": "app", "NPSFLOW_KAFKA_SASL_PASSWORD_FILE": str(secret_file(tmp_path)),
           "NPSFLOW_KAFKA_CA_FILE": str(pki.ca), "NPSFLOW_KAFKA_CERT_FILE": str(pki.client_cert),
           "NPSFLOW_KAFKA_KEY_FILE": str(pki.client_key)}
    sec = from_env(env)
    assert (sec.protocol, sec.mechanism, sec.password) == ("SASL_SSL", "SCRAM-SHA-512", PW)
    assert PW not in repr(sec) and PW not in json.dumps(sec.describe())
    kw = sec.kafka_python_kwargs()
    assert kw["sasl_plain_password"] == PW and isinstance(kw["ssl_context"], ssl.SSLContext)
    assert kw["ssl_context"].check_hostname and kw["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    creds = sec.faust_credentials()
    assert creds.protocol.value == "SASL_SSL" and creds.mechanism.value == "SCRAM-SHA-512"
    rd = sec.librdkafka_config()
    assert rd["security.protocol"] == "sasl_ssl" and rd["ssl.ca.location"] == str(pki.ca)
    child = sec.to_env()  # the child gets the file, never the password
    assert PW not in json.dumps(child) and child["NPSFLOW_KAFKA_SASL_PASSWORD_FILE"].endswith("/pw")
    assert from_env(child) == sec


def test_password_from_the_environment_is_passed_on_as_it_came():
    sec = from_env({"NPSFLOW_KAFKA_SASL_USERNAME": "app", "NPSFLOW_KAFKA_SASL_PASSWORD": PW,
                    "NPSFLOW_KAFKA_SECURITY_PROTOCOL": "sasl_plaintext", "NPSFLOW_KAFKA_SASL_MECHANISM": "plain"})
    assert (sec.protocol, sec.mechanism, sec.tls) == ("SASL_PLAINTEXT", "PLAIN", False)
    assert sec.to_env()["NPSFLOW_KAFKA_SASL_PASSWORD"] == PW


@pytest.mark.parametrize("env, message", [
    ({"NPSFLOW_KAFKA_SECURITY_PROTOCOL": "TLS"}, "must be one of"),
    ({"NPSFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "needs NPSFLOW_KAFKA_SASL_USERNAME"),
    ({"NPSFLOW_KAFKA_SASL_USERNAME": "a"}, "needs NPSFLOW_KAFKA_SASL_USERNAME"),
    ({"NPSFLOW_KAFKA_SASL_USERNAME": "a", "NPSFLOW_KAFKA_SASL_PASSWORD": PW, "NPSFLOW_KAFKA_SASL_MECHANISM": "GSSAPI"},
     "SASL_MECHANISM must be one of"),
    ({"NPSFLOW_KAFKA_SASL_USERNAME": "a", "NPSFLOW_KAFKA_SASL_PASSWORD": PW,
      "NPSFLOW_KAFKA_SECURITY_PROTOCOL": "SSL"}, "a SASL user is set"),
    ({"NPSFLOW_KAFKA_SASL_USERNAME": "a", "NPSFLOW_KAFKA_SASL_PASSWORD": PW,
      "NPSFLOW_KAFKA_SASL_PASSWORD_FILE": "{pw}"}, "not both"),
    ({"NPSFLOW_KAFKA_CA_FILE": "/nonexistent/ca.pem"}, "no readable file"),
    ({"NPSFLOW_KAFKA_CERT_FILE": "{cert}"}, "go together"),
    ({"NPSFLOW_KAFKA_CA_FILE": "{ca}", "NPSFLOW_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}, "need TLS"),
    ({"NPSFLOW_KAFKA_CA_FILE": "{pw}"}, "cannot load"),  # not a certificate
])
def test_mistakes_are_one_line_without_the_password(tmp_path, pki, env, message):
    paths = {"pw": secret_file(tmp_path), "cert": pki.client_cert, "ca": pki.ca}
    env = {k: v.format(**paths) for k, v in env.items()}
    with pytest.raises(KafkaSecurityError) as err:
        from_env(env)
    assert message in str(err.value) and "\n" not in str(err.value) and PW not in str(err.value)
    with pytest.raises(config.ConfigError):  # and through the settings
        config.load({"NPSFLOW_HOME": str(tmp_path), **env})


def test_diagnosis_names_the_cause():
    sec = KafkaSecurity("SASL_SSL", "SCRAM-SHA-512", "app", PW)
    with ConnectionDiagnosis(sec) as diagnosis:
        import logging

        logging.getLogger("kafka.net.connection").error(
            "Connection lost: [Error 58] SaslAuthenticationFailedError: Authentication failed during authentication")
    assert diagnosis.explain(TimeoutError("Unable to bootstrap")).startswith(
        "authentication failed: the broker refused the SASL user 'app' (SCRAM-SHA-512)")
    assert "not trusted" in ConnectionDiagnosis(sec).explain(OSError("[SSL: CERTIFICATE_VERIFY_FAILED] x"))


# ------------------------------------------------------------------------------------------------- ClickHouse
@pytest.mark.parametrize("dsn, shown", [
    ("https://reader:s%40cr3t@ch:8443/npsflow", "https://reader:***@ch:8443/npsflow"),
    ("http://u:plain@h:8123", "http://u:***@h:8123"),
    ("http://u@h:8123/db", "http://u@h:8123/db"),
    ("http://h:8123/db?password=x&user=u", "http://h:8123/db?password=***&user=u"),
    ("chdb:///tmp/x", "chdb:///tmp/x"),
])
def test_redact_dsn(dsn, shown):
    assert redact_dsn(dsn) == shown


def test_clickhouse_password_and_ca_files(tmp_path, pki):
    pw = secret_file(tmp_path)
    settings = config.load({"NPSFLOW_HOME": str(tmp_path), "NPSFLOW_CLICKHOUSE_DSN": "https://reader@ch:8443/bi",
                            "NPSFLOW_CLICKHOUSE_PASSWORD_FILE": str(pw), "NPSFLOW_CLICKHOUSE_CA_FILE": str(pki.ca)})
    assert settings.clickhouse_options == {"password_file": pw.resolve(), "ca_file": pki.ca.resolve()}
    env = settings.to_env()
    assert env["NPSFLOW_CLICKHOUSE_PASSWORD_FILE"] == str(pw.resolve()) and PW not in json.dumps(env)
    target = parse_dsn(settings.clickhouse_dsn, **settings.clickhouse_options)
    assert (target.password_file, target.ca_file, target.database) == (pw.resolve(), pki.ca.resolve(), "bi")
    for bad, message in [({"NPSFLOW_CLICKHOUSE_DSN": "https://r:x@ch:8443/bi"}, "keep only one"),
                         ({"NPSFLOW_CLICKHOUSE_DSN": "http://r@ch:8123/bi"}, "needs an https://"),
                         ({"NPSFLOW_CLICKHOUSE_DSN": ""}, "not embedded chDB")]:
        with pytest.raises(config.ConfigError, match=message):
            config.load({"NPSFLOW_HOME": str(tmp_path), "NPSFLOW_CLICKHOUSE_PASSWORD_FILE": str(pw),
                         "NPSFLOW_CLICKHOUSE_CA_FILE": str(pki.ca), **bad})


def test_no_clickhouse_password_in_settings_repr_status_or_worker_json(tmp_path):
    dsn = f"https://writer:{PW.replace('@', '%40').replace('/', '%2F').replace(':', '%3A')}@ch:8443/npsflow"
    settings = config.load({"NPSFLOW_HOME": str(tmp_path), "NPSFLOW_CLICKHOUSE_DSN": dsn,
                            "NPSFLOW_KAFKA": "127.0.0.1:1"})
    assert "p4ss" not in repr(settings)
    # a worker.json as an older version wrote it (with the password), for a live worker process: ourselves

    fake = {"pid": os.getpid(), "ready": True, "clickhouse_dsn": dsn}
    (tmp_path / "worker.json").write_text(json.dumps(fake))
    original = config.is_worker_process
    config.is_worker_process = lambda pid: True
    try:
        state = stack.status(settings)
    finally:
        config.is_worker_process = original
    text = stack.describe(state)
    assert "p4ss" not in text and "writer:***@ch:8443" in text and state["worker"]["pid"] == os.getpid()
    result = CliRunner().invoke(main, ["stack", "status"], env={"NPSFLOW_HOME": str(tmp_path),
                                                                "NPSFLOW_CLICKHOUSE_DSN": dsn,
                                                                "NPSFLOW_KAFKA": "127.0.0.1:1"})
    assert result.exit_code == 0 and "p4ss" not in result.output and "writer:***@" in result.output


# ---------------------------------------------------------------------------------------------- grafana push
def test_grafana_push_takes_url_token_and_clickhouse_password_from_the_environment(tmp_path):
    from tests.test_grafana import GrafanaStandIn  # the in-process stand-in of Grafana's API

    token = secret_file(tmp_path, "glsa_good", "token")
    ch_pw = secret_file(tmp_path, PW, "chpw")
    with GrafanaStandIn() as g:
        result = CliRunner().invoke(main, ["grafana", "push"], env={
            "GRAFANA_URL": g.url, "GRAFANA_TOKEN_FILE": str(token), "GRAFANA_TOKEN": None,
            "GRAFANA_CLICKHOUSE_URL": "https://reader@ch.example:8443/npsflow",
            "GRAFANA_CLICKHOUSE_PASSWORD_FILE": str(ch_pw), "NPSFLOW_HOME": str(tmp_path)})
        assert result.exit_code == 0, result.output
        sent = [r for r in g.requests if r["method"] == "POST" and r["path"] == "/api/datasources"]
        assert sent and sent[0]["body"]["secureJsonData"] == {"password": PW}
        assert sent[0]["body"]["jsonData"]["username"] == "reader"
    assert PW not in result.output and "glsa_good" not in result.output
    missing = CliRunner().invoke(main, ["grafana", "push"], env={"GRAFANA_URL": "http://g", "GRAFANA_TOKEN": None,
                                                                 "GRAFANA_TOKEN_FILE": None})
    assert missing.exit_code == 1 and "set GRAFANA_TOKEN or GRAFANA_TOKEN_FILE" in missing.output


def test_a_failure_without_a_known_cause_says_what_the_client_saw_last():
    """A bootstrap that timed out on lines no pattern knows: the one line carries the client's last error (so a
    failure says more than "Unable to bootstrap"), with any URL credentials masked."""
    sec = KafkaSecurity("SASL_SSL", "SCRAM-SHA-512", "app", PW)
    with ConnectionDiagnosis(sec) as diagnosis:
        import logging

        logging.getLogger("kafka.net.manager").info("Attempting bootstrap to bootstrap-0")
        logging.getLogger("kafka.net.manager").warning(
            "Bootstrap connection to bootstrap-0 failed: KafkaConnectionError: socket disconnected\n(backoff 0.08 secs)")
        logging.getLogger("kafka.net.manager").warning("proxy https://app:%s@proxy:3128 refused", PW)
    line = diagnosis.explain(TimeoutError("Unable to bootstrap from 127.0.0.1:9093"))
    assert line == ("TimeoutError: Unable to bootstrap from 127.0.0.1:9093 (last client error: proxy "
                    "https://***@proxy:3128 refused)")
    assert PW not in line and "\n" not in line


def test_a_connection_closed_during_sasl_is_named_an_authentication_failure():
    """The broker answers a wrong password with the SASL error and closes; kafka-python sometimes sees only the close.
    A close after the API versions were agreed (same local port) is the SASL step failing: authentication. A close
    before them (TLS, a wrong port) is not."""
    import logging

    sec = KafkaSecurity("SASL_SSL", "SCRAM-SHA-512", "app", PW)
    connection, transport = logging.getLogger("kafka.net.connection"), logging.getLogger("kafka.net.transport")
    with ConnectionDiagnosis(sec) as before_versions:
        transport.error("<KafkaSSLTransport [127.0.0.1:9093<-45160]>: socket disconnected")
    assert before_versions.cause is None
    with ConnectionDiagnosis(sec) as during_sasl:
        connection.info("<KafkaConnection node_id=bootstrap-0 host=[127.0.0.1:9093<-45162] broker_version=unknown "
                        "(initializing)>: Broker version identified as 4.3")
        transport.error("<KafkaSSLTransport [127.0.0.1:9093<-45170]>: socket disconnected")  # another connection
        assert during_sasl.cause is None
        transport.error("<KafkaSSLTransport [127.0.0.1:9093<-45162]>: socket disconnected")
    assert during_sasl.explain(TimeoutError("Unable to bootstrap")).startswith(
        "authentication failed: the broker closed the connection during the SASL authentication of user 'app' "
        "(SCRAM-SHA-512)")
    with ConnectionDiagnosis(KafkaSecurity("SSL")) as without_sasl:
        connection.info("<KafkaConnection node_id=0 host=[h:9093<-1] broker_version=unknown>: Broker version "
                        "identified as 4.3")
        transport.error("<KafkaSSLTransport [h:9093<-1]>: socket disconnected")
    assert without_sasl.cause is None
