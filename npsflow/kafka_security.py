"""How every Kafka client of npsflow authenticates and encrypts: one settings object read from the environment,
turned into each client library's own settings (Faust/aiokafka, kafka-python, confluent-kafka/Quix).

NPSFLOW_KAFKA_SECURITY_PROTOCOL   PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL (default: SASL_SSL when a SASL user
                                  is set, SSL when a CA or client certificate is set, else PLAINTEXT)
NPSFLOW_KAFKA_SASL_MECHANISM      SCRAM-SHA-512 (default) | SCRAM-SHA-256 | PLAIN
NPSFLOW_KAFKA_SASL_USERNAME       the SASL user
NPSFLOW_KAFKA_SASL_PASSWORD_FILE  a file holding its password (preferred: the password stays out of every
                                  process environment and command line); or NPSFLOW_KAFKA_SASL_PASSWORD
NPSFLOW_KAFKA_CA_FILE             PEM CA certificate(s) the brokers' certificates are checked against (default:
                                  the system's trust store); the host name is always checked
NPSFLOW_KAFKA_CERT_FILE           PEM client certificate (chain) for brokers that want one (mTLS) …
NPSFLOW_KAFKA_KEY_FILE            … and its unencrypted PEM private key (keep it mode 0600)

The password is never part of ``repr``, ``describe()``, logs or exceptions; ``to_env()`` hands a child process
the file's path, or — only when the password itself came from the environment — the same variable.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


class KafkaSecurityError(ValueError):
    """A security setting is wrong; the message is one line and never holds a secret."""


@dataclass(frozen=True)
class KafkaSecurity:
    protocol: str = "PLAINTEXT"
    mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    password_file: Path | None = None
    password_from_env: bool = field(default=False, repr=False)
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    # ------------------------------------------------------------------ per client library
    def ssl_context(self) -> ssl.SSLContext | None:
        """A client TLS context (host name checked; the CA file or the system's trust store; the client
        certificate if configured), or None without TLS."""
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(purpose=ssl.Purpose.SERVER_AUTH,
                                                 cafile=str(self.ca_file) if self.ca_file else None)
            if self.cert_file:
                context.load_cert_chain(str(self.cert_file), str(self.key_file))
        except (OSError, ssl.SSLError) as exc:
            what = "NPSFLOW_KAFKA_CERT_FILE/NPSFLOW_KAFKA_KEY_FILE" if self.cert_file else "NPSFLOW_KAFKA_CA_FILE"
            raise KafkaSecurityError(f"{what}: cannot load: {_reason(exc)}") from None
        return context

    def aiokafka_kwargs(self) -> dict:
        """Keyword arguments for aiokafka clients (AIOKafkaProducer/Consumer/AdminClient)."""
        kwargs: dict = {"security_protocol": self.protocol}
        if self.tls:
            kwargs["ssl_context"] = self.ssl_context()
        if self.sasl:
            kwargs.update(sasl_mechanism=self.mechanism, sasl_plain_username=self.username,
                          sasl_plain_password=self.password)
        return kwargs

    def kafka_python_kwargs(self) -> dict:
        """Keyword arguments for kafka-python clients (KafkaProducer/Consumer/AdminClient): the same names."""
        return self.aiokafka_kwargs()

    def faust_credentials(self):
        """``broker_credentials`` for faust.App (None: plaintext)."""
        import faust

        if self.sasl:
            return faust.SASLCredentials(username=self.username, password=self.password,
                                         ssl_context=self.ssl_context(), mechanism=self.mechanism)
        if self.tls:
            return faust.SSLCredentials(self.ssl_context())
        return None

    def librdkafka_config(self) -> dict:
        """librdkafka properties (confluent-kafka, Quix Streams' ConnectionConfig.from_librdkafka_dict)."""
        config = {"security.protocol": self.protocol.lower()}
        if self.tls:
            if self.ca_file:
                config["ssl.ca.location"] = str(self.ca_file)
            if self.cert_file:
                config["ssl.certificate.location"] = str(self.cert_file)
                config["ssl.key.location"] = str(self.key_file)
            config["ssl.endpoint.identification.algorithm"] = "https"
        if self.sasl:
            config.update({"sasl.mechanism": self.mechanism, "sasl.username": self.username,
                           "sasl.password": self.password})
        return config

    # ------------------------------------------------------------------ what may be shown / passed on
    def describe(self) -> dict:
        """What may be written to worker.json and shown by `stack status`: no password, no file contents."""
        out = {"security_protocol": self.protocol}
        if self.sasl:
            out.update(sasl_mechanism=self.mechanism, sasl_username=self.username)
        if self.tls:
            out.update(ca_file=str(self.ca_file) if self.ca_file else None,
                       client_certificate=bool(self.cert_file))
        return out

    def to_env(self) -> dict[str, str]:
        """NPSFLOW_KAFKA_* for a child process: file paths; the password itself only if it came from there."""
        env: dict[str, str] = {}
        if self.protocol != "PLAINTEXT":
            env["NPSFLOW_KAFKA_SECURITY_PROTOCOL"] = self.protocol
        if self.sasl:
            env["NPSFLOW_KAFKA_SASL_MECHANISM"] = self.mechanism or ""
            env["NPSFLOW_KAFKA_SASL_USERNAME"] = self.username or ""
            if self.password_file:
                env["NPSFLOW_KAFKA_SASL_PASSWORD_FILE"] = str(self.password_file)
            elif self.password_from_env and self.password:
                env["NPSFLOW_KAFKA_SASL_PASSWORD"] = self.password
        for name, value in (("NPSFLOW_KAFKA_CA_FILE", self.ca_file), ("NPSFLOW_KAFKA_CERT_FILE", self.cert_file),
                            ("NPSFLOW_KAFKA_KEY_FILE", self.key_file)):
            if value:
                env[name] = str(value)
        return env


def _reason(exc: BaseException) -> str:
    return (getattr(exc, "strerror", None) or getattr(exc, "reason", None) or type(exc).__name__)


def _file(env: dict, name: str) -> Path | None:
    raw = env.get(name) or None
    if raw is None:
        return None
    path = Path(raw).expanduser().resolve()
    if not path.is_file() or not os.access(path, os.R_OK):
        raise KafkaSecurityError(f"{name}: no readable file {raw}")
    return path


def from_env(env: dict) -> KafkaSecurity:
    """The settings from NPSFLOW_KAFKA_* (see the module doc); KafkaSecurityError names the first mistake."""
    username = env.get("NPSFLOW_KAFKA_SASL_USERNAME") or None
    password = env.get("NPSFLOW_KAFKA_SASL_PASSWORD") or None
    password_file = _file(env, "NPSFLOW_KAFKA_SASL_PASSWORD_FILE")
    ca_file = _file(env, "NPSFLOW_KAFKA_CA_FILE")
    cert_file = _file(env, "NPSFLOW_KAFKA_CERT_FILE")
    key_file = _file(env, "NPSFLOW_KAFKA_KEY_FILE")
    raw_protocol = (env.get("NPSFLOW_KAFKA_SECURITY_PROTOCOL") or "").strip().upper()
    if raw_protocol:
        protocol = raw_protocol
    elif username:
        protocol = "SASL_SSL"
    elif ca_file or cert_file:
        protocol = "SSL"
    else:
        protocol = "PLAINTEXT"
    if protocol not in PROTOCOLS:
        raise KafkaSecurityError(f"NPSFLOW_KAFKA_SECURITY_PROTOCOL must be one of {', '.join(PROTOCOLS)}, "
                                 f"got {raw_protocol!r}")
    if password and password_file:
        raise KafkaSecurityError("set NPSFLOW_KAFKA_SASL_PASSWORD or NPSFLOW_KAFKA_SASL_PASSWORD_FILE, not both")
    if password_file:
        try:
            password = password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise KafkaSecurityError(f"NPSFLOW_KAFKA_SASL_PASSWORD_FILE: cannot read {password_file}: "
                                     f"{type(exc).__name__}") from None
        if not password:
            raise KafkaSecurityError(f"NPSFLOW_KAFKA_SASL_PASSWORD_FILE: {password_file} is empty")
    mechanism = None
    if protocol.startswith("SASL_"):
        mechanism = (env.get("NPSFLOW_KAFKA_SASL_MECHANISM") or "SCRAM-SHA-512").strip().upper()
        if mechanism not in MECHANISMS:
            raise KafkaSecurityError(f"NPSFLOW_KAFKA_SASL_MECHANISM must be one of {', '.join(MECHANISMS)}, "
                                     f"got {mechanism!r}")
        if not username or not password:
            raise KafkaSecurityError(f"NPSFLOW_KAFKA_SECURITY_PROTOCOL={protocol} needs NPSFLOW_KAFKA_SASL_USERNAME "
                                     f"and NPSFLOW_KAFKA_SASL_PASSWORD_FILE (or NPSFLOW_KAFKA_SASL_PASSWORD)")
    elif username or password:
        raise KafkaSecurityError(f"a SASL user is set but NPSFLOW_KAFKA_SECURITY_PROTOCOL is {protocol}: use "
                                 f"SASL_SSL (or SASL_PLAINTEXT)")
    if bool(cert_file) != bool(key_file):
        raise KafkaSecurityError("NPSFLOW_KAFKA_CERT_FILE and NPSFLOW_KAFKA_KEY_FILE go together")
    if (ca_file or cert_file) and protocol not in ("SSL", "SASL_SSL"):
        raise KafkaSecurityError(f"NPSFLOW_KAFKA_CA_FILE/CERT_FILE need TLS: NPSFLOW_KAFKA_SECURITY_PROTOCOL is "
                                 f"{protocol} (use SSL or SASL_SSL)")
    security = KafkaSecurity(protocol=protocol, mechanism=mechanism, username=username, password=password,
                             password_file=password_file,
                             password_from_env=bool(env.get("NPSFLOW_KAFKA_SASL_PASSWORD")),
                             ca_file=ca_file, cert_file=cert_file, key_file=key_file)
    security.ssl_context()  # a broken CA / certificate / key file fails here, in one line
    return security


# ---------------------------------------------------------------------------------- why a connection failed
_CAUSES = (  # (pattern in a client library's log line or exception, the explanation)
    (re.compile(r"SaslAuthenticationFailed|Authentication failed", re.I),
     "authentication failed: the broker refused the SASL user {user} ({mechanism}); check "
     "NPSFLOW_KAFKA_SASL_USERNAME and the password"),
    (re.compile(r"CERTIFICATE_VERIFY_FAILED|certificate verify failed", re.I),
     "TLS: the broker's certificate is not trusted or does not name the host (NPSFLOW_KAFKA_CA_FILE)"),
    (re.compile(r"ALERT_BAD_CERTIFICATE|CERTIFICATE_REQUIRED|ALERT_UNKNOWN_CA|certificate required", re.I),
     "TLS: the broker refused the client certificate (NPSFLOW_KAFKA_CERT_FILE / NPSFLOW_KAFKA_KEY_FILE)"),
    (re.compile(r"WRONG_VERSION_NUMBER|UNEXPECTED_MESSAGE|record layer failure", re.I),
     "TLS handshake failed: is this a TLS listener? (NPSFLOW_KAFKA_SECURITY_PROTOCOL)"),
    (re.compile(r"UnsupportedSaslMechanism|Unsupported SASL mechanism", re.I),
     "the broker does not offer SASL mechanism {mechanism} (NPSFLOW_KAFKA_SASL_MECHANISM)"),
    (re.compile(r"Connection refused", re.I), "connection refused"),
)


_LOCAL_PORT = re.compile(r"<-(\d+)\]")  # kafka-python names a connection "[host:port<-local port]"
_CREDENTIALS = re.compile(r"://\S*@")  # user:password@ of a URL, up to its last "@"


class ConnectionDiagnosis(logging.Handler):
    """While active, collects the client libraries' connection log lines (kafka-python, aiokafka) instead of
    letting them reach stderr, so a failure can be told in one line: ``explain(exc)``."""

    LOGGERS = ("kafka", "aiokafka")

    def __init__(self, security: KafkaSecurity | None = None):
        super().__init__(level=logging.DEBUG)
        self.security = security or KafkaSecurity()
        self.cause: str | None = None
        self.last_failure: str | None = None  # the client's last WARNING+ line, for a failure with no known cause
        self._negotiated: set[str] = set()  # local ports of connections that got past the API versions request
        self._saved: list = []

    def emit(self, record: logging.LogRecord) -> None:
        if self.cause is not None and not self.cause.startswith("connection refused"):
            return
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += f" {record.exc_info[1]!r}"
        if record.levelno >= logging.WARNING:
            self.last_failure = _CREDENTIALS.sub("://***@", " ".join(text.split()))[:200]
        self.cause = self._match(text) or self._closed_in_sasl(text) or self.cause

    def _closed_in_sasl(self, text: str) -> str | None:
        """kafka-python, a connection (named by its local port) the broker closed after the API versions were
        agreed — i.e. during the SASL authentication, the next step: the broker answers a wrong password with the
        SASL error and closes, and the client sometimes sees only the close ("socket disconnected"). Seen in CI:
        every attempt of a 15 s bootstrap ended so, and the one line said only "Unable to bootstrap"."""
        port = _LOCAL_PORT.search(text)
        if port is None or not self.security.sasl:
            return None
        if "Broker version identified" in text:
            self._negotiated.add(port.group(1))
        elif "socket disconnected" in text and port.group(1) in self._negotiated:
            return (f"authentication failed: the broker closed the connection during the SASL authentication of "
                    f"user {self.security.username!r} ({self.security.mechanism}); check "
                    f"NPSFLOW_KAFKA_SASL_USERNAME and the password")
        return None

    def _match(self, text: str) -> str | None:
        for pattern, explanation in _CAUSES:
            if pattern.search(text):
                return explanation.format(user=repr(self.security.username), mechanism=self.security.mechanism)
        return None

    def __enter__(self) -> "ConnectionDiagnosis":
        for name in self.LOGGERS:
            logger = logging.getLogger(name)
            self._saved.append((logger, logger.level, logger.propagate))
            logger.addHandler(self)
            logger.setLevel(logging.INFO)
            logger.propagate = False
        return self

    def __exit__(self, *exc) -> None:
        for logger, level, propagate in self._saved:
            logger.removeHandler(self)
            logger.setLevel(level)
            logger.propagate = propagate
        self._saved.clear()

    def explain(self, exc: BaseException | None = None) -> str:
        """One line: the cause seen in the logs (or in ``exc``), else the exception's first line."""
        text = "" if exc is None else f"{type(exc).__name__}: {exc}"
        cause = self.cause or self._match(text)
        if cause:
            return cause
        first = (text.strip().splitlines() or ["unknown error"])[0][:300]
        # e.g. a bootstrap timeout: what the client saw last says more (a CI run once ended in a bare "Unable to
        # bootstrap" where a wrong password was expected, and nothing told why)
        return f"{first} (last client error: {self.last_failure})" if self.last_failure else first
