"""Validation, versioning and deduplication of survey responses. Pure: no I/O; the clock is a parameter.

* ``validate(raw, now)`` turns a decoded RawResponse (possibly bad input) into a ``Response`` or raises
  ``Rejected(reason, detail)``; the agent dead-letters rejected records with that reason. A comment or follow-up
  answer over ``MAX_COMMENT_CHARS`` does not refuse the record: it is cut (``truncate_text``) and the Response
  says so (``truncated``); the agent dead-letters the original with reason ``comment_truncated`` and sends the
  rest on.
* ``version_of`` gives every response version a total order: later ``responded_at`` wins; for equal
  timestamps a content hash breaks the tie, so the winner never depends on arrival order.
* ``decide(previous, new)`` is the idempotency rule keyed by ``response_id``: new / duplicate / edit / stale.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import Enum
from json.encoder import encode_basestring_ascii as _json_string

from streams.nps import Category, classify

MAX_COMMENT_CHARS = 10_000  # code points (len()); a longer comment is cut to this, never refused for it
MAX_FOLLOW_UP_CHARS = MAX_COMMENT_CHARS  # the answer to the survey page's follow-up question: a comment too
TRUNCATED = "comment_truncated"  # the dead letter's reason for a comment or follow-up answer cut to the limit
MAX_CLUSTER_BACKOFF = 64  # at most this many code points are given up to end the cut text on a grapheme boundary
MAX_ID_CHARS = 200
MAX_FUTURE = timedelta(minutes=10)
MAX_SEGMENT_KEYS = 32
MAX_SEGMENT_VALUE_CHARS = 256
MIN_TIMESTAMP = datetime(1970, 1, 1, tzinfo=timezone.utc)  # versions and ClickHouse UInt64 need >= epoch
MAX_TIMESTAMP = datetime(2200, 1, 1, tzinfo=timezone.utc)
MIN_TIMESTAMP_MS, MAX_TIMESTAMP_MS = 0, int(MAX_TIMESTAMP.timestamp() * 1000)
_INT_TEXT = re.compile(r"^\s*[+-]?\d{1,6}\s*$", re.ASCII)
_LONG_INT_TEXT = re.compile(r"^\s*[+-]?\d+\s*$", re.ASCII)
_NUMBER_TEXT = re.compile(r"^\s*[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?\s*$", re.ASCII)
_SEGMENT_KEY = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$", re.ASCII)


class computed_once:
    """``functools.cached_property`` without its lock: on Python 3.11 every first access takes a lock shared by
    all instances (~1 µs; three per record in classify). The values here are pure functions of frozen fields,
    so two threads racing would compute the same value; the first access stores it in the instance's
    ``__dict__``, which later accesses read directly (this is a non-data descriptor, like cached_property)."""

    def __init__(self, func) -> None:
        self.func = func
        self.__doc__ = func.__doc__

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        value = instance.__dict__[self.name] = self.func(instance)
        return value


class Rejected(Exception):
    """A record that cannot be processed. ``reason`` is a stable machine-readable code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Response:
    response_id: str
    survey_id: str
    invitation_id: str | None
    score: int
    category: Category
    comment: str | None
    locale: str | None
    responded_at: datetime
    received_at: datetime
    segment: dict[str, str] = field(default_factory=dict)
    source: str = "cli"
    follow_up: str | None = None  # answer to the category's follow-up question on the survey page
    # (field, length of the original in code points) of each text cut to its limit (truncate_text); not part of
    # the content: the version is the one of the cut text, which every replay of the same input cuts alike
    truncated: tuple[tuple[str, int], ...] = ()

    @computed_once
    def responded_ms(self) -> int:
        return to_ms(self.responded_at)

    @computed_once
    def content_hash(self) -> str:
        """Digest of what the respondent said (``hash_body``). A follow-up answer is part of it (adding or
        changing one is an edit); without one the body is exactly what it was before follow_up existed, so the
        versions of responses already remembered by classify (table ``responses-seen``) or stored in ClickHouse
        stay the same and a replay of them is still a duplicate, not an edit."""
        body = hash_body(self.score, self.comment or "", self.survey_id, sorted(self.segment.items()), self.follow_up)
        return hashlib.blake2b(body.encode(), digest_size=8).hexdigest()

    @computed_once
    def version(self) -> int:
        return version_of(self.responded_ms, self.content_hash)


def hash_body(score, comment, survey_id, segment_items: list, follow_up) -> str:
    """The text the content hash digests: ``json.dumps([score, comment, survey_id, segment_items])``, with
    ``["follow_up", follow_up]`` appended when there is a follow-up. Stored versions depend on every byte of it.
    The parts validate() produces (an int, strings, string pairs) are formatted directly, exactly as json.dumps
    formats them (", " between items, ASCII-only string escapes: the same escape function it uses); anything
    else goes through json.dumps itself."""
    if not _plain(score, comment, survey_id, segment_items, follow_up):
        parts = [score, comment, survey_id, segment_items]
        if follow_up:
            parts.append(["follow_up", follow_up])
        return json.dumps(parts)
    pairs = ", ".join([f"[{_json_string(key)}, {_json_string(value)}]" for key, value in segment_items])
    extra = f', ["follow_up", {_json_string(follow_up)}]' if follow_up else ""
    return f"[{score}, {_json_string(comment)}, {_json_string(survey_id)}, [{pairs}]{extra}]"


def _plain(score, comment, survey_id, segment_items: list, follow_up) -> bool:
    """Whether every part has exactly the type hash_body formats itself (no subclass: an IntEnum or a str
    subclass may format differently in json.dumps)."""
    if type(score) is not int or type(comment) is not str or type(survey_id) is not str:
        return False
    if follow_up and type(follow_up) is not str:
        return False
    return all(type(item) is tuple and len(item) == 2 and type(item[0]) is str and type(item[1]) is str
               for item in segment_items)


def to_ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def iso_ms(ms: int | None) -> str | None:
    """Epoch ms → ``2026-11-20T12:00:00.000Z`` (the read APIs' and notifications' format); None stays None."""
    if ms is None:
        return None
    return from_ms(ms).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def version_of(responded_ms: int, content_hash: str) -> int:
    """Total order of versions: responded_at (ms) first, then a content-derived tie breaker (0..999999)."""
    return responded_ms * 1_000_000 + int(content_hash, 16) % 1_000_000


def parse_score(value: object) -> int:
    if value is None:
        raise Rejected("missing_score", "score is required")
    if isinstance(value, bool):
        raise Rejected("score_not_integer", f"score must be an integer 0-10, got {value!r}")
    if isinstance(value, int):
        score = value
    elif isinstance(value, str):
        if _INT_TEXT.match(value):
            score = int(value)
        elif _LONG_INT_TEXT.match(value):
            raise Rejected("score_out_of_range", f"score must be between 0 and 10, got {value.strip()[:20]!r}…")
        elif _NUMBER_TEXT.match(value):
            raise Rejected("score_not_integer", f"score must be an integer 0-10, got {value.strip()!r}")
        elif not value.strip():
            raise Rejected("missing_score", "score is empty")
        else:
            raise Rejected("score_not_integer", f"score must be an integer 0-10, got {value[:40]!r}")
    else:
        raise Rejected("score_not_integer", f"score must be an integer 0-10, got {value!r}")
    if not 0 <= score <= 10:
        raise Rejected("score_out_of_range", f"score must be between 0 and 10, got {score}")
    return score


def parse_timestamp(value: object, name: str) -> datetime:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise Rejected(f"missing_{name}", f"{name} is required")
    if isinstance(value, datetime):
        parsed = value
    else:
        text = str(value).strip()
        try:
            parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
        except ValueError:
            raise Rejected(f"{name}_invalid", f"{name} is not an ISO-8601 timestamp: {text[:40]!r}") from None
    if parsed.tzinfo is None:
        raise Rejected(f"{name}_invalid", f"{name} needs a timezone (e.g. Z or +02:00): {str(value)[:40]!r}")
    try:
        parsed = parsed.astimezone(timezone.utc)
    except OverflowError:
        parsed = None
    if parsed is None or not MIN_TIMESTAMP <= parsed < MAX_TIMESTAMP:
        raise Rejected(f"{name}_out_of_range", f"{name} must be between 1970 and 2200: {str(value)[:40]!r}")
    return parsed


def parse_segment(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Rejected("segment_invalid", "segment must be an object of string values")
    if len(value) > MAX_SEGMENT_KEYS:
        raise Rejected("segment_invalid", f"segment has more than {MAX_SEGMENT_KEYS} keys")
    out = {}
    for key, item in value.items():
        key, item = str(key), str(item)
        if not _SEGMENT_KEY.match(key):
            raise Rejected("segment_invalid", f"segment key must be 1-64 of A-Z a-z 0-9 _ . : -, got {key[:40]!r}")
        if len(item) > MAX_SEGMENT_VALUE_CHARS:
            raise Rejected("segment_invalid", f"segment value of {key!r} is longer than {MAX_SEGMENT_VALUE_CHARS}")
        out[key] = item.strip()
    return out


def _text(raw: dict, name: str, required: bool = False, limit: int = MAX_ID_CHARS,
          truncated: list | None = None) -> str | None:
    """The stripped text of ``raw[name]``. Longer than ``limit``: refused (``<name>_too_long``) — or, when a
    ``truncated`` list is given, cut to the limit (``truncate_text``) and ``(name, original length)`` appended."""
    value = raw.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise Rejected(f"missing_{name}", f"{name} is required")
        return None
    if not isinstance(value, str):
        raise Rejected(f"{name}_not_string", f"{name} must be a string, got {type(value).__name__}")
    if len(value) > limit:
        if truncated is None:
            raise Rejected(f"{name}_too_long", f"{name} is longer than {limit} characters")
        value = value.strip()
        if len(value) > limit:
            truncated.append((name, len(value)))
            return truncate_text(value, limit).rstrip()
    return value.strip()


# Code points that never begin a grapheme cluster (Unicode UAX #29: Extend, SpacingMark, ZWJ, the Hangul vowel and
# trailing jamo): a cut just before one would take a mark, modifier or joiner away from the character it belongs to
_EXTENDERS = re.compile("[\u200c\u200d\U0001f3fb-\U0001f3ff\U000e0020-\U000e007f\u1160-\u11ff"
                        "\ud7b0-\ud7ff\u0e33\u0eb3]")  # the last two: Thai and Lao sara am (spacing marks)
_REGIONAL = re.compile("[\U0001f1e6-\U0001f1ff]")
_HANGUL_LEADING = re.compile("[\u1100-\u115f\ua960-\ua97f]")
_HANGUL_AFTER_LEADING = re.compile("[\u1100-\u11a7\ua960-\ua97f\uac00-\ud7a3]")


def _joined(text: str, cut: int) -> bool:
    """Whether a cut between ``text[cut - 1]`` and ``text[cut]`` would split a grapheme cluster (an approximation of
    UAX #29 that covers combining marks, variation selectors, emoji modifiers, ZWJ sequences, tag sequences, flags,
    Hangul jamo and CR LF)."""
    before, after = text[cut - 1], text[cut]
    if _EXTENDERS.match(after) or unicodedata.category(after) in ("Mn", "Me", "Mc") or before == "\u200d":
        return True
    if before == "\r" and after == "\n":
        return True
    if "\ud800" <= before <= "\udbff" and "\udc00" <= after <= "\udfff":  # a pair of surrogate code points
        return True  # (a str decoded with surrogatepass): one character, never cut in two
    if _HANGUL_LEADING.match(before) and _HANGUL_AFTER_LEADING.match(after):
        return True
    if _REGIONAL.match(before) and _REGIONAL.match(after):
        run = cut - 1  # regional indicators pair up from the start of their run: an odd run ends mid-flag
        while run > 0 and _REGIONAL.match(text[run - 1]):
            run -= 1
        return (cut - run) % 2 == 1
    return False


def truncate_text(text: str, limit: int) -> str:
    """The longest prefix of ``text`` of at most ``limit`` code points that ends on a grapheme-cluster boundary
    (``_joined``): an accent stays with its letter, a family emoji or a flag is kept whole or dropped whole. A
    text with no boundary within MAX_CLUSTER_BACKOFF code points below the limit (a "Zalgo" pile of marks, a
    cluster longer than the limit) is cut at the limit itself.

    Code points, not bytes nor UTF-16 units: the limit has always been ``len()`` of the text, every code point is
    whole in a Python string (no surrogate pair to split: Avro strings are UTF-8, which has no surrogates), and
    the stored size stays bounded (at most 4 UTF-8 bytes each)."""
    if len(text) <= limit:
        return text
    for cut in range(limit, max(limit - MAX_CLUSTER_BACKOFF - 1, 0), -1):
        if not _joined(text, cut):
            return text[:cut]
    return text[:limit]


def validate(raw: dict, now: datetime, max_future: timedelta = MAX_FUTURE) -> Response:
    """Validate a decoded RawResponse. ``now`` is the wall clock (injected) used to refuse future dates."""
    unknown = raw.get("unknown_json")
    if unknown:
        try:
            extra = json.loads(unknown)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than json.loads goes
            extra = {}
        if not isinstance(extra, dict):  # any producer may write the field: "[...]" or '"comment"' is no object
            extra = {}
        for name in ("response_id", "survey_id", "invitation_id", "responded_at", "comment", "locale"):
            if name in extra:
                raise Rejected(f"{name}_not_string", f"{name} must be a string, got {extra[name]!r}"[:200])
        if "segment" in extra:
            raise Rejected("segment_invalid", "segment must be an object of string values")
        if "follow_up" in extra:
            # a producer that predates the typed field (RawResponse v1/v2) carried any follow_up here
            value = extra["follow_up"]
            if value is not None and not isinstance(value, str):
                raise Rejected("follow_up_not_string", f"follow_up must be a string, got {value!r}"[:200])
            if raw.get("follow_up") is None:
                raw = {**raw, "follow_up": value}
    invitation_id = _text(raw, "invitation_id")
    # an answer to an invitation is identified by it: its response_id may be left out (streams.classify)
    response_id = _text(raw, "response_id", required=invitation_id is None) or invitation_id
    score = parse_score(raw.get("score"))
    responded_at = parse_timestamp(raw.get("responded_at"), "responded_at")
    if responded_at > now + max_future:
        raise Rejected("responded_at_in_future", f"responded_at {responded_at.isoformat()} is in the future")
    truncated: list[tuple[str, int]] = []
    comment = _text(raw, "comment", limit=MAX_COMMENT_CHARS, truncated=truncated)
    follow_up = _text(raw, "follow_up", limit=MAX_FOLLOW_UP_CHARS, truncated=truncated)
    received = raw.get("received_at")
    received_at = received if isinstance(received, datetime) else now
    return Response(
        response_id=response_id,
        survey_id=_text(raw, "survey_id") or "",
        invitation_id=invitation_id,
        score=score,
        category=classify(score),
        comment=comment,
        locale=_text(raw, "locale", limit=35),
        responded_at=responded_at,
        received_at=received_at.astimezone(timezone.utc),
        segment=parse_segment(raw.get("segment")),
        source=raw.get("source") or "cli",
        follow_up=follow_up,
        truncated=tuple(truncated),
    )


def truncation_detail(response: Response) -> str:
    """The dead letter's detail of a response whose texts were cut (``Response.truncated``)."""
    cut = "; ".join(f"{name} of {length} characters cut to {MAX_COMMENT_CHARS}" for name, length in response.truncated)
    return f"{cut} (the score and the cut text went on; this record is the original)"


# ------------------------------------------------------------------------------------------ dedup
class Decision(str, Enum):
    NEW = "new"
    DUPLICATE = "duplicate"  # the same version again (a replay): counts once
    EDIT = "edit"  # a later version: replaces the previous one everywhere
    STALE = "stale"  # an older version arriving after a newer one: ignored


def remembered(response: Response) -> dict:
    """What the classify table keeps per response_id (enough to retract it from windows)."""
    return {
        "v": response.version,
        "h": response.content_hash,
        "s": response.score,
        "t": response.responded_ms,
        "seg": response.segment,
    }


def decide(previous: dict | None, new: Response) -> Decision:
    if previous is None:
        return Decision.NEW
    version, digest = new.version, new.content_hash
    if version == previous["v"] and digest == previous["h"]:
        return Decision.DUPLICATE
    if (version, digest) > (previous["v"], previous["h"]):
        return Decision.EDIT
    return Decision.STALE
