"""The classify step, pure: a batch of decoded raw responses + the state it reads → outputs + state changes.

No I/O, no clock: ``now`` and the state view are parameters, so every rule is unit-tested without Kafka
(tests/test_classify_step.py). The agent (streams.classify_agent) decodes, calls ``ClassifyStep.run`` once
per batch, writes each changed state key once and produces the outputs.

Per record, in partition-offset order:
1. validate (streams.responses); bad input → a dead letter with its reason. A comment (or follow-up answer)
   over the limit is cut instead: the answer goes on with its score and the cut text, and the original record
   becomes a dead letter with reason ``comment_truncated`` — once per emitted version, next to it;
2. route: the key of an answer is its ``response_id`` (= its ``invitation_id`` when it answers one). A record
   whose Kafka key or partition is not that key's is re-produced with the right key and skipped here — all
   versions of an answer meet on one partition, where its memo lives;
3. join: an answer to an invitation takes the invitation's segments, survey, locale and organization from
   the co-partitioned ``invitations`` table;
4. decide against the memo (latest version per response_id): new / edit → emit; duplicate / stale → drop; a
   redelivery of the very offset that produced the memo re-emits the memo's outputs (they may not have
   reached Kafka before a crash);
5. lateness, deterministically: each raw partition has a persisted watermark (largest responded_at seen on
   it, in offset order); a version counts in the live windows when ``responded_at ≥ watermark − lateness``.
   The decision is kept in the memo (``c``), so a later edit retracts exactly what was added;
6. window deltas, aggregated per segment for the whole batch: one item per (segment, version) with what to
   add and what to retract, and the source (partition, offset) that makes the windows agent's replays exact.

Memo (table ``responses-seen``, JSON): ``v`` version, ``h`` content hash, ``s`` score, ``t`` responded_at ms,
``seg`` segment, ``c`` counted in the live windows, ``src`` [partition, offset], ``e`` is an edit, ``ps`` /
``pseg`` / ``pt`` / ``pc`` the previous version's score / segment / time / counted, ``ds`` the UTC days of every
version, ``o`` the organization, ``k`` the invitation's contact key (a keyed pseudonym: the respondent of
the term statistics), ``w`` when it was written (processing time, ms: the dedup memory forgets a
memo ``dedup_retention`` after its last write). A version of a forgotten answer is refused
(``edit_after_dedup_memory``, via the register of forgotten ids: streams.forgotten), and so is a memo-less
version older than the memory (``older_than_dedup_memory``): neither can be told apart from an answer counted
before, so neither may count again.

An erased answer (``npsflow forget``: ``erased_memo``) keeps a memo without personal data — ``x`` when it was
erased, ``v``, ``t``, ``src``, ``w`` (the expiry reads them) and ``o`` — instead of none: without a memo, a
replayed or re-sent version of it would look new and be counted, classified and stored again. Every later
version of an erased answer is dropped (``classify.erased``: no record, no dead letter — it would hold the
answer again).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Protocol

from streams import forgotten
from streams.cases import answer_route
from streams.nps import classify as category_of
from streams.responses import (MAX_FUTURE, TRUNCATED, Decision, Rejected, Response, decide, remembered, to_ms,
                               truncation_detail, validate)
from streams.windows import segment_keys

EPOCH = date(1970, 1, 1)
MAX_ANSWER_DAYS = 64  # bound on the days one answer's versions are remembered on (edits happen in a window)
BEYOND_MEMORY = "older_than_dedup_memory"
FORGOTTEN = forgotten.REASON  # a version of an answer the dedup memory forgot
MAX_FUTURE_MS = int(MAX_FUTURE.total_seconds() * 1000)  # how far a version may lie ahead of its processing


def day_of(ms: int) -> int:
    """UTC day number (days since 1970-01-01) of a time in ms."""
    return ms // 86_400_000


def answer_days(previous: dict | None, responded_ms: int) -> list[int]:
    """The distinct UTC days of every version of an answer so far, this one included (memo ``ds``). A memo
    written before ``ds`` existed knows only the previous version's time ``t``."""
    days = set(previous.get("ds") or [day_of(previous["t"])]) if previous else set()
    days.add(day_of(responded_ms))
    return sorted(days)[-MAX_ANSWER_DAYS:]


class ClassifyState(Protocol):
    """What the step reads: memos, per-partition watermarks, invitations (all of the batch's partitions)."""

    def memo(self, response_id: str) -> dict | None: ...

    def watermark(self, partition: int) -> int: ...

    def invitation(self, invitation_id: str) -> dict | None: ...

    def forgotten(self, partition: int, response_id: str) -> bool:
        """Whether the dedup memory of ``partition`` forgot this answer (streams.forgotten)."""
        ...

    # optional: ``invitation_erased(invitation_id) -> bool`` — the invitation was erased (npsflow forget)


@dataclass(frozen=True, slots=True)
class Incoming:
    """One raw record: where it came from, its key, and the decoded RawResponse (or the decode error)."""

    partition: int
    offset: int
    key: bytes | None
    raw: dict | None
    error: tuple[str, str] | None = None  # (reason, detail) when the bytes could not be decoded
    value: bytes | None = None  # the original bytes (for re-keying and dead letters)


@dataclass(slots=True)
class Refused:
    record: Incoming
    reason: str
    detail: str
    payload: Any


@dataclass
class ClassifyOutcome:
    classified: list[tuple[int, str, Any]] = field(default_factory=list)  # (partition, response_id, record)
    deltas: dict[str, list] = field(default_factory=lambda: defaultdict(list))  # segment → items
    responded: list[tuple[int, str, dict]] = field(default_factory=list)  # (partition, invitation id, message)
    rekeyed: list[tuple[bytes, bytes]] = field(default_factory=list)  # (right key, original bytes)
    # answers the follow-up cases agent must see (streams.cases): (contact route, event) — first versions that
    # would open a case in their org, every edit (it may open, join or resolve one)
    case_events: list[tuple[str, dict]] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    memos: dict[str, tuple[int, dict]] = field(default_factory=dict)  # response_id → (partition, memo)
    watermarks: dict[int, int] = field(default_factory=dict)  # partition → watermark (ms), when it moved
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))


@dataclass
class ClassifyStep:
    """The rules of one classify batch (see the module docstring). ``partition_of(key)`` is the default
    partitioner of the raw topic (murmur2 modulo its partitions)."""

    dimensions: tuple[str, ...]
    lateness_ms: int
    dedup_retention_ms: int
    partition_of: Any
    encode: Any = None  # ClassifiedResponse dict → bytes (Avro); None keeps the dict (tests of the rules)
    analyse: Any = None  # (text, locale) → streams.text.TextAnalysis; None: texts kept as they are, no terms
    wants_case: Any = None  # (org_id, score) → would it open a case (streams.cases.qualifier); None: score ≤ 8

    def run(self, records: list[Incoming], state: ClassifyState, now: datetime) -> ClassifyOutcome:
        out = ClassifyOutcome()
        batch = _BatchView(state, out)
        now_ms = to_ms(now)
        for record in records:
            try:
                self._one(record, batch, now, now_ms, out)
            except Rejected as exc:
                out.refused.append(Refused(record, exc.reason, exc.detail, record.raw))
            except Exception as exc:  # a bug or an unforeseen input must not stop the agent, nor vanish
                out.counts["classify.internal_error"] += 1
                out.refused.append(Refused(record, "classify_internal_error", f"{type(exc).__name__}: {exc}",
                                           record.raw if record.raw is not None else record.value))
        return out

    def _one(self, record: Incoming, batch: "_BatchView", now: datetime, now_ms: int, out: ClassifyOutcome) -> None:
        if record.error is not None:
            out.refused.append(Refused(record, record.error[0], record.error[1], record.value))
            return
        response = identified(validate(record.raw, now))
        route = response.response_id.encode()
        if record.key != route or self.partition_of(route) != record.partition:
            out.counts["classify.rekeyed"] += 1
            out.rekeyed.append((route, record.value))
            return
        response, invitation = self._joined(response, batch, out)
        previous = batch.memo(response.response_id)
        if (previous is not None and previous.get("x") is not None) or (
                invitation is None and response.invitation_id and batch.invitation_erased(response.invitation_id)):
            out.counts["classify.erased"] += 1  # the contact was erased (npsflow forget): never again
            return
        watermark = max(batch.watermark(record.partition), response.responded_ms)
        batch.set_watermark(record.partition, watermark)
        decision = decide(previous, response)
        source = [record.partition, record.offset]
        if decision is Decision.DUPLICATE and previous.get("src") == source:
            out.counts["classify.redelivered"] += 1
            memo = previous
        elif decision in (Decision.DUPLICATE, Decision.STALE):
            out.counts[f"classify.{decision.value}"] += 1
            return
        elif previous is None and response.responded_ms < now_ms - self.dedup_retention_ms + MAX_FUTURE_MS:
            raise Rejected(BEYOND_MEMORY, "responded_at lies beyond the dedup memory (NPSFLOW_DEDUP_RETENTION): "
                           "an answer this old cannot be told apart from an edit of a forgotten one")
        elif previous is None and batch.forgotten(record.partition, response.response_id):
            raise Rejected(FORGOTTEN, "this answer was forgotten by the dedup memory (no version for "
                           "NPSFLOW_DEDUP_RETENTION): a new version could count it twice, so it is not taken")
        else:
            counted = response.responded_ms >= watermark - self.lateness_ms
            memo = new_memo(response, previous, decision, source, counted, invitation, now_ms)
        texts = self._text(response)
        classified = classified_record(response, memo, now, texts)
        if self.encode is not None:
            classified = self.encode(classified)  # before the memo is staged: may raise
        if memo is not previous:
            out.counts[f"classify.{decision.value}"] += 1
            out.counts["classify.too_late"] += not memo["c"]
            batch.set_memo(response.response_id, record.partition, memo)
        out.classified.append((record.partition, response.response_id, classified))
        if response.truncated:  # the cut text went on above; the original is kept for inspection
            out.counts["classify.truncated"] += 1
            out.refused.append(Refused(record, TRUNCATED, truncation_detail(response), record.raw))
        if invitation is not None:
            out.responded.append((record.partition, response.invitation_id, responded_message(response)))
        if memo["e"] or (response.score <= 8 if self.wants_case is None
                         else self.wants_case(memo.get("o") or "", response.score)):
            out.case_events.append(case_event(response, memo, texts))
        self._deltas(response, memo, record, out)

    def _text(self, response: Response) -> "Texts":
        """The comment and the follow-up answer masked, their language (the comment's if it has one; "" when
        there is no text) and their distinct terms (one analysis each)."""
        if self.analyse is None:
            return Texts(response.comment, response.follow_up, "", [])
        comment = self.analyse(response.comment, response.locale) if response.comment else None
        follow_up = self.analyse(response.follow_up, response.locale) if response.follow_up else None
        analyses = [a for a in (comment, follow_up) if a is not None]
        return Texts(comment.masked if comment else response.comment,
                     follow_up.masked if follow_up else response.follow_up,
                     analyses[0].lang if analyses else "", list(dict.fromkeys(t for a in analyses for t in a.terms)))

    def _joined(self, response: Response, batch: "_BatchView", out: ClassifyOutcome):
        if not response.invitation_id:
            return response, None
        invitation = batch.invitation(response.invitation_id)
        if invitation is None:
            out.counts["classify.invitation_unknown"] += 1
            return response, None
        out.counts["classify.joined"] += 1
        return dataclasses.replace(
            response, segment={**response.segment, **(invitation.get("segment") or {})},
            survey_id=response.survey_id or invitation.get("survey_id") or "",
            locale=response.locale or invitation.get("locale")), invitation

    def _deltas(self, response: Response, memo: dict, record: Incoming, out: ClassifyOutcome) -> None:
        """One item per segment the version enters or leaves: ``[partition, offset, add_ms, add_category,
        retract_ms, retract_category]`` (None where there is nothing to add / retract)."""
        new_keys = [str(k) for k in segment_keys(memo["seg"], self.dimensions)]
        added = memo["t"] if memo.get("c") else None
        category = category_of(memo["s"]).value
        old_keys: list[str] = []
        retracted = None
        if memo.get("pseg") is not None and memo.get("pc", True):
            old_keys = [str(k) for k in segment_keys(memo["pseg"], self.dimensions)]
            retracted = category_of(memo["ps"]).value
        for key in dict.fromkeys(new_keys + old_keys):
            add = key in new_keys and added is not None
            retract = key in old_keys
            if add or retract:
                out.deltas[key].append([record.partition, record.offset,
                                        memo["t"] if add else None, category if add else None,
                                        memo["pt"] if retract else None, retracted if retract else None])


def identified(response: Response) -> Response:
    """An answer to an invitation is identified by the invitation (one answer per invitation, the same key on
    every path: page, API, CLI): its response_id must be the invitation id."""
    if response.invitation_id and response.response_id != response.invitation_id:
        raise Rejected("response_id_not_invitation",
                       f"an answer to invitation {response.invitation_id[:60]!r} must have it as response_id "
                       f"(or none), got {response.response_id[:60]!r}")
    return response


def new_memo(response: Response, previous: dict | None, decision: Decision, source: list, counted: bool,
             invitation: dict | None, now_ms: int) -> dict:
    prev = previous or {}
    return {**remembered(response), "c": counted, "src": source, "e": decision is Decision.EDIT,
            "ps": prev.get("s"), "pseg": prev.get("seg"), "pt": prev.get("t"), "pc": prev.get("c", True),
            "ds": answer_days(previous, response.responded_ms),
            # the organization and contact key of the invitation; an edit made after the invitation was
            # forgotten keeps them
            "o": invitation.get("org") if invitation is not None else prev.get("o"),
            "k": invitation.get("contact_key") if invitation is not None else prev.get("k"), "w": now_ms}


ERASED_MEMO_FIELDS = ("v", "t", "src", "w", "o")


def erased_memo(memo: dict, at_ms: int) -> dict:
    """The memo of an erased answer (see the module docstring): what dedup and expiry need, nothing personal
    (no contact key, segments, score, content hash or days). Idempotent."""
    return {**{k: memo[k] for k in ERASED_MEMO_FIELDS if k in memo}, "x": memo.get("x") or at_ms}


@dataclass(frozen=True, slots=True)
class Texts:
    """What the classified record carries of the respondent's words: masked texts, language, terms."""

    comment: str | None
    follow_up: str | None
    lang: str
    terms: list[str]


def classified_record(response: Response, memo: dict, now: datetime, texts: Texts) -> dict:
    return {
        "response_id": response.response_id,
        "survey_id": response.survey_id,
        "invitation_id": response.invitation_id,
        "score": response.score,
        "category": response.category.value,
        "comment": texts.comment,
        "follow_up": texts.follow_up,
        "lang": texts.lang,
        "terms": texts.terms,
        "respondent": memo.get("k") or "",
        "locale": response.locale,
        "responded_at": response.responded_at,
        "received_at": response.received_at,
        "processed_at": now,
        "segment": response.segment,
        "version": response.version,
        "is_edit": bool(memo["e"]),
        "previous_score": memo["ps"],
        # the other days earlier versions had: ClickHouse's day ledger retracts the answer there
        # (sinks/migrations/0005), whatever order the versions reach it in
        "earlier_days": [EPOCH + timedelta(days=d) for d in memo.get("ds", ())
                         if d != day_of(response.responded_ms)],
        "org_id": memo.get("o"),
        "source": response.source,
    }


def case_event(response: Response, memo: dict, texts: Texts) -> tuple[str, dict]:
    """(route, event) for the cases agent (streams.cases): what a case keeps of the answer — masked comment, no
    contact details — keyed by the contact (the invitation's contact key; an anonymous answer is its own)."""
    answer = {"response_id": response.response_id, "version": response.version, "score": response.score,
              "comment": texts.comment, "segment": response.segment, "responded_at": response.responded_ms,
              "org_id": memo.get("o") or "", "respondent": memo.get("k") or ""}
    return answer_route(answer), {"kind": "answer", "answer": answer}


def responded_message(response: Response) -> dict:
    """Tells the deliver agent an invitation was answered (cancels its reminder, refreshes the page's view)."""
    return {"op": "responded", "inv": response.invitation_id, "at": response.responded_ms,
            "v": response.version, "score": response.score, "comment": response.comment,
            "follow_up": response.follow_up}


class _BatchView:
    """The state as the batch sees it: changes made earlier in the batch shadow the stored state."""

    def __init__(self, state: ClassifyState, out: ClassifyOutcome) -> None:
        self.state, self.out = state, out

    def memo(self, response_id: str) -> dict | None:
        staged = self.out.memos.get(response_id)
        return staged[1] if staged is not None else self.state.memo(response_id)

    def set_memo(self, response_id: str, partition: int, memo: dict) -> None:
        self.out.memos[response_id] = (partition, memo)

    def watermark(self, partition: int) -> int:
        staged = self.out.watermarks.get(partition)
        return staged if staged is not None else self.state.watermark(partition)

    def set_watermark(self, partition: int, value: int) -> None:
        if value != self.watermark(partition):
            self.out.watermarks[partition] = value

    def invitation(self, invitation_id: str) -> dict | None:
        return self.state.invitation(invitation_id)

    def invitation_erased(self, invitation_id: str) -> bool:
        erased = getattr(self.state, "invitation_erased", None)
        return bool(erased is not None and erased(invitation_id))

    def forgotten(self, partition: int, response_id: str) -> bool:
        return self.state.forgotten(partition, response_id)
