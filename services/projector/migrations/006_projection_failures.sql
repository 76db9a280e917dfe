-- Events the projector could not fold into rows even after the read-model substitution
-- (services/core/values.py), and messages of the stream that are not envelopes at all (event_type
-- projector.undecodable): recorded here and passed over, so one event never stops the rest.
-- Keyed by EVENTS stream sequence, so `headrace rebuild` records the same rows.

CREATE TABLE projection_failures (
    seq         bigint PRIMARY KEY,
    event_id    text NOT NULL,
    event_type  text NOT NULL,
    error       text NOT NULL
);

-- to_tsvector refuses text whose vector exceeds 1 MiB: index only the first 100 000 characters
ALTER TABLE job_logs DROP COLUMN search;
ALTER TABLE job_logs ADD COLUMN search tsvector GENERATED ALWAYS AS (
    to_tsvector('simple', left(coalesce(last_error, '') || ' ' || coalesce(stderr, '') || ' '
                               || coalesce(result::text, ''), 100000))
) STORED;
CREATE INDEX job_logs_search_idx ON job_logs USING gin (search);
