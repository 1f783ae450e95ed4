-- Initial schema (SQLite). The PostgreSQL twin lives in ../postgres with the same tables and
-- columns; only the types differ. Times are UTC RFC 3339 text (they sort as text), UUIDs are
-- 16-byte blobs, booleans are 0/1; money is integer cents.

-- Everyone who signs in: customers, drivers, admins, operators.
CREATE TABLE users (
    user_id       BLOB PRIMARY KEY,
    role          TEXT NOT NULL CHECK (role IN ('customer', 'driver', 'admin', 'operator')),
    -- E.164 (+13055550100); one account per phone.
    phone         TEXT UNIQUE,
    -- Lower-cased by the application; one account per mailbox.
    email         TEXT UNIQUE,
    -- argon2id PHC string; NULL for accounts that only sign in by SMS or Apple.
    password_hash TEXT,
    -- Sign in with Apple's stable user identifier (`sub`).
    apple_id      TEXT UNIQUE,
    name          TEXT,
    -- Drivers are offered jobs only once approved; other roles are created approved.
    approved      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
-- Listing users newest first, optionally by role (admin portal), with keyset pagination.
CREATE INDEX users_created_idx ON users (created_at DESC, user_id DESC);
CREATE INDEX users_role_created_idx ON users (role, created_at DESC, user_id DESC);

-- Holds at most one row: the first admin made by POST /api/admin/seed. Its primary key makes two
-- concurrent seeds impossible (the second fails on the key), with no table lock.
CREATE TABLE admin_seed (
    singleton  INTEGER PRIMARY KEY CHECK (singleton = 1),
    user_id    BLOB NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    seeded_at  TEXT NOT NULL
);

-- APNs device tokens. A token belongs to the user who registered it last.
CREATE TABLE device_tokens (
    token       TEXT PRIMARY KEY,
    user_id     BLOB NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    platform    TEXT NOT NULL CHECK (platform IN ('ios')),
    app         TEXT NOT NULL CHECK (app IN ('customer', 'driver')),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX device_tokens_user_idx ON device_tokens (user_id);

-- The one live SMS login code per phone. Only a keyed hash is stored (HMAC with SECRET_KEY), so a
-- copy of the database does not reveal codes. A new code replaces the old one.
CREATE TABLE sms_codes (
    phone            TEXT PRIMARY KEY,
    code_hash        TEXT NOT NULL,
    expires_at       TEXT NOT NULL,
    -- Wrong guesses so far; the fifth burns the code.
    failed_attempts  INTEGER NOT NULL DEFAULT 0,
    created_at       TEXT NOT NULL
);

-- Password-reset tokens, by keyed hash; single use (used_at), valid one hour.
CREATE TABLE password_reset_tokens (
    token_hash  TEXT PRIMARY KEY,
    user_id     BLOB NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    expires_at  TEXT NOT NULL,
    used_at     TEXT,
    created_at  TEXT NOT NULL
);
CREATE INDEX password_reset_tokens_user_idx ON password_reset_tokens (user_id);

-- Pickup jobs. Prices are fixed at booking: total = price + service fee; the platform keeps
-- commission + fee; the driver is paid price - commission.
CREATE TABLE jobs (
    job_id               BLOB PRIMARY KEY,
    customer_id          BLOB NOT NULL REFERENCES users (user_id),
    driver_id            BLOB REFERENCES users (user_id),
    status               TEXT NOT NULL CHECK (status IN (
                             'pending_payment', 'dispatching', 'assigned', 'en_route', 'arrived',
                             'in_progress', 'completed', 'cancelled', 'payment_failed')),
    address              TEXT NOT NULL,
    lat                  REAL NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lng                  REAL NOT NULL CHECK (lng BETWEEN -180 AND 180),
    county               TEXT,
    description          TEXT NOT NULL,
    load_size            TEXT NOT NULL CHECK (load_size IN (
                             'single_item', 'quarter', 'half', 'three_quarter', 'full')),
    scheduled_at         TEXT,
    price_cents          INTEGER NOT NULL CHECK (price_cents >= 0),
    service_fee_cents    INTEGER NOT NULL CHECK (service_fee_cents >= 0),
    commission_cents     INTEGER NOT NULL CHECK (commission_cents >= 0),
    total_cents          INTEGER NOT NULL CHECK (total_cents >= 0),
    driver_payout_cents  INTEGER NOT NULL CHECK (driver_payout_cents >= 0),
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL
);
CREATE INDEX jobs_customer_idx ON jobs (customer_id, created_at DESC, job_id DESC);
CREATE INDEX jobs_driver_idx ON jobs (driver_id, created_at DESC, job_id DESC);
CREATE INDEX jobs_status_idx ON jobs (status, created_at DESC, job_id DESC);
-- A driver works one job at a time; the database refuses a second active assignment.
CREATE UNIQUE INDEX jobs_one_active_job_per_driver ON jobs (driver_id)
    WHERE status IN ('assigned', 'en_route', 'arrived', 'in_progress');

-- Every status change of a job, written in the same transaction as the change itself.
CREATE TABLE job_events (
    job_event_id  INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id        BLOB NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    from_status   TEXT,
    to_status     TEXT NOT NULL,
    -- Who caused it; NULL for the engine itself (expiry, webhook).
    actor_id      BLOB REFERENCES users (user_id),
    reason        TEXT,
    created_at    TEXT NOT NULL
);
CREATE INDEX job_events_job_idx ON job_events (job_id, job_event_id);

-- Offers of a job to one driver at a time.
CREATE TABLE offers (
    offer_id    BLOB PRIMARY KEY,
    job_id      BLOB NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    driver_id   BLOB NOT NULL REFERENCES users (user_id),
    status      TEXT NOT NULL CHECK (status IN (
                    'open', 'accepted', 'declined', 'expired', 'cancelled', 'taken')),
    distance_m  REAL NOT NULL,
    expires_at  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    closed_at   TEXT
);
-- One open offer per job at a time.
CREATE UNIQUE INDEX offers_one_open_per_job ON offers (job_id) WHERE status = 'open';
CREATE INDEX offers_job_driver_idx ON offers (job_id, driver_id);
CREATE INDEX offers_open_expiry_idx ON offers (expires_at) WHERE status = 'open';
