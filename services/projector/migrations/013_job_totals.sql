-- The jobs of the read model by plugin, command and status, whatever their age: what GET /metrics reports as
-- `headrace_jobs` (services/api/scrape_gauges.py). Kept by the projector in the transaction that writes the rows
-- (services/projector/summary_rows.py), as job_counts is, but without the hour: a scrape reads a few rows
-- however long the history. Filled here from the rows as they are (as summary_rows.REFILL_SQL does).

CREATE TABLE job_totals (
    plugin  text NOT NULL,
    command text NOT NULL,
    status  text NOT NULL,
    n       bigint NOT NULL,
    PRIMARY KEY (plugin, command, status)
);

INSERT INTO job_totals (plugin, command, status, n)
SELECT plugin, command, status, count(*) FROM jobs GROUP BY 1, 2, 3;
