"""Runs the Faust worker in the foreground (`npsflow worker`) and announces readiness in worker.json."""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import replace

import faust

from npsflow.config import Settings
from npsflow.stack import ensure_topics


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class NpsWorker(faust.Worker):
    """faust.Worker that writes $NPSFLOW_HOME/worker.json once tables are recovered and the web API is up."""

    def __init__(self, *args, info_file, info: dict, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.stdout.isatty():
            self.spinner = None  # its terminal escape codes only clutter worker.log
        self._info_file = info_file
        self._info = info

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        tmp = self._info_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({**self._info, "ready": True}))
        tmp.replace(self._info_file)

    async def on_stop(self) -> None:
        try:
            if json.loads(self._info_file.read_text()).get("pid") == os.getpid():
                self._info_file.unlink()
        except (OSError, ValueError):
            pass
        await super().on_stop()


def run(settings: Settings, loglevel: str = "warning") -> None:
    from sinks.clickhouse import ClickHouseStore, migrate
    from streams.app import create_app
    from streams.web import install_web

    bootstrap = settings.bootstrap()
    settings.home.mkdir(parents=True, exist_ok=True)
    ensure_topics(settings, bootstrap)
    settings = replace(settings, web_port=settings.web_port or free_port())
    store = ClickHouseStore(settings.clickhouse_dsn)
    migrate(store)
    pipeline = create_app(settings, broker=bootstrap, store_factory=lambda: store)
    install_web(pipeline, store)
    info = {"pid": os.getpid(), "web_port": settings.web_port, "bootstrap": bootstrap,
            "clickhouse_dsn": settings.clickhouse_dsn}
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    for name in ("faust", "mode"):  # their per-send debug records cost ~5 % even when not printed
        logging.getLogger(name).setLevel(getattr(logging, loglevel.upper()))
    worker = NpsWorker(pipeline.app, loglevel=loglevel, quiet=True, info_file=settings.worker_file, info=info,
                       logfile=None, redirect_stdouts=False)
    worker.execute_from_commandline()
