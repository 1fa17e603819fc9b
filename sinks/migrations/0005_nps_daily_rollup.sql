-- npsflow ClickHouse schema, version 5: exact daily rollups for BI and dashboards (issue 5).
--
-- Why not one materialized view into an AggregatingMergeTree of counts: the pipeline delivers at least once and
-- respondents edit their answers, so the same answer (or an older version of it) reaches `responses` more than
-- once; an MV adds up every inserted row and would count those twice. Exact and fast instead:
--
-- 1. `responses_by_day` (MV from `responses`): the "day ledger". Every version of an answer is written under its
--    UTC day; an edit that moves the answer to another day also writes a tombstone (`gone` = 1, the new version)
--    with the same version under every other day an earlier version had (ClassifiedResponse.earlier_days, from
--    classify's memory). Latest version per (day, response_id) = exactly the answers that count on that day, in
--    whatever order the versions arrive: replays and older versions lose by version.
--    Ordered by day, so one day is a range read.
--    `comments_by_day` (MV from the ledger) keeps only the rows that can decide an answer's comment (versions with
--    one, edits, tombstones): the comment panels read it.
-- 2. `nps_daily_touched` (MV from the ledger into an AggregatingMergeTree): per day, when a row last arrived.
-- 3. `nps_daily`: absolute counts per (day, org, survey, segment), recomputed from the ledger per day by
--    `sinks.rollup.refresh` (the worker runs it) once a day has been quiet for a minute; `nps_daily_state`
--    records when. A day is "clean" when it was recomputed after its last arrival (+ a 60 s margin).
-- 4. The view `nps_cells(since, until)` (sinks.rollup, recreated at worker start) reads clean whole days from
--    `nps_daily` and everything else (partial days at the period's edges, days not recomputed yet) from the
--    ledger: exact at every moment, before and after merges; fast when most days are clean.
--
-- org_id / earlier_days on `responses`: rows written before this migration read '' / [] (their ledger rows are
-- backfilled below: an answer's latest version under its day, a tombstone under the other days its versions had).

ALTER TABLE {db}.responses
    ADD COLUMN IF NOT EXISTS earlier_days Array(Date32) AFTER previous_score,
    ADD COLUMN IF NOT EXISTS org_id LowCardinality(String) DEFAULT '' AFTER survey_id;

CREATE TABLE IF NOT EXISTS {db}.responses_by_day
(
    day           Date32,
    response_id   String,
    version       UInt64,
    gone          UInt8,
    is_edit       UInt8,
    org_id        LowCardinality(String),
    survey_id     String,
    invitation_id String,
    score         UInt8,
    category      Enum8('detractor' = -1, 'passive' = 0, 'promoter' = 1),
    comment       String,
    responded_at  DateTime64(3, 'UTC'),
    segment       Map(LowCardinality(String), String),
    inserted_at   DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (day, response_id);

-- the comments ledger: the ledger rows that can decide which comment an answer shows on a day — versions with a
-- comment, edits (they may remove or change one) and tombstones. A first version without a comment is never
-- needed: nothing older can lie under it. ~10 % of the ledger; the comment panels read it.
CREATE TABLE IF NOT EXISTS {db}.comments_by_day AS {db}.responses_by_day
ENGINE = ReplacingMergeTree(version)
ORDER BY (day, response_id);

CREATE TABLE IF NOT EXISTS {db}.nps_daily_touched
(
    day         Date32,
    last_insert SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY day;

CREATE TABLE IF NOT EXISTS {db}.nps_daily
(
    day         Date32,
    org_id      LowCardinality(String),
    survey_id   String,
    cell        String,
    segment     Map(LowCardinality(String), String),
    responses   UInt64,
    promoters   UInt64,
    passives    UInt64,
    detractors  UInt64,
    scores      Array(UInt64),
    computed_at DateTime64(3, 'UTC'),
    deleted     UInt8 DEFAULT 0
)
ENGINE = ReplacingMergeTree(computed_at, deleted)
ORDER BY (day, org_id, survey_id, cell);

CREATE TABLE IF NOT EXISTS {db}.nps_daily_state
(
    day         Date32,
    computed_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(computed_at)
ORDER BY day;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.nps_daily_touched_mv TO {db}.nps_daily_touched AS
SELECT day, max(inserted_at) AS last_insert
FROM {db}.responses_by_day
GROUP BY day;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.comments_by_day_mv TO {db}.comments_by_day AS
SELECT *
FROM {db}.responses_by_day
WHERE comment != '' OR gone = 1 OR is_edit = 1;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.responses_by_day_mv TO {db}.responses_by_day AS
SELECT ledger.1 AS day, response_id, version, ledger.2 AS gone, is_edit, org_id, survey_id, invitation_id, score,
       category, comment, responded_at, segment, inserted_at
FROM {db}.responses
ARRAY JOIN arrayConcat([(toDate32(responded_at), toUInt8(0))],
                       arrayMap(d -> (d, toUInt8(1)), arrayFilter(d -> d != toDate32(responded_at), earlier_days)))
           AS ledger;

-- backfill (and `npsflow rollup refresh --repair`, which runs this statement again): the latest version of every
-- answer under its day, a tombstone under every other day one of its versions had; the organization from the
-- answer or else from its invitation's dispatches (rows written before this migration have none). inserted_at =
-- now: the days become dirty and the refresher recomputes them. Running it again only adds rows the ledger's
-- latest-wins read collapses. Big tables: the GROUP BY spills to disk beyond 1 GB, the join is a grace hash join.
INSERT INTO {db}.responses_by_day
SELECT d AS day, response_id, v AS version, toUInt8(d != toDate32(at)) AS gone, edited AS is_edit, org, sv, inv, sc,
       cat, txt, at, seg, now64(3) AS inserted_at
FROM
(
    SELECT r.response_id AS response_id, r.v AS v, r.edited AS edited, if(r.org != '', r.org, o.dispatch_org) AS org,
           r.sv AS sv,
           r.inv AS inv, r.sc AS sc, r.cat AS cat, r.txt AS txt, r.at AS at, r.seg AS seg, r.days AS days
    FROM
    (
        SELECT response_id,
               max(version)                    AS v,
               toUInt8(count() > 1)            AS edited,
               argMax(org_id, version)         AS org,
               argMax(survey_id, version)      AS sv,
               argMax(invitation_id, version)  AS inv,
               argMax(score, version)          AS sc,
               argMax(category, version)       AS cat,
               argMax(comment, version)        AS txt,
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
SETTINGS max_bytes_before_external_group_by = 1000000000, join_algorithm = 'grace_hash', join_use_nulls = 0;
