"""classify's dedup-memo expiry reads only what may be due (streams.classify_agent.ExpiryIndex): the agents run
in-process (tests/test_agents.py's Harness: the real agent loop, Kafka stood in for at the BatchOutput boundary)."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import numpy as np
import orjson
import pytest

from streams import classify_agent
from streams.classify_agent import HOUR_MS, ExpiryIndex
from streams.forgotten import chunk_key, id_hash
from streams.responses import to_ms
from tests.test_agents import NOW, Harness, raw


def expiring(tmp_path):
    """A harness whose clock the test moves, its expiry timer, and its counters."""
    later = {"now": NOW}
    harness = Harness(tmp_path, clock=lambda: later["now"])
    return harness, later, harness.pipeline.timers["expire_seen"], lambda name: harness.pipeline.stats.as_dict()[name]


async def answers(harness, *rids: str, at=None) -> None:
    async with harness.feed("classify") as agent:
        for rid in rids:
            await agent.put(raw(rid=rid, **({"at": at.isoformat()} if at is not None else {})), key=rid.encode())


async def test_a_pass_with_nothing_due_reads_no_memo_once_the_index_is_built(tmp_path, monkeypatch):
    """The first pass reads every memo (some may have come by table recovery); once it built the index, a pass
    with nothing due reads none — and one with everything due finds them all."""
    harness, later, expire, stat = expiring(tmp_path)
    rids = [f"r-{i}" for i in range(20)]
    await answers(harness, *rids)
    later["now"] = NOW + timedelta(days=1)
    await expire()
    assert (stat("classify.expiry_visited"), stat("classify.expiry_full_scans"), stat("classify.forgotten")) == (20, 1, 0)
    loaded = []
    monkeypatch.setattr(classify_agent, "orjson", SimpleNamespace(
        loads=lambda raw: loaded.append(raw) or orjson.loads(raw), dumps=orjson.dumps))
    for days in (30, 60, 89, 90):  # written at NOW: due from NOW + 90 days on, not at it
        later["now"] = NOW + timedelta(days=days)
        await expire()
    assert loaded == [] and (stat("classify.expiry_visited"), stat("classify.expiry_full_scans")) == (20, 1)
    later["now"] = NOW + timedelta(days=90, milliseconds=1)
    await expire()
    assert stat("classify.forgotten") == 20 and all(harness.memo(rid) is None for rid in rids)
    assert (stat("classify.expiry_visited"), stat("classify.expiry_full_scans")) == (40, 1)
    assert len(loaded) == 40  # each memo and its key once


async def test_a_memo_written_again_is_forgotten_at_its_new_hour_not_its_old_one(tmp_path):
    """An edit rewrites the memo (new ``w``): the index keeps a stale entry under the old hour; the pass of that
    hour reads the memo, keeps it and drops the entry; the pass of its new hour forgets it."""
    harness, later, expire, stat = expiring(tmp_path)
    await answers(harness, "a", "b")
    await expire()  # builds the index
    later["now"] = edited = NOW + timedelta(days=10, minutes=30)
    await answers(harness, "a", at=edited)  # an edit: a new version, memo written again
    assert harness.memo("a")["w"] == to_ms(edited) and harness.memo("a")["e"] is True
    index = harness.pipeline.batch_agents["classify"].index
    assert index.buckets == {to_ms(NOW) // HOUR_MS: [b'"a"', b'"b"'], to_ms(edited) // HOUR_MS: [b'"a"']}
    later["now"] = NOW + timedelta(days=90, minutes=1)
    await expire()
    assert harness.memo("b") is None and harness.memo("a") is not None
    assert (stat("classify.forgotten"), stat("classify.expiry_visited")) == (1, 4)  # 2 by the full pass, a and b
    assert index.buckets == {to_ms(edited) // HOUR_MS: [b'"a"']}  # the stale entry is gone, not put back
    later["now"] = edited + timedelta(days=90) - timedelta(milliseconds=1)
    await expire()  # its new hour is read (it holds the cut-off) but a is not due yet
    assert harness.memo("a") is not None and index.buckets == {to_ms(edited) // HOUR_MS: [b'"a"']}
    later["now"] = edited + timedelta(days=90, milliseconds=1)
    await expire()
    assert harness.memo("a") is None and stat("classify.forgotten") == 2 and index.buckets == {}
    assert stat("classify.expiry_full_scans") == 1


async def test_memos_recovered_after_a_rebalance_are_found_by_the_first_settled_pass(tmp_path):
    """Memos that arrive by table recovery never pass through the agent: a rebalance makes the index incomplete,
    the first settled pass reads every memo (and forgets the due ones), later passes use the index again. A memo
    deleted meanwhile is skipped."""
    harness, later, expire, stat = expiring(tmp_path)
    await answers(harness, "a", "deleted")
    await expire()
    assert stat("classify.expiry_full_scans") == 1
    app, table = harness.pipeline.app, harness.pipeline.tables["seen"]
    app.rebalancing = True  # a rebalance: partitions revoked and assigned, the table recovered
    await app.on_partitions_revoked.send(set())
    await app.on_partitions_assigned.send(set())
    recovered = {**harness.memo("a"), "src": [0, 77], "w": to_ms(NOW - timedelta(days=1))}
    table.data[b'"recovered"'] = orjson.dumps(recovered)  # written by the partition's previous owner
    later["now"] = NOW + timedelta(days=89, hours=12)  # "recovered" is due, "a" and "deleted" are not
    await expire()  # not settled: nothing
    assert harness.memo("recovered") is not None and stat("classify.expiry_full_scans") == 1
    app.rebalancing = False
    await expire()
    assert harness.memo("recovered") is None and harness.memo("a") is not None
    assert "recovered" in harness.pipeline.batch_agents["classify"].registers.of(0)
    assert (stat("classify.expiry_full_scans"), stat("classify.forgotten")) == (2, 1)
    table.data.pop(b'"deleted"')  # listed in the index, gone from the table (e.g. another rebalance's recovery)
    later["now"] = NOW + timedelta(days=90, hours=1)
    await expire()
    assert harness.memo("a") is None and (stat("classify.expiry_full_scans"), stat("classify.forgotten")) == (2, 2)
    assert [key for _, key, value in harness.changelog["seen"] if value is None] == [b'"recovered"', b'"a"']


async def test_a_rebalance_during_a_pass_stops_it_picking_and_the_next_pass_rebuilds(tmp_path, monkeypatch):
    """A rebalance that begins during a pass: nothing is picked after it, even if the app looks settled again
    (a short rebalance between two chunks), and the next pass rebuilds the index."""
    harness, later, expire, stat = expiring(tmp_path)
    await answers(harness, "a")
    await expire()
    classify = harness.pipeline.batch_agents["classify"]
    later["now"] = NOW + timedelta(days=91)
    visit = classify_agent.MemoExpiry.visit

    def rebalance_first(self, out, key, raw):
        classify.index.invalidate()  # what the rebalance signals do (streams.classify_agent.ExpiryIndex)
        return visit(self, out, key, raw)

    monkeypatch.setattr(classify_agent.MemoExpiry, "visit", rebalance_first)
    await expire()
    monkeypatch.undo()
    assert harness.memo("a") is not None and stat("classify.forgotten") == 0
    assert not classify.index.complete
    await expire()
    assert harness.memo("a") is None and stat("classify.expiry_full_scans") == 2


async def test_a_pass_that_fails_midway_leaves_the_index_to_be_rebuilt(tmp_path):
    """Keys taken out of the index and not visited because the pass failed (here: a memo it cannot read) are
    not lost: the next pass reads every memo."""
    harness, later, expire, stat = expiring(tmp_path)
    await answers(harness, "bad", "good")
    await expire()
    table = harness.pipeline.tables["seen"]
    table.data[b'"bad"'] = b'{"w": 0}'
    later["now"] = NOW + timedelta(days=91)
    with pytest.raises(KeyError):
        await expire()
    assert harness.memo("good") is not None
    table.data.pop(b'"bad"')
    await expire()
    assert harness.memo("good") is None and stat("classify.expiry_full_scans") == 2


async def test_the_incremental_pass_registers_every_id_before_its_tombstone(tmp_path):
    """Registers (streams.forgotten) before tombstones, on the index's path: the chunk naming an id is written
    before the id's memo is deleted."""
    harness, later, expire, stat = expiring(tmp_path)
    rids = [f"r-{i}" for i in range(12)]
    await answers(harness, *rids)
    await expire()
    later["now"] = NOW + timedelta(days=91)
    await expire()
    assert (stat("classify.forgotten"), stat("classify.expiry_full_scans")) == (12, 1)
    writes = harness.changelog["seen"]
    for rid in rids:
        tombstone = writes.index((0, orjson.dumps(rid), None))
        registered = [i for i, (_, key, value) in enumerate(writes) if key == chunk_key(0, 0)
                      and id_hash(rid) in np.frombuffer(value, dtype="<u8").tolist()]
        assert registered and registered[0] < tombstone, rid


def test_the_index_takes_out_the_hours_that_may_be_due_and_each_key_once():
    index = ExpiryIndex()
    for key, written in ((b'"a"', 0), (b'"b"', HOUR_MS - 1), (b'"a"', 10), (b'"c"', HOUR_MS), (b'"d"', 5 * HOUR_MS)):
        index.add(key, written)
    assert index.take_due(HOUR_MS + 1) == ({0, 1}, [b'"a"', b'"b"', b'"c"'])  # hour 1 holds the cut-off
    assert index.buckets == {5: [b'"d"']} and index.take_due(5 * HOUR_MS) == (set(), [])
    keep = index.keeper({0, 1})  # a pass that took hours 0 and 1 out
    keep(b'"c"', HOUR_MS + 5)  # read, not due (its hour holds the cut-off): listed again
    keep(b'"a"', 7 * HOUR_MS)  # written again since: listed under hour 7 already
    assert index.buckets == {1: [b'"c"'], 5: [b'"d"']}
