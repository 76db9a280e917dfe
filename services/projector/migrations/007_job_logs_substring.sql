-- GET /job-logs?query= also matches a plain substring, as Ductile does (`hreshold` finds `threshold`),
-- case-insensitively. A trigram GIN index over the same text the full-text column indexes keeps that
-- an index scan at a million rows. The extension lives in `public` so every read-model schema
-- (headrace, and the one `headrace rebuild` fills) names the same operator class.
-- services/api/listing.py SUBSTRING_TEXT must stay the very expression indexed here.
-- pg_trgm is a contrib extension: on a server without it (or a role that may not create it) the
-- substring match still works, by scanning, and only the index is left out.

DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public;
EXCEPTION WHEN undefined_file OR insufficient_privilege OR feature_not_supported THEN
    RAISE WARNING 'pg_trgm is not available (%): /job-logs substring search runs without its index', SQLERRM;
END
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        CREATE INDEX job_logs_substring_idx ON job_logs USING gin (
            (left(coalesce(last_error, '') || ' ' || coalesce(stderr, '') || ' ' || coalesce(result::text, ''), 100000))
            public.gin_trgm_ops
        );
    END IF;
END
$$;
