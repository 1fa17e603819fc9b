"""What must hold before a worker starts, shared by `npsflow worker` (npsflow.worker), `npsflow stack up`
(npsflow.stack) and `npsflow init` (a deployment's one-off job): the dispatch inputs validated, every topic created
with the configured partition count, the ClickHouse store migrated with its views and retention."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from npsflow.config import ConfigError, Settings


def ensure_topics(settings: Settings, bootstrap: str, timeout: float = 30) -> tuple[list[str], list[str]]:
    """Create every npsflow topic with the configured partition count, replication factor and min ISR before
    Faust starts: the topics, the tables' changelogs and the compacted topics (cleanup.policy=compact), and
    Faust's assignor leader topic (1 partition) and the owner directory (1 partition, compacted), so Faust itself
    creates none. Returns (every topic, the ones created now)."""
    from deploy.local.kafka import KafkaStackError, create_topics

    from npsflow.kafka_security import ConnectionDiagnosis

    client = settings.kafka_security.kafka_python_kwargs()
    rf, configs = settings.replication_factor, settings.topic_configs
    with ConnectionDiagnosis(settings.kafka_security) as diagnosis:  # a refusal: one line naming the cause
        plan = [({name: settings.partitions for name in settings.topics.all()}, configs),
                ({name: settings.partitions for name in [*settings.topics.changelogs(), *settings.topics.compacted()]},
                 {**configs, "cleanup.policy": "compact"}),
                ({f"{settings.topics.namespace}-__assignor-__leader": 1}, configs),
                ({settings.topics.owners: 1}, {**configs, "cleanup.policy": "compact"})]  # the owner directory
        created: list[str] = []
        try:
            for topics, topic_configs in plan:
                created += create_topics(bootstrap, topics, replication=rf, configs=topic_configs, client=client,
                                         timeout=timeout)
        except KafkaStackError as exc:  # our own checks (min ISR, live brokers, partition counts): already one line
            raise ConfigError(str(exc)) from None
        except Exception as exc:
            raise ConfigError(f"cannot reach Kafka at {bootstrap}: {diagnosis.explain(exc)}") from None
    return [name for topics, _ in plan for name in topics], created


def prepare_store(settings: Settings):
    """The ClickHouse store of the settings, migrated, with the views and the retention applied — what an ``all`` or
    ``sink`` worker does at its start and `npsflow init` does once. Returns (store, migrations applied now, steps not
    applied with their one-line reason). The retention and the BI views are best effort (logged, not fatal)."""
    from sinks.bi import apply_views
    from sinks.clickhouse import ClickHouseStore, apply_retention, migrate
    from sinks.rollup import apply_view

    store = ClickHouseStore(settings.clickhouse_dsn, **settings.clickhouse_options)
    try:
        applied = migrate(store)
        apply_view(store)  # nps_cells: every NPS read goes through it (the BI views below are optional extras)
    except BaseException:
        store.close()
        raise
    link_days = settings.dispatch_extra_retention_days
    skipped: list[str] = []
    for what, step in (("retention", lambda: apply_retention(store, settings.retention_days, link_days)),
                       ("BI views", lambda: apply_views(store))):
        try:
            step()
        except Exception as exc:  # e.g. no ALTER/CREATE VIEW right, an old server, Distributed tables of a
            # cluster (TTL and views go ON CLUSTER there: see `npsflow clickhouse ddl`): not a reason to stop
            reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            logging.getLogger("npsflow").warning("ClickHouse %s not applied: %s", what, reason)
            skipped.append(f"{what}: {reason}")
    return store, applied, skipped


def init(settings: Settings, clickhouse: bool = True, timeout: float = 30) -> list[str]:
    """`npsflow init`: every topic (``ensure_topics``) and the ClickHouse store prepared as a sink worker does at
    its start (``prepare_store``); idempotent. Returns what was done, one line per system. ``ConfigError`` (one
    line) when Kafka or ClickHouse cannot be reached. Embedded chDB held by a running worker is left to it (the
    worker migrated it at its start; chDB opens in one process only)."""
    import re

    from sinks.clickhouse import MigrationError

    bootstrap = settings.bootstrap()
    every, created = ensure_topics(settings, bootstrap, timeout=timeout)
    lines = [f"kafka {bootstrap}: {len(created)} topic(s) created, {len(every) - len(created)} already there "
             f"(namespace {settings.topics.namespace}, {settings.partitions} partitions, replication factor "
             f"{settings.replication_factor})"]
    where = f"clickhouse {settings.clickhouse_dsn_shown}"
    if not clickhouse:
        return lines + [f"{where}: skipped (--no-clickhouse)"]
    holder = settings.worker_info() if settings.is_embedded_clickhouse else None
    if holder and holder.get("role", "all") in ("all", "sink"):
        return lines + [f"{where}: left to the running worker (pid {holder.get('pid')}), which migrates it at its "
                        f"start (embedded chDB opens in one process)"]
    logging.getLogger("clickhouse_connect").setLevel(logging.CRITICAL)  # its own line would break "one line"
    try:
        store, applied, skipped = prepare_store(settings)
    except MigrationError as exc:
        raise ConfigError(f"{where}: {str(exc).splitlines()[0]}") from None
    except Exception as exc:  # server down, refused password, chDB lock held by another process, …
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        root = re.search(r"(\[Errno -?\d+\] [^'\")]+)", text)  # urllib3's wrapping hides the cause at the end
        raise ConfigError(f"cannot reach ClickHouse at {settings.clickhouse_dsn_shown}: "
                          f"{root.group(1) if root else text[:300]}") from None
    try:
        from sinks.clickhouse import load_migrations

        total = len(load_migrations())
    finally:
        store.close()
    state = f"{len(applied)} migration(s) applied" if applied else "schema up to date"
    retention = f"retention {settings.retention_days} d" if settings.retention_days else "no retention (kept forever)"
    line = f"{where}: {state} ({total} in all), views and {retention} applied"
    if skipped:
        line += f"; not applied: {'; '.join(skipped)}"
    return lines + [line]


def dispatch_inputs(settings: Settings):
    """The survey programs (NPSFLOW_PROGRAMS, None when unset) and the channels (NPSFLOW_CHANNELS), validated:
    ``ConfigError`` with one line naming the file and the first mistake."""
    from npsflow.programs import ProgramsError, load_programs
    from streams.app import load_channels  # imports Faust (~0.5 s): only when a worker is about to start

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
    follow_up_inputs(settings, programs)
    if settings.survey_url and any("sms" in p.channels for o in (programs.organizations if programs else ())
                                   for p in o.programs):
        _warn_long_sms_links(settings.survey_url)
    return programs, channels


def follow_up_inputs(settings: Settings, programs=None):
    """NPSFLOW_CASES (npsflow.follow_up), validated: ``ConfigError`` with one line naming the first mistake."""
    from npsflow.follow_up import FollowUpError, load_follow_up

    try:
        return load_follow_up(settings.cases_file, programs)
    except FollowUpError as exc:
        raise ConfigError(f"NPSFLOW_CASES {settings.cases_file}: {len(exc.errors)} mistake(s), first: "
                          f"{exc.errors[0]}") from None


def _warn_long_sms_links(survey_url: str) -> None:
    from npsflow.programs import TYPICAL_LINK_LENGTH
    from streams.links import short_survey_url

    length = len(short_survey_url(survey_url, "a" * 20, datetime.now(timezone.utc), b"k" * 32))
    if length > TYPICAL_LINK_LENGTH:
        logging.getLogger("npsflow").warning(
            "NPSFLOW_SURVEY_URL makes SMS links %d characters long (the texts assume %d): SMS may need two "
            "segments; a shorter survey host name avoids it", length, TYPICAL_LINK_LENGTH)
