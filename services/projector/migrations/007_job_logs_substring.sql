-- GET /job-logs?query= also matches a plain substring, as Ductile does (`hreshold` finds `threshold`),
-- case-insensitively. A trigram GIN index over the same text the full-text column indexes keeps that
-- an index scan at a million rows. The extension lives in `public` so every read-model schema
-- (headrace, and the one `headrace rebuild` fills) names the same operator class.
-- services/api/listing.py SUBSTRING_TEXT must stay the very expression indexed here.

CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public;
CREATE INDEX job_logs_substring_idx ON job_logs USING gin (
    (left(coalesce(last_error, '') || ' ' || coalesce(stderr, '') || ' ' || coalesce(result::text, ''), 100000))
    public.gin_trgm_ops
);
