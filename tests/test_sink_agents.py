"""ClickHouse sink agents through Faust's agent.test_context() (no broker) on real embedded ClickHouse (chDB).

Outputs to Kafka topics are captured at the topic boundary (as in tests/test_agents.py); ClickHouse is the
real chDB store of the ``ch_store`` fixture, wrapped only to inject transient failures.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone

from clickhouse_connect.driver.exceptions import DataError, OperationalError

from schemas import codec as avro
from tests.test_agents import Harness

T0 = datetime(2024, 5, 1, tzinfo=timezone.utc)
CODEC = avro.AvroCodec()


def classified(rid: str, version: int = 1, score: int = 9) -> bytes:
    return CODEC.encode(avro.CLASSIFIED_RESPONSE, {
        "response_id": rid, "survey_id": "s1", "invitation_id": None, "score": score, "category": "promoter",
        "comment": None, "locale": "fi", "responded_at": T0, "received_at": T0 + timedelta(seconds=1),
        "processed_at": T0 + timedelta(seconds=2), "segment": {"location": "Espoo"}, "version": version,
        "is_edit": False, "previous_score": None, "source": "api"})


class FlakyStore:
    """The real store; ``ainsert`` raises OperationalError ``fail`` times first (ClickHouse briefly down).

    Every call records whether any of ``watch`` (events) was acked at that moment."""

    def __init__(self, store, fail: int = 0) -> None:
        self.store, self.fail = store, fail
        self.calls: list[tuple[str, int, bool]] = []  # (outcome, rows, any event acked yet)
        self.watch: list = []

    async def ainsert(self, table, rows, dedup_token=None):
        acked = any(e.message.acked for e in self.watch)
        if self.fail:
            self.fail -= 1
            self.calls.append(("down", len(rows), acked))
            raise OperationalError("Error HTTPConnectionPool(host='ch', port=8123): connection refused")
        try:
            result = await self.store.ainsert(table, rows, dedup_token=dedup_token)
        except Exception:
            self.calls.append(("refused", len(rows), acked))
            raise
        self.calls.append(("ok", len(rows), acked))
        return result

    def __getattr__(self, name):
        return getattr(self.store, name)


class SinkHarness(Harness):
    ENV = {"NPSFLOW_SINK_MAX_AGE": "0.05", "NPSFLOW_SINK_MAX_ROWS": "100", "NPSFLOW_DIMENSIONS": "overall,location"}

    def __init__(self, tmp_path, store) -> None:
        self.store = store
        super().__init__(tmp_path, store_factory=lambda: store)

    def dead_letters(self) -> list[dict]:
        return [CODEC.decode(v, expected=avro.DEAD_LETTER) for _, v in self.sent["dead_letters"]]


async def all_acked(events, limit: int = 2000) -> bool:
    """Let the agent run until every event is acked (a safety bound, not a timing assertion)."""
    for _ in range(limit):
        if all(e.message.acked for e in events):
            return True
        await asyncio.sleep(0.01)
    return False


def count(store, sql: str = "SELECT count() AS n FROM {db}.responses") -> int:
    return int(store.query(sql)[0]["n"])


async def test_bad_row_is_dead_lettered_good_rows_land_everything_acked(tmp_path, ch_store):
    store = FlakyStore(ch_store)
    h = SinkHarness(tmp_path, store)
    async with h.feed("sink-responses") as agent:
        events = []
        for i in range(6):
            value = classified("bad", version=-1) if i == 3 else classified(f"g{i}")
            events.append(await agent.put(value, key=f"g{i}".encode(), partition=2))
        store.watch = events
        assert await all_acked(events)
    assert count(ch_store) == 5
    assert {r["response_id"] for r in ch_store.query("SELECT response_id FROM {db}.responses")} == \
        {"g0", "g1", "g2", "g4", "g5"}
    (dl,) = h.dead_letters()
    assert (dl["stage"], dl["reason"], dl["source_partition"], dl["source_offset"]) == \
        ("sink", "sink_rejected_row", 2, events[3].message.offset)
    assert dl["detail"].startswith("responses: ") and "version" in dl["detail"] and "\n" not in dl["detail"]
    assert json.loads(dl["payload_json"])["response_id"] == "bad" and json.loads(dl["payload_json"])["version"] == -1
    assert dl["key"] == "g3"
    stats = h.pipeline.stats.as_dict()
    assert stats["dead_letter.sink.sink_rejected_row"] == 1 and stats["sink.responses.rejected"] == 1
    assert stats["sink.responses.rows"] == 6
    assert ("refused", 6, False) in store.calls  # the whole batch was refused once, then split


async def test_transient_failures_hold_acks_until_the_insert_succeeds(tmp_path, ch_store):
    store = FlakyStore(ch_store, fail=2)
    h = SinkHarness(tmp_path, store)
    async with h.feed("sink-responses") as agent:
        events = [await agent.put(classified(f"r{i}"), key=f"r{i}".encode(), partition=0) for i in range(3)]
        store.watch = events
        assert await all_acked(events)
    assert [c[0] for c in store.calls] == ["down", "down", "ok"]
    assert [c[2] for c in store.calls] == [False, False, False]  # nothing acked before the insert returned
    assert count(ch_store) == 3 and h.dead_letters() == []
    stats = h.pipeline.stats.as_dict()
    assert stats["sink.responses.retry"] == 2 and "sink.responses.rejected" not in stats


async def test_a_stuck_partition_does_not_block_another(tmp_path, ch_store):
    store = FlakyStore(ch_store, fail=1)
    h = SinkHarness(tmp_path, store)
    async with h.feed("sink-responses") as agent:
        first = await agent.put(classified("p0"), key=b"p0", partition=0)
        store.watch = [first]
        for _ in range(2000):  # wait for the failed attempt of partition 0
            if store.calls:
                break
            await asyncio.sleep(0.01)
        second = await agent.put(classified("p1"), key=b"p1", partition=1)
        assert await all_acked([first, second])
    assert count(ch_store) == 2 and store.calls[0][0] == "down"


async def test_revoked_partitions_keep_their_queue(tmp_path, ch_store):
    """A rebalance usually hands the partition straight back and Faust does not seek back: dropping queued
    rows would lose them until the next restart (seen in the SIGKILL e2e test). Keep them."""
    from faust.types import TP

    h = SinkHarness(tmp_path, ch_store)
    batching = h.pipeline.store_holder["sinks"]["responses"]
    batching.add(0, 0, None, "ack-0")
    batching.add(1, 0, None, "ack-1")
    await h.pipeline.app.on_partitions_revoked.send({TP(batching.topic, 0), TP("other", 1)})
    assert sorted(batching.partitions) == [0, 1]


async def test_refused_dead_letter_row_is_replaced_directly_not_looped(tmp_path, ch_store):
    h = SinkHarness(tmp_path, ch_store)
    batching = h.pipeline.store_holder["sinks"]["dead_letters"]
    row = {"dead_letter_id": "classify:t:0:7", "stage": "classify", "reason": "x", "failed_at": T0}
    await batching.on_rejected(0, 7, row, None, DataError("Unable to create native array for column `x`\nmore"))
    assert h.dead_letters() == []  # nothing sent to the dead letters topic: no loop
    (got,) = ch_store.query("SELECT * FROM {db}.dead_letters")
    assert (got["dead_letter_id"], got["stage"], got["reason"]) == ("classify:t:0:7", "sink", "sink_rejected_row")
    assert got["detail"] == "dead_letters: Unable to create native array for column `x`"
    assert json.loads(got["payload_json"])["reason"] == "x" and got["source_offset"] == 7


async def test_the_cases_sink_takes_the_gaps_of_its_compacted_topic(tmp_path, ch_store):
    """The cases topic is compacted: a partition's offsets have gaps by design (older versions of a case removed).
    A guard that sought them back would wait for offsets that are gone — the sink would hold every later case."""
    from schemas.examples import examples

    h = SinkHarness(tmp_path, ch_store)
    events = []
    async with h.feed("sink-cases") as agent:
        for offset, case_id in ((3, "case-a"), (9, "case-b"), (40, "case-c")):
            agent.sent_offset = offset - 1
            record = {**examples()[avro.CASE], "case_id": case_id}
            events.append(await agent.put(CODEC.encode(avro.CASE, record), key=case_id.encode(), partition=1))
        assert await all_acked(events)
    from faust.types import TP

    # what Faust's commit timer would commit now (its own function): past the gaps, not stuck at the first one
    assert h.pipeline.app.consumer._new_offset(TP(events[0].record.topic, 1)) == 41
    rows = ch_store.query("SELECT case_id, kafka_offset FROM {db}.cases ORDER BY case_id")
    assert [(r["case_id"], int(r["kafka_offset"])) for r in rows] == [("case-a", 3), ("case-b", 9), ("case-c", 40)]
    assert "sink.cases.offset_gap" not in h.pipeline.stats.as_dict()
