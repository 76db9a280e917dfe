-- GET /job-logs?query= ranks the most recent matches (services/api/listing.py RANK_WINDOW). A GIN index
-- cannot hand them out newest first, so reading them meant either every match (the bitmap of a common
-- word) or walking the completed_at order testing every row (the substring of 2 % of the rows: 50 000
-- tests per page). The search indexes now also key each row by the hour it completed in and by its
-- plugin (btree_gin), so `hour >= $b AND ...` reads only the matches of the last hours, and a query of
-- one plugin only that plugin's: listing.py widens the bound until it holds a full window.
--
-- The substring match tests every candidate the trigram index gives (it is lossy): against the stored,
-- lower-cased text that costs a quarter of what ILIKE over the concatenation does. `search_text LIKE
-- lower(p)` is what `text ILIKE p` computes (ILIKE lower-cases both sides in a multibyte encoding).
-- listing.py COMPLETED_HOUR and SUBSTRING_MATCH must stay the very expressions indexed here.
-- btree_gin and pg_trgm are contrib: without them the indexes left out are only a matter of speed.

ALTER TABLE job_logs ADD COLUMN search_text text GENERATED ALWAYS AS (
    lower(left(coalesce(last_error, '') || ' ' || coalesce(stderr, '') || ' ' || coalesce(result::text, ''), 100000))
) STORED;

DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS btree_gin SCHEMA public;
EXCEPTION WHEN undefined_file OR insufficient_privilege OR feature_not_supported THEN
    RAISE WARNING 'btree_gin is not available (%): /job-logs?query= searches without the hour bound', SQLERRM;
END
$$;

DROP INDEX IF EXISTS job_logs_substring_idx;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'btree_gin') THEN
        DROP INDEX IF EXISTS job_logs_search_idx;
        CREATE INDEX job_logs_search_idx ON job_logs USING gin (
            (date_trunc('hour', completed_at AT TIME ZONE 'UTC')), plugin, search
        );
        IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
            CREATE INDEX job_logs_substring_idx ON job_logs USING gin (
                (date_trunc('hour', completed_at AT TIME ZONE 'UTC')), plugin, search_text public.gin_trgm_ops
            );
        END IF;
    ELSIF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        CREATE INDEX job_logs_substring_idx ON job_logs USING gin (search_text public.gin_trgm_ops);
    END IF;
END
$$;
