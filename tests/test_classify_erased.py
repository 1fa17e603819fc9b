"""The classify memo of an erased answer (npsflow forget): no personal data, and every later version dropped."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from streams.classify import ClassifyStep, Incoming, erased_memo

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)


class State:
    def __init__(self, memos=None, invitations=None, erased=()):
        self.memos, self.invitations, self.erased = memos or {}, invitations or {}, set(erased)

    def memo(self, rid):
        return self.memos.get(rid)

    def watermark(self, partition):
        return 0

    def invitation(self, inv):
        return self.invitations.get(inv)

    def invitation_erased(self, inv):
        return inv in self.erased

    def forgotten(self, partition, rid):
        return False


def step() -> ClassifyStep:
    return ClassifyStep(dimensions=("location",), lateness_ms=3600_000, dedup_retention_ms=90 * 86400_000,
                        partition_of=lambda key: 0)


def raw(rid: str, score: int, minutes: int = 5) -> Incoming:
    at = (NOW - timedelta(minutes=minutes)).isoformat()
    return Incoming(0, 7, rid.encode(), {"response_id": rid, "invitation_id": rid, "score": score,
                                         "responded_at": at, "comment": "Zyx gone"})


def test_an_erased_memo_keeps_what_dedup_needs_and_drops_every_later_version():
    invitation = {"org": "acme", "contact_key": "k" * 32, "segment": {"location": "Espoo"}, "survey_id": "s"}
    first = step().run([raw("inv-1", 2)], State(invitations={"inv-1": invitation}), NOW)
    (partition, memo) = first.memos["inv-1"]
    assert memo["k"] == "k" * 32 and memo["seg"]["location"] == "Espoo"
    gone = erased_memo(memo, 123)
    assert gone == {"v": memo["v"], "t": memo["t"], "src": memo["src"], "w": memo["w"], "o": "acme", "x": 123}
    assert erased_memo(gone, 999) == gone  # idempotent
    # the same answer again, an edit, an answer to the erased invitation without a memo: nothing comes out
    for state, record in ((State({"inv-1": gone}), raw("inv-1", 2)), (State({"inv-1": gone}), raw("inv-1", 9, 1)),
                          (State(erased={"inv-2"}), raw("inv-2", 9))):
        out = step().run([record], state, NOW)
        assert (out.classified, out.memos, out.case_events, out.refused, dict(out.deltas)) == ([], {}, [], [], {})
        assert out.counts["classify.erased"] == 1
