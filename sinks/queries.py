"""Read side over the ClickHouse tables (used by the CLI and the worker's HTTP API).

Every function takes a ``ClickHouseStore`` first (so ``store.arun(queries.report, by, since, until)`` works)
and returns JSON-ready values only (datetimes as ISO-8601 strings). Counting happens in SQL; NPS and its
interval come from ``streams.nps`` so every number matches the rest of npsflow.

Responses are read latest-wins and exact before, during and after merges: NPS counts come from
``nps_cells(since, until)`` (``sinks.rollup``: the daily rollup for clean days, the day ledger for the rest),
answers themselves (comments) from the day ledger ``responses_by_day`` (latest version per
``(day, response_id)``, tombstones of answers that moved away excluded). User input (dimension names, segment
values, times) only ever reaches SQL as bound query parameters.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

from streams.nps import summarize

DIMENSION = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
NONE_VALUE = "(none)"
_SUMMARY_KEYS = frozenset(summarize(0, 0, 0).as_dict())
# names the comparison and the dashboard's comments use next to the segment value
_RESERVED = _SUMMARY_KEYS | {"previous", "change", "z", "significant", "response_id", "score", "category",
                             "comment", "responded_at", "value", "lang"}


def validate_dimension(name: str) -> str:
    if not isinstance(name, str) or not DIMENSION.match(name):
        raise ValueError(f"invalid dimension {name!r}: use lowercase letters, digits and _ (e.g. location)")
    if name in _RESERVED:
        raise ValueError(f"dimension {name!r} clashes with a report column name")
    return name


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _ch_time(value: datetime) -> str:
    """A DateTime64(3, 'UTC') parameter literal (explicit UTC text: no client/server timezone guessing).

    Formatted by hand: ``strftime("%Y")`` does not zero-pad years < 1000 on glibc ("999-01-01").
    """
    v = _utc(value)
    return (f"{v.year:04d}-{v.month:02d}-{v.day:02d} {v.hour:02d}:{v.minute:02d}:{v.second:02d}."
            f"{v.microsecond // 1000:03d}")


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        return _utc(value).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return value


# ------------------------------------------------------------------------------------------------ report
#: the exact per-day cells of [since, until) (sinks.rollup: clean days from the rollup, the rest from the ledger)
CELLS = "{db}.nps_cells(since = {since:DateTime64(3, 'UTC')}, until = {until:DateTime64(3, 'UTC')})"
#: the widest period: the ledger's days are Date32 (1900–2299); answers are never before 1970 nor in the future
FIRST = datetime(1970, 1, 1, tzinfo=timezone.utc)
LAST = datetime(2299, 1, 1, tzinfo=timezone.utc)


def report(store, by: list[str] | tuple[str, ...] = (), since: datetime | None = None,
           until: datetime | None = None) -> dict:
    """NPS over the latest version of every response whose (latest) responded_at is in [since, until) (from
    ``nps_cells``: the daily rollup where it is clean, the day ledger elsewhere; no bound = 1970 / 2299).

    ``by``: segment dimensions (keys of ``segment``); a response without the key is grouped as "(none)".
    Returns {"by", "rows": [{dim: value, …, **summary}], "total": summary} (the shape issue #2 specifies); rows sorted
    by responses desc then dimension values; ``rows`` is empty when ``by`` is empty.
    """
    by = [validate_dimension(d) for d in (by or [])]
    if len(set(by)) != len(by):
        raise ValueError(f"dimension listed twice in {by}")
    if since is not None and until is not None and _utc(since) >= _utc(until):
        raise ValueError("since must be earlier than until")
    params: dict[str, Any] = {"since": _ch_time(max(_utc(since), FIRST)) if since is not None else _ch_time(FIRST),
                              "until": _ch_time(min(_utc(until), LAST)) if until is not None else _ch_time(LAST),
                              "none": NONE_VALUE}
    dims = []
    for i, dim in enumerate(by):
        params[f"k{i}"] = dim
        dims.append(f"if(segment[{{k{i}:String}}] = '', {{none:String}}, segment[{{k{i}:String}}]) AS d{i}")
    sql = (
        "SELECT " + "".join(f"{d}, " for d in dims)
        + "sum(promoters) AS promoters, sum(passives) AS passives, sum(detractors) AS detractors "
        + f"FROM {CELLS}"
        + (" GROUP BY " + ", ".join(f"d{i}" for i in range(len(by))) if by else "")
    )
    result = store.query(sql, params)
    return _report(by, ((tuple(r[f"d{i}"] for i in range(len(by))),
                         (int(r["promoters"]), int(r["passives"]), int(r["detractors"]))) for r in result))


def _report(by: list[str], keyed_counts) -> dict:
    """report's result from ((dimension values…), (promoters, passives, detractors)) pairs."""
    rows = []
    totals = [0, 0, 0]
    for key, counts in keyed_counts:
        if sum(counts) == 0:  # the ungrouped aggregate over no rows
            continue
        totals = [a + b for a, b in zip(totals, counts)]
        if by:
            rows.append({**dict(zip(by, key)), **summarize(*counts).as_dict()})
    rows.sort(key=lambda row: (-row["responses"], *[row[d] for d in by]))
    return {
        "by": list(by),
        "rows": rows,
        "total": summarize(*totals).as_dict(),
    }


def report_compared(store, by: list[str] | tuple[str, ...] = (), since: datetime | None = None,
                    until: datetime | None = None, now: datetime | None = None) -> dict:
    """``report`` for [since, until) next to the same segments in the previous period of equal length,
    [since − (until − since), since): every row and the total get ``previous`` (a summary), ``change`` (NPS
    points, None when a period has no responses), ``z`` and ``significant`` (two-sample z-test at 95 %,
    ``streams.nps.compare``). Segments seen in only one of the periods are listed with zeros in the other.
    ``until`` defaults to ``now``; ``since`` is required (a previous period needs a length)."""
    from streams.nps import compare

    if since is None:
        raise ValueError("--compare-previous needs --since (and --until, default now): the period to compare")
    until = until or now or datetime.now(timezone.utc)
    since, until = _utc(since), _utc(until)
    if since >= until:
        raise ValueError("since must be earlier than until")
    previous_since = since - (until - since)
    current = report(store, by, since, until)
    previous = report(store, by, previous_since, since)
    by = current["by"]
    key = lambda row: tuple(row[d] for d in by)  # noqa: E731
    counts = lambda s: (s["promoters"], s["passives"], s["detractors"])  # noqa: E731
    empty = summarize(0, 0, 0).as_dict()
    before = {key(r): r for r in previous["rows"]}
    now_rows = {key(r): r for r in current["rows"]}
    rows = []
    for k in list(now_rows) + [k for k in before if k not in now_rows]:
        cur = now_rows.get(k) or {**dict(zip(by, k)), **empty}
        prev = before.get(k)
        prev_summary = {s: prev[s] for s in empty} if prev else dict(empty)
        rows.append({**cur, "previous": prev_summary, **compare(counts(cur), counts(prev_summary))})
    total = {**current["total"], "previous": previous["total"],
             **compare(counts(current["total"]), counts(previous["total"]))}
    return {"by": by, "rows": rows, "total": total,
            "period": {"since": _iso(since), "until": _iso(until)},
            "previous_period": {"since": _iso(previous_since), "until": _iso(since)}}


# ------------------------------------------------------------------------------------------------ dashboard
#: the latest version of every answer with a comment given on the days [first, last] (the comments ledger)
LEDGER_ANSWERS = """
    SELECT day, response_id, gone AS g, category AS cat, score, comment, lang, responded_at AS at,
           segment[{k:String}] AS segval
    FROM {db}.comments_by_day FINAL
    WHERE day >= toDate32({first:String}) AND day <= toDate32({last:String})
"""  # the comments ledger; FINAL on (day, response_id): the latest version per day (see sinks.rollup._ledger_latest)


def dashboard(store, by: str = "location", days: int = 14, comments: int = 10,
              now: datetime | None = None) -> dict:
    """What the built-in live dashboard shows, from the latest version of every response:
    ``report`` by ``by`` (all time); ``trend``: NPS per UTC day for the last ``days`` days (ending today),
    overall and per segment value (days without responses have n = 0 and nps None); ``comments``: the newest
    non-empty comments of those days (score, category, the ``by`` value, responded_at, and ``lang``: the language
    tag of the comment's text — see ``comment_langs`` — or None when unknown). Numbers are exactly ``report``'s."""
    by = validate_dimension(by)
    days = max(1, min(int(days), 90))
    comments = max(0, min(int(comments), 50))
    today = _utc(now or datetime.now(timezone.utc)).date()
    first = today - timedelta(days=days - 1)
    params = {"k": by, "none": NONE_VALUE, "first": first.isoformat(), "last": today.isoformat(), "n": comments,
              "since": _ch_time(FIRST), "until": _ch_time(LAST)}
    seg = "if(segval = '', {none:String}, segval)"
    # one read for both: all time per (day, value) — the rows are the report's, the last days the trend
    per_day = store.query(
        "SELECT day, if(segment[{k:String}] = '', {none:String}, segment[{k:String}]) AS value, "
        f"sum(promoters) AS p, sum(passives) AS pa, sum(detractors) AS d FROM {CELLS} GROUP BY day, value", params)
    all_time: dict[str, list[int]] = {}
    counts: dict[str, dict[str, list[int]]] = {}
    overall: dict[str, list[int]] = {}  # apart from the segments: a segment may be called anything
    for r in per_day:
        cells = [all_time.setdefault(r["value"], [0, 0, 0])]
        if first <= r["day"] <= today:
            cells += [counts.setdefault(r["value"], {}).setdefault(str(r["day"]), [0, 0, 0]),
                      overall.setdefault(str(r["day"]), [0, 0, 0])]
        for cell in cells:
            cell[0] += int(r["p"]); cell[1] += int(r["pa"]); cell[2] += int(r["d"])  # noqa: E702
    day_list = [(first + timedelta(days=i)).isoformat() for i in range(days)]

    def series(days: dict[str, list[int]]) -> list[dict]:
        out = []
        for day in day_list:
            s = summarize(*days.get(day, [0, 0, 0])).as_dict()
            out.append({"day": day, "responses": s["responses"], "nps": s["nps"]})
        return out

    latest: list[dict] = []
    # the newest comments are almost always from the last day or two: read those days first and widen only when
    # they hold too few (the same answer as reading all the days at once, at a fraction of the rows)
    for span in sorted({min(2, days), min(7, days), days}):
        if not comments:
            break
        recent = {**params, "first": (today - timedelta(days=span - 1)).isoformat()}
        latest = store.query(
            f"SELECT response_id, score, cat, comment, lang, at, {seg} AS value FROM ({LEDGER_ANSWERS}) "
            "WHERE g = 0 AND comment != '' ORDER BY at DESC, response_id LIMIT {n:UInt32}", recent)
        if len(latest) >= comments:
            break
    result = _report([by], (((value,), tuple(c)) for value, c in all_time.items()))
    langs = comment_langs(store, latest)
    return {
        "by": by,
        "rows": result["rows"],
        "total": result["total"],
        "trend": {"days": day_list, "total": series(overall),
                  "segments": {r[by]: series(counts.get(r[by], {})) for r in result["rows"]}},
        "comments": [{"response_id": c["response_id"], "score": int(c["score"]), "category": c["cat"],
                      "comment": c["comment"], by: c["value"], "responded_at": _iso(c["at"]),
                      "lang": langs.get(c["response_id"])} for c in latest],
    }


_LANG_TAG = re.compile(r"^([a-z]{2,3})((?:-[a-z0-9]{1,8})*)$")


def language_tag(value: str | None) -> str | None:
    """A BCP 47 language tag (for HTML ``lang``) from a stored language ("fi") or a response's locale ("sv-SE",
    "fi_FI.UTF-8", "nb_NO@euro"); None for an empty, undetermined ("und") or malformed one. The encoding and
    modifier of a POSIX locale are dropped; a two-letter region is upper-cased ("sv-se" → "sv-SE")."""
    if not value:
        return None
    text = value.strip().split(".", 1)[0].split("@", 1)[0].replace("_", "-").lower()
    match = _LANG_TAG.match(text)
    if match is None or match.group(1) == "und":
        return None
    subtags = [s.upper() if len(s) == 2 and s.isalpha() else s for s in match.group(2).split("-")[1:]]
    return "-".join([match.group(1), *subtags])


def comment_langs(store, comments: list[dict]) -> dict[str, str]:
    """response_id → the language tag of each comment: the language classify stored with the answer (``lang``:
    the locale's language unless a long text was confidently detected as another, streams.text.lang), else — rows
    from before migration 0006, or "und" (a locale outside the five languages and a text too short or unsure to
    detect) — the response's own locale (its latest version's, from ``responses``: the ledger has no locale).
    Answers with neither are left out."""
    out = {c["response_id"]: tag for c in comments if (tag := language_tag(c.get("lang")))}
    missing = sorted({c["response_id"] for c in comments} - set(out))
    if missing:
        for r in store.query("SELECT response_id, argMax(locale, version) AS locale FROM {db}.responses "
                             "WHERE response_id IN {ids:Array(String)} GROUP BY response_id", {"ids": missing}):
            if tag := language_tag(r["locale"]):
                out[r["response_id"]] = tag
    return out


# ------------------------------------------------------------------------------------------------ windows
WINDOW_COLUMNS = ("window_seconds", "window_start", "window_end", "promoters", "passives", "detractors",
                  "responses", "nps", "ci_low", "ci_high", "band", "updated_at")


def windows(store, segment: tuple[str, str] | None = None) -> list[dict]:
    """Latest update per (dimension, segment_value, window), optionally for one segment.

    Latest = highest ``(updated_at, seq)``: seq alone restarts when the worker's window state is reset
    (e.g. a new namespace/consumer group writing into the same ClickHouse), so the newest update wins
    and seq only breaks ties between updates of the same millisecond. Sorted by dimension,
    segment_value, window length.
    """
    params: dict[str, Any] = {}
    where = ""
    if segment is not None:
        dim, value = segment
        params = {"dim": validate_dimension(dim), "value": str(value)}
        where = "WHERE dimension = {dim:String} AND segment_value = {value:String}"
    # aliases differ from column names (an alias shadowing a column nests aggregates in ClickHouse)
    latest = ", ".join(f"argMax({c}, (updated_at, seq)) AS l_{c}" for c in (*WINDOW_COLUMNS, "seq"))
    sql = (f"SELECT dimension, segment_value, `window`, {latest} FROM {{db}}.window_updates "
           f"{where} GROUP BY dimension, segment_value, `window` "
           f"ORDER BY dimension, segment_value, l_window_seconds, `window`")
    out = []
    for r in store.query(sql, params):
        row = {k.removeprefix("l_"): _iso(v) for k, v in r.items()}
        row["band"] = row["band"] or None
        for k in ("window_seconds", "promoters", "passives", "detractors", "responses", "seq"):
            row[k] = int(row[k])
        out.append(row)
    return out


# ------------------------------------------------------------------------------------------------ dead letters
def deadletters(store, examples: int = 3) -> dict:
    """{"total": n, "reasons": [{"stage", "reason", "count", "examples": [...]}]} — most frequent first.

    Each dead letter counts once (dedup by (stage, dead_letter_id)); examples are the newest first.
    """
    examples = max(0, int(examples))
    counts = store.query(
        "SELECT stage, reason, count() AS count FROM {db}.dead_letters FINAL "
        "GROUP BY stage, reason ORDER BY count DESC, stage, reason")
    samples: list[dict] = []
    if examples:
        samples = store.query(
            "SELECT stage, reason, dead_letter_id, detail, source_topic, source_partition, source_offset, key, "
            "payload_json, failed_at FROM {db}.dead_letters FINAL "
            "ORDER BY stage, reason, failed_at DESC, dead_letter_id LIMIT {n:UInt32} BY stage, reason",
            {"n": examples})
    by_reason: dict[tuple[str, str], list[dict]] = {}
    for s in samples:
        example = {k: _iso(v) for k, v in s.items() if k not in ("stage", "reason")}
        example["source_partition"] = None if example["source_partition"] < 0 else int(example["source_partition"])
        example["source_offset"] = None if example["source_offset"] < 0 else int(example["source_offset"])
        by_reason.setdefault((s["stage"], s["reason"]), []).append(example)
    reasons = [{"stage": c["stage"], "reason": c["reason"], "count": int(c["count"]),
                "examples": by_reason.get((c["stage"], c["reason"]), [])} for c in counts]
    return {"total": sum(r["count"] for r in reasons), "reasons": reasons}


_LATEST_DISPATCHES = """
    SELECT dispatch_id,
           argMax(kind, decided_at)     AS knd,
           argMax(status, decided_at)   AS st,
           argMax(reason, decided_at)   AS why,
           argMax(channel, decided_at)  AS ch,
           argMax(cost, decided_at)     AS price,
           argMax(currency, decided_at) AS cur
    FROM {db}.dispatches
    GROUP BY dispatch_id
"""


class _Counts:
    """Latest decisions of one kind, counted by status, by (status, reason), by channel, sent by channel."""

    def __init__(self) -> None:
        self.by_status: dict[str, int] = {}
        self.by_reason: dict[tuple[str, str], int] = {}
        self.by_channel: dict[str, int] = {}
        self.sent_by_channel: dict[str, int] = {}

    def add(self, status: str, reason: str, channel: str, n: int) -> None:
        self.by_status[status] = self.by_status.get(status, 0) + n
        if reason:
            self.by_reason[(status, reason)] = self.by_reason.get((status, reason), 0) + n
        if channel:
            self.by_channel[channel] = self.by_channel.get(channel, 0) + n
            if status == "sent":
                self.sent_by_channel[channel] = self.sent_by_channel.get(channel, 0) + n

    def summary(self) -> dict:
        return {
            "total": sum(self.by_status.values()),
            "by_status": dict(sorted(self.by_status.items())),
            "reasons": [{"status": s, "reason": why, "count": n} for (s, why), n in sorted(self.by_reason.items())],
        }


def dispatches(store) -> dict:
    """The latest decision (highest decided_at) of every dispatch_id, counted per kind, and the cost so far.

    Returns::

        {"total", "by_status", "reasons", "by_channel", "sent_by_channel",   # invitations (kind invitation)
         "reminders": {"total", "by_status", "reasons"},                       # reminders (kind reminder)
         "promoter_actions": {kind: {"total", "by_status", "reasons"}},       # thank_you, review_request, reward
         "cost": {currency: amount}}                                          # every sent message, both kinds

    ``reasons`` is ``[{"status", "reason", "count"}]`` sorted by status then reason; ``by_channel`` counts every
    invitation decision that names a channel, ``sent_by_channel`` only the sent ones. A scheduled dispatch that
    was later sent counts once, as sent. ``cost`` sums the cost of sent invitations and sent reminders per
    currency (rounded to 6 decimals, like ``sinks.channels.base.money``); promoter messages cost too.
    """
    rows = store.query(
        f"SELECT knd AS kind, toString(st) AS status, why AS reason, ch AS channel, cur AS currency, count() AS n, "
        f"sumIf(ifNull(price, 0), st = 'sent') AS cost FROM ({_LATEST_DISPATCHES}) "
        f"GROUP BY kind, status, reason, channel, currency ORDER BY kind, status, reason, channel, currency")
    invitations, reminders, actions = _Counts(), _Counts(), {}
    cost: dict[str, float] = {}
    for r in rows:
        n = int(r["n"])
        if r["kind"] == "reminder":
            reminders.add(r["status"], r["reason"], r["channel"], n)
        elif r["kind"] in ("invitation", ""):
            invitations.add(r["status"], r["reason"], r["channel"], n)
        else:  # promoter actions (streams.promoter): thank_you, review_request, reward
            actions.setdefault(r["kind"], _Counts()).add(r["status"], r["reason"], r["channel"], n)
        if r["currency"] and r["cost"]:
            cost[r["currency"]] = cost.get(r["currency"], 0.0) + float(r["cost"])
    return {
        **invitations.summary(),
        "by_channel": dict(sorted(invitations.by_channel.items())),
        "sent_by_channel": dict(sorted(invitations.sent_by_channel.items())),
        "reminders": reminders.summary(),
        "promoter_actions": {kind: counts.summary() for kind, counts in sorted(actions.items())},
        "cost": {cur: round(amount, 6) for cur, amount in sorted(cost.items())},
    }


# ------------------------------------------------------------------------------------------------ alerts
ALERT_STATUSES = ("open", "closed")
_ALERT_COLUMNS = ("kind", "status", "direction", "dimension", "segment_value", "baseline_nps", "baseline_responses",
                  "baseline_ci_low", "baseline_ci_high", "current_nps", "current_responses", "current_ci_low",
                  "current_ci_high", "z", "p_value", "cusum", "opened_at", "closed_at", "detail")


def _alert_side(row: dict, side: str) -> dict:
    return {"nps": row[f"{side}_nps"], "responses": int(row[f"{side}_responses"]),
            "ci95": [row[f"{side}_ci_low"], row[f"{side}_ci_high"]]}


def alerts(store, status: str | None = None, limit: int = 500) -> dict:
    """Significant-change alerts (migration 0008), the latest event of each (closed after opened: argMax by
    event_rank), optionally only ``open`` or ``closed`` ones; open first, then newest first.
    ``{"alerts": [{"alert_id", "segment": {dim: value}, "kind", "direction", "baseline": {"nps", "responses",
    "ci95"}, "current": {…}, "z", "p_value", "cusum", "opened_at", "closed_at", "status", "detail"}, …]}``."""
    if status is not None and status not in ALERT_STATUSES:
        raise ValueError(f"status must be one of {', '.join(ALERT_STATUSES)}, got {status!r}")
    latest = ", ".join(f"argMax({c}, event_rank) AS l_{c}" for c in _ALERT_COLUMNS)
    having = "HAVING l_status = {status:String}" if status else ""
    sql = (f"SELECT alert_id, {latest} FROM {{db}}.alerts GROUP BY alert_id {having} "
           f"ORDER BY l_status = 'open' DESC, l_opened_at DESC, alert_id LIMIT {int(limit)}")
    out = []
    for r in store.query(sql, {"status": status} if status else {}):
        row = {k.removeprefix("l_"): v for k, v in r.items()}
        out.append({
            "alert_id": row["alert_id"], "segment": {row["dimension"]: row["segment_value"]}, "kind": row["kind"],
            "direction": row["direction"] or None, "baseline": _alert_side(row, "baseline"),
            "current": _alert_side(row, "current"), "z": row["z"], "p_value": row["p_value"], "cusum": row["cusum"],
            "opened_at": _iso(row["opened_at"]), "closed_at": _iso(row["closed_at"]), "status": row["status"],
            "detail": row["detail"]})
    return {"alerts": out}
