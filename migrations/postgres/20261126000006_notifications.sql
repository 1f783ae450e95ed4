-- Notifications: every push, SMS and email about a job, written in the same transaction as the
-- change that causes it, then delivered by the notifier with retries. One row per event,
-- recipient and channel; what it says is rendered when it is sent.
CREATE TABLE notifications (
    notification_id  UUID PRIMARY KEY,
    -- booking_confirmed, payment_receipt, offer, job_assigned, driver_en_route, driver_arrived,
    -- job_completed, job_cancelled, reminder_24h, reminder_1h
    event            TEXT NOT NULL,
    channel          TEXT NOT NULL CHECK (channel IN ('push', 'sms', 'email')),
    user_id          UUID NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    job_id           UUID NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    offer_id         UUID,
    -- The job's driver when the row was written: a message about a driver is dropped when the
    -- job has another by the time it is sent. Like offer_id, not a reference: the row is a record.
    driver_id        UUID,
    -- Push only when the recipient has no open socket at sending time (offers: the socket
    -- already carried it).
    unless_connected BOOLEAN NOT NULL DEFAULT FALSE,
    -- Event, job or offer, channel and recipient: the same notification is written once.
    dedupe_key       TEXT NOT NULL UNIQUE,
    -- pending -> sent | skipped (nobody to reach, or no longer relevant) | dead (refused, or
    -- out of attempts).
    state            TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'skipped', 'dead')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ NOT NULL,
    -- A notifier's claim; another may take the row once it has passed.
    locked_until     TIMESTAMPTZ,
    last_error       TEXT,
    -- Who took it: twilio, resend, sendgrid, apns, log.
    provider         TEXT,
    -- Push: the device tokens already reached, space-separated, so a retry skips them.
    delivered_to     TEXT NOT NULL DEFAULT '',
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);
CREATE INDEX notifications_due_idx ON notifications (channel, next_attempt_at) WHERE state = 'pending';
CREATE INDEX notifications_state_idx ON notifications (state, created_at DESC, notification_id DESC);
CREATE INDEX notifications_job_idx ON notifications (job_id, event);

-- Reminders are found by pickup time.
CREATE INDEX jobs_scheduled_idx ON jobs (scheduled_at) WHERE scheduled_at IS NOT NULL;
