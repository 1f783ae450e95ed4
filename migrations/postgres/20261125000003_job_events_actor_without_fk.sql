-- job_events is an audit trail: it records who acted by id, and must accept (and keep) the
-- record even when that account is gone or was never stored (a token outliving its account).
ALTER TABLE job_events DROP CONSTRAINT IF EXISTS job_events_actor_id_fkey;
