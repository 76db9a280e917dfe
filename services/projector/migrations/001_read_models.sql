-- Read models of jobs and attempts. Applied inside the read-model schema (search_path),
-- so `headrace rebuild` can build a fresh copy in another schema and swap it in.

CREATE TABLE jobs (
    job_id          text PRIMARY KEY,
    plugin          text NOT NULL,
    command         text NOT NULL,
    status          text NOT NULL,
    submitted_by    text NOT NULL DEFAULT 'api',
    payload         jsonb,
    result          jsonb,
    last_error      text,
    attempt         integer NOT NULL DEFAULT 0,
    parent_job_id   text,
    correlation_id  text,
    pipeline        text,
    step_id         text,
    created_at      timestamptz NOT NULL,
    started_at      timestamptz,
    completed_at    timestamptz,
    last_seq        bigint NOT NULL
);
CREATE INDEX jobs_created_idx ON jobs (created_at DESC, job_id DESC);
CREATE INDEX jobs_plugin_idx ON jobs (plugin, command, created_at DESC);
CREATE INDEX jobs_status_idx ON jobs (status, created_at DESC);
CREATE INDEX jobs_parent_idx ON jobs (parent_job_id) WHERE parent_job_id IS NOT NULL;
CREATE INDEX jobs_correlation_idx ON jobs (correlation_id);

-- One row per attempt: what /job-logs serves.
CREATE TABLE job_logs (
    log_id        text PRIMARY KEY,
    job_id        text NOT NULL,
    attempt       integer NOT NULL,
    plugin        text NOT NULL,
    command       text NOT NULL,
    status        text NOT NULL,
    submitted_by  text NOT NULL DEFAULT 'api',
    created_at    timestamptz NOT NULL,
    started_at    timestamptz,
    completed_at  timestamptz,
    last_error    text,
    stderr        text,
    result        jsonb,
    logs          jsonb NOT NULL DEFAULT '[]'::jsonb,
    search        tsvector GENERATED ALWAYS AS (
        to_tsvector('simple', coalesce(last_error, '') || ' ' || coalesce(stderr, '') || ' '
                    || coalesce(result::text, ''))
    ) STORED,
    last_seq      bigint NOT NULL,
    UNIQUE (job_id, attempt)
);
CREATE INDEX job_logs_completed_idx ON job_logs (completed_at DESC NULLS LAST, log_id DESC);
CREATE INDEX job_logs_job_idx ON job_logs (job_id, attempt);
CREATE INDEX job_logs_plugin_idx ON job_logs (plugin, command, completed_at DESC);
CREATE INDEX job_logs_status_idx ON job_logs (status, completed_at DESC);
CREATE INDEX job_logs_search_idx ON job_logs USING gin (search);

-- The projector's position in the EVENTS stream, committed with the rows it produced.
CREATE TABLE checkpoint (
    name        text PRIMARY KEY,
    stream_seq  bigint NOT NULL
);
INSERT INTO checkpoint (name, stream_seq) VALUES ('events', 0);
