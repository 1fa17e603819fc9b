"""Runs the Faust worker in the foreground (`npsflow worker`) and announces readiness in worker.json."""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import replace

import faust

from npsflow.config import ConfigError, Settings
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


def dispatch_inputs(settings: Settings):
    """The survey programs (NPSFLOW_PROGRAMS, None when unset) and the channels (NPSFLOW_CHANNELS), validated:
    ``ConfigError`` with one line naming the file and the first mistake."""
    from npsflow.programs import ProgramsError, load_programs
    from streams.app import load_channels

    programs = None
    if settings.programs_file is not None:
        try:
            programs = load_programs(settings.programs_file)
        except ProgramsError as exc:
            raise ConfigError(f"NPSFLOW_PROGRAMS {settings.programs_file}: {len(exc.errors)} mistake(s), first: "
                              f"{exc.errors[0]} (`npsflow programs check FILE` lists all)") from None
    try:
        channels = load_channels(settings)
    except ValueError as exc:
        raise ConfigError(f"NPSFLOW_CHANNELS {settings.channels_file}: {exc}") from None
    for org in programs.organizations if programs else ():
        for program in org.programs:
            if program.reminder_after is not None and program.reminder_after.total_seconds() >= settings.link_ttl_seconds:
                raise ConfigError(f"NPSFLOW_PROGRAMS {settings.programs_file}: the reminder of {org.id}/{program.id} "
                                  f"({program.reminder_after}) would carry an expired link: NPSFLOW_LINK_TTL is "
                                  f"{settings.link_ttl_seconds // 86400} d")
    if settings.survey_url and any("sms" in p.channels for o in (programs.organizations if programs else ())
                                   for p in o.programs):
        from datetime import datetime, timezone

        from npsflow.programs import TYPICAL_LINK_LENGTH
        from streams.links import short_survey_url

        length = len(short_survey_url(settings.survey_url, "a" * 20, datetime.now(timezone.utc), b"k" * 32))
        if length > TYPICAL_LINK_LENGTH:
            logging.getLogger("npsflow").warning(
                "NPSFLOW_SURVEY_URL makes SMS links %d characters long (the texts assume %d): SMS may need two "
                "segments; a shorter survey host name avoids it", length, TYPICAL_LINK_LENGTH)
    return programs, channels


def run(settings: Settings, loglevel: str = "warning") -> None:
    from sinks.clickhouse import ClickHouseStore, apply_retention, migrate
    from sinks.rollup import apply_view
    from streams.app import create_app
    from streams.web import install_web

    programs, channels = dispatch_inputs(settings)  # a configuration mistake stops us before anything starts
    bootstrap = settings.bootstrap()
    settings.home.mkdir(parents=True, exist_ok=True)
    try:
        ensure_topics(settings, bootstrap)
    except Exception as exc:
        raise ConfigError(f"cannot reach Kafka at {bootstrap}: {type(exc).__name__}: {exc}") from None
    settings = replace(settings, web_port=settings.web_port or free_port())
    store = ClickHouseStore(settings.clickhouse_dsn)
    migrate(store)
    apply_view(store)  # nps_cells: every NPS read goes through it (the BI views below are optional extras)
    from sinks.bi import apply_views

    link_days = settings.dispatch_extra_retention_days
    for what, step in (("retention", lambda: apply_retention(store, settings.retention_days, link_days)),
                       ("BI views", lambda: apply_views(store))):
        try:
            step()
        except Exception as exc:  # e.g. no ALTER/CREATE VIEW right, an old server, Distributed tables of a
            # cluster (TTL and views go ON CLUSTER there: see `npsflow clickhouse ddl`): not a reason to stop
            logging.getLogger("npsflow").warning("ClickHouse %s not applied: %s", what, str(exc).splitlines()[0][:300])
    pipeline = create_app(settings, broker=bootstrap, store_factory=lambda: store, programs=programs,
                          channels=channels)
    install_web(pipeline, store)
    info = {"pid": os.getpid(), "web_port": settings.web_port, "bootstrap": bootstrap,
            "clickhouse_dsn": settings.clickhouse_dsn}
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    # aiohttp's access log would write client IPs (personal data) and survey tokens (bearer links): never
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    for name in ("faust", "mode"):  # their per-send debug records cost ~5 % even when not printed
        logging.getLogger(name).setLevel(getattr(logging, loglevel.upper()))
    worker = NpsWorker(pipeline.app, loglevel=loglevel, quiet=True, info_file=settings.worker_file, info=info,
                       logfile=None, redirect_stdouts=False)
    worker.execute_from_commandline()
