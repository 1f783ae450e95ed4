-- Payments (Stripe): one PaymentIntent per job, the drivers' Connect accounts, every verified
-- webhook event, and the outbox of money movements (transfers, refunds) written in the same
-- transaction as the job change that causes them.

-- THE PaymentIntent of a job (separate charges and transfers: the driver is paid later).
CREATE TABLE payments (
    job_id             UUID PRIMARY KEY REFERENCES jobs (job_id) ON DELETE CASCADE,
    payment_intent_id  TEXT NOT NULL UNIQUE,
    -- Handed to the customer's app to confirm the payment; not a platform secret.
    client_secret      TEXT NOT NULL,
    amount_cents       BIGINT NOT NULL CHECK (amount_cents >= 0),
    currency           TEXT NOT NULL,
    -- created -> succeeded | failed (failed -> succeeded when the customer retries); never back
    -- from succeeded.
    status             TEXT NOT NULL CHECK (status IN ('created', 'succeeded', 'failed')),
    -- The charge that paid it (`latest_charge`), the source of the driver's transfer.
    charge_id          TEXT,
    -- As Stripe reports it (charge.refunded) or as our own refunds add up; only grows.
    refunded_cents     BIGINT NOT NULL DEFAULT 0 CHECK (refunded_cents >= 0),
    last_error         TEXT,
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL
);

-- A driver's Stripe Connect (Express) account; payouts wait until Stripe enables them.
CREATE TABLE connect_accounts (
    driver_id        UUID PRIMARY KEY REFERENCES users (user_id) ON DELETE CASCADE,
    account_id       TEXT NOT NULL UNIQUE,
    payouts_enabled  BOOLEAN NOT NULL DEFAULT FALSE,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);

-- Every verified Stripe event, by id. A row exists only once its handling committed (the insert
-- is part of the handling transaction), so a repeat finds it and does nothing.
CREATE TABLE webhook_events (
    event_id     TEXT PRIMARY KEY,
    event_type   TEXT NOT NULL,
    payload      TEXT NOT NULL,
    -- What the engine did with it: `applied`, `ignored: <why>`, `stored` (a type not handled).
    outcome      TEXT NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX webhook_events_received_idx ON webhook_events (received_at);

-- Side effects to carry out after the change that caused them committed: a worker claims due
-- rows, calls Stripe with the row's idempotency key, and records the outcome.
CREATE TABLE outbox (
    outbox_id        UUID PRIMARY KEY,
    kind             TEXT NOT NULL CHECK (kind IN ('transfer', 'refund')),
    job_id           UUID NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    -- Whose payout (transfers); NULL for refunds.
    driver_id        UUID REFERENCES users (user_id),
    amount_cents     BIGINT NOT NULL CHECK (amount_cents > 0),
    -- Derived from the job and the purpose; Stripe's own guard against doing it twice.
    idempotency_key  TEXT NOT NULL UNIQUE,
    -- pending -> sent | failed; owed: a payout waiting for the driver's payable account.
    state            TEXT NOT NULL CHECK (state IN ('pending', 'owed', 'sent', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ NOT NULL,
    -- A worker's claim; another worker may take the row once it has passed.
    locked_until     TIMESTAMPTZ,
    last_error       TEXT,
    -- Stripe refused the request itself (not an outage): a retry needs a new key, since Stripe
    -- answers a known key with its first answer.
    refused          BOOLEAN NOT NULL DEFAULT FALSE,
    -- Stripe's id of what was made (tr_…, re_…).
    stripe_id        TEXT,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);
CREATE INDEX outbox_due_idx ON outbox (next_attempt_at) WHERE state = 'pending';
CREATE INDEX outbox_state_idx ON outbox (state, created_at DESC, outbox_id DESC);
CREATE INDEX outbox_job_idx ON outbox (job_id);
CREATE INDEX outbox_owed_idx ON outbox (driver_id) WHERE state = 'owed';
