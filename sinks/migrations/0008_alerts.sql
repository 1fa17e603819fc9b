-- npsflow ClickHouse schema, version 8: significant-change alerts (io.npsflow.Alert v2, streams.alerting).
-- One row per alert event (opened, closed) from the alerts topic; the latest event of an alert wins: the engine's
-- version is event_rank (0 opened, 1 closed), so a closed alert stays closed whatever order the rows arrive or
-- merge in. Read with FINAL or argMax(…, event_rank) (sinks.queries.alerts).
--
-- Replaces the table of 0001, which nothing ever wrote (no producer of Alert v1, no sink): its shape (one row per
-- detractor callback / drop, no event, no version column) does not fit, and ReplacingMergeTree's version column
-- cannot be added by ALTER. Dropping the unused table keeps the name `alerts` for readers (Grafana, BI) instead
-- of a second, differently named table next to an empty one. SYNC: a replicated table's ZooKeeper path is
-- reused at once by the new table (cluster form).
-- 0007 is the cases migration (issue 12, another branch).

DROP TABLE IF EXISTS {db}.alerts SYNC;

CREATE TABLE IF NOT EXISTS {db}.alerts
(
    alert_id           String,
    kind               LowCardinality(String),
    event              LowCardinality(String),
    event_rank         UInt8,
    status             LowCardinality(String),
    direction          LowCardinality(String),
    dimension          String,
    segment_value      String,
    baseline_nps       Nullable(Float64),
    baseline_responses UInt64,
    baseline_ci_low    Nullable(Float64),
    baseline_ci_high   Nullable(Float64),
    current_nps        Nullable(Float64),
    current_responses  UInt64,
    current_ci_low     Nullable(Float64),
    current_ci_high    Nullable(Float64),
    z                  Nullable(Float64),
    p_value            Nullable(Float64),
    cusum              Nullable(Float64),
    opened_at          DateTime64(3, 'UTC'),
    closed_at          Nullable(DateTime64(3, 'UTC')),
    detail             String,
    created_at         DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(event_rank)
ORDER BY alert_id
SETTINGS non_replicated_deduplication_window = 10000;
