-- npsflow ClickHouse schema, version 3: reminders are dispatch rows too (DispatchedMessage v2).
-- kind: 'invitation' (one per trigger event) or 'reminder' (at most one per sent invitation, its own dispatch_id
-- "<dispatch_id>:reminder", the same invitation_id; suppressed with reason 'responded' when the contact answered).
-- Rows written before this migration read as kind 'invitation', attempts NULL, provider_id ''.
-- attempts: delivery attempts the channel made; provider_id: message id from the SMTP server or SMS gateway
-- (never an address). ADD COLUMN IF NOT EXISTS makes the statement safe to run again.

ALTER TABLE {db}.dispatches
    ADD COLUMN IF NOT EXISTS kind LowCardinality(String) DEFAULT 'invitation' AFTER dispatch_id,
    ADD COLUMN IF NOT EXISTS attempts Nullable(UInt16) AFTER channel,
    ADD COLUMN IF NOT EXISTS provider_id String DEFAULT '' AFTER attempts;
