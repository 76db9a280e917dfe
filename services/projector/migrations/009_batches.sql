-- Laddr batches (POST /api/agents/{name}/batch), projected from evt.batch.<id>.tasks_added events
-- (services/core/batches.py). Progress is not stored: the API computes it from the member jobs' rows.
-- A member's batch_index is its position in the event log's order, so `headrace rebuild` gives the same.

CREATE TABLE batches (
    batch_id      text PRIMARY KEY,
    agent_name    text NOT NULL,
    task_count    integer NOT NULL,
    submitted_by  text NOT NULL DEFAULT 'laddr',
    created_at    timestamptz NOT NULL,
    last_seq      bigint NOT NULL
);
CREATE INDEX batches_created_idx ON batches (created_at DESC, batch_id DESC);

CREATE TABLE batch_members (
    batch_id     text NOT NULL,
    batch_index  integer NOT NULL,
    job_id       text NOT NULL,
    agent_name   text NOT NULL,
    task         jsonb NOT NULL DEFAULT '{}'::jsonb,
    added_at     timestamptz NOT NULL,
    added_seq    bigint NOT NULL,
    PRIMARY KEY (batch_id, batch_index)
);
CREATE INDEX batch_members_job_idx ON batch_members (job_id);
