"""The SQL of every Grafana panel (``npsflow grafana build``), as data, in one place.

The statements are written for the SQL editor of the ``grafana-clickhouse-datasource`` plugin (v4). They use
only these placeholders, which ``render`` expands the way Grafana and the plugin do:

* ``$__fromTime`` / ``$__toTime`` — the plugin's macros: the dashboard time range as ``toDateTime(<unix
  seconds>)``. Periods are half-open, ``at >= $__fromTime AND at < $__toTime``, exactly like
  ``npsflow report --since … --until …``.
* ``${org:sqlstring}`` — the ``org`` variable (values of ``dispatches.org_id``) as a quoted SQL string. Its
  "All" option has the custom all value ``'__all__'`` (quotes included: Grafana inserts a custom all value
  verbatim, without the ``sqlstring`` format), so every statement reads ``${org:sqlstring} = '__all__' OR …``.
* ``${dimension:sqlstring}`` — the ``dimension`` variable (the configured dimensions: ``NPSFLOW_DIMENSIONS``
  without ``overall``, by default location, employee, channel) as a quoted string, used as a key of the
  ``segment`` map.
* ``${granularity:sqlstring}`` — the ``granularity`` variable of the trend panels (``GRANULARITIES``: day, week,
  month) as a quoted string: the buckets are UTC days, ISO weeks (from Monday) or calendar months, each the
  exact sum of its days' cells, at the bucket's start (``time``).
* ``{db}`` — the database, as in ``sinks.queries``: ``ClickHouseStore.query`` replaces it with the store's
  quoted database; the Grafana JSON carries the store's default database (``for_grafana``).

Correct before merges, fast on big tables: the NPS panels read ``nps_cells(since, until)`` (``sinks.rollup``:
exact per-day counts, from the rollup for clean whole days and from the day ledger for the rest); the comments
and the funnel's answers read the day ledger ``responses_by_day`` for the period's days only (latest version
per ``(day, response_id)``, tombstones excluded); dispatches take the latest decision of each dispatch
(``argMax(…, decided_at)`` grouped by ``dispatch_id``); dead letters count once per ``(stage, dead_letter_id)``.

Organizations: a response belongs to the org of its invitation (``responses.org_id``, set by classify from
the invitation). Responses without an invitation (CLI/API ingest, the simulator) have no org: they count under
"All" only. Dead letters have no org either: that panel ignores the variable.

NPS math is ``streams.nps`` in SQL: NPS = 100·(P − D)/n; the 95 % adjusted-Wald interval with n' = n + 3,
p' = (P + 0.75)/n', d' = (D + 0.75)/n', SE = sqrt(max(p' + d' − (p' − d')², 0)/n'), 100·((p' − d') ± 1.96·SE)
clipped to [−100, 100]; bands < 0 needs_improvement, < 50 good, < 70 excellent, else world_class.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

from sinks.clickhouse import DEFAULT_DATABASE, quote_ident
from sinks.queries import NONE_VALUE, validate_dimension
from streams.triggers import ORG_ID as TRIGGER_ORG_ID

ALL_ORGS = "__all__"
ORG_ID = TRIGGER_ORG_ID  # the alphabet trigger intake enforces (streams.triggers)
DIMENSIONS = ("location", "employee", "channel")  # the dimension variable's options by default
GRANULARITIES = ("day", "week", "month")  # the granularity variable's options; the first is the default
COMMENTS_LIMIT = 50

# ------------------------------------------------------------------------------------------------ building blocks
ORG = "${org:sqlstring}"
DIM = "${dimension:sqlstring}"
GRAN = "${granularity:sqlstring}"
PERIOD = "$__fromTime AND at < $__toTime"  # used as: at >= {PERIOD}

#: the period's answers as exact per-day cells (sinks.rollup: clean days from the rollup ``nps_daily``, the rest
#: from the day ledger), scoped to the organization
_CELLS = """{db}.nps_cells(since = $__fromTime, until = $__toTime)
    WHERE ${org:sqlstring} = '__all__' OR org_id = ${org:sqlstring}"""

#: the latest version of every answer with a comment in the period's days (the comments ledger: the day ledger's
#: rows that can decide a comment, read by day with FINAL on its key (day, response_id); the conditions stay
#: outside the subquery, so they apply to the latest version only — see sinks.rollup), scoped to the org
_LEDGER = """(
        SELECT gone AS g, org_id AS o, response_id, score AS sc, category AS cat, comment AS txt,
               responded_at AS at, segment[${dimension:sqlstring}] AS segval
        FROM {db}.comments_by_day FINAL
        WHERE day >= toDate32($__fromTime) AND day <= toDate32($__toTime)
    )
    WHERE g = 0 AND at >= $__fromTime AND at < $__toTime
      AND (${org:sqlstring} = '__all__' OR o = ${org:sqlstring})"""

#: NPS, interval and band over columns p (promoters), d (detractors), n (responses) of the enclosing SELECT
_NPS_COLUMNS = """100 * (p - d) / n AS nps,
           (p + 0.75) / (n + 3) AS p_adj,
           (d + 0.75) / (n + 3) AS d_adj,
           sqrt(greatest(p_adj + d_adj - (p_adj - d_adj) * (p_adj - d_adj), 0) / (n + 3)) AS se,
           greatest(-100, 100 * ((p_adj - d_adj) - 1.96 * se)) AS ci_low,
           least(100, 100 * ((p_adj - d_adj) + 1.96 * se)) AS ci_high"""

_SEGMENT_VALUE = f"if(segval = '', '{NONE_VALUE}', segval)"

#: the start of the bucket of a cell's ``day`` (Date32) by the granularity: the day itself, the Monday of its ISO
#: week, the first of its month; anything else (a BI view called with another value) counts as day. By
#: arithmetic on Date32, not toStartOfWeek/toStartOfMonth: those return Date and clamp days outside 1970–2149.
_BUCKET = """toDateTime64(multiIf(${granularity:sqlstring} = 'week', day - (toDayOfWeek(day) - 1),
                                 ${granularity:sqlstring} = 'month', day - (toDayOfMonth(day) - 1),
                                 day), 3, 'UTC')"""

# ------------------------------------------------------------------------------------------------ panels
NPS_DAILY = f"""SELECT time, nps, ci_low, ci_high, n
FROM
(
    SELECT {_BUCKET} AS time,
           sum(responses) AS n,
           sum(promoters) AS p,
           sum(detractors) AS d,
           {_NPS_COLUMNS}
    FROM {_CELLS}
    GROUP BY time
)
ORDER BY time"""

NPS_BY_SEGMENT = f"""SELECT value, n, promoters, passives, detractors, nps, ci_low, ci_high,
       multiIf(nps < 0, 'needs_improvement', nps < 50, 'good', nps < 70, 'excellent', 'world_class') AS band
FROM
(
    SELECT if(segment[${{dimension:sqlstring}}] = '', '{NONE_VALUE}', segment[${{dimension:sqlstring}}]) AS value,
           sum(responses) AS n,
           sum(promoters) AS p,
           sum(passives) AS pa,
           sum(detractors) AS d,
           p AS promoters, pa AS passives, d AS detractors,
           {_NPS_COLUMNS}
    FROM {_CELLS}
    GROUP BY value
)
ORDER BY n DESC, value"""

SCORE_DISTRIBUTION = f"""SELECT toString(s) AS score,
       if(s <= 6, count_, 0) AS detractors,
       if(s BETWEEN 7 AND 8, count_, 0) AS passives,
       if(s >= 9, count_, 0) AS promoters
FROM
(
    SELECT arrayJoin(arrayEnumerate(totals)) - 1 AS s, totals[s + 1] AS count_
    FROM
    (
        SELECT if(count() = 0, arrayWithConstant(11, toUInt64(0)), sumForEach(scores)) AS totals
        FROM {_CELLS}
    )
)
ORDER BY s"""

CATEGORY_SHARE = f"""SELECT {_BUCKET} AS time,
       100 * sum(promoters) / sum(responses) AS promoters,
       100 * sum(passives) / sum(responses) AS passives,
       100 * sum(detractors) / sum(responses) AS detractors
FROM {_CELLS}
GROUP BY time
ORDER BY time"""

DETRACTOR_COMMENTS = f"""SELECT at AS responded_at, sc AS score, {_SEGMENT_VALUE} AS value, txt AS comment, response_id
FROM {_LEDGER}
  AND cat = 'detractor' AND txt != ''
ORDER BY responded_at DESC, response_id
LIMIT {COMMENTS_LIMIT}"""

#: invitations first decided in the period, per channel of their latest decision; responses whenever they came
FUNNEL = """WITH
    latest AS
    (
        SELECT dispatch_id,
               argMax(kind, decided_at)            AS knd,
               argMax(status, decided_at)          AS st,
               argMax(channel, decided_at)         AS ch,
               argMax(invitation_id, decided_at)   AS inv,
               argMax(ifNull(cost, 0), decided_at) AS price,
               argMax(currency, decided_at)        AS cur,
               min(decided_at)                     AS first_at,
               max(decided_at)                     AS sent_at
        FROM {db}.dispatches
        WHERE ${org:sqlstring} = '__all__' OR org_id = ${org:sqlstring}
        GROUP BY dispatch_id
    ),
    invitations AS
    (
        -- one pass over the latest decisions (aggregate aliases differ from the columns: ClickHouse substitutes
        -- aliases): an invitation (its dispatch_id is its invitation id) and its
        -- reminder (dispatch_id "<invitation id>:reminder", invitation_id = the invitation's) meet on one key
        SELECT if(knd = 'reminder', inv, dispatch_id) AS k,
               countIf(knd = 'invitation') AS invited,
               anyIf(inv, knd = 'invitation') AS i_inv,
               anyIf(ch, knd = 'invitation') AS i_ch,
               anyIf(st, knd = 'invitation') AS i_st,
               anyIf(price, knd = 'invitation') AS i_price,
               anyIf(cur, knd = 'invitation') AS i_cur,
               anyIf(first_at, knd = 'invitation') AS i_first,
               anyIf(sent_at, knd = 'invitation') AS i_sent,
               sumIf(price, knd = 'reminder' AND st = 'sent') AS reminder_cost,
               groupUniqArrayIf(cur, knd = 'reminder' AND st = 'sent' AND cur != '') AS reminder_cur
        FROM latest
        WHERE knd = 'invitation' OR (knd = 'reminder' AND inv != '')
        GROUP BY k
    ),
    answers AS
    (
        -- the latest version of every answer, from the day ledger, from the period's first day on (an answer
        -- comes after its invitation); FINAL on (day, response_id), conditions outside (sinks.rollup)
        SELECT inv, min(at) AS answered_at, 1 AS answered
        FROM
        (
            SELECT gone, invitation_id AS inv, responded_at AS at
            FROM {db}.responses_by_day FINAL
            WHERE day >= toDate32($__fromTime)
        )
        WHERE gone = 0 AND inv != ''
        GROUP BY inv
    )
SELECT if(i.ch = '', '(none)', i.ch) AS channel,
       count() AS triggered,
       countIf(i.st = 'sent') AS sent,
       countIf(i.st = 'sent' AND a.answered = 1) AS responded,
       if(sent = 0, NULL, 100 * responded / sent) AS response_rate,
       quantileExactInclusiveIf(0.5)(
           (toUnixTimestamp64Milli(a.answered_at) - toUnixTimestamp64Milli(i.sent_at)) / 3600000,
           i.st = 'sent' AND a.answered = 1) AS median_hours_to_respond,
       arrayStringConcat(arraySort(arrayDistinct(arrayConcat(
           groupUniqArrayIf(i.cur, i.st = 'sent' AND i.cur != ''),
           groupArrayArrayIf(i.reminder_cur, i.st = 'sent' AND i.inv != '')))), ',') AS currency,
       -- amounts in different currencies are never added up: no cost when the row mixes them
       if(position(currency, ',') > 0, NULL,
          sumIf(i.price, i.st = 'sent') + sumIf(i.reminder_cost, i.st = 'sent' AND i.inv != '')) AS cost,
       if(responded = 0 OR cost IS NULL, NULL, cost / responded) AS cost_per_response
FROM
(
    SELECT i_inv AS inv, i_ch AS ch, i_st AS st, i_price AS price, i_cur AS cur, i_sent AS sent_at, reminder_cost,
           reminder_cur
    FROM invitations
    WHERE invited > 0 AND i_first >= $__fromTime AND i_first < $__toTime
) AS i
LEFT JOIN answers AS a ON a.inv = i.inv AND i.inv != ''
GROUP BY channel
ORDER BY channel"""

DEAD_LETTERS_HOURLY = """SELECT toStartOfHour(t) AS time, stage, count() AS dead_letters
FROM
(
    SELECT stage, dead_letter_id, min(failed_at) AS t
    FROM {db}.dead_letters
    GROUP BY stage, dead_letter_id
)
WHERE t >= $__fromTime AND t < $__toTime
GROUP BY time, stage
ORDER BY time, stage"""

#: the detractors' words of the period (term_cells: sinks.rollup), each counted per answer, compared within the
#: answers with terms in the same language (the term '' row of that language; see sinks.terms): lift = the relative risk of being a detractor with vs without the term,
#: Katz 95 % interval with the Haldane correction when a cell is 0 (as streams.termstats), impact = NPS of all
#: answers with text − NPS without the term's; the minimum counts of `npsflow terms` (≥ 10 answers, ≥ 5
#: detractors, ≥ 3 respondents; a word in every answer has nothing to compare with and is left out); ranked by
#: the interval's lower bound (the CLI adds Fisher's test and BH q)
TOP_DETRACTOR_TERMS = """SELECT term, lang, n, detractors, lift, lift_low, lift_high, impact
FROM
(
    SELECT term, lang, n, d AS detractors, people,
           (d = 0 OR n - d = 0 OR td - d = 0 OR (tn - n) - (td - d) = 0) AS zero,
           d + 0.5 * zero AS a, (n - d) + 0.5 * zero AS b, (td - d) + 0.5 * zero AS c,
           ((tn - n) - (td - d)) + 0.5 * zero AS dd,
           if(n < tn, (a / (a + b)) / (c / (c + dd)), NULL) AS lift,
           sqrt(1 / a - 1 / (a + b) + 1 / c - 1 / (c + dd)) AS se,
           exp(log(lift) - 1.959963984540054 * se) AS lift_low,  -- z of 95 % (streams.nps.Z95)
           exp(log(lift) + 1.959963984540054 * se) AS lift_high,
           if(n < tn, 100 * (tp - td) / tn - 100 * ((tp - p) - (td - d)) / (tn - n), NULL) AS impact
    FROM
    (
        SELECT term, lang, sum(responses) AS n, sum(promoters) AS p, sum(detractors) AS d,
               uniqExactMerge(respondents) AS people
        FROM {db}.term_cells(since = $__fromTime, until = $__toTime)
        WHERE (${org:sqlstring} = '__all__' OR org_id = ${org:sqlstring}) AND term != ''
        GROUP BY term, lang
    ) AS t
    INNER JOIN
    (
        SELECT lang, sum(responses) AS tn, sum(promoters) AS tp, sum(detractors) AS td
        FROM {db}.term_cells(since = $__fromTime, until = $__toTime)
        WHERE (${org:sqlstring} = '__all__' OR org_id = ${org:sqlstring}) AND term = ''
        GROUP BY lang
    ) AS s USING (lang)
    WHERE n >= 10 AND d >= 5 AND people >= 3 AND n < tn
)
ORDER BY lift_low DESC, impact, n DESC, term, lang
LIMIT 15"""

#: follow-up cases opened in the period, per owner (sinks.casebook: latest revision of each case, FINAL):
#: open (not closed) and overdue now, acknowledged, median hours from opening to the first contact, closed, and
#: the share of the closed ones closed by their due time
FOLLOW_UP = """SELECT owner, count() AS cases, countIf(status != 'closed') AS open,
       countIf(status != 'closed' AND due_at <= now64(3)) AS overdue,
       countIf(first_contact_at IS NOT NULL) AS acknowledged,
       if(acknowledged = 0, NULL, round(quantileExactInclusiveIf(0.5)(
           dateDiff('second', opened_at, first_contact_at) / 3600.0, first_contact_at IS NOT NULL), 2))
           AS median_hours_to_contact,
       countIf(status = 'closed') AS closed,
       if(closed = 0, NULL, round(100 * countIf(status = 'closed' AND closed_at <= due_at) / closed, 1))
           AS closed_within_sla_pct
FROM {db}.cases FINAL
WHERE opened_at >= $__fromTime AND opened_at < $__toTime
  AND (${org:sqlstring} = '__all__' OR org_id = ${org:sqlstring})
GROUP BY owner
ORDER BY cases DESC, owner"""

#: the ``org`` variable's options (no time range: every org that ever had a dispatch)
ORG_OPTIONS = "SELECT DISTINCT org_id FROM {db}.dispatches WHERE org_id != '' ORDER BY org_id"

TABLE, TIME_SERIES = 1, 0  # the plugin's "format" of a query

#: Grafana annotations: the significant-change alerts (migration 0008, streams.alerting) that overlap the period,
#: the latest event of each (closed after opened); a closed alert is a region from opening to closing, an open
#: one a point at its opening. Grafana's annotation columns: time, timeEnd, text, tags (comma-separated). Not tied
#: to an organization (alerts are per segment).
ALERT_ANNOTATIONS = """SELECT l_opened_at AS time, if(l_status = 'closed', l_closed_at, l_opened_at) AS timeEnd,
       concat(l_detail, ' [', l_status, ']') AS text,
       concat('alert,', l_kind, ',', l_dimension, '=', l_segment_value, ',', l_status) AS tags
FROM (
    SELECT alert_id, argMax(opened_at, event_rank) AS l_opened_at, argMax(closed_at, event_rank) AS l_closed_at,
           argMax(status, event_rank) AS l_status, argMax(detail, event_rank) AS l_detail,
           argMax(kind, event_rank) AS l_kind, argMax(dimension, event_rank) AS l_dimension,
           argMax(segment_value, event_rank) AS l_segment_value
    FROM {db}.alerts
    GROUP BY alert_id
)
WHERE l_opened_at < $__toTime AND (l_status = 'open' OR l_closed_at >= $__fromTime)
ORDER BY time, alert_id"""


@dataclass(frozen=True)
class Panel:
    key: str
    title: str
    sql: str
    format: int  # TABLE or TIME_SERIES
    description: str


OVERVIEW = (
    Panel("nps_daily", "NPS per ${granularity} with 95 % interval", NPS_DAILY, TIME_SERIES,
          "NPS of the responses answered in each UTC day, ISO week (from Monday) or calendar month, as chosen "
          "in Granularity (latest version of every answer), with the 95 % adjusted-Wald interval (ci_low, "
          "ci_high) as a band; n = responses in the bucket, plotted at its start. A week or month cut by the "
          "time range counts only its days inside the range."),
    Panel("nps_by_segment", "NPS by ${dimension}", NPS_BY_SEGMENT, TABLE,
          "Responses in the period grouped by the segment dimension chosen above; '(none)' = the response has "
          "no value for it. Same numbers as `npsflow report --by <dimension>`."),
    Panel("score_distribution", "Score distribution", SCORE_DISTRIBUTION, TABLE,
          "Responses per score 0–10 in the period, colored by category."),
    Panel("category_share", "Promoters, passives, detractors (% per ${granularity})", CATEGORY_SHARE,
          TIME_SERIES,
          "Share of each category among the responses of each UTC day, ISO week (from Monday) or calendar "
          "month, as chosen in Granularity (stacked to 100 %). A week or month cut by the time range counts "
          "only its days inside the range."),
    Panel("detractor_comments", "Latest detractor comments", DETRACTOR_COMMENTS, TABLE,
          f"The {COMMENTS_LIMIT} newest detractor answers with a comment in the period. Comments are shown as "
          "plain text: the table escapes them, markup in a comment is not interpreted."),
    Panel("top_detractor_terms", "Top complaints: detractors' words (lift and impact)", TOP_DETRACTOR_TERMS, TABLE,
          "Words and negation pairs (lemmas, streams.text) that detractors name more than others, among the "
          "answers with text in the period, each answer counted once. lift = how many times likelier an answer "
          "naming it is a detractor's (bars, with its 95 % interval); impact = NPS of all answers with text "
          "minus NPS without the answers naming it (negative: it costs NPS). Only words named in ≥ 10 answers, "
          "by ≥ 5 detractors and ≥ 3 respondents. Ranked by the interval's lower bound; `npsflow terms` adds "
          "Fisher's exact test with Benjamini–Hochberg q values and examples."),
)

OPERATIONS = (
    Panel("funnel", "Survey funnel per channel", FUNNEL, TABLE,
          "Invitations first decided in the period, by the channel of their latest decision ('(none)': no "
          "channel, e.g. suppressed): triggered, sent, responded (a response carries the invitation id; "
          "responses arriving after the period still count), response rate = responded / sent, median hours "
          "from sending to the answer, cost of the sent invitations and their sent reminders, and cost per "
          "response."),
    Panel("follow_up", "Detractor follow-up per owner", FOLLOW_UP, TABLE,
          "Follow-up cases opened in the period (streams.cases: every detractor answer opens one, a contact's "
          "next one joins it), per owner: still open, overdue now (past the SLA), acknowledged (first contact "
          "recorded), median hours to the first contact, closed, and % of the closed ones closed within the "
          "SLA. Act on them with `npsflow cases`."),
    Panel("dead_letters", "Dead letters per hour by stage", DEAD_LETTERS_HOURLY, TIME_SERIES,
          "Records npsflow refused (each dead letter once), per hour and stage. Not tied to an organization: "
          "the org variable does not apply. Details: `npsflow deadletters`."),
)

DASHBOARDS = {"nps-overview": ("NPS overview", OVERVIEW), "survey-operations": ("Survey operations", OPERATIONS)}


def panels() -> tuple[Panel, ...]:
    return OVERVIEW + OPERATIONS


def for_grafana(sql: str, database: str = DEFAULT_DATABASE) -> str:
    """The statement as it goes into the dashboard JSON: ``{db}`` → the quoted database name."""
    return sql.replace("{db}", quote_ident(database))


# ------------------------------------------------------------------------------------------------ render
_TOKEN = re.compile(r"\$__[A-Za-z_]+|\$\{[^}]*\}|\$[A-Za-z_]\w*|\[\[[^\]]*\]\]")


def _seconds(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return int(value.timestamp() // 1)


def _quote(value: str) -> str:
    return "'" + value + "'"  # only ever called on values matched by a strict regex (no quotes, backslashes)


def render(sql: str, *, time_from: datetime, time_to: datetime, variables: dict[str, str | None]) -> str:
    """Expand the placeholders of a panel's SQL into plain ClickHouse SQL, as Grafana + the plugin would.

    ``$__fromTime``/``$__toTime`` → ``toDateTime(<unix seconds>)`` (the plugin truncates to whole seconds; naive
    datetimes are UTC). ``${org:sqlstring}`` → ``'__all__'`` when ``variables["org"]`` is None, "All" or
    ``__all__``, else the quoted org id (must match ``ORG_ID``). ``${dimension:sqlstring}`` → the quoted
    dimension (must pass ``sinks.queries.validate_dimension``). ``${granularity:sqlstring}`` → the quoted
    granularity (one of ``GRANULARITIES``). ``{db}`` is left for ``store.query``. Any other macro or variable
    is a ValueError, as is a variable the SQL needs but ``variables`` lacks.
    """
    if _seconds(time_from) >= _seconds(time_to):
        raise ValueError("time_from must be earlier than time_to")
    values: dict[str, str] = {
        "$__fromTime": f"toDateTime({_seconds(time_from)})",
        "$__toTime": f"toDateTime({_seconds(time_to)})",
    }
    if "org" in variables:
        org = variables["org"]
        if org in (None, "All", "$__all", ALL_ORGS):
            values[ORG] = _quote(ALL_ORGS)
        elif isinstance(org, str) and ORG_ID.match(org):
            values[ORG] = _quote(org)
        else:
            raise ValueError(f"invalid org id {org!r}")
    if "dimension" in variables:
        values[DIM] = _quote(validate_dimension(variables["dimension"]))
    if "granularity" in variables:
        granularity = variables["granularity"]
        if granularity not in GRANULARITIES:
            raise ValueError(f"invalid granularity {granularity!r}: one of {', '.join(GRANULARITIES)}")
        values[GRAN] = _quote(granularity)
    unknown = set(variables) - {"org", "dimension", "granularity"}
    if unknown:
        raise ValueError(f"unknown variables {sorted(unknown)}: only org, dimension and granularity")

    def expand(match: re.Match) -> str:
        token = match.group(0)
        if token not in values:
            raise ValueError(f"cannot render {token!r}: supported are {sorted(values)} (given the variables)")
        return values[token]

    return _TOKEN.sub(expand, sql)


# ------------------------------------------------------------------------------------------------ SQL views
#: Grafana macro / variable → ClickHouse query parameter of a parameterized view
VIEW_PARAMETERS = {
    "$__fromTime": "{since:DateTime64(3, 'UTC')}",
    "$__toTime": "{until:DateTime64(3, 'UTC')}",
    ORG: "{org:String}",
    DIM: "{dimension:String}",
    GRAN: "{granularity:String}",
}


def view_name(panel: Panel) -> str:
    return f"bi_{panel.key}"


def view_sql(panel: Panel) -> str:
    """The panel's query as a parameterized view, for BI tools and SQL users::

        SELECT * FROM npsflow.bi_nps_by_segment(since = '2026-11-01 00:00:00', until = '2026-11-08 00:00:00',
                                                 org = '__all__', dimension = 'location')

    (``org = '__all__'``: every organization; periods are [since, until), UTC). The trend views also take
    ``granularity = 'day'|'week'|'month'`` (another value counts as day)."""
    sql = panel.sql
    for macro, parameter in VIEW_PARAMETERS.items():
        sql = sql.replace(macro, parameter)
    leftover = _TOKEN.search(sql)
    if leftover:
        raise ValueError(f"panel {panel.key}: no view parameter for {leftover.group(0)}")
    return f"CREATE OR REPLACE VIEW {{db}}.{view_name(panel)} AS\n{sql}"


def apply_views(store) -> list[str]:
    """(Re)create ``nps_cells``, ``term_cells`` and every panel's view — at every worker start, like the
    retention: the views follow the code."""
    from sinks.rollup import apply_view

    apply_view(store)
    names = ["nps_cells", "term_cells"]
    for panel in panels():
        store.command(view_sql(panel))
        names.append(view_name(panel))
    return names
