"""What must hold before a worker starts, shared by `npsflow worker` (npsflow.worker) and `npsflow stack up`
(npsflow.stack): the dispatch inputs validated, every topic created with the configured partition count."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from npsflow.config import ConfigError, Settings


def ensure_topics(settings: Settings, bootstrap: str) -> None:
    """Create every npsflow topic with the configured partition count, replication factor and min ISR before
    Faust starts: the topics, the tables' changelogs and the compacted topics (cleanup.policy=compact), and
    Faust's assignor leader topic (1 partition) and the owner directory (1 partition, compacted), so Faust itself
    creates none."""
    from deploy.local.kafka import KafkaStackError, create_topics

    from npsflow.kafka_security import ConnectionDiagnosis

    client = settings.kafka_security.kafka_python_kwargs()
    rf, configs = settings.replication_factor, settings.topic_configs
    with ConnectionDiagnosis(settings.kafka_security) as diagnosis:  # a refusal: one line naming the cause
        try:
            create_topics(bootstrap, {name: settings.partitions for name in settings.topics.all()},
                          replication=rf, configs=configs, client=client)
            create_topics(bootstrap, {name: settings.partitions
                                      for name in [*settings.topics.changelogs(), *settings.topics.compacted()]},
                          replication=rf, configs={**configs, "cleanup.policy": "compact"}, client=client)
            create_topics(bootstrap, {f"{settings.topics.namespace}-__assignor-__leader": 1}, replication=rf,
                          configs=configs, client=client)
            create_topics(bootstrap, {settings.topics.owners: 1}, replication=rf,  # the owner directory
                          configs={**configs, "cleanup.policy": "compact"}, client=client)
        except KafkaStackError as exc:  # our own checks (min ISR, live brokers, partition counts): already one line
            raise ConfigError(str(exc)) from None
        except Exception as exc:
            raise ConfigError(f"cannot reach Kafka at {bootstrap}: {diagnosis.explain(exc)}") from None


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
