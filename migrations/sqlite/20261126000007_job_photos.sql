-- Job photos, SQLite twin of ../postgres: same tables and columns; only the types differ.
-- Files live in UPLOAD_DIR under names the server made; this table records each one (who sent
-- it, its type and size) so a name that is not here is never served, and jobs.photos keeps
-- the job's list in upload order for every read of a job.
CREATE TABLE job_photos (
    file_name     TEXT PRIMARY KEY,
    job_id        BLOB NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    uploaded_by   BLOB NOT NULL REFERENCES users (user_id),
    content_type  TEXT NOT NULL CHECK (content_type IN ('image/jpeg', 'image/png', 'image/webp')),
    size_bytes    INTEGER NOT NULL CHECK (size_bytes > 0),
    created_at    TEXT NOT NULL
);
CREATE INDEX job_photos_job_idx ON job_photos (job_id, created_at);

-- A JSON array of file names, in upload order.
ALTER TABLE jobs ADD COLUMN photos TEXT NOT NULL DEFAULT '[]';
