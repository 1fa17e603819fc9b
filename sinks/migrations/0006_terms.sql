-- npsflow ClickHouse schema, version 6: text analytics (issue 11; ClassifiedResponse v4).
--
-- Every answer now carries the language of its text (`lang`), its distinct terms (`terms`: lemmas and
-- negation-aware bigrams of the masked comment and follow-up, streams.text) and a keyed pseudonym of the
-- respondent (`respondent`: the invitation's contact key, '' when the answer names no known invitation). The
-- comment and follow-up are masked by classify before they reach Kafka's classified topic, so rows written from
-- v4 on hold no e-mail address, phone number, personal id number, IBAN, card number or URL. Rows written before
-- this migration read lang '' and terms [] (their comments are not re-analysed).
--
-- The day ledger carries the three columns too, so terms follow the same rules as every other number: latest
-- version per (day, response_id), tombstones where an edit moved the answer, an edit that drops a word drops it.
-- `terms_daily` is the rollup of terms (counts per day, org, survey, segment, language and term, and the set
-- of respondents for the distinct-respondent minimum), recomputed with `nps_daily` by the same refresher from
-- the ledger (its own state table: `terms_daily_state`); the view `term_cells(since, until)` (sinks.rollup)
-- reads clean days from it and the rest from the ledger, exactly like `nps_cells`.
-- Upgrade order: sink workers before process workers (a sink of an older version reading ClassifiedResponse v4
-- would drop lang/terms/respondent: those rows would have no terms).

ALTER TABLE {db}.responses
    ADD COLUMN IF NOT EXISTS lang LowCardinality(String) DEFAULT '' AFTER locale,
    ADD COLUMN IF NOT EXISTS terms Array(LowCardinality(String)) AFTER lang,
    ADD COLUMN IF NOT EXISTS respondent String DEFAULT '' AFTER terms;

ALTER TABLE {db}.responses_by_day
    ADD COLUMN IF NOT EXISTS follow_up String DEFAULT '' AFTER comment,
    ADD COLUMN IF NOT EXISTS lang LowCardinality(String) DEFAULT '' AFTER follow_up,
    ADD COLUMN IF NOT EXISTS terms Array(LowCardinality(String)) AFTER lang,
    ADD COLUMN IF NOT EXISTS respondent String DEFAULT '' AFTER terms;

ALTER TABLE {db}.comments_by_day
    ADD COLUMN IF NOT EXISTS follow_up String DEFAULT '' AFTER comment,
    ADD COLUMN IF NOT EXISTS lang LowCardinality(String) DEFAULT '' AFTER follow_up,
    ADD COLUMN IF NOT EXISTS terms Array(LowCardinality(String)) AFTER lang,
    ADD COLUMN IF NOT EXISTS respondent String DEFAULT '' AFTER terms;

-- the ledger's view with the new columns (and the follow-up answer: terms come from it too, so the examples
-- shown for a term need it)
ALTER TABLE {db}.responses_by_day_mv MODIFY QUERY
SELECT ledger.1 AS day, response_id, version, ledger.2 AS gone, is_edit, org_id, survey_id, invitation_id, score,
       category, comment, follow_up, lang, terms, respondent, responded_at, segment, inserted_at
FROM {db}.responses
ARRAY JOIN arrayConcat([(toDate32(responded_at), toUInt8(0))],
                       arrayMap(d -> (d, toUInt8(1)), arrayFilter(d -> d != toDate32(responded_at), earlier_days)))
           AS ledger;

-- the comments ledger also keeps the versions that have only a follow-up answer
ALTER TABLE {db}.comments_by_day_mv MODIFY QUERY
SELECT *
FROM {db}.responses_by_day
WHERE comment != '' OR follow_up != '' OR gone = 1 OR is_edit = 1;

CREATE TABLE IF NOT EXISTS {db}.terms_daily
(
    day         Date32,
    org_id      LowCardinality(String),
    survey_id   String,
    cell        String,
    segment     Map(LowCardinality(String), String),
    lang        LowCardinality(String),
    term        LowCardinality(String),
    responses   UInt64,
    promoters   UInt64,
    passives    UInt64,
    detractors  UInt64,
    respondents AggregateFunction(uniqExact, String),
    computed_at DateTime64(3, 'UTC'),
    deleted     UInt8 DEFAULT 0
)
ENGINE = ReplacingMergeTree(computed_at, deleted)
ORDER BY (day, org_id, survey_id, cell, lang, term);

-- when each day's terms were last recomputed: apart from nps_daily_state, so that a refresher of an older
-- version (a rolling upgrade) that recomputes only nps_daily never makes a day's terms look clean
CREATE TABLE IF NOT EXISTS {db}.terms_daily_state
(
    day         Date32,
    computed_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(computed_at)
ORDER BY day;
