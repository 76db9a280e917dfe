-- GET /analytics/summary counted every job and attempt of the last 24 hours on each call (40-55 ms at
-- 1M jobs). The projector now keeps these counts per hour (services/projector/summary_rows.py), in the
-- transaction that writes the rows; the summary adds up the whole hours of its window and counts only
-- the rows of the partial hour at its start. Filled here from the rows as they are (the same statements
-- as summary_rows.REFILL_SQL).

CREATE TABLE job_counts (
    hour    timestamptz NOT NULL,  -- date_trunc('hour', created_at, 'UTC')
    plugin  text NOT NULL,
    status  text NOT NULL,
    n       bigint NOT NULL,
    PRIMARY KEY (hour, plugin, status)
);
CREATE TABLE attempt_counts (
    hour    timestamptz NOT NULL,  -- date_trunc('hour', completed_at, 'UTC'); attempts not completed are not counted
    status  text NOT NULL,
    n       bigint NOT NULL,
    PRIMARY KEY (hour, status)
);

INSERT INTO job_counts (hour, plugin, status, n)
SELECT date_trunc('hour', created_at, 'UTC'), plugin, status, count(*) FROM jobs GROUP BY 1, 2, 3;
INSERT INTO attempt_counts (hour, status, n)
SELECT date_trunc('hour', completed_at, 'UTC'), status, count(*) FROM job_logs WHERE completed_at IS NOT NULL GROUP BY 1, 2;
