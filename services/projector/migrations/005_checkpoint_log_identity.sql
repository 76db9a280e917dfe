-- Which event log the read models were projected from: the EVENTS stream's creation time.
-- A projector pointed at another log (a fresh NATS store, a reused database) re-projects
-- instead of skipping events up to a checkpoint that belongs to the other log.
ALTER TABLE checkpoint ADD COLUMN stream_created text;
