-- job_events is an audit trail: it records who acted by id, and must accept (and keep) the
-- record even when that account is gone or was never stored (a token outliving its account).
-- SQLite cannot drop a constraint, so the table is rebuilt.
CREATE TABLE job_events_rebuilt (
    job_event_id  INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id        BLOB NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    from_status   TEXT,
    to_status     TEXT NOT NULL,
    -- Who caused it; NULL for the engine itself (expiry, webhook).
    actor_id      BLOB,
    reason        TEXT,
    created_at    TEXT NOT NULL
);
INSERT INTO job_events_rebuilt (job_event_id, job_id, from_status, to_status, actor_id, reason, created_at)
    SELECT job_event_id, job_id, from_status, to_status, actor_id, reason, created_at FROM job_events;
DROP TABLE job_events;
ALTER TABLE job_events_rebuilt RENAME TO job_events;
CREATE INDEX job_events_job_idx ON job_events (job_id, job_event_id);
