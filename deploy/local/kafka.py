"""A real, single-node Apache Kafka broker (KRaft combined mode) for local runs and tests.

No Docker and no Kafka distribution tarball: the broker jars are fetched from Maven Central
with Maven (``deploy/local/pom.xml``) into a per-version cache, and the broker is run as a
detached JVM (``kafka.Kafka``) whose config, logs and data live in a caller-chosen state dir.

Public API (the CLI builds on these)::

    KAFKA_VERSION                                  # str, read from pom.xml
    KafkaStackError                                # raised with a one-line message
    cache_dir() -> Path                            # $NPSFLOW_CACHE or ~/.cache/npsflow
    jars_dir(version=KAFKA_VERSION) -> Path        # <cache>/kafka/<version>/libs
    ensure_jars() -> Path                          # fetch once, atomically
    LocalKafka(state_dir, sasl_ssl=None)           # sasl_ssl: SaslSslListener, an extra SCRAM-over-TLS listener
        .start(timeout=90) -> str                  # "127.0.0.1:PORT" (the PLAINTEXT listener)
        .secure_bootstrap -> str | None            # "127.0.0.1:PORT" of the SASL_SSL listener, if configured
        .stop(timeout=30) -> None                  # idempotent, kills the process group
        .status() -> dict                          # running, pid, bootstrap, version, ...
        .is_running() -> bool
        .bootstrap -> str | None
        .log_path -> Path
    create_topics(bootstrap, {name: partitions}, replication=1, configs=None, client=None) -> list[str] (created)
                                                   # client: kafka-python security kwargs (SASL/TLS)
    LocalKafkaCluster(state_dir, size=3)           # size KRaft voters, each broker+controller
        .start(timeout=180) -> str                 # "127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3"
        .stop() / .status() / .is_running() / .bootstrap
        .stop_node(node_id) / .start_node(node_id) # one node (fault tests)
    local_kafka(state_dir, brokers=None)           # whichever of the two the directory holds

Restart and ports: the controller quorum is *static* (``controller.quorum.voters``), so the
formatted metadata does not record the controller endpoint and the storage is formatted only
once (when ``<state>/data/meta.properties`` is missing). The chosen ports are persisted in
``state.json`` and reused on the next start when they are still free; otherwise new ports are
picked and the existing storage keeps working without reformatting.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections import deque
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "KAFKA_VERSION",
    "KafkaStackError",
    "LocalKafka",
    "LocalKafkaCluster",
    "SaslSslListener",
    "cache_dir",
    "create_topics",
    "ensure_jars",
    "jars_dir",
    "local_kafka",
]

log = logging.getLogger(__name__)

POM_PATH = Path(__file__).with_name("pom.xml")
_MARKER = ".npsflow-complete.json"
_HOST = "127.0.0.1"
_HEAP = os.environ.get("NPSFLOW_KAFKA_HEAP", "512m")


class KafkaStackError(RuntimeError):
    """Anything that prevents the local Kafka stack from working. ``str(e)`` starts with a
    one-line summary; a broker-log tail may follow on the next lines."""


def _read_pom_version(pom: Path = POM_PATH) -> str:
    root = ET.parse(pom).getroot()
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = root.find("m:properties/m:kafka.version", ns)
    if node is None:  # pom without the default namespace
        node = root.find("properties/kafka.version")
    if node is None or not (node.text or "").strip():
        raise KafkaStackError(f"{pom}: <properties><kafka.version> is missing")
    return node.text.strip()


KAFKA_VERSION: str = _read_pom_version()


# --------------------------------------------------------------------------- jars


def cache_dir() -> Path:
    return Path(os.environ.get("NPSFLOW_CACHE") or Path.home() / ".cache" / "npsflow").expanduser()


def jars_dir(version: str = KAFKA_VERSION) -> Path:
    return cache_dir() / "kafka" / version / "libs"


def _pom_digest() -> str:
    return hashlib.sha256(POM_PATH.read_bytes()).hexdigest()


def _cache_complete(libs: Path) -> bool:
    marker = libs / _MARKER
    try:
        meta = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    if meta.get("pom_sha256") != _pom_digest() or meta.get("version") != KAFKA_VERSION:
        return False
    files = meta.get("files") or []
    return bool(files) and all((libs / f).is_file() for f in files)


def _tool(name: str) -> str:
    if name == "java" and os.environ.get("JAVA_HOME"):
        cand = Path(os.environ["JAVA_HOME"]) / "bin" / "java"
        if cand.is_file():
            return str(cand)
    path = shutil.which(name)
    if not path:
        hint = "install a JDK 17+ (or set JAVA_HOME)" if name == "java" else "install Apache Maven 3.6+"
        raise KafkaStackError(f"'{name}' not found on PATH: {hint}")
    return path


def _one_line(text: str, limit: int = 300) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", text or "")
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    errs = [ln for ln in lines if "ERROR" in ln or "Exception" in ln or "error" in ln]
    pick = (errs or lines or ["(no output)"])[0]
    return pick[:limit]


def ensure_jars() -> Path:
    """Return the directory holding the broker's runtime jars, fetching them with Maven if the
    cache is missing or incomplete. The fetch goes to a temp dir that is renamed into place
    only after Maven succeeded, so an interrupted run never leaves a half-filled cache."""
    libs = jars_dir()
    if _cache_complete(libs):
        return libs
    libs.parent.mkdir(parents=True, exist_ok=True)
    with open(libs.parent / ".lock", "w") as lockf:
        fcntl.flock(lockf, fcntl.LOCK_EX)  # another process may be fetching the same version
        if _cache_complete(libs):
            return libs
        for stale in libs.parent.glob(".libs.*-*"):  # leftovers of interrupted fetches (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        mvn = _tool("mvn")
        tmp = libs.parent / f".libs.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        cmd = [
            mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(POM_PATH),
            f"-Dkafka.version={KAFKA_VERSION}",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp}",
            "-DincludeScope=runtime",
        ]
        log.info("fetching Apache Kafka %s jars into %s", KAFKA_VERSION, libs)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            shutil.rmtree(tmp, ignore_errors=True)
            raise KafkaStackError("maven timed out fetching the Kafka jars (15 min)") from None
        files = sorted(p.name for p in tmp.glob("*.jar")) if tmp.is_dir() else []
        if proc.returncode != 0 or not any(f.startswith(f"kafka_2.13-{KAFKA_VERSION}") for f in files):
            shutil.rmtree(tmp, ignore_errors=True)
            raise KafkaStackError(
                f"maven failed to fetch Kafka {KAFKA_VERSION} jars (rc={proc.returncode}): "
                + _one_line(proc.stdout + "\n" + proc.stderr)
            )
        (tmp / _MARKER).write_text(json.dumps(
            {"version": KAFKA_VERSION, "pom_sha256": _pom_digest(), "files": files,
             "fetched_at": time.time()}, indent=1))
        if libs.exists():  # stale or incomplete cache: move aside, then drop
            trash = libs.parent / f".libs.old-{uuid.uuid4().hex[:8]}"
            libs.rename(trash)
            shutil.rmtree(trash, ignore_errors=True)
        tmp.rename(libs)
        return libs


def _java_check(java: str) -> None:
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise KafkaStackError(f"cannot run {java} -version: {e}") from None
    text = out.stderr + out.stdout
    major = None
    for tok in text.split():
        tok = tok.strip('"')
        if tok[:1].isdigit() and "." in tok or tok.isdigit():
            head = tok.split(".")[0]
            major = int(head) if head != "1" else int(tok.split(".")[1])
            break
    if out.returncode != 0 or major is None:
        raise KafkaStackError(f"{java} -version failed: {_one_line(text)}")
    if major < 17:
        raise KafkaStackError(f"Kafka {KAFKA_VERSION} needs Java 17+, but {java} is Java {major}")


# --------------------------------------------------------------------------- process helpers


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((_HOST, 0))
        return s.getsockname()[1]


def _port_free(port: int) -> bool:
    """Nothing listens on ``port`` (the JVM could bind it). With SO_REUSEADDR, as the JVM binds on Linux: right after
    a broker stopped, its port still has connections in TIME_WAIT; without the flag this check failed and a restart
    moved the broker to a new port, which clients that know the old one never find (tests/test_faults.py)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((_HOST, port))
        except OSError:
            return False
        return True


def _port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((_HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own exited child
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        with contextlib.suppress(OSError, IndexError):
            if stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return False
    return True


def _cmdline(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None


def _tail(path: Path, n: int = 40) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(deque(f, maxlen=n)).rstrip()
    except OSError:
        return "(no broker log)"


_LOG4J2 = """<?xml version="1.0" encoding="UTF-8"?>
<!-- written by deploy/local/kafka.py; the JVM's stdout is redirected to broker.log -->
<Configuration status="WARN">
  <Appenders>
    <Console name="STDOUT" target="SYSTEM_OUT">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Logger name="kafka" level="INFO"/>
    <Logger name="org.apache.kafka" level="INFO"/>
    <!-- per-partition / per-config chatter -->
    <Logger name="org.apache.kafka.common.config.AbstractConfig" level="WARN"/>
    <Logger name="kafka.server.KafkaConfig" level="WARN"/>
    <Logger name="kafka.cluster.Partition" level="WARN"/>
    <Logger name="org.apache.kafka.storage.internals.log" level="WARN"/>
    <Logger name="org.apache.kafka.coordinator.common.runtime.CoordinatorRuntime" level="WARN"/>
    <Logger name="org.apache.kafka.controller.ReplicationControlManager" level="WARN"/>
    <Logger name="state.change.logger" level="WARN"/>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Root level="WARN"><AppenderRef ref="STDOUT"/></Root>
  </Loggers>
</Configuration>
"""


# --------------------------------------------------------------------------- broker


def new_cluster_id() -> str:
    """A Kafka cluster id: a base64url UUID without padding (22 chars). It must not start with '-': the
    storage tool's argument parser would take it for an option ("-t: expected one argument")."""
    import base64

    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if candidate[0] not in "-_":
            return candidate


@dataclass(frozen=True)
class SaslSslListener:
    """An extra listener ``SASL_SSL://127.0.0.1:<port>`` with SCRAM-SHA-512 (the PLAINTEXT listener, the controller
    and inter-broker traffic stay as they are). ``server_key`` (unencrypted PKCS#8 PEM) and ``server_chain`` (PEM
    certificate chain) are written inline into server.properties (mode 0600; Kafka's PEM key *files* require an
    encrypted key). With ``client_ca`` (PEM), clients must present a certificate it signed (mTLS).
    ``scram_users`` ((name, password), …) are created when the storage is formatted — i.e. only on the first start
    of a state dir (``kafka-storage format --add-scram``: their passwords are on that one command line of the
    local, throw-away broker)."""

    server_key: Path
    server_chain: Path
    client_ca: Path | None = None
    scram_users: tuple[tuple[str, str], ...] = ()

    def properties(self, port: int) -> dict[str, str]:
        def inline(path: Path) -> str:
            return Path(path).read_text().strip().replace("\r", "").replace("\n", "\\n")

        props = {
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "listener.name.sasl_ssl.ssl.keystore.type": "PEM",
            "listener.name.sasl_ssl.ssl.keystore.certificate.chain": inline(self.server_chain),
            "listener.name.sasl_ssl.ssl.keystore.key": inline(self.server_key),
        }
        if self.client_ca is not None:
            props.update({"listener.name.sasl_ssl.ssl.truststore.type": "PEM",
                          "listener.name.sasl_ssl.ssl.truststore.location": str(Path(self.client_ca).resolve()),
                          "listener.name.sasl_ssl.ssl.client.auth": "required"})
        return props


class LocalKafka:
    """One broker+controller JVM whose files all live under ``state_dir``:

    ``state.json`` (pid, ports, bootstrap, version, cluster id), ``server.properties``,
    ``log4j2.xml``, ``broker.log`` (previous run: ``broker.log.1``) and ``data/`` (log dirs and
    KRaft metadata). Delete the directory (after ``stop()``) to start from scratch.
    """

    #: replication of the internal topics and the broker defaults; a cluster node (LocalKafkaCluster) raises them
    REPLICATION = 1
    MIN_ISR = 1

    def __init__(self, state_dir: Path | str, sasl_ssl: SaslSslListener | None = None, *,
                 node_id: int = 1, heap: str | None = None):
        self.node_id = node_id
        self.heap = heap or _HEAP
        self.sasl_ssl = sasl_ssl
        self.state_dir = Path(state_dir).expanduser().resolve()
        self.data_dir = self.state_dir / "data"
        self.state_path = self.state_dir / "state.json"
        self.props_path = self.state_dir / "server.properties"
        self.log4j_path = self.state_dir / "log4j2.xml"
        self.log_path = self.state_dir / "broker.log"
        self._proc: subprocess.Popen | None = None

    # ---- state file
    def _load(self) -> dict:
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}

    def _save(self, state: dict) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
        tmp.replace(self.state_path)

    def _our_pid(self, pid: int | None) -> bool:
        """pid is alive and (where /proc exists) really is this state dir's broker."""
        if not _pid_alive(pid):
            return False
        cmd = _cmdline(pid)
        return cmd is None or ("kafka.Kafka" in cmd and str(self.props_path) in cmd)

    # ---- queries
    @property
    def bootstrap(self) -> str | None:
        st = self._load()
        return st.get("bootstrap") if self._our_pid(st.get("pid")) else None

    @property
    def secure_bootstrap(self) -> str | None:
        """``127.0.0.1:PORT`` of the SASL_SSL listener while the broker runs (None without one)."""
        st = self._load()
        return st.get("sasl_ssl_bootstrap") if self._our_pid(st.get("pid")) else None

    def is_running(self) -> bool:
        return self._our_pid(self._load().get("pid"))

    def status(self) -> dict:
        st = self._load()
        running = self._our_pid(st.get("pid"))
        return {
            "running": running,
            "pid": st.get("pid") if running else None,
            "bootstrap": st.get("bootstrap") if running else None,
            "version": st.get("version", KAFKA_VERSION),
            "broker_port": st.get("broker_port"),
            "controller_port": st.get("controller_port"),
            **({"sasl_ssl_bootstrap": st.get("sasl_ssl_bootstrap") if running else None} if self.sasl_ssl else {}),
            "cluster_id": st.get("cluster_id"),
            "state_dir": str(self.state_dir),
            "log": str(self.log_path),
        }

    # ---- lifecycle
    def start(self, timeout: float = 90, wait: bool = True) -> str:
        """Start the broker (or return the bootstrap of the one already running for this
        state dir) and block until it answers a metadata request and lists itself unfenced.
        ``wait=False`` returns once the JVM is launched (a cluster starts every voter first:
        none can register before a majority of the quorum runs)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / ".start.lock", "w") as lockf:
            fcntl.flock(lockf, fcntl.LOCK_EX)  # two concurrent `start`s must not launch two JVMs
            return self._start_locked(timeout, wait)

    def _start_locked(self, timeout: float, wait: bool = True) -> str:
        t0 = time.monotonic()
        st = self._load()
        if self._our_pid(st.get("pid")):
            if not wait or _broker_answers(st["bootstrap"], 5.0, self.node_id):
                return st["bootstrap"]
            self.stop()  # alive but wedged
            st = self._load()

        java = _tool("java")
        _java_check(java)
        libs = ensure_jars()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log4j_path.write_text(_LOG4J2)
        cluster_id = self._cluster_id(st)

        last_err: KafkaStackError | None = None
        for attempt in range(3):  # a picked port can be grabbed by someone else meanwhile
            bport, cport = self._pick_ports(st if attempt == 0 else {})
            sport = None
            if self.sasl_ssl is not None:
                sport = st.get("sasl_ssl_port") if attempt == 0 else None
                if not sport or not _port_free(sport) or sport in (bport, cport):
                    sport = _free_port()
                    while sport in (bport, cport):
                        sport = _free_port()
            self._sport = sport
            self._write_props(bport, cport)
            self._format_once(java, libs, cluster_id)
            bootstrap = f"{_HOST}:{bport}"
            try:
                self._launch(java, libs, bootstrap, bport, cport, cluster_id)
                if wait:
                    self.wait_ready(deadline=t0 + timeout)
                    log.info("kafka %s node %s up at %s in %.1fs", KAFKA_VERSION, self.node_id, bootstrap,
                             time.monotonic() - t0)
                return bootstrap
            except KafkaStackError as e:
                last_err = e
                if "Address already in use" not in _tail(self.log_path, 200) or time.monotonic() > t0 + timeout:
                    raise
        assert last_err is not None
        raise last_err

    def _cluster_id(self, st: dict) -> str:
        meta = self.data_dir / "meta.properties"
        if meta.is_file():  # formatted storage wins over whatever state.json says
            for line in meta.read_text().splitlines():
                if line.startswith("cluster.id="):
                    return line.split("=", 1)[1].strip()
        if st.get("cluster_id"):
            return st["cluster_id"]
        return new_cluster_id()

    @staticmethod
    def _pick_ports(st: dict) -> tuple[int, int]:
        b, c = st.get("broker_port"), st.get("controller_port")
        if b and c and b != c and _port_free(b) and _port_free(c):
            return b, c
        b = _free_port()
        c = _free_port()
        while c == b:
            c = _free_port()
        return b, c

    def _voters(self, cport: int) -> str:
        """``controller.quorum.voters``: this node alone (a cluster node names every voter)."""
        return f"{self.node_id}@{_HOST}:{cport}"

    def _replication_props(self) -> dict[str, str]:
        rf, isr = str(self.REPLICATION), str(self.MIN_ISR)
        return {
            "default.replication.factor": rf,
            "offsets.topic.replication.factor": rf,
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": isr,
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": isr,
            "min.insync.replicas": isr,
        }

    def _write_props(self, bport: int, cport: int) -> None:
        self._bport, self._cport = bport, cport
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            # static quorum: voters come from this file on every start, not from the formatted
            # metadata, so a restart may use different ports without reformatting.
            "controller.quorum.voters": self._voters(cport),
            "listeners": f"PLAINTEXT://{_HOST}:{bport},CONTROLLER://{_HOST}:{cport}",
            "advertised.listeners": f"PLAINTEXT://{_HOST}:{bport}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            **self._secure_props(),
            "log.dirs": str(self.data_dir),
            "num.partitions": "6",
            "auto.create.topics.enable": "false",
            "offsets.topic.num.partitions": "6",
            "transaction.state.log.num.partitions": "6",
            **self._replication_props(),
            "group.initial.rebalance.delay.ms": "0",
            "num.recovery.threads.per.data.dir": "1",
            "log.flush.interval.messages": "9223372036854775807",
        }
        body = "# written by deploy/local/kafka.py on every start\n"
        body += "".join(f"{k}={v}\n" for k, v in props.items())
        fd = os.open(self.props_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # may hold a TLS key
        with os.fdopen(fd, "w") as f:
            f.write(body)
        os.chmod(self.props_path, 0o600)

    def _secure_props(self) -> dict[str, str]:
        sport = getattr(self, "_sport", None)
        if self.sasl_ssl is None or not sport:
            return {}
        return {
            "listeners": f"PLAINTEXT://{_HOST}:{self._bport},CONTROLLER://{_HOST}:{self._cport},"
                         f"SASL_SSL://{_HOST}:{sport}",
            "advertised.listeners": f"PLAINTEXT://{_HOST}:{self._bport},SASL_SSL://{_HOST}:{sport}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
            **self.sasl_ssl.properties(sport),
        }

    def _format_once(self, java: str, libs: Path, cluster_id: str) -> None:
        if (self.data_dir / "meta.properties").is_file():
            return
        cmd = [java, "-Xmx256m", f"-Dlog4j2.configurationFile={self.log4j_path}",
               "-cp", f"{libs}/*", "kafka.tools.StorageTool",
               "format", "-t", cluster_id, "-c", str(self.props_path)]
        for user, password in (self.sasl_ssl.scram_users if self.sasl_ssl else ()):
            cmd += ["--add-scram", f"SCRAM-SHA-512=[name={user},password={password}]"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise KafkaStackError(
                f"kafka storage format failed (rc={proc.returncode}): "
                + _one_line(proc.stderr + "\n" + proc.stdout))

    def _launch(self, java, libs, bootstrap, bport, cport, cluster_id) -> None:
        if self.log_path.exists():
            self.log_path.replace(self.log_path.with_name("broker.log.1"))
        cmd = [
            java, f"-Xmx{self.heap}", "-Xms128m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.log4j_path}",
            "-Dlog4j2.shutdownHookEnabled=false",  # Kafka shuts down itself; avoids a noisy warning
            f"-Dkafka.logs.dir={self.state_dir}",
            "-cp", f"{libs}/*", "kafka.Kafka", str(self.props_path),
        ]
        with open(self.log_path, "ab") as logf:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                    cwd=self.state_dir, start_new_session=True, close_fds=True)
        self._proc = proc
        self._save({
            "pid": proc.pid, "broker_port": bport, "controller_port": cport, "bootstrap": bootstrap,
            "version": KAFKA_VERSION, "cluster_id": cluster_id, "started_at": time.time(),
            "libs": str(libs), "node_id": self.node_id,
            **({"sasl_ssl_port": self._sport, "sasl_ssl_bootstrap": f"{_HOST}:{self._sport}"}
               if self.sasl_ssl is not None else {}),
        })

    def _exited(self) -> int | None:
        """The JVM's exit code if it has exited (None while it runs or when it is not our child)."""
        if self._proc is not None:
            return self._proc.poll()
        return None if self.is_running() else -1

    def wait_ready(self, deadline: float, leaders: bool = True) -> None:
        """Block until this node answers a metadata request and lists itself registered and unfenced
        (then, with ``leaders``, until every partition has a leader: after a restart partitions are
        leaderless until the broker re-registers); on a timeout the JVM is stopped."""
        st = self._load()
        bootstrap, bport = st.get("bootstrap"), st.get("broker_port")
        while True:
            rc = self._exited()
            if rc is not None:
                raise KafkaStackError(
                    f"kafka broker (node {self.node_id}) exited during startup (rc={rc}); see {self.log_path}\n"
                    + _tail(self.log_path))
            if _port_open(bport) and _broker_answers(bootstrap, 5.0, self.node_id):
                if leaders:
                    _wait_leaders(bootstrap, min(deadline, time.monotonic() + 15))
                return
            if time.monotonic() > deadline:
                tail = _tail(self.log_path)
                self.stop()
                raise KafkaStackError(
                    f"kafka broker did not answer on {bootstrap} in time; see {self.log_path}\n" + tail)
            time.sleep(0.25)

    def controller_listening(self) -> bool:
        """The JVM has bound its controller port (it is past class loading: the next voter may start)."""
        port = self._load().get("controller_port")
        return bool(port) and _port_open(port)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM the broker's process group (clean shutdown), SIGKILL after ``timeout``.
        Safe to call when nothing is running."""
        st = self._load()
        pid = st.get("pid")
        if pid and self._our_pid(pid):
            self._signal(pid, signal.SIGTERM)
            end = time.monotonic() + timeout
            while time.monotonic() < end and _pid_alive(pid):
                time.sleep(0.1)
            if _pid_alive(pid):
                log.warning("kafka pid %s ignored SIGTERM for %ss; killing", pid, timeout)
                self._signal(pid, signal.SIGKILL)
                end = time.monotonic() + 10
                while time.monotonic() < end and _pid_alive(pid):
                    time.sleep(0.05)
            if _pid_alive(pid):
                raise KafkaStackError(f"kafka pid {pid} survived SIGKILL")
        if self._proc is not None:
            with contextlib.suppress(Exception):
                self._proc.wait(timeout=1)
            self._proc = None
        if st.get("pid") is not None:
            st["pid"] = None
            st["bootstrap"] = None
            st["stopped_at"] = time.time()
            self._save(st)

    @staticmethod
    def _signal(pid: int, sig: int) -> None:
        try:
            if os.getpgid(pid) == pid:  # we started it as a session/group leader
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass


# --------------------------------------------------------------------------- cluster


class _ClusterNode(LocalKafka):
    """One voter of a LocalKafkaCluster: its ports and the quorum come from the cluster's ``cluster.json``."""

    REPLICATION = 3
    MIN_ISR = 2

    def __init__(self, cluster: "LocalKafkaCluster", node_id: int):
        super().__init__(cluster.state_dir / f"node-{node_id}", node_id=node_id, heap=cluster.heap)
        self.cluster = cluster
        self.REPLICATION = min(3, cluster.size)
        self.MIN_ISR = max(1, self.REPLICATION - 1)

    def _voters(self, cport: int) -> str:
        return self.cluster.voters()

    def _pick_ports(self, st: dict) -> tuple[int, int]:
        ports = self.cluster.ports()[self.node_id]
        return ports["broker_port"], ports["controller_port"]

    def _cluster_id(self, st: dict) -> str:
        formatted = super()._cluster_id({})
        wanted = self.cluster.cluster_id()
        if (self.data_dir / "meta.properties").is_file() and formatted != wanted:
            raise KafkaStackError(f"{self.data_dir} was formatted for cluster {formatted}, not {wanted}: "
                                  f"remove {self.cluster.state_dir} (after `stop`) to start afresh")
        return wanted


class LocalKafkaCluster:
    """``size`` combined broker+controller JVMs from the same jars on 127.0.0.1: a static quorum of
    ``size`` voters, one cluster id, each node its own state dir (``<state_dir>/node-<id>``: ports,
    ``server.properties``, ``broker.log``, ``data/``), small heaps (``NPSFLOW_KAFKA_CLUSTER_HEAP``,
    default 256m). Internal topics and the broker defaults get replication ``min(3, size)`` and
    ``min.insync.replicas`` one less. ``<state_dir>/cluster.json`` holds the cluster id and the
    ports of every node (kept while any node runs: the voters know each other by them).
    """

    def __init__(self, state_dir: Path | str, size: int | None = None, heap: str | None = None):
        self.state_dir = Path(state_dir).expanduser().resolve()
        self.path = self.state_dir / "cluster.json"
        saved = self._load().get("size")
        if size is not None and saved and size != saved:
            raise KafkaStackError(f"the local Kafka cluster in {self.state_dir} has {saved} nodes, not {size}: "
                                  "stop it and remove the directory to change its size")
        self.size = int(size or saved or 3)
        if self.size < 1:
            raise KafkaStackError("a cluster needs at least one node")
        self.heap = heap or os.environ.get("NPSFLOW_KAFKA_CLUSTER_HEAP", "256m")
        self.nodes = [_ClusterNode(self, i) for i in range(1, self.size + 1)]

    # ---- cluster.json
    def _load(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def _save(self, state: dict) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
        tmp.replace(self.path)

    def cluster_id(self) -> str:
        return self._load()["cluster_id"]

    def ports(self) -> dict[int, dict]:
        return {int(k): v for k, v in self._load()["nodes"].items()}

    def voters(self) -> str:
        return ",".join(f"{i}@{_HOST}:{p['controller_port']}" for i, p in sorted(self.ports().items()))

    def node(self, node_id: int) -> LocalKafka:
        if not 1 <= node_id <= self.size:
            raise KafkaStackError(f"no node {node_id}: the cluster has nodes 1-{self.size}")
        return self.nodes[node_id - 1]

    def _plan(self) -> None:
        """Write cluster.json: the cluster id (once) and every node's ports. The persisted ports are
        reused when all are free; with no node running, a taken one makes a new set (the quorum is
        static, so only the files name the voters)."""
        st = self._load()
        st.setdefault("cluster_id", new_cluster_id())
        st["size"] = self.size
        old = st.get("nodes") or {}
        keep = len(old) == self.size and all(
            _port_free(p["broker_port"]) and _port_free(p["controller_port"]) for p in old.values())
        if not keep:
            if any(n.is_running() for n in self.nodes):
                raise KafkaStackError(f"ports of the local Kafka cluster in {self.state_dir} are taken while "
                                      "some of its nodes run: stop it first")
            taken: set[int] = set()
            st["nodes"] = {str(i): {"broker_port": _fresh_port(taken), "controller_port": _fresh_port(taken)}
                           for i in range(1, self.size + 1)}
        self._save(st)

    # ---- queries
    @property
    def bootstrap(self) -> str | None:
        return self.status()["bootstrap"]

    def is_running(self) -> bool:
        return any(n.is_running() for n in self.nodes)

    def status(self) -> dict:
        nodes = [{"node_id": n.node_id, **n.status()} for n in self.nodes]
        running = any(n["running"] for n in nodes)
        ports = self._load().get("nodes") or {}
        return {
            "running": running,
            "nodes": nodes,
            # every node, also a stopped one: clients fall over to the others and find it again on its return
            "bootstrap": ",".join(f"{_HOST}:{p['broker_port']}" for _, p in sorted(ports.items(), key=lambda kv: int(kv[0])))
            if running else None,
            "version": KAFKA_VERSION,
            "cluster_id": self._load().get("cluster_id"),
            "size": self.size,
            "state_dir": str(self.state_dir),
        }

    # ---- lifecycle
    def start(self, timeout: float = 180) -> str:
        """Start every node that is not running, one JVM after another (the next once the previous one
        has bound its controller port), then wait until each is registered and unfenced and every
        partition has a leader. On failure every node is stopped again."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / ".start.lock", "w") as lockf:
            fcntl.flock(lockf, fcntl.LOCK_EX)
            deadline = time.monotonic() + timeout
            try:
                if not self.is_running():
                    self._plan()
                for node in self.nodes:
                    node.start(timeout=timeout, wait=False)
                    _wait_until(node.controller_listening, deadline, f"node {node.node_id}'s controller port",
                                node)
                for node in self.nodes:
                    node.wait_ready(deadline, leaders=False)
                bootstrap = self.status()["bootstrap"]
                _wait_leaders(bootstrap, min(deadline, time.monotonic() + 30))
                return bootstrap
            except BaseException:
                self.stop()
                raise

    def start_node(self, node_id: int, timeout: float = 90) -> str:
        """(Re)start one node (the others run): returns once it is registered and unfenced again."""
        return self.node(node_id).start(timeout=timeout)

    def stop_node(self, node_id: int, timeout: float = 30) -> None:
        """Stop one node cleanly (controlled shutdown: its leaderships move to the others first)."""
        self.node(node_id).stop(timeout=timeout)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM every node at once (a node stopped last alone would wait for a quorum that is gone),
        SIGKILL after ``timeout``. Safe to call when nothing runs."""
        errors = []
        running = [n for n in self.nodes if n.is_running()]
        for node in running:
            node._signal(node._load()["pid"], signal.SIGTERM)
        end = time.monotonic() + timeout
        while time.monotonic() < end and any(_pid_alive(n._load().get("pid")) for n in running):
            time.sleep(0.1)
        for node in self.nodes:
            try:
                node.stop(timeout=1)
            except KafkaStackError as e:
                errors.append(str(e))
        if errors:
            raise KafkaStackError("; ".join(errors))


def _fresh_port(taken: set[int]) -> int:
    while True:
        port = _free_port()
        if port not in taken:
            taken.add(port)
            return port


def _wait_until(predicate, deadline: float, what: str, node: LocalKafka) -> None:
    while not predicate():
        rc = node._exited()
        if rc is not None:
            raise KafkaStackError(f"kafka node {node.node_id} exited during startup (rc={rc}); see "
                                  f"{node.log_path}\n" + _tail(node.log_path))
        if time.monotonic() > deadline:
            raise KafkaStackError(f"timed out waiting for {what}; see {node.log_path}")
        time.sleep(0.1)


def local_kafka(state_dir: Path | str, brokers: int | None = None) -> "LocalKafka | LocalKafkaCluster":
    """The local Kafka in ``state_dir``: a LocalKafkaCluster when it holds one (``cluster.json``) or
    ``brokers`` > 1 asks for one, else the single-node LocalKafka. Asking for another size than the
    directory holds is an error (one line)."""
    state_dir = Path(state_dir).expanduser().resolve()
    is_cluster = (state_dir / "cluster.json").is_file()
    if brokers is not None and brokers > 1 or is_cluster:
        if brokers == 1:
            raise KafkaStackError(f"{state_dir} holds a local Kafka cluster, not a single broker: "
                                  "stop it and remove the directory to change its size")
        if LocalKafka(state_dir).is_running():
            raise KafkaStackError(f"a single local broker runs in {state_dir}: stop it before starting a cluster there")
        return LocalKafkaCluster(state_dir, brokers)
    if brokers is not None and brokers < 1:
        raise KafkaStackError("--brokers must be at least 1")
    return LocalKafka(state_dir)


# --------------------------------------------------------------------------- clients


@contextlib.contextmanager
def _quiet_kafka_logs():
    """kafka-python logs every refused connection at WARNING/ERROR while we poll a booting broker."""
    lg = logging.getLogger("kafka")
    old = lg.level
    lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        lg.setLevel(old)


def _admin(bootstrap: str, timeout: float, client: dict | None = None):
    from kafka.admin import KafkaAdminClient

    ms = int(timeout * 1000)
    return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="npsflow-local",
                            request_timeout_ms=max(ms, 1000), bootstrap_timeout_ms=max(ms, 1000),
                            **(client or {}))


def _broker_answers(bootstrap: str, timeout: float, node_id: int | None = None) -> bool:
    """True when the broker answers a metadata request and lists a registered, unfenced broker
    (``node_id``: that one)."""
    from kafka.errors import KafkaConfigurationError

    admin = None
    with _quiet_kafka_logs():
        try:
            admin = _admin(bootstrap, timeout)
            brokers = admin.describe_cluster().get("brokers") or []
            return any(not b.get("is_fenced") and node_id in (None, b.get("broker_id")) for b in brokers)
        except KafkaConfigurationError:
            raise  # a bug here, not a booting broker
        except Exception as e:  # NoBrokersAvailable, timeouts, connection resets while booting
            log.debug("broker %s not answering yet: %r", bootstrap, e)
            return False
        finally:
            if admin is not None:
                with contextlib.suppress(Exception):
                    admin.close()


def _wait_leaders(bootstrap: str, deadline: float) -> None:
    admin = None
    with _quiet_kafka_logs():
        try:
            admin = _admin(bootstrap, 5.0)
            while time.monotonic() < deadline:
                names = list(admin.list_topics())
                if not names or len(_partition_counts(admin, names, require_leaders=True)) == len(names):
                    return
                time.sleep(0.2)
        except Exception as e:  # best effort: the broker itself answered already
            log.debug("waiting for partition leaders on %s: %r", bootstrap, e)
        finally:
            if admin is not None:
                with contextlib.suppress(Exception):
                    admin.close()


def create_topics(bootstrap: str, topics: dict[str, int], replication: int = 1,
                  configs: dict | None = None, timeout: float = 30, client: dict | None = None) -> list[str]:
    """Create the missing ``topics`` ({name: partitions}); idempotent; returns the names it created. An existing topic with a
    different partition count is an error (Faust would otherwise die with PartitionsMismatch).
    Returns once every topic's metadata shows a leader for each partition. ``client``: extra kafka-python
    KafkaAdminClient settings (security_protocol, ssl_context, sasl_* — npsflow.kafka_security)."""
    from kafka.errors import TopicAlreadyExistsError, for_code

    if not topics:
        return []
    cfg = {k: str(v) for k, v in (configs or {}).items()}
    _check_replication(replication, cfg)
    admin = _admin(bootstrap, timeout, client)
    try:
        existing = _partition_counts(admin, list(topics))
        _check_counts(topics, existing)
        missing = {n: p for n, p in topics.items() if n not in existing}
        if missing:
            _check_live_brokers(admin, bootstrap, replication)
            req = {n: {"num_partitions": p, "replication_factor": replication, "configs": cfg}
                   for n, p in missing.items()}
            resp = admin.create_topics(req, timeout_ms=int(timeout * 1000), raise_errors=False)
            for t in resp.get("topics", []):
                err = for_code(t.get("error_code", 0))
                if t.get("error_code", 0) and err is not TopicAlreadyExistsError:
                    raise KafkaStackError(
                        f"creating topic {t.get('name')!r} failed: {err.__name__}: {t.get('error_message')}")
        end = time.monotonic() + timeout
        while True:
            counts = _partition_counts(admin, list(topics), require_leaders=True)
            _check_counts(topics, counts)
            if all(n in counts for n in topics):
                return sorted(missing)
            if time.monotonic() > end:
                absent = sorted(n for n in topics if n not in counts)
                raise KafkaStackError(f"topics not visible in metadata after {timeout}s: {', '.join(absent)}")
            time.sleep(0.1)
    finally:
        with contextlib.suppress(Exception):
            admin.close()


def _check_replication(replication: int, cfg: dict) -> None:
    if not isinstance(replication, int) or replication < 1:
        raise KafkaStackError(f"replication factor must be a whole number ≥ 1, got {replication!r}")
    isr = cfg.get("min.insync.replicas")
    if isr is not None and not (isr.isdigit() and 1 <= int(isr) <= replication):
        raise KafkaStackError(f"min.insync.replicas {isr} must be between 1 and the replication factor "
                              f"{replication} (acks=all writes would all be refused)")


def _check_live_brokers(admin, bootstrap: str, replication: int) -> None:
    live = [b for b in admin.describe_cluster().get("brokers") or [] if not b.get("is_fenced")]
    if len(live) < replication:
        raise KafkaStackError(f"replication factor {replication} needs {replication} live brokers, but the cluster "
                              f"at {bootstrap} has {len(live)}")


def _check_counts(wanted: dict[str, int], have: dict[str, int]) -> None:
    bad = [f"{n} has {have[n]} partitions, wanted {p}" for n, p in wanted.items() if n in have and have[n] != p]
    if bad:
        raise KafkaStackError(
            "topic partition mismatch: " + "; ".join(bad)
            + " (delete the topic or the local state dir to recreate it)")


def _partition_counts(admin, names: list[str], require_leaders: bool = False) -> dict[str, int]:
    """{topic: partitions} for those of ``names`` that exist (and, optionally, have leaders)."""
    present = set(admin.list_topics()) & set(names)
    if not present:
        return {}
    out: dict[str, int] = {}
    for t in admin.describe_topics(sorted(present)):
        if t.get("error_code"):
            continue
        parts = t.get("partitions") or []
        if not parts:
            continue
        if require_leaders and any(p.get("leader_id", -1) < 0 or p.get("error_code") for p in parts):
            continue
        out[t["name"]] = len(parts)
    return out

