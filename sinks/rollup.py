"""Exact daily NPS rollups: the refresher of ``nps_daily`` and the view ``nps_cells(since, until)``.

The model (tables in ``sinks/migrations/0005_nps_daily_rollup.sql``, guide in ``sinks/README.md``):

* ``responses_by_day`` — the day ledger, filled by a materialized view from ``responses``: every version of an
  answer under its UTC day, plus tombstones (``gone = 1``, the same version) under every other day its earlier
  versions had (``earlier_days``). The latest version per ``(day, response_id)`` is exactly what counts on that
  day, however often and in whatever order the versions were delivered.
* ``nps_daily_touched`` — per day, when a ledger row last arrived (MV into an AggregatingMergeTree).
* ``nps_daily`` — absolute counts per (day, org, survey, segment), recomputed here per day from the ledger;
  ``terms_daily`` — the same per language and term (migration 0006), recomputed with it;
  ``nps_daily_state`` / ``terms_daily_state`` — when each day's counts / terms were recomputed (apart: a
  refresher of an older version recomputes only ``nps_daily``, and its days' terms must not look clean).

A day is **clean** when its last recomputation started at least ``MARGIN_SECONDS`` after its last ledger row
arrived. The margin covers the time between ClickHouse evaluating a row's ``inserted_at`` (at insert) and the
row becoming visible (when the insert commits): an insert that takes longer than the margin could be missed by
a recomputation and the day still look clean — inserts here are batches of at most a few thousand rows.

``nps_cells(since, until)`` returns the clean whole days inside ``[since, until)`` from ``nps_daily``
(``source = 'rollup'``) and every other day — the partial days at the edges of the period, days with new rows,
days never recomputed — from the ledger (``source = 'ledger'``, one row per answer): the numbers are exact at
every moment, only the speed depends on how many days are clean. The worker refreshes days once they have been
quiet for ``QUIET_SECONDS`` (``refresh``, a timer); a day that keeps receiving answers (today) is read from the
ledger, which is ordered by day, so that is one range read of that day.

Recomputing is idempotent (absolute counts, newest ``computed_at`` wins, cells that disappeared are written as
deleted rows), so two workers refreshing at once, or a refresh interrupted half-way, leave correct tables.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

MARGIN_SECONDS = 60
QUIET_SECONDS = 60
ANY_TEXT = ""  # the term of terms_daily / term_cells that counts every answer with at least one term
SCORES = 11  # scores 0..10: ``scores[1]`` (ClickHouse arrays are 1-based) counts the zeros

SINCE = "{since:DateTime64(3, 'UTC')}"
UNTIL = "{until:DateTime64(3, 'UTC')}"


def clean_days(lo: str, hi: str, margin_seconds: int = MARGIN_SECONDS, state: str = "nps_daily_state") -> str:
    """Subquery: the clean days lying wholly inside ``[lo, hi)`` (SQL expressions of DateTime64 values), by the
    recomputations recorded in ``state`` (``nps_daily_state``, or ``terms_daily_state`` for the terms)."""
    return f"""(
        SELECT s.day
        FROM
        (
            SELECT day, max(computed_at) AS computed
            FROM {{db}}.{state}
            WHERE day >= toDate32({lo}) AND day < toDate32({hi})
            GROUP BY day
        ) AS s
        INNER JOIN
        (
            SELECT day, max(last_insert) AS arrived
            FROM {{db}}.nps_daily_touched
            WHERE day >= toDate32({lo}) AND day < toDate32({hi})
            GROUP BY day
        ) AS t ON t.day = s.day
        WHERE t.arrived < s.computed - toIntervalSecond({int(margin_seconds)})
          AND toDateTime64(s.day, 3, 'UTC') >= {lo}
          AND toDateTime64(s.day, 3, 'UTC') + toIntervalDay(1) <= {hi}
    )"""


#: latest version per (day, response_id) of the ledger rows of the selected days. FINAL on the ledger's key
#: (day, response_id) with ReplacingMergeTree(version) is exactly that, and ~5× faster than argMax per column
#: (bench/README.md). Conditions on other columns (gone, at, org …) must apply to the chosen latest row only,
#: never before: they stay outside this subquery, ClickHouse runs them in a Filter step above the FINAL read
#: (only conditions on the sorting key — day — may move to PREWHERE), so an older version can never take the
#: place of a newer one that a filter removed (tests/test_rollup.py pins this).
def _ledger_latest(where: str) -> str:
    return f"""(
        SELECT day, response_id, gone AS g, org_id AS o, survey_id AS sv, score AS sc, category AS cat,
               responded_at AS at, segment AS seg, lang AS lg, terms AS tm,
               if(respondent != '', respondent, response_id) AS rk
        FROM {{db}}.responses_by_day FINAL
        WHERE {where}
    )"""


def cells_view(margin_seconds: int = MARGIN_SECONDS) -> str:
    """The statement creating ``nps_cells`` (``margin_seconds``: see the module doc; tests of an embedded store,
    where an insert is visible when it returns, use 0)."""
    clean = clean_days(SINCE, UNTIL, margin_seconds)
    return f"""CREATE OR REPLACE VIEW {{db}}.nps_cells AS
SELECT day, org_id, survey_id, segment, responses, promoters, passives, detractors, scores,
       'rollup' AS source
FROM {{db}}.nps_daily FINAL
WHERE day >= toDate32({SINCE}) AND day < toDate32({UNTIL})
  AND day GLOBAL IN {clean}
UNION ALL
SELECT day, o AS org_id, sv AS survey_id, seg AS segment,
       toUInt64(1) AS responses,
       toUInt64(cat = 'promoter') AS promoters,
       toUInt64(cat = 'passive') AS passives,
       toUInt64(cat = 'detractor') AS detractors,
       arrayMap(i -> toUInt64(i = sc), range({SCORES})) AS scores,
       'ledger' AS source
FROM {_ledger_latest(f"day >= toDate32({SINCE}) AND day <= toDate32({UNTIL} - toIntervalMillisecond(1)) "
                     f"AND day GLOBAL NOT IN {clean}")}
WHERE g = 0 AND at >= {SINCE} AND at < {UNTIL}"""

def terms_view(margin_seconds: int = MARGIN_SECONDS) -> str:
    """The statement creating ``term_cells(since, until)``: per (day, org, survey, segment, language, term) the
    answers whose latest version on that day has the term — clean whole days from ``terms_daily``, the rest from
    the ledger (one row per answer and term), like ``nps_cells``. ``respondents`` is a ``uniqExact`` state:
    ``uniqExactMerge`` gives the distinct respondents over any rows."""
    clean = clean_days(SINCE, UNTIL, margin_seconds, state="terms_daily_state")
    return f"""CREATE OR REPLACE VIEW {{db}}.term_cells AS
SELECT day, org_id, survey_id, segment, lang, term, responses, promoters, passives, detractors, respondents,
       'rollup' AS source
FROM {{db}}.terms_daily FINAL
WHERE day >= toDate32({SINCE}) AND day < toDate32({UNTIL})
  AND day GLOBAL IN {clean}
UNION ALL
SELECT day, o AS org_id, sv AS survey_id, seg AS segment, lg AS lang, term,
       toUInt64(1) AS responses,
       toUInt64(cat = 'promoter') AS promoters,
       toUInt64(cat = 'passive') AS passives,
       toUInt64(cat = 'detractor') AS detractors,
       arrayReduce('uniqExactState', [rk]) AS respondents,
       'ledger' AS source
FROM {_ledger_latest(f"day >= toDate32({SINCE}) AND day <= toDate32({UNTIL} - toIntervalMillisecond(1)) "
                     f"AND day GLOBAL NOT IN {clean}")}
ARRAY JOIN if(empty(tm), [], arrayConcat([''], tm)) AS term
WHERE g = 0 AND at >= {SINCE} AND at < {UNTIL}"""


_RECOMPUTE = f"""INSERT INTO {{db}}.nps_daily
    (day, org_id, survey_id, cell, segment, responses, promoters, passives, detractors, scores, computed_at, deleted)
SELECT {{day:Date32}}, o, sv, toJSONString(mapSort(seg)) AS c, any(seg), count(),
       countIf(cat = 'promoter'), countIf(cat = 'passive'), countIf(cat = 'detractor'),
       sumForEach(arrayMap(i -> toUInt64(i = sc), range({SCORES}))),
       {{gen:DateTime64(3, 'UTC')}}, 0
FROM {_ledger_latest("day = {day:Date32}")}
WHERE g = 0
GROUP BY o, sv, c
SETTINGS distributed_foreground_insert = 1"""

#: cells of the day that the recomputation did not produce again (their answers moved or were edited away)
_VANISHED = f"""INSERT INTO {{db}}.nps_daily
    (day, org_id, survey_id, cell, segment, responses, promoters, passives, detractors, scores, computed_at, deleted)
SELECT day, org_id, survey_id, cell, segment, 0, 0, 0, 0, arrayWithConstant({SCORES}, toUInt64(0)),
       {{gen:DateTime64(3, 'UTC')}}, 1
FROM {{db}}.nps_daily FINAL
WHERE day = {{day:Date32}} AND computed_at < {{gen:DateTime64(3, 'UTC')}}
SETTINGS distributed_foreground_insert = 1"""

_RECOMPUTE_TERMS = f"""INSERT INTO {{db}}.terms_daily
    (day, org_id, survey_id, cell, segment, lang, term, responses, promoters, passives, detractors, respondents,
     computed_at, deleted)
SELECT {{day:Date32}}, o, sv, toJSONString(mapSort(seg)) AS c, any(seg), lg, term, count(),
       countIf(cat = 'promoter'), countIf(cat = 'passive'), countIf(cat = 'detractor'), uniqExactState(rk),
       {{gen:DateTime64(3, 'UTC')}}, 0
FROM {_ledger_latest("day = {day:Date32}")}
ARRAY JOIN if(empty(tm), [], arrayConcat([''], tm)) AS term
WHERE g = 0
GROUP BY o, sv, c, lg, term
SETTINGS distributed_foreground_insert = 1"""

_VANISHED_TERMS = """INSERT INTO {db}.terms_daily
    (day, org_id, survey_id, cell, segment, lang, term, responses, promoters, passives, detractors, respondents,
     computed_at, deleted)
SELECT day, org_id, survey_id, cell, segment, lang, term, 0, 0, 0, 0, respondents, {gen:DateTime64(3, 'UTC')}, 1
FROM {db}.terms_daily FINAL
WHERE day = {day:Date32} AND computed_at < {gen:DateTime64(3, 'UTC')}
SETTINGS distributed_foreground_insert = 1"""

_DIRTY = """SELECT t.day AS day
FROM (SELECT day, max(last_insert) AS arrived FROM {db}.nps_daily_touched GROUP BY day) AS t
LEFT JOIN (SELECT day, max(computed_at) AS computed FROM {db}.nps_daily_state GROUP BY day) AS s ON s.day = t.day
LEFT JOIN (SELECT day, max(computed_at) AS computed FROM {db}.terms_daily_state GROUP BY day) AS w ON w.day = t.day
WHERE t.arrived < now64(3, 'UTC') - toIntervalSecond({quiet:UInt32})
  AND (s.computed IS NULL OR w.computed IS NULL  -- never recomputed (join_use_nulls = 1; 0 would read 1970)
       OR t.arrived >= least(s.computed, w.computed) - toIntervalSecond({margin:UInt32}))
ORDER BY day DESC"""


@dataclass
class RefreshResult:
    days: list[date] = field(default_factory=list)  # recomputed, newest first
    pending: int = 0  # dirty days left for the next call (``limit``)

    def summary(self) -> str:
        if not self.days:
            return "nothing to refresh" + (f" ({self.pending} days pending)" if self.pending else "")
        span = f"{self.days[-1]}..{self.days[0]}" if len(self.days) > 1 else f"{self.days[0]}"
        more = f", {self.pending} days pending" if self.pending else ""
        return f"refreshed {len(self.days)} days ({span}){more}"


def server_now(store) -> datetime:
    return store.query("SELECT now64(3, 'UTC') AS now")[0]["now"]


def dirty_days(store, quiet_seconds: int = QUIET_SECONDS, margin_seconds: int = MARGIN_SECONDS) -> list[date]:
    """Days whose ledger changed after their last recomputation and that have been quiet for ``quiet_seconds``."""
    rows = store.query(_DIRTY, {"quiet": int(quiet_seconds), "margin": int(margin_seconds)})
    return [r["day"] for r in rows]


def refresh_day(store, day: date) -> datetime:
    """Recompute one day's cells from the ledger. Returns the generation (server time the read started)."""
    gen = server_now(store)
    params: dict[str, Any] = {"day": day, "gen": gen}
    for statement in (_RECOMPUTE, _VANISHED, _RECOMPUTE_TERMS, _VANISHED_TERMS):
        store.command(statement, params)
    for state in ("nps_daily_state", "terms_daily_state"):  # last: a crash leaves the day dirty
        store.insert(state, [{"day": day, "computed_at": gen}])
    return gen


def refresh(store, *, quiet_seconds: int = QUIET_SECONDS, margin_seconds: int = MARGIN_SECONDS,
            limit: int | None = None, budget_seconds: float | None = None) -> RefreshResult:
    """Recompute the dirty quiet days, newest first: at most ``limit`` days, and no new day once
    ``budget_seconds`` have passed (at least one day is done) — the worker's store thread also serves the sinks'
    inserts, so a long backlog (after an upgrade, an import) is worked off in short turns."""
    days = dirty_days(store, quiet_seconds, margin_seconds)
    chosen = days if limit is None else days[:limit]
    started = time.monotonic()
    result = RefreshResult()
    for day in chosen:
        if result.days and budget_seconds is not None and time.monotonic() - started >= budget_seconds:
            break
        refresh_day(store, day)
        result.days.append(day)
    result.pending = len(days) - len(result.days)
    return result


def rebuild(store, *, quiet_seconds: int = QUIET_SECONDS, margin_seconds: int = MARGIN_SECONDS) -> RefreshResult:
    """Forget every recomputation and recompute all quiet days (e.g. after restoring the ledger)."""
    engine = store.query("SELECT engine FROM system.tables WHERE database = {d:String} AND name = 'nps_daily_state'",
                         {"d": store.database})
    if engine and engine[0]["engine"] == "Distributed":  # TRUNCATE would only drop its send queue
        raise ValueError("on a cluster, run TRUNCATE TABLE nps_daily_state_local ON CLUSTER '<cluster>' (and "
                         "terms_daily_state_local) with "
                         "clickhouse-client, then `npsflow rollup refresh`")
    store.command("TRUNCATE TABLE IF EXISTS {db}.nps_daily_state")
    store.command("TRUNCATE TABLE IF EXISTS {db}.terms_daily_state")
    return refresh(store, quiet_seconds=quiet_seconds, margin_seconds=margin_seconds)


#: the day ledger rewritten from ``responses`` (``repair``): migration 0005's backfill with the columns added
#: since (lang, terms, respondent of migration 0006) — applied migrations are immutable, so the statement that
#: follows the current schema lives here
_REPAIR = """INSERT INTO {db}.responses_by_day
    (day, response_id, version, gone, is_edit, org_id, survey_id, invitation_id, score, category, comment,
     follow_up, lang, terms, respondent, responded_at, segment, inserted_at)
SELECT d, response_id, v, toUInt8(d != toDate32(at)), edited, org, sv, inv, sc, cat, txt, fu, lg, tm, rk, at,
       seg, now64(3)
FROM
(
    SELECT r.*, if(r.org0 != '', r.org0, o.dispatch_org) AS org
    FROM
    (
        SELECT response_id,
               max(version)                    AS v,
               toUInt8(count() > 1)            AS edited,
               argMax(org_id, version)         AS org0,
               argMax(survey_id, version)      AS sv,
               argMax(invitation_id, version)  AS inv,
               argMax(score, version)          AS sc,
               argMax(category, version)       AS cat,
               argMax(comment, version)        AS txt,
               argMax(follow_up, version)      AS fu,
               argMax(lang, version)           AS lg,
               argMax(terms, version)          AS tm,
               argMax(respondent, version)     AS rk,
               argMax(responded_at, version)   AS at,
               argMax(segment, version)        AS seg,
               groupUniqArray(toDate32(responded_at)) AS days
        FROM {db}.responses
        GROUP BY response_id
    ) AS r
    LEFT JOIN
    (
        SELECT invitation_id, any(org_id) AS dispatch_org
        FROM {db}.dispatches
        WHERE invitation_id != ''
        GROUP BY invitation_id
    ) AS o ON o.invitation_id = r.inv
)
ARRAY JOIN days AS d
SETTINGS max_bytes_before_external_group_by = 1000000000, join_algorithm = 'grace_hash', join_use_nulls = 0"""


def repair(store) -> int:
    """Rewrite the day ledger from ``responses`` (``_REPAIR``): every answer's latest version under its day,
    tombstones under every other day its versions had, the organization from its invitation where the answer has
    none. For answers that reached ``responses`` without ``earlier_days`` — classified by a version before
    migration 0005 (records in flight at an upgrade) — which the ledger would otherwise also count on an older
    day. The rewritten days become dirty and are recomputed by the next refresh. A full scan of ``responses``: an
    upgrade step, not a routine. Returns the ledger rows written."""
    before = store.query("SELECT count() AS n FROM {db}.responses_by_day")[0]["n"]
    store.command(_REPAIR)
    return store.query("SELECT count() AS n FROM {db}.responses_by_day")[0]["n"] - before


def apply_view(store, margin_seconds: int = MARGIN_SECONDS) -> None:
    """(Re)create ``nps_cells`` and ``term_cells`` — at every worker start, before the BI views that read them."""
    store.command(cells_view(margin_seconds))
    store.command(terms_view(margin_seconds))
