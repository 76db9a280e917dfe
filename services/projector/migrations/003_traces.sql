-- Agent and prompt traces (Laddr's /api/traces), projected from evt.trace.<job_id>.<type> events.
-- The id is the event's EVENTS stream sequence, so `headrace rebuild` gives every trace the same id.

CREATE TABLE traces (
    id          bigint PRIMARY KEY,
    job_id      text NOT NULL,
    agent_name  text,
    event_type  text NOT NULL,
    payload     jsonb NOT NULL DEFAULT '{}'::jsonb,
    timestamp   timestamptz NOT NULL
);
CREATE INDEX traces_job_idx ON traces (job_id, id);
CREATE INDEX traces_agent_idx ON traces (agent_name, id DESC);
CREATE INDEX traces_type_idx ON traces (event_type);
