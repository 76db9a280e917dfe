-- GET /analytics/summary reads the last 24 hours of jobs (by created_at) and of attempts (by completed_at).
-- The time indexes carry the columns those aggregates read, so they are index-only scans instead of a
-- heap visit per row. Same key columns and names as before: the listings keep using them for their order.
DROP INDEX IF EXISTS jobs_created_idx;
CREATE INDEX jobs_created_idx ON jobs (created_at DESC, job_id DESC) INCLUDE (plugin, status, started_at, completed_at);
DROP INDEX IF EXISTS job_logs_completed_idx;
CREATE INDEX job_logs_completed_idx ON job_logs (completed_at DESC NULLS LAST, log_id DESC) INCLUDE (status);
