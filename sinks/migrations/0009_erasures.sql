-- npsflow ClickHouse schema, version 9: the audit of erasure requests (GDPR article 17, `npsflow forget`).
-- One row per request: who asked (--by, else the OS user), when, for which organization and contact pseudonym
-- (the keyed HMAC of org and contact id, as in dispatches.contact_key / responses.respondent — never the contact
-- id, an address or an answer), and how many rows, files and state keys were erased per place (JSON object).
-- The column is named `pseudonym` (not respondent/contact_key/route) on purpose: sinks.erasure finds the tables
-- to erase by those column names, and the audit must outlive the erasure it records.

CREATE TABLE IF NOT EXISTS {db}.erasures
(
    request_id      String,
    org_id          LowCardinality(String),
    pseudonym       String,
    by              String,
    erased_at       DateTime64(3, 'UTC'),
    erased          String,
    days_recomputed UInt32,
    inserted_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (org_id, request_id)
SETTINGS non_replicated_deduplication_window = 10000;
