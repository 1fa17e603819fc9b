"""The classify step over the prepared Avro reader and writer (schemas.compiled) does exactly what it did over
fastavro alone: the same validated responses, the same dead letters with the same reasons, the same outputs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from npsflow.ingest import to_raw_response
from npsflow.simulate import ResponseSimulator
from schemas import codec as avro
from streams.classify import ClassifyStep, Incoming, identified
from streams.kafka_io import partition_for
from streams.responses import Rejected, validate
from tests.test_compiled_avro import FAST, ORACLE

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
PARTITIONS = 3


class MemoryState:
    def __init__(self, invitations: dict | None = None) -> None:
        self.memos, self.watermarks, self.invitations = {}, {}, invitations or {}

    def memo(self, response_id):
        return self.memos.get(response_id)

    def watermark(self, partition):
        return self.watermarks.get(partition, 0)

    def invitation(self, invitation_id):
        return self.invitations.get(invitation_id)

    def forgotten(self, partition, response_id):
        return False  # nothing forgotten here (streams.forgotten has its own tests)

    def apply(self, outcome) -> None:
        self.memos.update({rid: memo for rid, (_, memo) in outcome.memos.items()})
        self.watermarks.update(outcome.watermarks)


def outcome_of(codec: avro.AvroCodec, encoded: list[bytes], state: MemoryState):
    step = ClassifyStep(dimensions=("overall", "location"), lateness_ms=2 * 3_600_000,
                        dedup_retention_ms=90 * 86_400_000, partition_of=lambda key: partition_for(key, PARTITIONS),
                        encode=lambda record: codec.encode(avro.CLASSIFIED_RESPONSE, record))
    records = []
    for offset, value in enumerate(encoded):
        raw = codec.decode(value, expected=avro.RAW_RESPONSE)
        key = (raw["response_id"] or raw["invitation_id"] or "").encode()
        records.append(Incoming(partition_for(key, PARTITIONS), offset, key, raw, value=value))
    outcome = step.run(records, state, NOW)
    state.apply(outcome)
    return outcome


def comparable(outcome) -> dict:
    return {"classified": outcome.classified, "deltas": dict(outcome.deltas), "responded": outcome.responded,
            "rekeyed": outcome.rekeyed, "memos": outcome.memos, "watermarks": outcome.watermarks,
            "counts": dict(outcome.counts),
            "refused": [(r.record.offset, r.reason, r.detail, r.payload) for r in outcome.refused]}


def simulated(seed: int, count: int) -> list[bytes]:
    simulator = ResponseSimulator(seed=seed, start=NOW - timedelta(hours=3), clock=lambda: NOW)
    records = simulator.records(count, bad_ratio=0.2, duplicate_ratio=0.1, edit_ratio=0.15)
    return [ORACLE.encode(avro.RAW_RESPONSE, to_raw_response(obj, source="sim", received_at=NOW)) for obj in records]


def test_the_step_over_the_prepared_codec_gives_the_same_outcome_batch_after_batch():
    encoded = simulated(seed=11, count=6000)
    fast_state, oracle_state = MemoryState(), MemoryState()
    refused, counts = set(), set()
    for start in range(0, len(encoded), 1000):
        batch = encoded[start:start + 1000]
        fast, oracle = outcome_of(FAST, batch, fast_state), outcome_of(ORACLE, batch, oracle_state)
        assert comparable(fast) == comparable(oracle)
        refused |= {r.reason for r in fast.refused}
        counts |= set(fast.counts)
    assert fast_state.memos == oracle_state.memos
    assert {"classify.new", "classify.edit", "classify.duplicate"} <= counts
    assert {"score_out_of_range", "score_not_integer", "missing_response_id", "responded_at_invalid"} <= refused


scalar = st.one_of(st.none(), st.booleans(), st.integers(-20, 20), st.integers(), st.floats(), st.text(max_size=12),
                   st.sampled_from(["7", " 8 ", "7.5", "", "2026-11-20T10:00:00Z", "2026-11-20T10:00:00",
                                    "2026-11-20T13:00:00+02:00", "2099-01-01T00:00:00Z", "1969-12-31T23:59:59Z"]))
json_value = st.recursive(scalar, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                          st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                          max_leaves=6)
answers = st.fixed_dictionaries(  # about half of them valid
    {"score": st.one_of(st.integers(0, 10), scalar), "response_id": st.one_of(st.text(min_size=1, max_size=10), scalar),
     "responded_at": st.one_of(st.sampled_from(["2026-11-20T10:00:00Z", "2026-11-20T11:59:59.999+01:00"]), scalar)},
    optional={
        "survey_id": st.one_of(st.text(max_size=10), scalar), "invitation_id": scalar,
        "comment": st.one_of(st.text(), scalar), "follow_up": st.one_of(st.text(), scalar), "locale": scalar,
        "segment": st.one_of(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4), json_value),
        "extra": json_value})


@settings(max_examples=1500, deadline=None)
@given(answers)
def test_any_answer_is_validated_or_refused_alike(obj):
    try:
        encoded = ORACLE.encode(avro.RAW_RESPONSE, to_raw_response(obj, received_at=NOW))
    except avro.CodecError:  # never produced (e.g. a lone surrogate): nothing to read
        return
    results = []
    for codec in (FAST, ORACLE):
        try:
            response = identified(validate(codec.decode(encoded, expected=avro.RAW_RESPONSE), NOW))
            results.append((response, response.version, response.content_hash))
        except Rejected as exc:
            results.append((exc.reason, exc.detail))
    assert results[0] == results[1]
