-- Rejected ingest events (GET /events/rejected), projected from evt.ingest.rejected events.
-- The id is the event's EVENTS stream sequence, so `headrace rebuild` gives every row the same id.

CREATE TABLE ingest_rejections (
    id            bigint PRIMARY KEY,
    event_id      text NOT NULL,
    subject       text NOT NULL,
    ingest_seq    bigint,
    claimed_type  text,
    reason        text NOT NULL,
    raw           text NOT NULL DEFAULT '',
    raw_bytes     integer NOT NULL DEFAULT 0,
    truncated     boolean NOT NULL DEFAULT false,
    rejected_at   timestamptz NOT NULL
);
