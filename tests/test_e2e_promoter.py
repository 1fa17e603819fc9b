"""End-to-end on the real broker: promoters' answers → promoter actions (thank-you, review request, reward code)
through the real dispatch path (a worker process) → a real SMTP server (aiosmtpd) → the dispatches audit.

Oracle: the answers written here (which contact answered what), the pool written here; the mails are read at
the SMTP server, the audit through the CLI. After a restart, the promoter notes and the reward candidates are
produced once more, byte for byte, onto their topics (a replay of every internal step): nothing is mailed again
and no code goes out twice."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from schemas import codec as avro
from tests.e2e_helpers import make_env, read_topic, wait_for, write_jsonl
from tests.programs import bolt, programs_yaml, shop
from tests.standins import SmtpServer

pytestmark = pytest.mark.kafka

SECRET = "e2e-promoter-secret-0123456789"
CODES = [f"VOUCHER-{i:02d}" for i in range(6)]


def programs_text(scores: dict | None = None, codes: list[str] = CODES) -> str:
    """Bolt's shop with promoter actions by e-mail: by default a 10 asks for a review and gets a reward code, a 9
    a thank-you."""
    actions = {**(scores or {10: ["review_request", "reward"], 9: ["thank_you"]}), "channels": ["email"],
               "reward_codes": codes}
    return programs_yaml(bolt(shop(cost={"email": 0.002, "currency": "EUR"}, promoter_actions=actions),
                              review_url="https://reviews.example.com/bolt"))


PROGRAMS = programs_text()
TENS, NINES, OTHERS = 8, 4, 4  # 8 tens and a pool of 6: two rewards find it exhausted


@pytest.fixture
def smtp():
    with SmtpServer() as server:
        yield server


@pytest.fixture
def env(tmp_path, kafka_bootstrap, smtp):
    programs = tmp_path / "programs.yaml"
    programs.write_text(PROGRAMS)
    channels = tmp_path / "channels.yaml"
    channels.write_text(f"email: {{transport: smtp, host: 127.0.0.1, port: {smtp.port}, starttls: false, "
                        f"timeout: 10}}\n")
    e = make_env(tmp_path, kafka_bootstrap, NPSFLOW_PROGRAMS=str(programs), NPSFLOW_CHANNELS=str(channels),
                 NPSFLOW_SECRET=SECRET, NPSFLOW_PARTITIONS="3")
    yield e
    e.stop_worker()


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def invitation_ids(env, n: int) -> dict[str, str]:
    """event id → invitation id, from the dispatches topic."""
    codec = avro.AvroCodec()
    records = [codec.decode(m.value) for m in read_topic(env.vars["NPSFLOW_KAFKA"], env.settings.topics.dispatches,
                                                         n, until_idle=True)]
    return {r["event_id"]: r["invitation_id"] for r in records if r["kind"] == "invitation" and r["invitation_id"]}


def replay(env, topic: str, n: int) -> int:
    """Produce every record of ``topic`` once more, same key, same partition, same bytes."""
    from aiokafka import AIOKafkaProducer

    records = read_topic(env.vars["NPSFLOW_KAFKA"], topic, n, until_idle=True)

    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=env.vars["NPSFLOW_KAFKA"])
        await producer.start()
        try:
            for r in records:
                await producer.send_and_wait(topic, r.value, key=r.key, partition=r.partition)
        finally:
            await producer.stop()

    asyncio.run(produce())
    return len(records)


def body(mail) -> str:
    return mail.get_body(("plain",)).get_content()


def summary_when(env, check):
    return wait_for(lambda: (lambda d: d if check(d) else None)(env.cli_json("dispatches")), timeout=60,
                    what="the dispatch summary")


def test_promoters_get_their_actions_once_and_no_reward_code_goes_out_twice(env, smtp, tmp_path):
    now = datetime.now(timezone.utc)
    n = TENS + NINES + OTHERS
    triggers = [{"event_id": f"o-{i}", "org_id": "bolt", "event_type": "order.delivered", "occurred_at": iso(now),
                 "contact": {"contact_id": f"k{i}", "email": f"k{i}@kund.se"}, "location": "Malmö"}
                for i in range(n)]
    env.start_worker()
    env.cli("ingest", "triggers", str(write_jsonl(tmp_path / "triggers.jsonl", triggers)))
    wait_for(lambda: len(smtp.received()) >= n, timeout=60, what="the invitations")
    ids = invitation_ids(env, n)
    assert len(ids) == n
    score = {f"k{i}@kund.se": 10 if i < TENS else 9 if i < TENS + NINES else 5 + i % 3 for i in range(n)}
    answers = [{"response_id": ids[f"o-{i}"], "invitation_id": ids[f"o-{i}"], "score": score[f"k{i}@kund.se"],
                "responded_at": iso(now + timedelta(seconds=1))} for i in range(n)]
    # edits, later: a 9 becomes a 10 (no review request, no reward), a 10 becomes a 6 (nothing recalled), a 6
    # becomes a 10 (the first answer decided: nothing)
    edits = [dict(answers[TENS], score=10), dict(answers[0], score=6), dict(answers[n - 1], score=10)]
    for e in edits:
        e["responded_at"] = iso(now + timedelta(seconds=2))
    responses = write_jsonl(tmp_path / "answers.jsonl", answers)
    env.cli("ingest", "responses", str(responses))
    env.cli("ingest", "responses", str(write_jsonl(tmp_path / "edits.jsonl", edits)))

    pool = len(CODES)
    done = summary_when(env, lambda d: sum(a["total"] for a in d["promoter_actions"].values()) == NINES + 2 * TENS
                        and d["promoter_actions"].get("reward", {}).get("by_status", {}).get("sent") == pool)
    actions = done["promoter_actions"]
    assert actions["thank_you"]["by_status"] == {"sent": NINES}
    assert actions["review_request"]["by_status"] == {"sent": TENS}
    assert actions["reward"]["by_status"] == {"sent": pool, "suppressed": TENS - pool}
    assert actions["reward"]["reasons"] == [{"status": "suppressed", "reason": "reward_pool_exhausted",
                                             "count": TENS - pool}]
    assert done["total"] == n and done["by_status"] == {"sent": n}  # the invitations' audit is as it was
    expected_mails = n + NINES + TENS + pool
    wait_for(lambda: len(smtp.received()) >= expected_mails, timeout=60, what="the promoter mails")

    def check_mails() -> list[str]:
        mails = smtp.received()[n:]
        assert len(mails) == expected_mails - n
        subjects = Counter((m["To"], m["Subject"]) for m in mails)
        assert max(subjects.values()) == 1, "a contact got the same message twice"
        thanks = [m for m in mails if m["Subject"] == "Tack från Bolt"]
        reviews = [m for m in mails if m["Subject"] == "Vill du dela din upplevelse av Bolt?"]
        rewards = [m for m in mails if m["Subject"] == "En tackgåva från Bolt"]
        assert sorted(score[m["To"]] for m in thanks) == [9] * NINES
        assert sorted(score[m["To"]] for m in reviews) == [10] * TENS
        assert all("https://reviews.example.com/bolt" in body(m) for m in reviews)
        codes = [c for m in rewards for c in re.findall(r"VOUCHER-\d\d", body(m))]
        assert all(score[m["To"]] == 10 for m in rewards) and len(rewards) == pool
        assert sorted(codes) == sorted(CODES), "each code exactly once"
        return codes

    codes = check_mails()

    # Restart, then replay every internal step: the responses, the promoter notes (stage 1), the reward
    # candidates (the cap stage) — byte for byte. Nothing new is sent, no code moves.
    env.stop_worker()
    env.start_worker()
    topics = env.settings.topics
    notes = replay(env, topics.releases, NINES + TENS)
    candidates = replay(env, topics.candidates, TENS)
    env.cli("ingest", "responses", str(responses))
    wait_for(lambda: (lambda s: s.get("promoter.duplicate", 0) + s.get("promoter.redelivered", 0) >= notes
                      and s.get("promoter.reward.repeated", 0) >= pool
                      and s.get("classify.duplicate", 0) + s.get("classify.stale", 0) >= n)(env.stats()),
             timeout=60, what="the replays to be recognized")
    assert candidates == TENS
    wait_for(lambda: env.stats().get("deliver.repeated", 0) >= pool, timeout=30, what="the repeated rewards")
    assert check_mails() == codes
    again = env.cli_json("dispatches")
    assert again["promoter_actions"] == actions and again["total"] == n


def test_a_worker_killed_while_rewards_go_out_never_issues_a_code_twice(env, smtp, tmp_path):
    """SIGKILL while the reward mails are being sent, then a new worker: every reward ends sent, or failed as
    send_interrupted (SMTP is not idempotent: at most once), or suppressed when the pool ran out; no mail carries a
    code another mail carries, no contact gets two rewards."""
    n, pool = 60, 40
    codes = [f"KILL-{i:03d}" for i in range(pool)]
    (tmp_path / "programs.yaml").write_text(programs_text({10: ["reward"]}, codes))
    now = datetime.now(timezone.utc)
    triggers = [{"event_id": f"r-{i}", "org_id": "bolt", "event_type": "order.delivered", "occurred_at": iso(now),
                 "contact": {"contact_id": f"r{i}", "email": f"r{i}@kund.se"}} for i in range(n)]
    env.start_worker()
    env.cli("ingest", "triggers", str(write_jsonl(tmp_path / "triggers.jsonl", triggers)))
    wait_for(lambda: len(smtp.received()) >= n, timeout=60, what="the invitations")
    ids = invitation_ids(env, n)
    env.cli("ingest", "responses", str(write_jsonl(tmp_path / "answers.jsonl", [
        {"response_id": ids[f"r-{i}"], "invitation_id": ids[f"r-{i}"], "score": 10,
         "responded_at": iso(now + timedelta(seconds=1))} for i in range(n)])))
    wait_for(lambda: len(smtp.received()) > n, interval=0.02, timeout=60, what="the first reward mail")
    env.kill_worker()
    at_kill = len(smtp.received()) - n
    env.start_worker()
    done = summary_when(env, lambda d: d["promoter_actions"].get("reward", {}).get("total") == n)
    reward = done["promoter_actions"]["reward"]
    reasons = {r["reason"]: r["count"] for r in reward["reasons"]}
    interrupted = reasons.get("send_interrupted", 0)
    assert reward["by_status"].get("suppressed", 0) == reasons.get("reward_pool_exhausted", 0) == n - pool
    assert reward["by_status"].get("sent", 0) + interrupted == pool  # every code claimed once: sent or in doubt
    mails = smtp.received()[n:]
    found = [c for m in mails for c in re.findall(r"KILL-\d{3}", body(m))]
    assert len(found) == len(mails) and len(set(found)) == len(found), "a code went out twice"
    assert set(found) <= set(codes) and max(Counter(m["To"] for m in mails).values()) == 1
    assert reward["by_status"].get("sent", 0) <= len(mails) <= reward["by_status"].get("sent", 0) + interrupted
    print(f"killed after {at_kill} reward mails; then {reward['by_status']}, {len(mails)} mails")
