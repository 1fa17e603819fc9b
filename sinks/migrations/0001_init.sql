-- npsflow ClickHouse schema, version 1.
-- Runs unchanged on embedded chDB and on a ClickHouse server. {db} is replaced by the quoted database name.
-- Applied migrations are immutable (checksummed in schema_migrations): change the schema in a new file.
-- Every table is a ReplacingMergeTree: Kafka delivers at-least-once, so the same row may be inserted again;
-- identical retried batches are dropped by insert_deduplication_token (non_replicated_deduplication_window),
-- anything else collapses at merge time. Read with argMax(..., version|seq) or FINAL, never a bare count().
-- No personal data (e-mail, phone, names) is stored in any table.

CREATE TABLE IF NOT EXISTS {db}.responses
(
    response_id     String,
    survey_id       String,
    invitation_id   String DEFAULT '',
    score           UInt8,
    category        Enum8('detractor' = -1, 'passive' = 0, 'promoter' = 1),
    comment         String,
    locale          LowCardinality(String),
    responded_at    DateTime64(3, 'UTC'),
    received_at     DateTime64(3, 'UTC'),
    processed_at    DateTime64(3, 'UTC'),
    segment         Map(LowCardinality(String), String),
    version         UInt64,
    is_edit         UInt8,
    previous_score  Nullable(UInt8),
    source          LowCardinality(String),
    kafka_partition UInt16,
    kafka_offset    UInt64,
    inserted_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY response_id
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {db}.window_updates
(
    dimension      LowCardinality(String),
    segment_value  String,
    `window`       LowCardinality(String),
    window_seconds UInt32,
    window_start   DateTime64(3, 'UTC'),
    window_end     DateTime64(3, 'UTC'),
    promoters      UInt64,
    passives       UInt64,
    detractors     UInt64,
    responses      UInt64,
    nps            Nullable(Float64),
    ci_low         Float64,
    ci_high        Float64,
    band           LowCardinality(String) DEFAULT '',
    seq            UInt64,
    updated_at     DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (dimension, segment_value, `window`, seq)
TTL toDateTime(updated_at) + INTERVAL 90 DAY
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {db}.dead_letters
(
    dead_letter_id   String,
    stage            LowCardinality(String),
    reason           LowCardinality(String),
    detail           String,
    source_topic     String,
    source_partition Int32,
    source_offset    Int64,
    key              String,
    payload_json     String,
    failed_at        DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (stage, dead_letter_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {db}.alerts
(
    alert_id      String,
    kind          LowCardinality(String),
    response_id   String,
    survey_id     String,
    dimension     String,
    segment_value String,
    score         Nullable(UInt8),
    comment       String,
    nps           Nullable(Float64),
    previous_nps  Nullable(Float64),
    z             Nullable(Float64),
    detail        String,
    created_at    DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY alert_id
SETTINGS non_replicated_deduplication_window = 10000;
