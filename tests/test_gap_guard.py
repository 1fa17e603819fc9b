"""GapGuard: a stream that skips offsets is sent back to the first missing one; re-reads are accepted."""

from collections import defaultdict
from types import SimpleNamespace

from faust.transport.consumer import Consumer as FaustConsumer
from faust.types import TP

from streams.app import RESEEK_AFTER, GapGuard, Stats
from streams.batch_consumer import BatchInbox, BatchRouter


class SeekRecorder:
    """Stands in for Faust's consumer: records the seeks the guard asks for."""

    def __init__(self):
        self.seeks = []

    async def seek(self, tp, offset):
        self.seeks.append((tp, offset))


def ev(partition, offset, topic="t"):
    return SimpleNamespace(message=SimpleNamespace(tp=TP(topic, partition), offset=offset))


def offsets(events):
    return [(e.message.tp.partition, e.message.offset) for e in events]


async def test_contiguous_offsets_pass_untouched():
    app = SimpleNamespace(consumer=SeekRecorder())
    guard = GapGuard(app, Stats(), "x")
    assert offsets(await guard.filter([ev(0, 0), ev(0, 1), ev(1, 5), ev(1, 6)])) == [(0, 0), (0, 1), (1, 5), (1, 6)]
    assert offsets(await guard.filter([ev(0, 2), ev(1, 7)])) == [(0, 2), (1, 7)]
    assert app.consumer.seeks == []


async def test_a_jump_seeks_back_and_holds_the_partition_until_the_re_read():
    app, stats = SimpleNamespace(consumer=SeekRecorder()), Stats()
    guard = GapGuard(app, stats, "sink")
    await guard.filter([ev(0, 87), ev(0, 88)])
    kept = await guard.filter([ev(0, 106), ev(0, 107), ev(1, 3)])  # 89..105 were skipped by Faust
    assert offsets(kept) == [(1, 3)]
    assert app.consumer.seeks == [(TP("t", 0), 89)]
    assert stats.as_dict()["sink.offset_gap"] == 1
    assert offsets(await guard.filter([ev(0, 89), ev(0, 90)])) == [(0, 89), (0, 90)]  # the re-read


async def test_records_let_through_already_are_not_handled_twice():
    """A redelivery within a generation (a repeated seek's second re-read) brings records the agent has handled
    and acked: dropped and counted, the partition goes on after them, no seek."""
    app, stats = SimpleNamespace(consumer=SeekRecorder()), Stats()
    guard = GapGuard(app, stats, "x")
    await guard.filter([ev(0, 10), ev(0, 11)])
    assert offsets(await guard.filter([ev(0, 5), ev(0, 6), ev(0, 11), ev(0, 12)])) == [(0, 12)]
    assert stats.as_dict()["x.offset_reread"] == 3
    assert app.consumer.seeks == []


class Committed(SeekRecorder):
    """Faust's consumer as the guard sees it after a rebalance: seeks, and the group's committed offsets."""

    def __init__(self, committed: dict):
        super().__init__()
        self._committed_offset = committed


async def test_a_partition_that_comes_back_is_not_sought_back_to_where_this_worker_left_it():
    """Another worker advanced the partition while it was away: after the rebalance the next record is at the
    group's committed offset, not after our old position — no seek, no replay (and no loop)."""
    app = SimpleNamespace(consumer=Committed({}))
    guard = GapGuard(app, Stats(), "x")
    await guard.filter([ev(0, 10), ev(0, 11)])
    await guard.on_rebalance()
    app.consumer._committed_offset[TP("t", 0)] = 500  # committed by the other worker meanwhile
    assert offsets(await guard.filter([ev(0, 500), ev(0, 501)])) == [(0, 500), (0, 501)]
    assert app.consumer.seeks == []


async def test_after_a_rebalance_records_skipped_before_the_first_one_are_sought_back():
    """Faust dropped a buffered fetch across the rebalance: the first record is past the committed offset."""
    app = SimpleNamespace(consumer=Committed({TP("t", 0): 40}))
    guard = GapGuard(app, Stats(), "x")
    await guard.on_rebalance()
    assert offsets(await guard.filter([ev(0, 57), ev(0, 58)])) == []
    assert app.consumer.seeks == [(TP("t", 0), 40)]


class Earliest(SeekRecorder):
    def __init__(self, earliest: int):
        super().__init__()
        self.earliest = earliest

    async def earliest_offsets(self, *tps):
        return {tp: self.earliest for tp in tps}


async def test_lists_fetched_before_the_seek_are_dropped_until_the_re_read_arrives():
    """Two lists of the partition were queued when the gap was seen: the second one (fetched before the seek)
    must not be taken as 'the seek came back from later offsets' — it is dropped and read again in order."""
    app = SimpleNamespace(consumer=Earliest(88))  # the log starts at 88: the first record is where it should be
    guard = GapGuard(app, Stats(), "x")
    await guard.filter([ev(0, 88)])
    assert offsets(await guard.filter([ev(0, 106), ev(0, 107)])) == [] and app.consumer.seeks == [(TP("t", 0), 89)]
    assert offsets(await guard.filter([ev(0, 121), ev(0, 122)])) == []  # queued before the seek: dropped
    assert offsets(await guard.filter([ev(0, 89), ev(0, 90)])) == [(0, 89), (0, 90)]  # the re-read, in order


async def test_a_seek_back_answered_from_a_later_offset_does_not_loop():
    """Retention deleted the missing offsets: Kafka answers the seek from its log start; go on from there."""
    app, stats = SimpleNamespace(consumer=Earliest(30)), Stats()
    guard = GapGuard(app, stats, "x")
    guard.last[TP("t", 0)] = 7  # read up to 7 before retention moved the log start to 30
    assert offsets(await guard.filter([ev(0, 40)])) == [] and app.consumer.seeks == [(TP("t", 0), 8)]
    assert offsets(await guard.filter([ev(0, 30), ev(0, 31)])) == [(0, 30), (0, 31)]
    assert offsets(await guard.filter([ev(0, 32)])) == [(0, 32)]
    assert app.consumer.seeks == [(TP("t", 0), 8)]
    assert stats.as_dict()["x.offset_gap_unrecoverable"] == 1


async def test_records_still_in_kafka_after_a_deleted_head_are_read_again():
    """Retention moved the log start to 15 while the guard waited for 8: 15..19 still exist, so a held record at
    20 sends the partition back to 15 (not on from 20)."""
    app, stats = SimpleNamespace(consumer=Earliest(15)), Stats()
    guard = GapGuard(app, stats, "x")
    guard.last[TP("t", 0)] = 7
    await guard.filter([ev(0, 19)])
    assert app.consumer.seeks == [(TP("t", 0), 8)]
    assert offsets(await guard.filter([ev(0, 20), ev(0, 21)])) == []
    assert app.consumer.seeks == [(TP("t", 0), 8), (TP("t", 0), 15)]
    assert offsets(await guard.filter([ev(0, 15), ev(0, 16)])) == [(0, 15), (0, 16)]
    assert stats.as_dict()["x.offset_gap_unrecoverable"] == 1


class Unreachable(Earliest):
    """The log start cannot be asked (a broker timeout during the outage that caused the gap)."""

    async def earliest_offsets(self, *tps):
        raise TimeoutError("earliest offsets")


async def test_a_gap_is_not_given_up_when_the_log_start_cannot_be_asked():
    """Review finding: the guard took 'cannot ask' for 'deleted', let a list fetched before its seek through and
    then dropped the re-read as handled already — offsets 8..19 never handled, the commit stuck at 8."""
    app = SimpleNamespace(consumer=Unreachable(0))
    guard = GapGuard(app, Stats(), "x")
    guard.last[TP("t", 0)] = 7
    assert offsets(await guard.filter([ev(0, 20)])) == [] and app.consumer.seeks == [(TP("t", 0), 8)]
    assert offsets(await guard.filter([ev(0, 21), ev(0, 22)])) == []  # fetched before the seek: held
    assert offsets(await guard.filter([ev(0, 8), ev(0, 9)])) == [(0, 8), (0, 9)]  # the re-read


async def test_a_record_fetched_before_retention_moved_the_log_start_is_taken_and_the_loss_counted_once():
    app, stats = SimpleNamespace(consumer=Earliest(30)), Stats()
    guard = GapGuard(app, stats, "x")
    guard.last[TP("t", 0)] = 7
    await guard.filter([ev(0, 25)])  # 8..24 missing: sought back to 8
    assert offsets(await guard.filter([ev(0, 26), ev(0, 27)])) == [(0, 26), (0, 27)]  # 26 is still in hand
    assert offsets(await guard.filter([ev(0, 28)])) == [(0, 28)]
    assert app.consumer.seeks == [(TP("t", 0), 8)] and stats.as_dict()["x.offset_gap_unrecoverable"] == 1


class Flaky(Earliest):
    """The log start cannot be asked the first ``failures`` times."""

    def __init__(self, earliest: int, failures: int):
        super().__init__(earliest)
        self.failures = failures
        self._committed_offset = {}

    async def earliest_offsets(self, *tps):
        if self.failures:
            self.failures -= 1
            raise TimeoutError("earliest offsets")
        return await super().earliest_offsets(*tps)


async def test_a_first_record_whose_place_cannot_be_asked_is_read_again_not_taken():
    """Review finding: nothing committed, the log start not answerable (a broker timeout): taking the first record
    as it comes would skip the partition's head for good (session 9's loss). It is read again and asked again."""
    app, stats = SimpleNamespace(consumer=Flaky(0, failures=1)), Stats()
    guard = GapGuard(app, stats, "x")
    assert offsets(await guard.filter([ev(0, 358), ev(0, 359)])) == [] and app.consumer.seeks == [(TP("t", 0), 358)]
    assert stats.as_dict()["x.offset_start_unknown"] == 1
    assert offsets(await guard.filter([ev(0, 358)])) == []  # now it can be asked: 0..357 come first
    assert app.consumer.seeks == [(TP("t", 0), 358), (TP("t", 0), 0)]
    assert offsets(await guard.filter([ev(0, 0), ev(0, 1)])) == [(0, 0), (0, 1)]


class RebalancedWhileAsked(Earliest):
    """The group rebalances while the guard waits for the log start (the signals reset the guard meanwhile)."""

    def __init__(self, earliest: int):
        super().__init__(earliest)
        self.guard = None

    async def earliest_offsets(self, *tps):
        self.guard.reset()
        return await super().earliest_offsets(*tps)


async def test_a_filter_that_awaited_across_a_rebalance_hands_on_nothing():
    """Review finding: positions written after the reset belong to the old generation; the new one redelivers
    those offsets and the guard must not drop them as handled (Faust forgot their acks at the revocation)."""
    app, stats = SimpleNamespace(consumer=RebalancedWhileAsked(0)), Stats()
    guard = app.consumer.guard = GapGuard(app, stats, "x")
    assert await guard.filter([ev(1, 0), ev(0, 0), ev(0, 1)]) == []
    assert guard.last == {} and app.consumer.seeks == []
    assert guard.start == {} and stats.as_dict()["x.offset_filter_rebalanced"] == 1


class Gaps(Earliest):
    def __init__(self, earliest: int):
        super().__init__(earliest)
        self.gaps = []

    async def _add_gap(self, tp, first, end):
        self.gaps.append((tp.partition, first, end))


async def test_a_compacted_topic_jumps_without_a_seek_and_still_drops_records_handled():
    """Compaction leaves gaps in a partition's offsets by design (the cases topic): seeking them back would wait
    for offsets that are gone, forever; Faust's commit is told of each gap (it commits contiguous runs only)."""
    app, stats = SimpleNamespace(consumer=Gaps(0)), Stats()
    guard = GapGuard(app, stats, "sink.cases", contiguous=False)
    assert offsets(await guard.filter([ev(0, 3), ev(0, 9), ev(0, 40)])) == [(0, 3), (0, 9), (0, 40)]
    assert offsets(await guard.filter([ev(0, 9), ev(0, 41)])) == [(0, 41)]
    assert app.consumer.seeks == [] and stats.as_dict()["sink.cases.offset_reread"] == 1
    assert app.consumer.gaps == [(0, 0, 2), (0, 4, 8), (0, 10, 39)]


class Uncommitted(Earliest):
    """Faust's consumer for a partition the group never committed: no committed offset, a log starting at
    ``earliest``."""

    def __init__(self, earliest: int):
        super().__init__(earliest)
        self._committed_offset = {}


async def test_a_partition_nobody_committed_must_start_at_its_earliest_offset():
    """The cluster test's loss: the worker that read a partition died before its first commit; the survivor's
    first record was at offset 358 (a fetch dropped across the rebalance — Faust seeks back only to committed
    offsets). The guard seeks to the log start and takes nothing of the partition until the re-read comes."""
    app, stats = SimpleNamespace(consumer=Uncommitted(0)), Stats()
    guard = GapGuard(app, stats, "classify")
    await guard.on_rebalance()
    assert offsets(await guard.filter([ev(7, 358), ev(7, 359), ev(3, 0)])) == [(3, 0)]
    assert app.consumer.seeks == [(TP("t", 7), 0)]
    assert stats.as_dict()["classify.offset_gap"] == 1
    assert offsets(await guard.filter([ev(7, 360)])) == []  # fetched before the seek
    assert offsets(await guard.filter([ev(7, 0), ev(7, 1)])) == [(7, 0), (7, 1)]  # the re-read, from the head


async def test_an_uncommitted_partition_read_from_its_head_passes():
    """Retention deleted the first 40 records: a first record at 40 is the head, nothing was skipped."""
    app = SimpleNamespace(consumer=Uncommitted(40))
    guard = GapGuard(app, Stats(), "x")
    assert offsets(await guard.filter([ev(0, 40), ev(0, 41)])) == [(0, 40), (0, 41)]
    assert app.consumer.seeks == []


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


async def test_a_re_read_that_does_not_come_is_sought_again():
    """Something dropped the re-read on the way: the partition's records are held and its commit stops for good
    unless the guard seeks again — after RESEEK_AFTER seconds, on the next records or an idle call."""
    app, stats, clock = SimpleNamespace(consumer=Earliest(7)), Stats(), Clock()
    guard = GapGuard(app, stats, "x", clock=clock)
    await guard.filter([ev(0, 7)])
    assert offsets(await guard.filter([ev(0, 20)])) == [] and app.consumer.seeks == [(TP("t", 0), 8)]
    clock.now = RESEEK_AFTER - 0.1
    assert offsets(await guard.filter([ev(0, 21)])) == [] and len(app.consumer.seeks) == 1  # still in time
    clock.now = RESEEK_AFTER
    assert offsets(await guard.filter([ev(0, 22)])) == [] and app.consumer.seeks == [(TP("t", 0), 8)] * 2
    assert stats.as_dict()["x.offset_gap_reseek"] == 1
    clock.now = 2 * RESEEK_AFTER - 0.1
    await guard.filter([])
    assert len(app.consumer.seeks) == 2
    clock.now = 2 * RESEEK_AFTER  # an idle agent's call: no records, the seek is overdue again
    assert await guard.filter([]) == [] and app.consumer.seeks == [(TP("t", 0), 8)] * 3
    assert offsets(await guard.filter([ev(0, 8), ev(0, 9)])) == [(0, 8), (0, 9)]
    clock.now = 10 * RESEEK_AFTER
    await guard.filter([])
    assert len(app.consumer.seeks) == 3  # nothing is waiting any more


class Revoked(Earliest):
    async def seek(self, tp, offset):
        self.seeks.append((tp, offset))
        raise RuntimeError("No current assignment for partition")


async def test_a_seek_that_fails_does_not_stop_the_agent_and_is_tried_again():
    app, clock = SimpleNamespace(consumer=Revoked(1)), Clock()
    guard = GapGuard(app, Stats(), "x", clock=clock)
    await guard.filter([ev(0, 1)])
    assert offsets(await guard.filter([ev(0, 5), ev(1, 0)])) == [(1, 0)]
    clock.now = RESEEK_AFTER
    assert await guard.filter([]) == [] and app.consumer.seeks == [(TP("t", 0), 2)] * 2


class FetchingConsumer:
    """Faust's consumer as the router's getmany and the guard use it: scripted fetches, Faust's own ``seek``
    (it moves Faust's read offset: ``faust.transport.consumer.Consumer.seek``), a log starting at offset 0."""

    should_stop = False
    flow_active = True
    seek = FaustConsumer.seek

    def __init__(self, fetches: list):
        self.fetches = fetches
        self.app = SimpleNamespace(consumer_generation_id=1)
        self.log = SimpleNamespace(dev=lambda *args, **kwargs: None)
        self._read_offset = defaultdict(lambda: None)
        self._committed_offset = {}
        self._buffered_partitions = set()
        self.seeks = []

    async def _wait_next_records(self, timeout):
        return self.fetches.pop(0), None

    def _to_message(self, tp, record):
        return record

    async def _seek(self, tp, offset):
        self.seeks.append((tp, offset))

    async def earliest_offsets(self, *tps):
        return {tp: 0 for tp in tps}


def fetched(tp, first, end):
    return {tp: [SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=o, key=b"k", value=b"v")
                 for o in range(first, end)]}


async def test_a_list_fetched_before_the_seek_and_routed_after_it_does_not_swallow_the_re_read():
    """The CI failure of 2026-12-06: raw partition 9 was never processed. The guard sought it back to 0; a list
    fetched before the seek (340..349) reached the router after it and moved Faust's read offset to 349; the
    router's read-offset filter then dropped the re-read 0..348, and the guard held 349.. for good."""
    tp = TP("raw", 9)
    consumer = FetchingConsumer([fetched(tp, 330, 340), fetched(tp, 340, 350), fetched(tp, 0, 350)])
    app = SimpleNamespace(consumer=consumer)
    router = BatchRouter(app)
    inbox = router.inbox("raw")
    router.install()

    async def fetch():
        assert [m async for m in consumer.getmany(timeout=1.0)] == []  # every record went to the inbox

    guard = GapGuard(app, Stats(), "classify")
    await fetch()
    assert await guard.filter(await inbox.take(1000, within=0)) == [] and consumer.seeks == [(tp, 0)]
    await fetch()  # fetched before the seek, routed after it
    await fetch()  # the re-read
    kept = await guard.filter(await inbox.take(1000, within=0))
    assert [r.offset for r in kept] == list(range(350))


async def test_an_idle_inbox_hands_out_an_empty_list():
    inbox = BatchInbox()
    assert await inbox.take(10, within=0, idle=0.01) == []
    await inbox.put([1, 2])
    assert await inbox.take(10, within=0, idle=0.01) == [1, 2]


async def test_an_agent_loop_without_input_still_repeats_an_overdue_seek(monkeypatch):
    """The re-read of a seek was lost and nothing else arrives for the partition: the agent's loop must still
    call its guard (idle ticks), or the partition waits for good."""
    import asyncio

    import streams.app as app_module
    from streams.batch_consumer import Record

    monkeypatch.setattr(app_module, "GUARD_TICK", 0.01)
    monkeypatch.setattr(app_module, "RESEEK_AFTER", 0.05)
    consumer = Earliest(0)
    consumer._waiting_for_ack, consumer._n_acked = None, 0
    app = SimpleNamespace(consumer=consumer)
    pipeline = SimpleNamespace(app=app, router=BatchRouter(app), stats=Stats(),
                               topics={"raw": SimpleNamespace(get_topic_name=lambda: "t")},
                               settings=SimpleNamespace(topics=SimpleNamespace(compacted=lambda: [])))
    handled = []

    async def handle(records):
        handled.extend(records)

    task = asyncio.ensure_future(app_module._consume(pipeline, "raw", "classify", 100, handle, None))
    try:
        await pipeline.router.inbox("t").put([Record("t", 0, 5, b"k", b"v")])  # 0..4 skipped: seek back to 0
        for _ in range(400):  # a safety bound, not a timing assertion
            if len(consumer.seeks) >= 2:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert consumer.seeks[:2] == [(TP("t", 0), 0)] * 2 and handled == []
