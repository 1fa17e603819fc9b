"""Settings from the environment. One place that knows every knob and its default.

NPSFLOW_HOME              state directory (default ./.npsflow): local broker, embedded ClickHouse, pid files
NPSFLOW_KAFKA             bootstrap servers (default: the local broker started by `npsflow stack up`)
NPSFLOW_CLICKHOUSE_DSN    chdb:///abs/dir (default: embedded chDB in $NPSFLOW_HOME/clickhouse) or http(s)://…
NPSFLOW_CLICKHOUSE_PASSWORD_FILE  a file holding the ClickHouse server password (instead of user:password in
                          the DSN); NPSFLOW_CLICKHOUSE_CA_FILE: PEM CA for an https:// server's certificate.
                          The DSN is shown and written (worker.json, `stack status`, errors) only with its
                          password replaced by ***
NPSFLOW_KAFKA_SECURITY_PROTOCOL, NPSFLOW_KAFKA_SASL_*, NPSFLOW_KAFKA_CA_FILE, NPSFLOW_KAFKA_CERT_FILE,
NPSFLOW_KAFKA_KEY_FILE    SASL (SCRAM) and TLS for every Kafka client: npsflow.kafka_security
NPSFLOW_PARTITIONS        partitions of every npsflow topic (default 6)
NPSFLOW_REPLICATION_FACTOR replication factor of every npsflow topic it creates, changelogs included (default 1;
                          `npsflow stack up --brokers N` makes it min(3, N)); at most the live brokers
NPSFLOW_MIN_ISR           min.insync.replicas of every npsflow topic it creates (default: unset = the broker's;
                          `stack up --brokers 3`: 2); at most the replication factor
NPSFLOW_WORKER_NAME       names a worker's own files: $NPSFLOW_HOME/workers/<name>.json|.pid|.log (`stack up
                          --workers N` names its process workers so); unset: worker.json/.pid/.log, the worker
                          the CLI asks (it owns the embedded ClickHouse)
NPSFLOW_WINDOWS           rolling windows, comma separated, each name once (default 24h,7d,30d)
NPSFLOW_LATENESS          allowed lateness of window additions (default 6h)
NPSFLOW_DIMENSIONS        segment dimensions of the live windows (default overall,location,employee,channel);
                          names match ^[a-z][a-z0-9_]{0,63}$ (the rule sinks.queries applies), at least one
NPSFLOW_DEDUP_RETENTION   how long response ids are remembered for deduplication (default 90d)
NPSFLOW_SINK_MAX_ROWS     rows per partition batch before a ClickHouse insert (default 5000)
NPSFLOW_SINK_MAX_AGE      seconds a batch may wait before it is inserted (default 1.0; finite, > 0)
NPSFLOW_NAMESPACE         prefix of topic names and the Faust app id / consumer group (default npsflow)
NPSFLOW_PUBLIC_BIND       HOST:PORT of the worker's public listener: the survey page and POST /api/v1/responses,
                          nothing else (default 127.0.0.1 and a free port; port 0 = free; ports in worker.json)
NPSFLOW_INTERNAL_BIND     HOST:PORT of the internal listener: read APIs, dashboard, stats — what the CLI asks
                          (default 127.0.0.1 and a free port)
NPSFLOW_INTERNAL_ADVERTISED_URL  the internal listener's base URL as other hosts reach it (default: the bound
                          one, http://HOST:PORT); published in the owner directory (<ns>.owners) so any worker's
                          survey page can read an invitation from the worker holding it (web.routing). Set it
                          where the bind address is not what others use (0.0.0.0 in a pod: http://<pod IP>:PORT);
                          `auto`: http://<the address this host's name resolves to>:<internal port> (containers:
                          each replica its own address; the image's default)
NPSFLOW_INTERNAL_TOKEN    optional: the internal listener then wants ``Authorization: Bearer <token>`` (all but
                          /healthz); 16-512 visible ASCII characters. Or NPSFLOW_INTERNAL_TOKEN_FILE: a file
                          holding it (never on a command line). The CLI sends it.
NPSFLOW_PROGRAMS          survey programs YAML (npsflow.programs); unset: no programs, every trigger is
                          suppressed with reason no_program
NPSFLOW_CHANNELS          channel configuration YAML (sinks.channels.factory); unset: outbox for e-mail and SMS
NPSFLOW_CASES             follow-up cases, alerts and notifications YAML (deploy/cases.example.yaml); unset:
                          detractors open cases owned by `unassigned`, drop alerts on with the defaults, no
                          notifications
NPSFLOW_THEMES            themes YAML for `npsflow themes` (sinks.terms: theme → language → lemmas); unset: the
                          example themes shipped in deploy/themes.example.yaml
NPSFLOW_SECRET            key for contact pseudonyms, sampling and link signatures (≥ 16 characters); unset:
                          a random one is created once in $NPSFLOW_HOME/secret.key (set it when several
                          workers or hosts share one deployment: they must all use the same). Or
                          NPSFLOW_SECRET_FILE: a file holding it (compose/Kubernetes secrets; not both)
NPSFLOW_SURVEY_URL        base URL of the survey page the links point to (default: the worker's public
                          listener, http://127.0.0.1:<port>/s)
NPSFLOW_LINK_TTL          how long a survey link stays valid (default 30d)
NPSFLOW_EDIT_WINDOW       how long after the first answer a respondent may still change it (default 24h)
NPSFLOW_PAGE_RATE         survey page requests per second per client IP, sustained (default 1; a burst of 30×)
NPSFLOW_TRUSTED_PROXIES   comma-separated IPs or networks (CIDR: 10.42.0.0/16, e.g. an ingress controller's pods)
                          of reverse proxies whose X-Forwarded-For names the client
NPSFLOW_ALLOWED_HOSTS     host names both listeners answer to (Host header), comma separated; always
                          127.0.0.1, localhost, the host of NPSFLOW_SURVEY_URL and the listener's own bind address
                          (others: 421, against DNS rebinding of the read APIs and the dashboard)
NPSFLOW_READY_MAX_LAG     records a worker may be behind on its input topics and still answer /readyz "ready"
                          (default 100000; web.health)
NPSFLOW_READY_GRACE       seconds a rebalance or table recovery may last before /readyz says unhealthy
                          (default 60)
NPSFLOW_RETENTION         how long responses, dispatches and dead letters stay in ClickHouse, in whole days
                          (e.g. 730d; unset: forever); applied as a TTL at every worker start
NPSFLOW_FAULTS_FILE       FOR TESTING ONLY (tests/test_faults.py): a JSON plan of ClickHouse insert faults the
                          worker injects at its sinks' client boundary (sinks.faults); unset (the default): the
                          store is not wrapped at all. A local file only: nothing on the network reaches it
"""

from __future__ import annotations

import json
import ipaddress
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from npsflow.kafka_security import KafkaSecurity, KafkaSecurityError
from npsflow.redact import redact_dsn
from npsflow.kafka_security import from_env as kafka_security_from_env
from streams.windows import WindowSpec, parse_duration

_NAMESPACE = re.compile(r"^[a-zA-Z][a-zA-Z0-9_-]{0,40}$")
_TOKEN = re.compile(r"[\x21-\x7e]{16,512}")
DEFAULT_PUBLIC_PORT = 6066  # names the survey URL only before a listener is bound (agents tested without one)


@dataclass(frozen=True)
class Bind:
    """Where a listener listens: ``host`` (an address or name; 0.0.0.0 / :: = every interface) and ``port``
    (None: a free port, chosen when the worker binds it)."""

    host: str = "127.0.0.1"
    port: int | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port or 0}"

    @property
    def url(self) -> str:
        """``http://host:port`` to reach it from this machine (a wildcard address is reached on loopback)."""
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port or DEFAULT_PUBLIC_PORT}"

    @classmethod
    def parse(cls, raw: str | None, name: str) -> "Bind":
        """``HOST:PORT``, ``[IPv6]:PORT``, ``HOST`` (a free port) or ``:PORT`` (127.0.0.1); port 0 = free."""
        raw = (raw or "").strip()
        if not raw:
            return cls()
        host, port = raw, ""
        if raw.startswith("["):
            host, sep, rest = raw[1:].partition("]")
            if not sep or (rest and not rest.startswith(":")):
                raise ConfigError(f"{name} must be HOST:PORT or [IPv6]:PORT, got {raw!r}")
            port = rest[1:]
        elif raw.count(":") == 1:
            host, port = raw.split(":")
        elif ":" in raw:
            raise ConfigError(f"{name}: write an IPv6 address in brackets, [{raw}]:PORT")
        if not re.fullmatch(r"[A-Za-z0-9.:_-]*", host):
            raise ConfigError(f"{name} has an invalid host {host!r}")
        if port and not (port.isdigit() and 0 <= int(port) <= 65535):
            raise ConfigError(f"{name} must have a port 0-65535 (0: a free one), got {raw!r}")
        return cls(host or "127.0.0.1", int(port) or None if port else None)


@dataclass(frozen=True)
class Topics:
    """Topic names, all under one namespace (default ``npsflow``): ``<ns>.responses.raw`` …"""

    namespace: str = "npsflow"

    def _name(self, suffix: str) -> str:
        return f"{self.namespace}.{suffix}"

    raw_responses = property(lambda self: self._name("responses.raw"))
    classified = property(lambda self: self._name("responses.classified"))
    window_deltas = property(lambda self: self._name("windows.deltas"))
    windows = property(lambda self: self._name("windows"))
    alerts = property(lambda self: self._name("alerts"))
    dead_letters = property(lambda self: self._name("deadletters"))
    triggers = property(lambda self: self._name("triggers"))
    dispatches = property(lambda self: self._name("dispatches"))
    invitations = property(lambda self: self._name("invitations"))  # deliver stage commands, key invitation_id
    # would-be invitations of programs with a daily cap, key <org>|<program> (the cap stage)
    candidates = property(lambda self: self._name("dispatch.candidates"))
    # the cap stage's refusals back to the contact's partition, key <org>|<contact_id> (stage 1)
    releases = property(lambda self: self._name("dispatch.releases"))
    # the cases agent's input: qualifying answers and their edits (from classify) and the commands of the CLI /
    # internal API, JSON, key = the contact's route <org>|<respondent> (streams.cases.route_of)
    case_events = property(lambda self: self._name("cases.events"))
    # every case's latest full record (Avro io.npsflow.Case), key case_id, compacted
    cases = property(lambda self: self._name("cases"))
    # notifications to case owners and alert receivers (JSON, key = idempotency key): the notify agent sends them
    notifications = property(lambda self: self._name("notifications"))
    # the owner directory: which worker's internal listener holds each partition of the invitations table, JSON,
    # key = the partition number, one partition, compacted (streams.owners)
    owners = property(lambda self: self._name("owners"))

    # Faust tables of the worker; their changelog topics are created up front (compacted), because Faust's
    # own creation races its partition check on a fresh broker ("changelog topic has 0 partitions").
    TABLES = ("responses-seen", "window-state", "dispatch-state", "dispatch-caps", "invitations", "cases",
              "notifications-sent")

    def changelogs(self) -> list[str]:
        return [f"{self.namespace}-{table}-changelog" for table in self.TABLES]

    def all(self) -> list[str]:
        return [self.raw_responses, self.classified, self.window_deltas, self.windows, self.alerts,
                self.dead_letters, self.triggers, self.dispatches, self.invitations, self.candidates,
                self.releases, self.case_events, self.notifications]

    def compacted(self) -> list[str]:
        """Topics holding the latest record per key (created with cleanup.policy=compact)."""
        return [self.cases]


@dataclass(frozen=True)
class Settings:
    home: Path
    kafka: str | None
    clickhouse_dsn: str = field(repr=False)  # may hold user:password: show clickhouse_dsn_shown instead
    partitions: int = 6
    windows: tuple[WindowSpec, ...] = ()
    lateness_seconds: int = 6 * 3600
    dimensions: tuple[str, ...] = ("overall", "location", "employee", "channel")
    dedup_retention_seconds: int = 90 * 86400
    sink_max_rows: int = 5000
    sink_max_age: float = 1.0
    role: str = "all"  # NPSFLOW_ROLE: all | process (the stream agents, no ClickHouse) | sink (ClickHouse sinks)
    #                    | web (the listeners only: producer, no consumer, no tables; ClickHouse reads on a server DSN)
    public_bind: Bind = field(default_factory=Bind)
    internal_bind: Bind = field(default_factory=Bind)
    internal_token: str | None = field(default=None, repr=False)  # NPSFLOW_INTERNAL_TOKEN or the file's content
    internal_token_file: Path | None = None
    internal_advertised: str | None = None  # NPSFLOW_INTERNAL_ADVERTISED_URL; see ``internal_advertised_url``
    topics: Topics = field(default_factory=Topics)
    programs_file: Path | None = None
    themes_file: Path | None = None
    cases_file: Path | None = None
    channels_file: Path | None = None
    secret_value: str | None = field(default=None, repr=False)  # NPSFLOW_SECRET or the file's; see ``secret``
    secret_file: Path | None = None  # NPSFLOW_SECRET_FILE (children get the path, never the value)
    survey_url: str | None = None
    link_ttl_seconds: int = 30 * 86400
    edit_window_seconds: int = 86400
    page_rate: float = 1.0
    trusted_proxies: tuple[str, ...] = ()
    retention_days: int | None = None
    allowed_hosts: tuple[str, ...] = ()
    replication_factor: int = 1  # NPSFLOW_REPLICATION_FACTOR
    min_isr: int | None = None  # NPSFLOW_MIN_ISR; None: the broker's min.insync.replicas
    worker_name: str | None = None  # NPSFLOW_WORKER_NAME; None: the worker the CLI asks (worker.json)
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)
    clickhouse_password_file: Path | None = None  # NPSFLOW_CLICKHOUSE_PASSWORD_FILE (read when the store opens)
    clickhouse_ca_file: Path | None = None  # NPSFLOW_CLICKHOUSE_CA_FILE
    ready_max_lag: int = 100_000  # NPSFLOW_READY_MAX_LAG (web.health)
    ready_grace_seconds: int = 60  # NPSFLOW_READY_GRACE (web.health)
    faults_file: Path | None = None  # NPSFLOW_FAULTS_FILE: testing only (sinks.faults); None in production

    @property
    def clickhouse_dsn_shown(self) -> str:
        """The DSN as it may be printed or written to a file: its password replaced by ***."""
        return redact_dsn(self.clickhouse_dsn)

    @property
    def clickhouse_options(self) -> dict:
        """Keyword arguments of sinks.clickhouse.ClickHouseStore besides the DSN (password and CA files)."""
        return {"password_file": self.clickhouse_password_file, "ca_file": self.clickhouse_ca_file}

    @property
    def web_hosts(self) -> frozenset[str]:
        """Host names the web server answers to."""
        from urllib.parse import urlsplit

        hosts = {"127.0.0.1", "localhost", "::1", *(h.lower() for h in self.allowed_hosts)}
        if self.survey_url:
            hosts.add((urlsplit(self.survey_url).hostname or "").lower())
        return frozenset(h for h in hosts if h)

    @property
    def internal_advertised_url(self) -> str:
        """The internal listener's base URL as other workers reach it: NPSFLOW_INTERNAL_ADVERTISED_URL, else the
        bound one."""
        return (self.internal_advertised or self.internal_bind.url).rstrip("/")

    @property
    def survey_base_url(self) -> str:
        """Where survey links point: NPSFLOW_SURVEY_URL, else the public listener's ``/s``."""
        return self.survey_url or f"{self.public_bind.url}/s"

    @property
    def secret(self) -> bytes:
        """NPSFLOW_SECRET, else the key in $NPSFLOW_HOME/secret.key (created once, mode 0600, 32 random bytes)."""
        if self.secret_value:
            return self.secret_value.encode()
        path = self.home / "secret.key"
        try:
            return bytes.fromhex(path.read_text().strip())
        except FileNotFoundError:
            pass
        except ValueError:
            raise ConfigError(f"{path} is not a hex key: delete it or set NPSFLOW_SECRET") from None
        self.home.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".secret.key.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(os.urandom(32).hex())
        try:
            os.link(tmp, path)  # atomic create-if-absent: two processes starting at once agree on one key
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
        return bytes.fromhex(path.read_text().strip())

    def _worker_path(self, suffix: str) -> Path:
        if self.worker_name:
            return self.home / "workers" / f"{self.worker_name}{suffix}"
        return self.home / f"worker{suffix}"

    @property
    def worker_file(self) -> Path:
        """Where the worker announces its pid, listeners and readiness (worker.json; a named one: workers/)."""
        return self._worker_path(".json")

    @property
    def worker_pid_file(self) -> Path:
        return self._worker_path(".pid")

    @property
    def worker_log(self) -> Path:
        return self._worker_path(".log")

    @property
    def topic_configs(self) -> dict[str, str]:
        """Configs every npsflow topic is created with (min.insync.replicas when NPSFLOW_MIN_ISR is set)."""
        return {"min.insync.replicas": str(self.min_isr)} if self.min_isr else {}

    @property
    def dispatch_extra_retention_days(self) -> int:
        """Dispatches are kept this much longer than responses: an answer comes up to a link lifetime (+ the edit
        window) after its invitation and finds its organization through it."""
        return -(-(self.link_ttl_seconds + self.edit_window_seconds) // 86400)

    @property
    def is_embedded_clickhouse(self) -> bool:
        return self.clickhouse_dsn.startswith("chdb://")

    def to_env(self) -> dict[str, str]:
        """These settings as NPSFLOW_* variables, so a child process (the background worker) sees the same."""
        env = {
            "NPSFLOW_HOME": str(self.home),
            "NPSFLOW_CLICKHOUSE_DSN": self.clickhouse_dsn,
            "NPSFLOW_NAMESPACE": self.topics.namespace,
            "NPSFLOW_PARTITIONS": str(self.partitions),
            "NPSFLOW_WINDOWS": ",".join(w.name for w in self.windows),
            "NPSFLOW_LATENESS": f"{self.lateness_seconds}s",
            "NPSFLOW_DIMENSIONS": ",".join(self.dimensions),
            "NPSFLOW_DEDUP_RETENTION": f"{self.dedup_retention_seconds}s",
            "NPSFLOW_SINK_MAX_ROWS": str(self.sink_max_rows),
            "NPSFLOW_SINK_MAX_AGE": str(self.sink_max_age),
            "NPSFLOW_ROLE": self.role,
            "NPSFLOW_REPLICATION_FACTOR": str(self.replication_factor),
            "NPSFLOW_READY_MAX_LAG": str(self.ready_max_lag),
            "NPSFLOW_READY_GRACE": str(self.ready_grace_seconds),
        }
        if self.min_isr:
            env["NPSFLOW_MIN_ISR"] = str(self.min_isr)
        if self.worker_name:
            env["NPSFLOW_WORKER_NAME"] = self.worker_name
        if self.kafka:
            env["NPSFLOW_KAFKA"] = self.kafka
        env.update(self.kafka_security.to_env())
        if self.clickhouse_password_file:
            env["NPSFLOW_CLICKHOUSE_PASSWORD_FILE"] = str(self.clickhouse_password_file)
        if self.clickhouse_ca_file:
            env["NPSFLOW_CLICKHOUSE_CA_FILE"] = str(self.clickhouse_ca_file)
        env["NPSFLOW_PUBLIC_BIND"] = str(self.public_bind)
        env["NPSFLOW_INTERNAL_BIND"] = str(self.internal_bind)
        if self.internal_advertised:
            env["NPSFLOW_INTERNAL_ADVERTISED_URL"] = self.internal_advertised
        if self.internal_token_file:
            env["NPSFLOW_INTERNAL_TOKEN_FILE"] = str(self.internal_token_file)
        elif self.internal_token:
            env["NPSFLOW_INTERNAL_TOKEN"] = self.internal_token
        for name, value in (("NPSFLOW_PROGRAMS", self.programs_file), ("NPSFLOW_CHANNELS", self.channels_file),
                            ("NPSFLOW_THEMES", self.themes_file), ("NPSFLOW_CASES", self.cases_file),
                            ("NPSFLOW_SECRET_FILE", self.secret_file),
                            ("NPSFLOW_SECRET", None if self.secret_file else self.secret_value),
                            ("NPSFLOW_SURVEY_URL", self.survey_url)):
            if value:
                env[name] = str(value)
        env["NPSFLOW_LINK_TTL"] = f"{self.link_ttl_seconds}s"
        env["NPSFLOW_EDIT_WINDOW"] = f"{self.edit_window_seconds}s"
        env["NPSFLOW_PAGE_RATE"] = str(self.page_rate)
        if self.trusted_proxies:
            env["NPSFLOW_TRUSTED_PROXIES"] = ",".join(self.trusted_proxies)
        if self.retention_days:
            env["NPSFLOW_RETENTION"] = f"{self.retention_days}d"
        if self.allowed_hosts:
            env["NPSFLOW_ALLOWED_HOSTS"] = ",".join(self.allowed_hosts)
        if self.faults_file:
            env["NPSFLOW_FAULTS_FILE"] = str(self.faults_file)
        return env

    def bootstrap(self) -> str:
        """The Kafka bootstrap servers: NPSFLOW_KAFKA, else the local broker's if it runs."""
        if self.kafka:
            return self.kafka
        from deploy.local.kafka import KafkaStackError, local_kafka

        try:
            status = local_kafka(self.home / "kafka").status()
        except KafkaStackError as exc:
            raise ConfigError(str(exc)) from None
        if not status.get("running"):
            raise ConfigError("no Kafka: the local broker is not running (run `npsflow stack up`) "
                              "and NPSFLOW_KAFKA is not set")
        return status["bootstrap"]

    def worker_info(self) -> dict | None:
        """The running worker's pid and its listeners' URLs (``public_url``, ``internal_url``), if `npsflow stack
        up`/`npsflow worker` left them."""
        try:
            info = json.loads(self.worker_file.read_text())
        except (OSError, ValueError):
            return None
        try:
            pid = int(info["pid"])
            os.kill(pid, 0)
        except (OSError, KeyError, ValueError, TypeError):
            return None
        if not is_worker_process(pid):  # a stale file whose pid now belongs to another process
            return None
        return info


def process_cmdline(pid: int) -> list[str] | None:
    """argv of a live process (Linux /proc; elsewhere ``ps``), or None if it cannot be read."""
    try:
        raw = Path(f"/proc/{int(pid)}/cmdline").read_bytes()
        return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]
    except (OSError, ValueError):
        if Path("/proc/self").exists():
            return None  # a Linux box without that pid (or not ours to read)
    import subprocess

    try:
        out = subprocess.run(["ps", "-p", str(int(pid)), "-o", "args="], capture_output=True, text=True,
                             timeout=5)
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
    return out.stdout.split() if out.returncode == 0 and out.stdout.strip() else None


def is_worker_process(pid: int) -> bool:
    """True if ``pid`` runs an npsflow worker (``python -m npsflow.cli worker`` or the ``npsflow worker``
    console script). Guards against signalling an unrelated process that reused a stale pid."""
    argv = process_cmdline(pid)
    if not argv:
        return False
    is_cli = any(a == "npsflow.cli" or os.path.basename(a) == "npsflow" for a in argv)
    return is_cli and "worker" in argv


class ConfigError(Exception):
    pass


def _int(env: dict, name: str, default: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {raw!r}")
    return value


def _listeners(env: dict) -> dict:
    """The listener settings: public_bind, internal_bind, internal_token, internal_token_file."""
    if env.get("NPSFLOW_WEB_PORT"):
        raise ConfigError("NPSFLOW_WEB_PORT is gone: the worker has two listeners, NPSFLOW_PUBLIC_BIND (survey page, "
                          "response API) and NPSFLOW_INTERNAL_BIND (read APIs, dashboard), each HOST:PORT")
    public_bind = Bind.parse(env.get("NPSFLOW_PUBLIC_BIND"), "NPSFLOW_PUBLIC_BIND")
    internal_bind = Bind.parse(env.get("NPSFLOW_INTERNAL_BIND"), "NPSFLOW_INTERNAL_BIND")
    if public_bind.port and public_bind.port == internal_bind.port:
        raise ConfigError("NPSFLOW_PUBLIC_BIND and NPSFLOW_INTERNAL_BIND must not share a port")
    token, token_file = _internal_token(env)
    advertised = (env.get("NPSFLOW_INTERNAL_ADVERTISED_URL") or "").strip() or None
    if advertised == "auto":
        advertised = _auto_advertised(internal_bind)
    if advertised is not None and not re.fullmatch(r"https?://[^/\s?#]+/?", advertised):
        raise ConfigError(f"NPSFLOW_INTERNAL_ADVERTISED_URL must be http(s)://HOST:PORT, got {advertised!r}")
    return {"public_bind": public_bind, "internal_bind": internal_bind, "internal_token": token,
            "internal_token_file": token_file, "internal_advertised": advertised}


def _auto_advertised(bind: Bind) -> str:
    """NPSFLOW_INTERNAL_ADVERTISED_URL=auto: ``http://<address of this host's name>:<internal port>`` — a container's
    own address (Docker and Kubernetes map the host name to it in /etc/hosts), so replicas sharing one configuration
    (compose ``deploy.replicas``) each advertise themselves."""
    import socket

    if not bind.port:
        raise ConfigError("NPSFLOW_INTERNAL_ADVERTISED_URL=auto needs a fixed port in NPSFLOW_INTERNAL_BIND")
    name = socket.gethostname()
    try:
        address = socket.gethostbyname(name)
    except OSError:
        raise ConfigError(f"NPSFLOW_INTERNAL_ADVERTISED_URL=auto: this host's name {name!r} does not resolve; "
                          f"set the URL (http://HOST:PORT)") from None
    return f"http://{address}:{bind.port}"


def _internal_token(env: dict) -> tuple[str | None, Path | None]:
    """NPSFLOW_INTERNAL_TOKEN, or the content of NPSFLOW_INTERNAL_TOKEN_FILE (and that file)."""
    value, file = env.get("NPSFLOW_INTERNAL_TOKEN") or None, env.get("NPSFLOW_INTERNAL_TOKEN_FILE") or None
    if value and file:
        raise ConfigError("set NPSFLOW_INTERNAL_TOKEN or NPSFLOW_INTERNAL_TOKEN_FILE, not both")
    path = None
    if file:
        path = Path(file).expanduser().resolve()
        try:
            value = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"NPSFLOW_INTERNAL_TOKEN_FILE: cannot read {file}: {type(exc).__name__}") from None
    if value is not None and not _TOKEN.fullmatch(value):
        raise ConfigError("NPSFLOW_INTERNAL_TOKEN must be 16-512 visible ASCII characters (no spaces)")
    return value, path


def _secret(env: dict) -> tuple[str | None, Path | None]:
    """NPSFLOW_SECRET, or the content of NPSFLOW_SECRET_FILE (stripped of surrounding whitespace) and that file."""
    value, file = env.get("NPSFLOW_SECRET") or None, env.get("NPSFLOW_SECRET_FILE") or None
    if value and file:
        raise ConfigError("set NPSFLOW_SECRET or NPSFLOW_SECRET_FILE, not both")
    path = None
    if file:
        path = Path(file).expanduser().resolve()
        try:
            value = path.read_text(encoding="utf-8").strip() or None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"NPSFLOW_SECRET_FILE: cannot read {file}: {type(exc).__name__}") from None
        if value is None:
            raise ConfigError(f"NPSFLOW_SECRET_FILE: {file} is empty")
    if value is not None and len(value.encode()) < 16:
        name = "NPSFLOW_SECRET_FILE" if path else "NPSFLOW_SECRET"
        raise ConfigError(f"{name}: the secret must be at least 16 characters (32 random bytes, hex, recommended)")
    return value, path


ROLES = ("all", "process", "sink", "web")


def _role(env: dict) -> str:
    role = (env.get("NPSFLOW_ROLE") or "all").strip()
    if role not in ROLES:
        raise ConfigError(f"NPSFLOW_ROLE must be one of {', '.join(ROLES)}, got {role!r}")
    return role


_WORKER_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,40}$")


def _replication(env: dict) -> dict:
    """NPSFLOW_REPLICATION_FACTOR, NPSFLOW_MIN_ISR (≤ the replication factor) and NPSFLOW_WORKER_NAME."""
    rf = _int(env, "NPSFLOW_REPLICATION_FACTOR", 1)
    isr = _int(env, "NPSFLOW_MIN_ISR", 0) if env.get("NPSFLOW_MIN_ISR") else None
    if isr is not None and isr > rf:
        raise ConfigError(f"NPSFLOW_MIN_ISR ({isr}) must not exceed NPSFLOW_REPLICATION_FACTOR ({rf}): "
                          "every acks=all write would be refused")
    name = (env.get("NPSFLOW_WORKER_NAME") or "").strip() or None
    if name is not None and not _WORKER_NAME.match(name):
        raise ConfigError(f"NPSFLOW_WORKER_NAME must be lowercase letters, digits, - or _ (max 41), got {name!r}")
    return {"replication_factor": rf, "min_isr": isr, "worker_name": name}


def load(env: dict | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    home = Path(env.get("NPSFLOW_HOME") or ".npsflow").resolve()
    dsn = env.get("NPSFLOW_CLICKHOUSE_DSN") or f"chdb://{home / 'clickhouse'}"
    if not dsn.startswith(("chdb://", "http://", "https://")):
        raise ConfigError(f"NPSFLOW_CLICKHOUSE_DSN must start with chdb://, http:// or https://, "
                          f"got {redact_dsn(dsn)!r}")
    try:
        kafka_security = kafka_security_from_env(env)
    except KafkaSecurityError as exc:
        raise ConfigError(str(exc)) from None
    ch_files = {}
    for name in ("NPSFLOW_CLICKHOUSE_PASSWORD_FILE", "NPSFLOW_CLICKHOUSE_CA_FILE"):
        if env.get(name):
            path = Path(env[name]).expanduser().resolve()
            if not path.is_file() or not os.access(path, os.R_OK):
                raise ConfigError(f"{name}: no readable file {env[name]}")
            if dsn.startswith("chdb://"):
                raise ConfigError(f"{name} is for a ClickHouse server (http(s):// DSN), not embedded chDB")
            ch_files[name] = path
    if ch_files.get("NPSFLOW_CLICKHOUSE_CA_FILE") and not dsn.startswith("https://"):
        raise ConfigError("NPSFLOW_CLICKHOUSE_CA_FILE needs an https:// NPSFLOW_CLICKHOUSE_DSN")
    if ch_files.get("NPSFLOW_CLICKHOUSE_PASSWORD_FILE"):
        from urllib.parse import urlsplit

        if urlsplit(dsn).password:
            raise ConfigError("NPSFLOW_CLICKHOUSE_DSN has a password and NPSFLOW_CLICKHOUSE_PASSWORD_FILE is set: "
                              "keep only one")
    try:
        windows = tuple(WindowSpec.parse(w) for w in (env.get("NPSFLOW_WINDOWS") or "24h,7d,30d").split(","))
        lateness = parse_duration(env.get("NPSFLOW_LATENESS") or "6h")
        retention = parse_duration(env.get("NPSFLOW_DEDUP_RETENTION") or "90d")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    names = [w.name for w in windows]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ConfigError(f"NPSFLOW_WINDOWS lists {', '.join(duplicated)} more than once")
    if any(w.seconds % 3600 for w in windows):
        raise ConfigError("NPSFLOW_WINDOWS must be whole hours (the windows are built from hourly buckets)")
    if retention < max(w.seconds for w in windows) + lateness:
        raise ConfigError("NPSFLOW_DEDUP_RETENTION must be at least the largest window plus the lateness")
    dims = tuple(d.strip() for d in (env.get("NPSFLOW_DIMENSIONS") or "overall,location,employee,channel").split(",")
                 if d.strip())
    if not dims:
        raise ConfigError("NPSFLOW_DIMENSIONS must name at least one dimension, e.g. overall,location")
    from sinks.queries import validate_dimension  # the read side's rule: a window dimension must be queryable

    for dim in dims:
        try:
            validate_dimension(dim)
        except ValueError as exc:
            raise ConfigError(f"NPSFLOW_DIMENSIONS: {exc}") from None
    if len(set(dims)) != len(dims):
        raise ConfigError(f"NPSFLOW_DIMENSIONS lists a dimension twice: {','.join(dims)}")
    raw_age = env.get("NPSFLOW_SINK_MAX_AGE")
    try:
        max_age = float(raw_age) if raw_age not in (None, "") else 1.0
    except ValueError:
        raise ConfigError(f"NPSFLOW_SINK_MAX_AGE must be a number of seconds, got {raw_age!r}") from None
    if not math.isfinite(max_age) or max_age <= 0:
        raise ConfigError(f"NPSFLOW_SINK_MAX_AGE must be a finite number of seconds > 0, got {raw_age!r}")
    namespace = env.get("NPSFLOW_NAMESPACE") or "npsflow"
    if not _NAMESPACE.match(namespace):
        raise ConfigError(f"NPSFLOW_NAMESPACE must be letters, digits, - or _ (max 41), got {namespace!r}")
    secret, secret_file = _secret(env)
    survey_url = env.get("NPSFLOW_SURVEY_URL") or None
    if survey_url is not None and not re.match(r"^https?://[^/\s]+", survey_url):
        raise ConfigError(f"NPSFLOW_SURVEY_URL must be an http(s) URL, got {survey_url!r}")
    try:
        link_ttl = parse_duration(env.get("NPSFLOW_LINK_TTL") or "30d")
    except ValueError as exc:
        raise ConfigError(f"NPSFLOW_LINK_TTL: {exc}") from None
    try:
        edit_window = parse_duration(env.get("NPSFLOW_EDIT_WINDOW") or "24h")
    except ValueError as exc:
        raise ConfigError(f"NPSFLOW_EDIT_WINDOW: {exc}") from None
    raw_rate = env.get("NPSFLOW_PAGE_RATE") or "1"
    try:
        page_rate = float(raw_rate)
    except ValueError:
        raise ConfigError(f"NPSFLOW_PAGE_RATE must be requests per second, got {raw_rate!r}") from None
    if not math.isfinite(page_rate) or page_rate <= 0:
        raise ConfigError(f"NPSFLOW_PAGE_RATE must be a positive number, got {raw_rate!r}")
    proxies = tuple(p.strip() for p in (env.get("NPSFLOW_TRUSTED_PROXIES") or "").split(",") if p.strip())
    for proxy in proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(f"NPSFLOW_TRUSTED_PROXIES: {proxy!r} is not an IP address or network "
                              "(e.g. 10.0.0.7 or 10.42.0.0/16)") from None
    retention_days = None
    if env.get("NPSFLOW_RETENTION"):
        try:
            seconds = parse_duration(env["NPSFLOW_RETENTION"])
        except ValueError as exc:
            raise ConfigError(f"NPSFLOW_RETENTION: {exc}") from None
        if seconds % 86400:
            raise ConfigError(f"NPSFLOW_RETENTION must be whole days (e.g. 730d), got {env['NPSFLOW_RETENTION']!r}")
        retention_days = seconds // 86400
        if retention_days > 36_500:
            raise ConfigError(f"NPSFLOW_RETENTION must be at most 36500d (100 years; unset keeps rows forever), "
                              f"got {env['NPSFLOW_RETENTION']!r}")
    if link_ttl <= 0:
        raise ConfigError("NPSFLOW_LINK_TTL must be positive")
    files = {}
    for name in ("NPSFLOW_PROGRAMS", "NPSFLOW_CHANNELS", "NPSFLOW_THEMES", "NPSFLOW_CASES"):
        raw = env.get(name)
        if raw:
            path = Path(raw).expanduser().resolve()
            if not path.is_file():
                raise ConfigError(f"{name}: no such file: {raw}")
            files[name] = path
    return Settings(
        home=home,
        kafka=env.get("NPSFLOW_KAFKA") or None,
        clickhouse_dsn=dsn,
        partitions=_int(env, "NPSFLOW_PARTITIONS", 6),
        windows=windows,
        lateness_seconds=lateness,
        dedup_retention_seconds=retention,
        dimensions=dims,
        sink_max_rows=_int(env, "NPSFLOW_SINK_MAX_ROWS", 5000),
        sink_max_age=max_age,
        role=_role(env),
        **_listeners(env),
        topics=Topics(namespace),
        programs_file=files.get("NPSFLOW_PROGRAMS"),
        channels_file=files.get("NPSFLOW_CHANNELS"),
        themes_file=files.get("NPSFLOW_THEMES"),
        cases_file=files.get("NPSFLOW_CASES"),
        secret_value=secret,
        secret_file=secret_file,
        survey_url=survey_url,
        link_ttl_seconds=link_ttl,
        edit_window_seconds=edit_window,
        page_rate=page_rate,
        trusted_proxies=proxies,
        retention_days=retention_days,
        allowed_hosts=tuple(h.strip() for h in (env.get("NPSFLOW_ALLOWED_HOSTS") or "").split(",") if h.strip()),
        **_replication(env),
        kafka_security=kafka_security,
        clickhouse_password_file=ch_files.get("NPSFLOW_CLICKHOUSE_PASSWORD_FILE"),
        clickhouse_ca_file=ch_files.get("NPSFLOW_CLICKHOUSE_CA_FILE"),
        ready_max_lag=_int(env, "NPSFLOW_READY_MAX_LAG", 100_000),
        ready_grace_seconds=_int(env, "NPSFLOW_READY_GRACE", 60),
        faults_file=Path(env["NPSFLOW_FAULTS_FILE"]).expanduser().resolve() if env.get("NPSFLOW_FAULTS_FILE") else None,
    )
