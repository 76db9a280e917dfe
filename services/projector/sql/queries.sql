-- name: load_jobs
-- The job rows a batch touches.
SELECT job_id, plugin, command, status, submitted_by, payload, result, last_error, attempt, parent_job_id,
       correlation_id, pipeline, step_id, created_at, started_at, completed_at, last_seq
FROM jobs WHERE job_id = ANY($1::text[]);

-- name: load_attempts
-- The attempt rows a batch touches.
SELECT log_id, job_id, attempt, plugin, command, status, submitted_by, created_at, started_at, completed_at,
       last_error, stderr, result, logs, last_seq
FROM job_logs WHERE log_id = ANY($1::text[]);

-- name: upsert_jobs
-- Insert or replace the job rows of a batch (one array per column, each job once), never going back in
-- the event log. jsonb columns arrive as JSON text.
INSERT INTO jobs (job_id, plugin, command, status, submitted_by, payload, result, last_error, attempt, parent_job_id,
                  correlation_id, pipeline, step_id, created_at, started_at, completed_at, last_seq)
SELECT job_id, plugin, command, status, submitted_by, payload::jsonb, result::jsonb, last_error, attempt,
       parent_job_id, correlation_id, pipeline, step_id, created_at, started_at, completed_at, last_seq
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
            $9::integer[], $10::text[], $11::text[], $12::text[], $13::text[], $14::timestamptz[],
            $15::timestamptz[], $16::timestamptz[], $17::bigint[])
     AS v(job_id, plugin, command, status, submitted_by, payload, result, last_error, attempt, parent_job_id,
          correlation_id, pipeline, step_id, created_at, started_at, completed_at, last_seq)
ON CONFLICT (job_id) DO UPDATE SET
    plugin = EXCLUDED.plugin, command = EXCLUDED.command, status = EXCLUDED.status,
    submitted_by = EXCLUDED.submitted_by, payload = EXCLUDED.payload, result = EXCLUDED.result,
    last_error = EXCLUDED.last_error, attempt = EXCLUDED.attempt, parent_job_id = EXCLUDED.parent_job_id,
    correlation_id = EXCLUDED.correlation_id, pipeline = EXCLUDED.pipeline, step_id = EXCLUDED.step_id,
    created_at = EXCLUDED.created_at, started_at = EXCLUDED.started_at, completed_at = EXCLUDED.completed_at,
    last_seq = EXCLUDED.last_seq
WHERE jobs.last_seq < EXCLUDED.last_seq;

-- name: upsert_attempts
-- Insert or replace the /job-logs rows of a batch (one array per column, each attempt once).
INSERT INTO job_logs (log_id, job_id, attempt, plugin, command, status, submitted_by, created_at, started_at,
                      completed_at, last_error, stderr, result, logs, last_seq)
SELECT log_id, job_id, attempt, plugin, command, status, submitted_by, created_at, started_at, completed_at,
       last_error, stderr, result::jsonb, logs::jsonb, last_seq
FROM unnest($1::text[], $2::text[], $3::integer[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::timestamptz[], $9::timestamptz[], $10::timestamptz[], $11::text[], $12::text[], $13::text[],
            $14::text[], $15::bigint[])
     AS v(log_id, job_id, attempt, plugin, command, status, submitted_by, created_at, started_at, completed_at,
          last_error, stderr, result, logs, last_seq)
ON CONFLICT (log_id) DO UPDATE SET
    status = EXCLUDED.status, submitted_by = EXCLUDED.submitted_by, created_at = EXCLUDED.created_at,
    started_at = EXCLUDED.started_at, completed_at = EXCLUDED.completed_at, last_error = EXCLUDED.last_error,
    stderr = EXCLUDED.stderr, result = EXCLUDED.result, logs = EXCLUDED.logs, last_seq = EXCLUDED.last_seq
WHERE job_logs.last_seq < EXCLUDED.last_seq;

-- name: lock_projection
-- One batch writer at a time across projectors and rebuild's swap.
SELECT pg_advisory_xact_lock($1);

-- name: read_checkpoint
SELECT stream_seq FROM checkpoint WHERE name = 'events';

-- name: write_checkpoint
UPDATE checkpoint SET stream_seq = $1 WHERE name = 'events';

-- name: insert_trace
-- One trace row per evt.trace.* event; the id is its stream sequence, so a replay overlap is a no-op.
INSERT INTO traces (id, job_id, agent_name, event_type, payload, timestamp, parent_id, event_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (id) DO NOTHING;

-- name: trace_ids_by_event
-- The row id of each named trace event already projected (its first row, should the log hold it twice).
SELECT event_id, min(id) AS id FROM traces WHERE event_id = ANY($1::text[]) GROUP BY event_id;

-- name: read_log_identity
-- The event log (EVENTS stream creation time) these rows were projected from.
SELECT stream_created FROM checkpoint WHERE name = 'events';

-- name: write_log_identity
UPDATE checkpoint SET stream_created = $1 WHERE name = 'events';

-- name: insert_projection_failure
-- An event that could not be projected, passed over (the checkpoint moves past it in the same transaction).
INSERT INTO projection_failures (seq, event_id, event_type, error) VALUES ($1, $2, $3, $4)
ON CONFLICT (seq) DO NOTHING;
