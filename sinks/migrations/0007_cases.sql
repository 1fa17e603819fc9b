-- npsflow ClickHouse schema, version 7: detractor follow-up cases (issue 12, streams.cases).
-- One row per change of a case (the compacted topic <ns>.cases, Avro io.npsflow.Case): the highest rev wins
-- (ReplacingMergeTree(rev), read with FINAL). No contact details: route is <org>|<keyed contact pseudonym>
-- (the key a command about the case must be produced with), comments are masked by classify, the owners'
-- notes are masked by the sink (sinks.rows.case_row).

CREATE TABLE IF NOT EXISTS {db}.cases
(
    case_id          String,
    org_id           LowCardinality(String),
    route            String,
    response_id      String,
    owner            String,
    score            UInt8,
    category         LowCardinality(String),
    comment          String DEFAULT '',
    segment          Map(LowCardinality(String), String),
    answers          UInt16,
    opened_at        DateTime64(3, 'UTC'),
    due_at           DateTime64(3, 'UTC'),
    status           LowCardinality(String),
    close_reason     LowCardinality(String) DEFAULT '',
    first_contact_at Nullable(DateTime64(3, 'UTC')),
    closed_at        Nullable(DateTime64(3, 'UTC')),
    escalated_at     Nullable(DateTime64(3, 'UTC')),
    escalated_to     String DEFAULT '',
    notes            String DEFAULT '[]',
    command_ids      Array(String),
    history          String DEFAULT '[]',
    rev              UInt32,
    updated_at       DateTime64(3, 'UTC'),
    kafka_partition  UInt16,
    kafka_offset     UInt64,
    inserted_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(rev)
ORDER BY (org_id, case_id)
SETTINGS non_replicated_deduplication_window = 10000;
