"""Runs the Faust worker in the foreground (`npsflow worker`) and announces readiness in worker.json.

worker.json: ``{"pid", "public_url", "internal_url", "bootstrap", "kafka_security", "clickhouse_dsn", "ready"}``
(no secret: the DSN's password is ``***``, Kafka security is protocol, mechanism, user and file names only) — the public
listener serves the survey page and the response API, the internal one what the CLI asks (web.server).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import socket
import threading
from dataclasses import replace

import faust

from npsflow.config import ConfigError, Settings
from npsflow.prepare import dispatch_inputs, ensure_topics, prepare_store


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class NpsWorker(faust.Worker):
    """faust.Worker that writes $NPSFLOW_HOME/worker.json once tables are recovered and both listeners are up."""

    def __init__(self, *args, info_file, info: dict, warm_up: threading.Thread | None = None, readiness=None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        if not self.stdout.isatty():
            self.spinner = None  # its terminal escape codes only clutter worker.log
        self._info_file = info_file
        self._info = info
        self._warm_up = warm_up
        self._readiness = readiness  # web.health.Readiness: /readyz says "starting" until now

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        if self._warm_up is not None:  # ready means ready at speed: the text data are loaded (≤ 60 s)
            await asyncio.get_running_loop().run_in_executor(None, self._warm_up.join, 60.0)
        tmp = self._info_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({**self._info, "ready": True}))
        tmp.replace(self._info_file)
        if self._readiness is not None:
            self._readiness.started = True

    async def on_stop(self) -> None:
        try:
            if json.loads(self._info_file.read_text()).get("pid") == os.getpid():
                self._info_file.unlink()
        except (OSError, ValueError):
            pass
        await super().on_stop()


def open_store(settings: Settings):
    """The worker's ClickHouse store, migrated, with the views and the retention applied (npsflow.prepare)."""
    return prepare_store(settings)[0]


def worker_store(settings: Settings):
    """The role's ClickHouse store: all and sink own and migrate it; process has none; web reads a server (any
    number of web workers) but never opens embedded chDB (one process owns it: the sink's) nor migrates."""
    if settings.role in ("all", "sink"):
        from sinks import faults

        return faults.wrap(open_store(settings), settings.faults_file)  # NPSFLOW_FAULTS_FILE unset: the store itself
    if settings.role == "web" and not settings.is_embedded_clickhouse:
        from sinks.clickhouse import ClickHouseStore, DeferredStore

        # opened at the first read: a web worker starts while the server is down and says so in /readyz
        return DeferredStore(lambda: ClickHouseStore(settings.clickhouse_dsn, **settings.clickhouse_options))
    return None


def run(settings: Settings, loglevel: str = "warning") -> None:
    from streams.app import create_app
    from web.server import bind_socket, bound, install_web

    programs, channels = dispatch_inputs(settings)  # a configuration mistake stops us before anything starts
    bootstrap = settings.bootstrap()
    settings.worker_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        ensure_topics(settings, bootstrap)  # ConfigError naming the cause (authentication, TLS, refused)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"cannot reach Kafka at {bootstrap}: {type(exc).__name__}: {exc}") from None
    try:  # bound now, served once the tables are recovered: the ports are known for the links and worker.json
        public, internal = bind_socket(settings.public_bind), bind_socket(settings.internal_bind)
    except OSError as exc:
        raise ConfigError(str(exc)) from None
    settings = replace(settings, public_bind=bound(settings.public_bind, public),
                       internal_bind=bound(settings.internal_bind, internal))
    store = worker_store(settings)
    pipeline = create_app(settings, broker=bootstrap, store_factory=(lambda: store) if store else None,
                          programs=programs, channels=channels)
    servers = install_web(pipeline, store, settings, public, internal, bootstrap=bootstrap)
    info = {"pid": os.getpid(), "public_url": settings.public_bind.url, "internal_url": settings.internal_bind.url,
            "bootstrap": bootstrap, "role": settings.role, "name": settings.worker_name,
            "kafka_security": settings.kafka_security.describe(),
            # never a password: worker.json is a plain file any local reader may show
            "clickhouse_dsn": settings.clickhouse_dsn_shown if store is not None else None}
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    # aiohttp's access log would write client IPs (personal data) and survey tokens (bearer links): never
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    for name in ("faust", "mode"):  # their per-send debug records cost ~5 % even when not printed
        logging.getLogger(name).setLevel(getattr(logging, loglevel.upper()))
    warm_up = None
    if settings.role in ("all", "process"):  # classify analyses comments (streams.text): load its data while Kafka connects
        from streams import text

        warm_up = threading.Thread(target=text.warm_up, name="text-warm-up", daemon=True)
        warm_up.start()
    worker = NpsWorker(pipeline.app, loglevel=loglevel, quiet=True, info_file=settings.worker_file, info=info,
                       logfile=None, redirect_stdouts=False, warm_up=warm_up,
                       readiness=servers.readiness)
    # the agents allocate many short-lived objects per record: with CPython's default thresholds (700, 10, 10)
    # the cyclic collector runs very often; raised, the process worker's CPU for 50 000 responses went from
    # 5.2 to 4.4 s (bench/pipeline_throughput.py --split, NOTES.md session 4)
    gc.set_threshold(50_000, 20, 20)
    worker.execute_from_commandline()
