"""Agent tests without a broker: Faust's agent.test_context(), outputs captured at the topic boundary."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from npsflow import config
from npsflow.ingest import to_raw_response
from schemas import codec as avro
from streams.app import create_app

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
CODEC = avro.AvroCodec()


class _Acked(asyncio.Future):
    """A changelog write Kafka has acknowledged (Faust reads ``.message.partition`` of it)."""


class CaptureSender:
    """Stands in for Kafka at the BatchOutput boundary (streams.kafka_io.Sender): records every batch's records
    by topic name and acknowledges them at once, as Kafka would."""

    def __init__(self, harness: "Harness") -> None:
        self.harness = harness

    async def send(self, topic: str, partition: int, records) -> None:
        name = self.harness.topic_names.get(topic)
        for key, value in records:
            if name is not None:
                self.harness.sent[name].append((key, value))
            else:
                self.harness.changelog[self.harness.changelog_names[topic]].append((partition, key, value))


class Fed:
    """A record fed to a batch-native agent; ``.message.acked`` once the agent acked its offset (as Faust's events)."""

    def __init__(self, record, app) -> None:
        self.record, self.app = record, app

    @property
    def message(self):
        return self

    @property
    def offset(self) -> int:
        return self.record.offset

    @property
    def acked(self) -> bool:
        from faust.types import TP

        return self.record.offset in self.app.consumer._acked_index[TP(self.record.topic, self.record.partition)]


class Feeder:
    """Runs a batch-native agent's real loop (streams.app.consume_records / the sink loop) and feeds it records
    through the router's inbox, as the fetcher would; leaving the block waits until all were handled."""

    def __init__(self, pipeline, name: str) -> None:
        self.pipeline, self.agent = pipeline, pipeline.agents[name]
        self.topic = self.agent.channel.get_topic_name()
        self.sent_offset = -1
        self.high: dict[int, int] = {}  # partition → the highest offset put
        self.task = None

    async def __aenter__(self) -> "Feeder":
        self.task = asyncio.ensure_future(self.agent.fun(None))
        return self

    async def put(self, value, key=None, partition: int = 0) -> Fed:
        from streams.batch_consumer import Record

        self.sent_offset += 1
        key = key.encode() if isinstance(key, str) else key
        record = Record(self.topic, partition, self.sent_offset, key, value)
        if self.sent_offset <= self.high.get(partition, -1):
            await self.rebalance()
        self.high[partition] = max(self.sent_offset, self.high.get(partition, -1))
        await self.pipeline.router.inbox(self.topic).put([record])
        return Fed(record, self.pipeline.app)

    async def rebalance(self) -> None:
        """Kafka delivers an offset again only to a new generation (a restart, a rebalance): the records put so
        far are handled first, then the app announces the assignment (the agents' guards and caches start
        over, as in a worker that just joined)."""
        await asyncio.wait_for(self.pipeline.router.inbox(self.topic).join(), 20)
        await self.pipeline.app.on_partitions_assigned.send(set())

    async def __aexit__(self, *exc) -> None:
        try:
            if exc[0] is None:
                join = asyncio.ensure_future(self.pipeline.router.inbox(self.topic).join())
                await asyncio.wait({join, self.task}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
                join.cancel()
                if self.task.done() and not self.task.cancelled() and self.task.exception() is not None:
                    raise self.task.exception()  # the agent died: show why
        finally:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass


class Harness:
    """A pipeline without a broker: agents run under test_context, topic sends and batch outputs are captured
    (and acknowledged at once, as Kafka would). One partition, so every key is on the partition it is put to."""

    ENV = {"NPSFLOW_WINDOWS": "24h,7d", "NPSFLOW_LATENESS": "2h", "NPSFLOW_DIMENSIONS": "overall,location",
           "NPSFLOW_PARTITIONS": "1"}

    def __init__(self, tmp_path, clock=lambda: NOW, store_factory=None, env=None, **kw):
        settings = config.load({"NPSFLOW_HOME": str(tmp_path), **self.ENV, **(env or {})})
        self.pipeline = create_app(settings, clock=clock, web_enabled=False, store_factory=store_factory, **kw)
        app = self.pipeline.app
        app.finalize()
        app.flow_control.resume()
        app.consumer.earliest_offsets = None  # no broker to ask: the GapGuards take first records as they come
        self.sent: dict[str, list] = defaultdict(list)
        self.topic_names = {topic.get_topic_name(): name for name, topic in self.pipeline.topics.items()}
        self.changelog_names = {table.changelog_topic.get_topic_name(): name
                                for name, table in self.pipeline.tables.items()}
        self.pipeline.sender = CaptureSender(self)
        if "windows" in self.pipeline.batch_agents:  # every batch's window updates, not one per 0.2 s
            self.pipeline.batch_agents["windows"].emit_interval = 0.0
        for name, topic in self.pipeline.topics.items():
            async def capture(*args, _name=name, key=None, value=None, **kw):
                self.sent[_name].append((key, value))
                delivered = asyncio.get_running_loop().create_future()  # Kafka's acknowledgement
                delivered.set_result(None)
                return delivered
            topic.send = capture
        self.changelog: dict[str, list] = defaultdict(list)
        for name, table in self.pipeline.tables.items():
            def changelog(partition, key, value, *args, _name=name, **kw):
                self.changelog[_name].append((partition, key, value))
                written = _Acked(loop=asyncio.get_running_loop())  # Kafka's acknowledgement
                written.message = SimpleNamespace(partition=partition)
                written.set_result(None)
                return written
            table.send_changelog = changelog

    def feed(self, name: str) -> Feeder:
        return Feeder(self.pipeline, name)

    def decoded(self, name: str, subject: str) -> list[dict]:
        return [CODEC.decode(v, expected=subject) for _, v in self.sent[name]]

    def deltas(self) -> list[tuple[str, bytes]]:
        return [(k.decode() if isinstance(k, bytes) else k, v) for k, v in self.sent["deltas"]]

    def delta_items(self, segment: str) -> list[list]:
        """Every window-delta item sent for ``segment``: [partition, offset, add_ms, add_cat, retract_ms, retract_cat]."""
        return [item for key, value in self.deltas() if key == segment for item in json.loads(value)["i"]]

    def memo(self, response_id: str) -> dict | None:
        raw = self.pipeline.tables["seen"].data.get(json.dumps(response_id).encode())
        return None if raw is None else json.loads(raw)


def raw(rid="r-1", score=9, at="2026-11-20T10:00:00Z", location="Espoo", **extra) -> bytes:
    obj = {"response_id": rid, "score": score, "responded_at": at, "segment": {"location": location}, **extra}
    return CODEC.encode(avro.RAW_RESPONSE, to_raw_response(obj, received_at=NOW))


@pytest.fixture
def harness(tmp_path):
    return Harness(tmp_path)


async def until(predicate, timeout: float = 10.0) -> None:
    """Wait for a batched agent (noack_take) to have processed what was put."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "agent did not process the batch"
        await asyncio.sleep(0.02)


async def put_all(agent, items):
    for i, (value, key) in enumerate(items):
        await agent.put(value, key=key, partition=0)


async def test_valid_response_is_classified_and_fanned_out(harness):
    async with harness.feed("classify") as agent:
        await agent.put(raw(score=9), key=b"r-1")
    (out,) = harness.decoded("classified", avro.CLASSIFIED_RESPONSE)
    assert (out["response_id"], out["score"], out["category"], out["is_edit"]) == ("r-1", 9, "promoter", False)
    assert out["segment"] == {"location": "Espoo"}
    assert out["responded_at"] == datetime(2026, 11, 20, 10, tzinfo=timezone.utc)
    keys = sorted(k for k, _ in harness.deltas())
    assert keys == ["location=Espoo", "overall=all"]
    (item,) = harness.delta_items("location=Espoo")
    at = int(datetime(2026, 11, 20, 10, tzinfo=timezone.utc).timestamp() * 1000)
    assert item == [0, 0, at, "promoter", None, None]  # source partition/offset, added, nothing retracted


@pytest.mark.parametrize("score,reason", [("7.5", "score_not_integer"), ("abc", "score_not_integer"),
                                          (11, "score_out_of_range"), (-1, "score_out_of_range"),
                                          (None, "missing_score")])
async def test_invalid_scores_are_dead_lettered_with_reason(harness, score, reason):
    async with harness.feed("classify") as agent:
        await agent.put(raw(score=score), key=b"r-1")
    assert harness.sent["classified"] == []
    (dl,) = harness.decoded("dead_letters", avro.DEAD_LETTER)
    assert dl["reason"] == reason and dl["stage"] == "classify" and dl["detail"]
    assert json.loads(dl["payload_json"])["response_id"] == "r-1"
    assert harness.pipeline.stats.as_dict()[f"dead_letter.classify.{reason}"] == 1


async def test_undecodable_bytes_are_dead_lettered(harness):
    async with harness.feed("classify") as agent:
        await agent.put(b"\x07not avro", key=b"k")
    (dl,) = harness.decoded("dead_letters", avro.DEAD_LETTER)
    assert dl["reason"] == "not_avro_wire_format"
    assert dl["payload_json"].startswith("base64:")


async def test_response_in_the_future_is_refused_by_the_injected_clock(harness):
    async with harness.feed("classify") as agent:
        await agent.put(raw(at=(NOW + timedelta(hours=1)).isoformat()), key=b"r-1")
    (dl,) = harness.decoded("dead_letters", avro.DEAD_LETTER)
    assert dl["reason"] == "responded_at_in_future"


async def test_replays_count_once_edits_replace_stale_edits_are_ignored(harness):
    async with harness.feed("classify") as agent:
        await agent.put(raw(score=3), key=b"r-1")
        await agent.put(raw(score=3), key=b"r-1")  # replay
        await agent.put(raw(score=10, at="2026-11-20T11:00:00Z"), key=b"r-1")  # edit
        await agent.put(raw(score=5, at="2026-11-20T10:30:00Z"), key=b"r-1")  # older edit, late
    out = harness.decoded("classified", avro.CLASSIFIED_RESPONSE)
    assert [(o["score"], o["is_edit"], o["previous_score"]) for o in out] == [(3, False, None), (10, True, 3)]
    stats = harness.pipeline.stats.as_dict()
    assert (stats["classify.new"], stats["classify.duplicate"], stats["classify.edit"], stats["classify.stale"]) \
        == (1, 1, 1, 1)


async def test_stats_show_the_tables_key_counts(harness):
    """``state.<table>.keys``: gauges read when /api/v1/stats is asked (bench/soak.py samples them)."""
    assert harness.pipeline.stats.as_dict()["state.responses-seen.keys"] == 0
    async with harness.feed("classify") as agent:
        await agent.put(raw(rid="r-1"), key=b"r-1")
        await agent.put(raw(rid="r-2"), key=b"r-2")
    stats = harness.pipeline.stats.as_dict()
    # the two memos and the partition's own bookkeeping keys
    assert stats["state.responses-seen.keys"] == len(harness.pipeline.tables["seen"].data) >= 2
    assert {f"state.{t.name}.keys" for t in harness.pipeline.tables.values()} <= set(stats)


async def test_kafka_redelivery_of_the_same_offset_re_emits_outputs(harness):
    """After a crash Kafka hands the same (partition, offset) again: outputs may have been lost, so re-emit."""
    async with harness.feed("classify") as agent:
        agent.sent_offset = 41
        await agent.put(raw(score=9), key=b"r-1", partition=0)
        agent.sent_offset = 41
        await agent.put(raw(score=9), key=b"r-1", partition=0)
    out = harness.decoded("classified", avro.CLASSIFIED_RESPONSE)
    assert len(out) == 2 and out[0] == {**out[1], "processed_at": out[0]["processed_at"]}
    assert harness.pipeline.stats.as_dict()["classify.redelivered"] == 1


async def test_edits_carry_the_other_days_of_earlier_versions(harness):
    """ClickHouse's day ledger retracts an answer from every day it left: each version names the other days its
    earlier versions had (not only the previous one), and a redelivery re-emits exactly the same."""
    days = ["2026-11-18T10:00:00Z", "2026-11-19T10:00:00Z", "2026-11-19T12:00:00Z", "2026-11-20T08:00:00Z"]
    async with harness.feed("classify") as agent:
        for offset, at in enumerate(days):
            agent.sent_offset = offset
            await agent.put(raw(score=offset, at=at), key=b"r-1", partition=0)
        agent.sent_offset = 3
        await agent.put(raw(score=3, at=days[3]), key=b"r-1", partition=0)  # redelivered after a crash
    out = harness.decoded("classified", avro.CLASSIFIED_RESPONSE)
    d = lambda day: datetime(2026, 11, day).date()  # noqa: E731
    assert [o["earlier_days"] for o in out] == [[], [d(18)], [d(18)], [d(18), d(19)], [d(18), d(19)]]
    assert [o["org_id"] for o in out] == [None] * 5  # no invitation, no organization


async def test_a_response_to_an_invitation_carries_its_organization_also_after_it_is_forgotten(harness):
    invitation = {"inv": "inv-1", "org": "acme", "survey_id": "s-9", "locale": "fi", "segment": {"location": "Oulu"}}
    table = harness.pipeline.tables["invitations"]  # raw JSON keys and values, as the deliver agent writes them
    async with harness.feed("classify") as agent:
        table.data[b'"I|inv-1"'] = json.dumps(invitation).encode()
        await agent.put(raw(rid="inv-1", score=4, invitation_id="inv-1"), key=b"inv-1", partition=0)
        await until(lambda: len(harness.sent["classified"]) == 1)
        table.data.pop(b'"I|inv-1"')  # the deliver agent forgot it (expired)
        await agent.put(raw(rid="inv-1", score=9, at="2026-11-20T11:00:00Z", invitation_id="inv-1"), key=b"inv-1",
                        partition=0)
    first, edit = harness.decoded("classified", avro.CLASSIFIED_RESPONSE)
    assert (first["org_id"], first["survey_id"], first["segment"]) == ("acme", "s-9", {"location": "Oulu"})
    assert (edit["org_id"], edit["is_edit"]) == ("acme", True)  # remembered by classify, not lost with it


async def test_classified_answers_carry_masked_texts_their_language_terms_and_the_respondent(harness):
    """Personal data never leaves classify: the comment and the follow-up answer are masked before the classified
    record (Kafka, ClickHouse) has them; the respondent is the invitation's keyed contact pseudonym."""
    invitation = {"inv": "inv-7", "org": "acme", "survey_id": "s-1", "locale": "sv-SE", "contact_key": "ck-9",
                  "segment": {"location": "Malmö"}}
    harness.pipeline.tables["invitations"].data[b'"I|inv-7"'] = json.dumps(invitation).encode()
    comment = "Fakturan var fel! Ring mig på 070-123 45 67 eller mejla anna.svensson@example.se"
    async with harness.feed("classify") as agent:
        await agent.put(raw(rid="inv-7", score=3, invitation_id="inv-7", comment=comment,
                            follow_up="Kundtjänst svarade inte"), key=b"inv-7")
        await agent.put(raw(rid="anon", score=10), key=b"anon")  # no text at all
    answer, silent = harness.decoded("classified", avro.CLASSIFIED_RESPONSE)
    assert answer["comment"] == "Fakturan var fel! Ring mig på [phone] eller mejla [email]"
    assert answer["follow_up"] == "Kundtjänst svarade inte"
    assert answer["lang"] == "sv" and answer["respondent"] == "ck-9"
    assert {"faktura", "fel", "kundtjänst", "inte svara"} <= set(answer["terms"])
    assert not [t for t in answer["terms"] if any(c.isdigit() for c in t) or "@" in t or "[" in t]
    assert (silent["comment"], silent["lang"], silent["terms"], silent["respondent"]) == (None, "", [], "")
    # the survey page shows the respondent their own words: the invitation's note keeps the comment as written
    (note,) = [json.loads(v) for k, v in harness.sent["invitations"]]
    assert note["comment"] == comment


async def test_edit_moving_a_response_removes_it_from_the_old_segment(harness):
    async with harness.feed("classify") as agent:
        await agent.put(raw(score=0, location="Bergen"), key=b"r-1")
        await agent.put(raw(score=9, at="2026-11-20T10:05:00Z", location="Oslo"), key=b"r-1")
    last_item = harness.delta_items("location=Bergen")[-1]
    at = int(datetime(2026, 11, 20, 10, tzinfo=timezone.utc).timestamp() * 1000)
    assert last_item[2:] == [None, None, at, "detractor"]  # nothing added, the first version retracted
    assert harness.delta_items("location=Oslo")[-1][2:] == [at + 300_000, "promoter", None, None]


async def run_windows(harness, deltas):
    async with harness.feed("windows") as agent:
        for key, value in deltas:
            await agent.put(value, key=key, partition=0)
    latest = {}
    for upd in harness.decoded("windows", avro.WINDOW_UPDATE):
        latest[(upd["dimension"], upd["segment_value"], upd["window"])] = upd
    return latest


async def test_windows_count_once_and_follow_edits(harness):
    async with harness.feed("classify") as agent:
        for i in range(9):
            await agent.put(raw(rid=f"p{i}", score=10, at=f"2026-11-20T10:{i:02d}:00Z"), key=f"p{i}".encode())
        for i in range(2):
            await agent.put(raw(rid=f"d{i}", score=2, at=f"2026-11-20T10:3{i}:00Z"), key=f"d{i}".encode())
        await agent.put(raw(rid="m", score=0, location="Bergen"), key=b"m")
        await agent.put(raw(rid="m", score=9, at="2026-11-20T10:45:00Z", location="Oslo"), key=b"m")
    deltas = harness.deltas()
    latest = await run_windows(harness, deltas + deltas)  # every delta twice: replays must not count
    espoo = latest[("location", "Espoo", "24h")]
    assert (espoo["promoters"], espoo["passives"], espoo["detractors"]) == (9, 0, 2)
    assert round(espoo["nps"], 2) == 63.64 and (round(espoo["ci_low"], 2), round(espoo["ci_high"], 2)) == (8.0, 92.0)
    assert espoo["band"] == "excellent"
    assert latest[("location", "Bergen", "24h")]["responses"] == 0
    assert latest[("location", "Oslo", "24h")]["promoters"] == 1
    overall = latest[("overall", "all", "7d")]
    assert (overall["promoters"], overall["detractors"], overall["responses"]) == (10, 2, 12)
    end = datetime(2026, 11, 20, 11, tzinfo=timezone.utc)
    assert espoo["window_end"] == end and espoo["window_start"] == end - timedelta(hours=24)
    assert harness.pipeline.stats.as_dict()["windows.replayed"] >= len(deltas)


async def test_late_additions_beyond_lateness_are_not_counted(harness):
    async with harness.feed("classify") as agent:
        await agent.put(raw(rid="now", score=10, at="2026-11-20T11:59:00Z"), key=b"now")
        await agent.put(raw(rid="late", score=0, at="2026-11-20T08:00:00Z"), key=b"late")  # 4 h late > 2 h
        await agent.put(raw(rid="ok", score=0, at="2026-11-20T10:30:00Z"), key=b"ok")  # 1.5 h: accepted
    deltas = harness.deltas()
    latest = await run_windows(harness, deltas)
    overall = latest[("overall", "all", "24h")]
    assert (overall["promoters"], overall["detractors"]) == (1, 1)
    assert harness.pipeline.stats.as_dict()["classify.too_late"] == 1
    assert harness.memo("late")["c"] is False and harness.memo("ok")["c"] is True


async def test_a_held_window_update_survives_the_worker_that_held_it(harness):
    """Updates are sent at most every emit_interval per segment; one held back when the worker dies must still
    go out after the restart, although replaying the deltas changes nothing (the state carries a "due" mark)."""
    async with harness.feed("classify") as agent:  # two classify batches: two delta messages
        await agent.put(raw(rid="a", score=10, at="2026-11-20T10:00:00Z"), key=b"a")
        await until(lambda: len(harness.sent["classified"]) == 1)
        await agent.put(raw(rid="b", score=0, at="2026-11-20T10:00:00Z"), key=b"b")
    deltas = [d for d in harness.deltas() if d[0] == "overall=all"]
    assert len(deltas) == 2
    windows = harness.pipeline.batch_agents["windows"]
    windows.emit_interval = 3600.0  # the first update goes out, the second is held
    await run_windows(harness, deltas[:1])
    await run_windows(harness, deltas[1:])
    sent = lambda: [u for u in harness.decoded("windows", avro.WINDOW_UPDATE)  # noqa: E731
                    if u["dimension"] == "overall" and u["window"] == "24h"]
    assert [u["responses"] for u in sent()] == [1]  # the second update is held
    windows.due.clear(), windows.last_emit.clear()  # the worker died: what it held in memory is gone
    await run_windows(harness, deltas)  # the restarted worker replays the deltas: nothing changes
    assert [u["responses"] for u in sent()] == [1]
    windows.rescan = True  # as after the start / a rebalance
    await harness.pipeline.timers["emit_held_window_updates"]()
    assert [u["responses"] for u in sent()] == [1, 2]
    await harness.pipeline.timers["emit_held_window_updates"]()  # sent: the mark is gone
    assert [u["responses"] for u in sent()] == [1, 2]


async def test_malformed_window_delta_is_dead_lettered(harness):
    await run_windows(harness, [("location=Espoo", b"{not json")])
    (dl,) = harness.decoded("dead_letters", avro.DEAD_LETTER)
    assert dl["reason"] == "bad_window_delta" and dl["stage"] == "windows"


async def test_the_dedup_memory_forgets_by_processing_time_and_refuses_what_it_could_confuse(tmp_path):
    """Memos are forgotten NPSFLOW_DEDUP_RETENTION after their last write (not after responded_at: imported
    history stays remembered), and a version older than the memory is refused, because it could be an earlier
    version of a forgotten answer and would count again on its own day."""
    later = {"now": NOW}
    harness = Harness(tmp_path, clock=lambda: later["now"])
    old_answer = (NOW - timedelta(days=89)).isoformat()  # imported history, inside the 90-day memory
    async with harness.feed("classify") as agent:
        await agent.put(raw(rid="old", score=9, at=old_answer), key=b"old")
        await agent.put(raw(rid="older", score=9, at=(NOW - timedelta(days=95)).isoformat()), key=b"older")
    (dl,) = harness.decoded("dead_letters", avro.DEAD_LETTER)
    assert dl["reason"] == "older_than_dedup_memory" and json.loads(dl["payload_json"])["response_id"] == "older"
    later["now"] = NOW + timedelta(days=30)
    await harness.pipeline.timers["expire_seen"]()
    assert harness.memo("old") is not None  # responded 119 days ago, written 30 days ago: remembered
    later["now"] = NOW + timedelta(days=91)
    await harness.pipeline.timers["expire_seen"]()
    assert harness.memo("old") is None
    assert harness.pipeline.stats.as_dict()["classify.forgotten"] == 1
    assert harness.changelog["seen"][-1] == (0, b'"old"', None)  # a real tombstone
    async with harness.feed("classify") as agent:  # a version of the forgotten answer
        await agent.put(raw(rid="old", score=0, at=(NOW - timedelta(days=89, hours=1)).isoformat()), key=b"old")
    assert [d["reason"] for d in harness.decoded("dead_letters", avro.DEAD_LETTER)] == ["older_than_dedup_memory"] * 2
    assert len(harness.sent["classified"]) == 1
    # an edit of the forgotten answer made today: it would count today and still on its old day in ClickHouse
    today = later["now"].isoformat()
    async with harness.feed("classify") as agent:
        await agent.put(raw(rid="old", score=0, at=today), key=b"old")
        await agent.put(raw(rid="fresh", score=0, at=today), key=b"fresh")  # never seen: counted
    reasons = [d["reason"] for d in harness.decoded("dead_letters", avro.DEAD_LETTER)]
    assert reasons[2:] == ["edit_after_dedup_memory"]
    assert [c["response_id"] for c in harness.decoded("classified", avro.CLASSIFIED_RESPONSE)] == ["old", "fresh"]
    writes = [(key, value is None) for _, key, value in harness.changelog["seen"]]
    assert writes.index((b"\x00gone|0|0", False)) < writes.index((b'"old"', True))  # registered, then forgotten
    await harness.pipeline.batch_agents["classify"].registers.on_rebalance()  # reloaded from the table
    async with harness.feed("classify") as agent:
        await agent.put(raw(rid="old", score=10, at=today), key=b"old")
    assert [d["reason"] for d in harness.decoded("dead_letters", avro.DEAD_LETTER)][3:] == ["edit_after_dedup_memory"]


async def test_the_expiry_sweep_waits_for_rebalances_and_keeps_to_the_partitions_it_owns(tmp_path):
    """The register of forgotten answers is written only by the partition's owner, from a settled table: no
    sweep while Faust rebalances or recovers tables, none on partitions not actively assigned; and a register
    is reloaded when the table holds chunks it does not know (recovery went on, another worker wrote)."""
    later = {"now": NOW}
    harness = Harness(tmp_path, clock=lambda: later["now"])
    async with harness.feed("classify") as agent:
        await agent.put(raw(rid="a", score=9), key=b"a")
    classify = harness.pipeline.batch_agents["classify"]
    later["now"] = NOW + timedelta(days=91)
    app = harness.pipeline.app
    for flag in ("rebalancing", "in_recovery"):
        setattr(app, flag, True)
        await harness.pipeline.timers["expire_seen"]()
        setattr(app, flag, False)
        assert harness.memo("a") is not None, flag
    classify.active_partitions = lambda: {1, 2}  # partition 0 moved to another worker
    await harness.pipeline.timers["expire_seen"]()
    assert harness.memo("a") is not None
    classify.active_partitions = lambda: {0}
    await harness.pipeline.timers["expire_seen"]()
    assert harness.memo("a") is None and "a" in classify.registers.of(0)
    table = harness.pipeline.tables["seen"]
    from streams.forgotten import ForgottenRegister, chunk_key

    other = ForgottenRegister(0, table.data.get)  # e.g. written by the previous owner, arriving by recovery
    for key, value in other.add(["b"]).items():
        table.data[key] = value
    assert chunk_key(0, 0) in table.data and "b" in classify.registers.of(0)


async def test_an_answer_to_an_invitation_is_identified_by_it(harness):
    """One key on every path: an answer naming an invitation must carry it as response_id (or none)."""
    async with harness.feed("classify") as agent:
        await agent.put(raw(rid="r-1", invitation_id="inv-1"), key=b"inv-1")
        obj = {"invitation_id": "inv-2", "score": 8, "responded_at": "2026-11-20T10:00:00Z"}
        await agent.put(CODEC.encode(avro.RAW_RESPONSE, to_raw_response(obj, received_at=NOW)), key=b"inv-2")
    (dl,) = harness.decoded("dead_letters", avro.DEAD_LETTER)
    assert dl["reason"] == "response_id_not_invitation"
    (out,) = harness.decoded("classified", avro.CLASSIFIED_RESPONSE)
    assert (out["response_id"], out["invitation_id"]) == ("inv-2", "inv-2")


async def test_a_record_on_the_wrong_partition_is_re_keyed(tmp_path):
    """Every version of an answer must meet on the partition of its key (murmur2, as every client computes it)."""
    from streams.kafka_io import partition_for

    harness = Harness(tmp_path, env={"NPSFLOW_PARTITIONS": "6"})
    right = partition_for(b"r-1", 6)
    async with harness.feed("classify") as agent:
        await agent.put(raw(rid="r-1"), key=b"r-1", partition=(right + 1) % 6)
        await agent.put(raw(rid="r-1"), key=b"r-1", partition=right)
    assert [k for k, _ in harness.sent["raw"]] == [b"r-1"]
    assert len(harness.sent["classified"]) == 1
    assert harness.pipeline.stats.as_dict()["classify.rekeyed"] == 1


@pytest.mark.parametrize("changes,reason", [
    ({"at": "0001-01-01T00:00:00+01:00"}, "responded_at_out_of_range"),
    ({"at": "1500-01-01T00:00:00Z"}, "responded_at_out_of_range"),
    ({"at": "1969-12-31T23:59:59Z"}, "responded_at_out_of_range"),
    ({"score": "9" * 5000}, "score_out_of_range"),
    ({"score": "\u0667"}, "score_not_integer"),  # an Arabic-Indic digit is not an ASCII integer
    ({"location": "x" * 300}, "segment_invalid"),
])
async def test_poison_records_are_dead_lettered_and_the_agent_keeps_going(harness, changes, reason):
    async with harness.feed("classify") as agent:
        await agent.put(raw(**changes), key=b"r-1")
        await agent.put(raw(rid="r-2", score=10), key=b"r-2")
    (dl,) = harness.decoded("dead_letters", avro.DEAD_LETTER)
    assert dl["reason"] == reason
    assert [o["response_id"] for o in harness.decoded("classified", avro.CLASSIFIED_RESPONSE)] == ["r-2"]


async def test_unexpected_failure_is_dead_lettered_before_any_state_is_written(harness, monkeypatch):
    real_encode = harness.pipeline.codec.encode

    def failing(subject, record):
        if subject == avro.CLASSIFIED_RESPONSE and record["response_id"] == "r-1":
            raise RuntimeError("boom")
        return real_encode(subject, record)

    monkeypatch.setattr(harness.pipeline.codec, "encode", failing)
    async with harness.feed("classify") as agent:
        await agent.put(raw(), key=b"r-1")
        await agent.put(raw(rid="r-2"), key=b"r-2")
    (dl,) = harness.decoded("dead_letters", avro.DEAD_LETTER)
    assert dl["reason"] == "classify_internal_error" and "boom" in dl["detail"]
    assert harness.memo("r-1") is None  # a retry will process it as new
    assert [o["response_id"] for o in harness.decoded("classified", avro.CLASSIFIED_RESPONSE)] == ["r-2"]


async def test_record_keyed_differently_is_re_keyed_by_response_id(harness):
    async with harness.feed("classify") as agent:
        await agent.put(raw(rid="r-1"), key=None)
    assert harness.sent["classified"] == []
    ((key, value),) = harness.sent["raw"]
    assert key == b"r-1" and CODEC.decode(value)["response_id"] == "r-1"
    assert harness.pipeline.stats.as_dict()["classify.rekeyed"] == 1


async def test_windows_redelivery_after_the_state_landed_counts_once(harness):
    """The crash window: the segment's state (with its source high-water offsets) reached the changelog, the
    input was not acked, Kafka redelivers the same delta messages — and classify re-emits its items too."""
    async with harness.feed("classify") as agent:
        for i in range(3):
            await agent.put(raw(rid=f"p{i}", score=10, at=f"2026-11-20T10:0{i}:00Z"), key=f"p{i}".encode())
    deltas = harness.deltas()
    table = harness.pipeline.tables["window_state"]
    async with harness.feed("windows") as agent:
        for key, value in deltas:
            await agent.put(value, key=key, partition=0)
        await until(lambda: table.data.get(b'"S|overall=all"') is not None)
        agent.sent_offset = 0  # Kafka redelivers the same offsets …
        for key, value in deltas + deltas:  # … and classify's re-emission comes on top
            await agent.put(value, key=key, partition=0)
    overall = json.loads(table.data[b'"S|overall=all"'])
    assert sum(c[0] for c in overall["b"].values()) == 3  # not 6, not 9
    assert overall["hw"] == {"0": 2}
    assert harness.pipeline.stats.as_dict()["windows.replayed"] == 12


async def test_lateness_is_decided_by_the_partition_and_kept_for_edits(harness):
    """A version refused as too late is never retracted by its edit (it was never added), and a replayed
    decision is the memo's, whatever the worker saw since."""
    async with harness.feed("classify") as agent:
        await agent.put(raw(rid="now", score=10, at="2026-11-20T11:59:00Z"), key=b"now")
        await agent.put(raw(rid="late", score=0, at="2026-11-20T08:00:00Z"), key=b"late")  # 4 h > 2 h: not counted
        await agent.put(raw(rid="late", score=9, at="2026-11-20T11:30:00Z"), key=b"late")  # its edit: counted
    assert harness.delta_items("overall=all")[1:] == [
        [0, 2, int(datetime(2026, 11, 20, 11, 30, tzinfo=timezone.utc).timestamp() * 1000), "promoter", None, None]]
    latest = await run_windows(harness, harness.deltas())
    overall = latest[("overall", "all", "24h")]
    assert (overall["promoters"], overall["detractors"]) == (2, 0)
    wm = json.loads(harness.pipeline.tables["seen"].data[b"\x00wm|0"])
    assert wm == int(datetime(2026, 11, 20, 11, 59, tzinfo=timezone.utc).timestamp() * 1000)


async def test_idle_segments_keep_rolling(harness):
    async with harness.feed("classify") as agent:
        await agent.put(raw(rid="a", score=10, at="2026-11-18T10:00:00Z", location="Espoo"), key=b"a")
        await agent.put(raw(rid="b", score=10, at="2026-11-20T11:00:00Z", location="Oslo"), key=b"b")
    deltas = harness.deltas()
    espoo_first = [(k, v) for k, v in deltas if k == "location=Espoo"]
    others = [(k, v) for k, v in deltas if k != "location=Espoo"]
    latest = await run_windows(harness, espoo_first)  # Espoo seen alone: watermark 2026-11-18 10:00
    assert latest[("location", "Espoo", "24h")]["responses"] == 1
    harness.sent["windows"].clear()
    async with harness.feed("windows") as agent:
        for key, value in others:  # the watermark moves two days on, Espoo gets nothing
            await agent.put(value, key=key, partition=0)
    assert not [u for u in harness.decoded("windows", avro.WINDOW_UPDATE) if u["segment_value"] == "Espoo"]
    await harness.pipeline.timers["roll_idle_segments"]()
    rolled = {u["window"]: u for u in harness.decoded("windows", avro.WINDOW_UPDATE) if u["segment_value"] == "Espoo"}
    assert rolled["24h"]["responses"] == 0 and rolled["7d"]["responses"] == 1
    assert harness.pipeline.stats.as_dict()["windows.rolled"] == 1


# ------------------------------------------------------------------------------------------ follow_up
def test_ingest_carries_follow_up_in_its_own_field_not_in_unknown_json():
    rec = to_raw_response({"response_id": "r-1", "score": 3, "follow_up": "Faster booking", "x": 1},
                          received_at=NOW)
    assert rec["follow_up"] == "Faster booking" and json.loads(rec["unknown_json"]) == {"x": 1}
    assert to_raw_response({"response_id": "r-1", "score": 3}, received_at=NOW)["follow_up"] is None
    assert to_raw_response({"response_id": "r-1", "follow_up": None}, received_at=NOW)["unknown_json"] is None
    wrong = to_raw_response({"response_id": "r-1", "follow_up": 5}, received_at=NOW)  # a misfit, like a comment
    assert wrong["follow_up"] is None and json.loads(wrong["unknown_json"]) == {"follow_up": 5}
    assert CODEC.decode(CODEC.encode(avro.RAW_RESPONSE, rec))["follow_up"] == "Faster booking"


async def test_classify_emits_the_follow_up_answer(harness):
    async with harness.feed("classify") as agent:
        await agent.put(raw(rid="d", score=2, comment="Late", follow_up="  Call before coming \n"), key=b"d")
        await agent.put(raw(rid="p", score=10, follow_up="The technician"), key=b"p")
        await agent.put(raw(rid="n", score=8), key=b"n")
        await agent.put(raw(rid="b", score=9, follow_up="   "), key=b"b")
    out = {o["response_id"]: o for o in harness.decoded("classified", avro.CLASSIFIED_RESPONSE)}
    assert {rid: (o["category"], o["comment"], o["follow_up"]) for rid, o in out.items()} == {
        "d": ("detractor", "Late", "Call before coming"), "p": ("promoter", None, "The technician"),
        "n": ("passive", None, None), "b": ("promoter", None, None)}
    assert harness.sent["dead_letters"] == []


async def test_follow_up_not_a_string_is_dead_lettered_too_long_is_cut(harness):
    async with harness.feed("classify") as agent:
        await agent.put(raw(rid="long", follow_up="x" * 10_001), key=b"long")
        await agent.put(raw(rid="num", follow_up=42), key=b"num")
        await agent.put(raw(rid="ok", follow_up="x" * 10_000), key=b"ok")
    dls = harness.decoded("dead_letters", avro.DEAD_LETTER)
    assert [(json.loads(d["payload_json"])["response_id"], d["reason"], d["stage"]) for d in dls] == \
        [("long", "comment_truncated", "classify"), ("num", "follow_up_not_string", "classify")]
    assert all(d["detail"] for d in dls)
    assert json.loads(dls[0]["payload_json"])["follow_up"] == "x" * 10_001  # the original, for inspection
    out = {o["response_id"]: o["follow_up"] for o in harness.decoded("classified", avro.CLASSIFIED_RESPONSE)}
    assert out == {"long": "x" * 10_000, "ok": "x" * 10_000}


async def test_adding_the_follow_up_answer_is_an_edit(harness):
    async with harness.feed("classify") as agent:
        await agent.put(raw(score=3), key=b"r-1")  # the score, page 1
        await agent.put(raw(score=3, at="2026-11-20T10:01:00Z", follow_up="Faster booking"), key=b"r-1")  # page 2
        await agent.put(raw(score=3, at="2026-11-20T10:01:00Z", follow_up="Faster booking"), key=b"r-1")  # replay
    first, second = harness.decoded("classified", avro.CLASSIFIED_RESPONSE)
    assert (first["follow_up"], first["is_edit"]) == (None, False)
    assert (second["follow_up"], second["is_edit"], second["previous_score"]) == ("Faster booking", True, 3)
    assert second["version"] > first["version"]
    stats = harness.pipeline.stats.as_dict()
    assert (stats["classify.new"], stats["classify.edit"], stats["classify.duplicate"]) == (1, 1, 1)


async def test_follow_up_lands_in_clickhouse_end_to_end(tmp_path, ch_store):
    """raw → classify → classified → sink-responses → real chDB: the answer, and '' where there is none."""
    h = Harness(tmp_path, store_factory=lambda: ch_store, env={"NPSFLOW_SINK_MAX_AGE": "0.05"})
    async with h.feed("classify") as agent:
        await agent.put(raw(rid="d", score=1, comment="Late", follow_up="Call before coming"), key=b"d")
        await agent.put(raw(rid="n", score=7), key=b"n")
    classified = h.sent["classified"]
    assert len(classified) == 2
    async with h.feed("sink-responses") as agent:
        events = [await agent.put(value, key=key, partition=0) for key, value in classified]
        await until(lambda: all(e.message.acked for e in events))
    got = ch_store.query("SELECT response_id, comment, follow_up, toTypeName(follow_up) AS t "
                         "FROM {db}.responses FINAL ORDER BY response_id")
    assert got == [{"response_id": "d", "comment": "Late", "follow_up": "Call before coming", "t": "String"},
                   {"response_id": "n", "comment": "", "follow_up": "", "t": "String"}]


async def test_a_failed_send_is_retried_with_the_same_records_state_included(harness):
    """Kafka refuses a batch's output once: the retry sends the very same records — the memos too (recomputing
    the batch would find its memos already in memory and stage nothing, losing them from the changelog)."""
    real = harness.pipeline.sender
    failures = {"left": 1}

    class Refusing:
        async def send(self, topic, partition, records):
            if failures["left"]:
                failures["left"] -= 1
                raise ConnectionError("broker unavailable")
            await real.send(topic, partition, records)

    harness.pipeline.sender = Refusing()
    async with harness.feed("classify") as agent:
        event = await agent.put(raw(score=9), key=b"r-1")
    assert event.message.acked
    assert [key for _, key, value in harness.changelog["seen"] if key == b'"r-1"'] == [b'"r-1"']
    assert json.loads(harness.changelog["seen"][0][2])["s"] == 9
    assert len({value for _, value in harness.sent["classified"]}) == 1  # other groups of the first attempt
    # may have landed: the retry sends them again, identical (at least once; ClickHouse keeps one version)
    assert harness.pipeline.stats.as_dict()["classify.retry"] == 1


async def test_window_updates_of_a_segment_are_sent_at_most_once_per_interval(harness):
    """A busy segment gets one update per interval (the latest counts win downstream); the held one is sent by
    the timer with the counts of everything applied meanwhile."""
    agent_obj = harness.pipeline.batch_agents["windows"]
    clock = {"now": 100.0}
    agent_obj.emit_interval, agent_obj.now = 1.0, lambda: clock["now"]
    for i in range(3):  # three classify batches: three delta messages per segment
        async with harness.feed("classify") as agent:
            agent.sent_offset = i - 1  # offsets 0, 1, 2 of the raw partition
            await agent.put(raw(rid=f"p{i}", score=10, at=f"2026-11-20T10:0{i}:00Z"), key=f"p{i}".encode())
    deltas = harness.deltas()
    assert len(deltas) == 6
    for start in range(0, 6, 2):  # three windows batches
        async with harness.feed("windows") as agent:
            agent.sent_offset = start - 1
            for key, value in deltas[start:start + 2]:
                await agent.put(value, key=key, partition=0)

    def overall_24h():
        return [u for u in harness.decoded("windows", avro.WINDOW_UPDATE)
                if (u["dimension"], u["window"]) == ("overall", "24h")]

    assert [u["responses"] for u in overall_24h()] == [1]  # the first batch; the next two were held
    await harness.pipeline.timers["emit_held_window_updates"]()
    assert [u["responses"] for u in overall_24h()] == [1]  # still inside the interval
    clock["now"] += 1.0
    await harness.pipeline.timers["emit_held_window_updates"]()
    assert [u["responses"] for u in overall_24h()] == [1, 3]
