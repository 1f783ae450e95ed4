-- Each driver's last known position, checkpointed by the geo index at most every 15 s per
-- driver (never per location message) and read back at start-up, when positions count as stale
-- until the driver reports again.
CREATE TABLE driver_positions (
    driver_id    BLOB PRIMARY KEY REFERENCES users (user_id) ON DELETE CASCADE,
    lat          REAL NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lng          REAL NOT NULL CHECK (lng BETWEEN -180 AND 180),
    heading_deg  REAL,
    -- The driver's own timestamp of the fix (Unix ms).
    ts_ms        INTEGER NOT NULL,
    -- When the engine received it.
    recorded_at  TEXT NOT NULL
);
