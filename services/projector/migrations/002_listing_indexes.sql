-- Indexes for GET /jobs and GET /job-logs (services/api/listing.py), so that every filter
-- combination the endpoints offer reads one index range in the requested order instead of
-- sorting or scanning a million rows. `bench/jobs_queries.py` times these queries.

-- /jobs: ORDER BY created_at DESC, job_id DESC under each filter combination
-- (unfiltered: jobs_created_idx; plugin+command: jobs_plugin_idx; status: jobs_status_idx)
CREATE INDEX jobs_plugin_created_idx ON jobs (plugin, created_at DESC, job_id DESC);
CREATE INDEX jobs_plugin_status_idx ON jobs (plugin, status, created_at DESC, job_id DESC);
CREATE INDEX jobs_plugin_command_status_idx ON jobs (plugin, command, status, created_at DESC, job_id DESC);
CREATE INDEX jobs_command_idx ON jobs (command, created_at DESC);
-- /job-logs?status=dead joins the attempts to the jobs that ended dead: probe this small
-- partial index (index-only) instead of the jobs heap
CREATE INDEX jobs_dead_idx ON jobs (job_id) WHERE status = 'dead';

-- /job-logs: ORDER BY completed_at DESC NULLS LAST, log_id DESC. The 001 indexes sort
-- completed_at DESC (NULLS FIRST), an order these queries never ask for: replace them.
DROP INDEX IF EXISTS job_logs_plugin_idx;
DROP INDEX IF EXISTS job_logs_status_idx;
CREATE INDEX job_logs_plugin_completed_idx ON job_logs (plugin, completed_at DESC NULLS LAST, log_id DESC);
CREATE INDEX job_logs_plugin_command_idx ON job_logs (plugin, command, completed_at DESC NULLS LAST, log_id DESC);
CREATE INDEX job_logs_status_completed_idx ON job_logs (status, completed_at DESC NULLS LAST, log_id DESC);
CREATE INDEX job_logs_plugin_status_idx ON job_logs (plugin, status, completed_at DESC NULLS LAST, log_id DESC);
CREATE INDEX job_logs_submitted_idx ON job_logs (submitted_by, completed_at DESC NULLS LAST, log_id DESC);
