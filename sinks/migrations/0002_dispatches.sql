-- npsflow ClickHouse schema, version 2: survey dispatch decisions (issue 3).
-- One row per decision about one invitation: sent, scheduled, suppressed (with the reason) or failed.
-- A dispatch may be decided more than once (scheduled, later sent or failed): the latest decided_at wins,
-- read with argMax(..., decided_at). contact_key is a keyed pseudonym: no e-mail or phone number here.

CREATE TABLE IF NOT EXISTS {db}.dispatches
(
    dispatch_id     String,
    invitation_id   String DEFAULT '',
    event_id        String,
    org_id          LowCardinality(String),
    survey_id       String DEFAULT '',
    contact_key     String,
    channel         LowCardinality(String) DEFAULT '',
    status          Enum8('sent' = 1, 'scheduled' = 2, 'suppressed' = 3, 'failed' = 4),
    reason          LowCardinality(String) DEFAULT '',
    scheduled_for   Nullable(DateTime64(3, 'UTC')),
    decided_at      DateTime64(3, 'UTC'),
    cost            Nullable(Float64),
    currency        LowCardinality(String) DEFAULT '',
    locale          LowCardinality(String) DEFAULT '',
    segment         Map(LowCardinality(String), String),
    kafka_partition UInt16,
    kafka_offset    UInt64,
    inserted_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(decided_at)
ORDER BY (org_id, dispatch_id)
SETTINGS non_replicated_deduplication_window = 10000;
