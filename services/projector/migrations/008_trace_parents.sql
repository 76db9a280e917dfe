-- Laddr's traces.parent_id: the id of the parent trace row (a tool_call's agent run task_start, a
-- child agent run's delegation), NULL for a root. Trace events name their parent by its envelope
-- id (`data.parent`); `event_id` keeps each row's envelope id so the projector can resolve it.
ALTER TABLE traces ADD COLUMN parent_id bigint;
ALTER TABLE traces ADD COLUMN event_id text;
CREATE INDEX traces_event_idx ON traces (event_id);
CREATE INDEX traces_parent_idx ON traces (parent_id) WHERE parent_id IS NOT NULL;
