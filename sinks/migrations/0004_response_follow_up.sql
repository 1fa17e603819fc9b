-- npsflow ClickHouse schema, version 4: the answer to the survey page's follow-up question (ClassifiedResponse v2).
-- The question depends on the category ("what should we improve?" for detractors, "what did you like most?" for
-- promoters); its answer is stored next to the comment, '' when there is none. Rows written before this migration
-- read as ''. ADD COLUMN IF NOT EXISTS makes the statement safe to run again.

ALTER TABLE {db}.responses
    ADD COLUMN IF NOT EXISTS follow_up String DEFAULT '' AFTER comment;
