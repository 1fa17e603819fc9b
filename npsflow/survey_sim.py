"""A simulated survey flow on the real broker: trigger events in, simulated respondents answer the invitations.

``run_survey_simulation`` sends ``TriggerSimulator`` events to the triggers topic at a rate (refused ones — the
simulator makes some malformed on purpose — become dead letters, as with ``npsflow ingest triggers``), and at
the same time reads the dispatches topic: each invitation the worker *sent* may be answered by a
``Respondent`` (seeded per invitation) through the real survey page — GET the signed link, POST the form with
its CSRF token, like a browser — so the answer takes the same path as a respondent's (classify joins it to the
invitation's segments). Reading starts at the topic's end when the run starts:
invitations of earlier runs are not answered again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from npsflow.config import Settings


@dataclass
class SurveySimulation:
    target: int = 0
    triggers_sent: int = 0
    refused: int = 0  # malformed triggers, dead-lettered at intake
    repeated: int = 0  # triggers sent again (same event id: decided once)
    invitations: int = 0  # invitations the worker sent (seen on the dispatches topic)
    responses: int = 0
    done: bool = False
    reasons: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


def run_survey_simulation(settings: Settings, bootstrap: str, *, count: int, rate: float, seed: int | None,
                          bad_ratio: float = 0.01, duplicate_ratio: float = 0.02, no_contact_ratio: float = 0.02,
                          response_rate: float = 0.35, quiet_seconds: float = 6.0, max_seconds: float | None = None,
                          on_progress: Callable[[SurveySimulation], None] | None = None) -> SurveySimulation:
    """Send ``count`` triggers at ``rate``/s (0: at once) and answer sent invitations until none has come for
    ``quiet_seconds`` after the last trigger (or ``max_seconds`` passed)."""
    from kafka import KafkaConsumer, TopicPartition

    from npsflow.ingest import trigger_converter
    from npsflow.producer import Producer
    from npsflow.simulate import Respondent, TriggerSimulator
    from schemas import codec as avro
    from streams.app import dead_letter
    from streams.responses import Rejected
    from streams.triggers import redact

    codec = avro.AvroCodec()
    topics = settings.topics
    simulator = TriggerSimulator(seed)
    respondent = Respondent(None if seed is None else seed + 1, response_rate=response_rate,
                            locations=simulator.locations)
    triggers = iter(simulator.records(count, duplicate_ratio=duplicate_ratio, bad_ratio=bad_ratio,
                                      no_contact_ratio=no_contact_ratio))
    convert = trigger_converter()
    progress = SurveySimulation(target=count)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             consumer_timeout_ms=100, **settings.kafka_security.kafka_python_kwargs())
    partitions = [TopicPartition(topics.dispatches, p)
                  for p in sorted(consumer.partitions_for_topic(topics.dispatches) or range(settings.partitions))]
    consumer.assign(partitions)
    consumer.seek_to_end(*partitions)
    for tp in partitions:
        consumer.position(tp)  # resolve "end" now: what the worker sends from here on is ours
    answered: set[str] = set()
    import requests

    http = requests.Session()
    info = settings.worker_info()
    if not info:
        raise RuntimeError("no worker is running: the simulated respondents answer on its survey page")
    survey_base = f"{info['public_url']}/s"  # the worker's public listener
    started = time.monotonic()
    last_seen = started
    try:
        with Producer(bootstrap, security=settings.kafka_security) as producer:
            while True:
                now = time.monotonic()
                due = count if rate <= 0 else min(count, int((now - started) * rate) + 1)
                while progress.triggers_sent + progress.refused < due:
                    obj = next(triggers)
                    progress.repeated = simulator.stats.duplicates
                    try:
                        key, subject, record = convert(obj)
                    except Rejected as exc:
                        progress.refused += 1
                        producer.send(topics.dead_letters, None, codec.encode(avro.DEAD_LETTER, dead_letter(
                            "ingest", exc.reason, exc.detail, topic=topics.triggers, payload=redact(obj))))
                        continue
                    producer.send(topics.triggers, key, codec.encode(subject, record))
                    progress.triggers_sent += 1
                for batch in consumer.poll(timeout_ms=100).values():
                    for message in batch:
                        rec = codec.decode(message.value, expected=avro.DISPATCHED_MESSAGE)
                        last_seen = time.monotonic()
                        status = getattr(rec["status"], "value", rec["status"])
                        if rec.get("kind", "invitation") != "invitation" or status != "sent":
                            if status == "suppressed":
                                progress.reasons[rec["reason"]] = progress.reasons.get(rec["reason"], 0) + 1
                            continue
                        if rec["invitation_id"] in answered:
                            continue
                        answered.add(rec["invitation_id"])
                        progress.invitations += 1
                        answer = respondent.respond(rec)
                        if answer is not None:
                            answer_on_page(http, survey_base, settings, rec["invitation_id"], answer)
                            progress.responses += 1
                if on_progress:
                    on_progress(progress)
                all_sent = progress.triggers_sent + progress.refused >= count
                now = time.monotonic()
                if all_sent and now - last_seen >= quiet_seconds:
                    break
                if max_seconds is not None and now - started > max_seconds:
                    break
            producer.flush()
    finally:
        consumer.close()
    progress.done = True
    if on_progress:
        on_progress(progress)
    return progress


def answer_on_page(http, base: str, settings: Settings, invitation_id: str, answer: dict) -> None:
    """Answer an invitation like a browser: GET the signed link (a fresh token, as in the invitation), read the
    form's CSRF token, POST the score and the comment. Raises on anything but the thank-you page."""
    import re
    from datetime import datetime, timedelta, timezone

    from streams import links
    from streams.dispatch import LINK_KEY_ID, link_key

    expires = datetime.now(timezone.utc) + timedelta(seconds=settings.link_ttl_seconds)
    url = links.survey_url(base, links.sign_token(invitation_id, expires, link_key(settings.secret), LINK_KEY_ID))
    page = http.get(url, timeout=30)
    page.raise_for_status()
    csrf = re.search(r'name="csrf"[^>]*value="([^"]+)"', page.text)
    if csrf is None:
        raise RuntimeError(f"survey page of {invitation_id} has no form")
    form = {"csrf": csrf.group(1), "score": str(answer["score"])}
    if answer.get("comment"):
        form["comment"] = answer["comment"]
    thanks = http.post(url, data=form, timeout=30)
    thanks.raise_for_status()
