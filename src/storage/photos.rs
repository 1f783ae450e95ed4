//! The `job_photos` table and each job's list of photos (`jobs.photos`).

use chrono::{DateTime, Utc};
use umuve_actors::ids::{JobId, UserId};
use umuve_actors::realtime::model::{Job, JobStatus};

use super::Db;
use super::jobs::{JobRow, columns};
use crate::uploads::{MAX_PHOTOS_PER_JOB, StoredPhoto};

/// What adding photos to a job came to.
#[derive(Debug)]
pub enum Added {
    Job(Box<Job>),
    NoSuchJob,
    /// The job would hold more than [`MAX_PHOTOS_PER_JOB`]; it has this many.
    TooMany(usize),
    /// The job moved to a status that takes no photos while they were arriving.
    Closed(JobStatus),
}

/// Whether a job in this status takes photos: not once cancelled or failed payment.
pub fn takes_photos(status: JobStatus) -> bool {
    !matches!(status, JobStatus::Cancelled | JobStatus::PaymentFailed)
}

/// Records `photos` (already on disk) as the job's, after the ones it has.
pub async fn add(
    db: &Db,
    job: JobId,
    uploader: UserId,
    photos: &[StoredPhoto],
    now: DateTime<Utc>,
) -> Result<Added, sqlx::Error> {
    const INSERT: &str = "INSERT INTO job_photos \
         (file_name, job_id, uploaded_by, content_type, size_bytes, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)";
    const UPDATE: &str = concat!(
        "UPDATE jobs SET photos = $2, updated_at = $3 WHERE job_id = $1 RETURNING ",
        columns!()
    );
    // Two uploads to one job must not both pass the count: PostgreSQL locks the row, SQLite's
    // write transaction already holds the database.
    let read = match db {
        Db::Postgres(_) => "SELECT photos, status FROM jobs WHERE job_id = $1 FOR UPDATE",
        Db::Sqlite(_) => "SELECT photos, status FROM jobs WHERE job_id = $1",
    };
    let row = super::in_write_transaction!(db, tx => {
        let Some((stored, status)) = sqlx::query_as::<_, (String, String)>(read)
            .bind(job.as_uuid())
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(Added::NoSuchJob);
        };
        let status = JobStatus::parse(&status)
            .ok_or_else(|| sqlx::Error::Decode(format!("jobs.status = {status:?}").into()))?;
        if !takes_photos(status) {
            return Ok(Added::Closed(status));
        }
        let mut names: Vec<String> = serde_json::from_str(&stored)
            .map_err(|e| sqlx::Error::Decode(format!("jobs.photos: {e}").into()))?;
        if names.len() + photos.len() > MAX_PHOTOS_PER_JOB {
            return Ok(Added::TooMany(names.len()));
        }
        for photo in photos {
            sqlx::query(INSERT)
                .bind(&photo.file_name)
                .bind(job.as_uuid())
                .bind(uploader.as_uuid())
                .bind(photo.kind.content_type())
                .bind(i64::try_from(photo.size_bytes).unwrap_or(i64::MAX))
                .bind(now)
                .execute(&mut *tx)
                .await?;
            names.push(photo.file_name.clone());
        }
        let names = serde_json::to_string(&names)
            .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        sqlx::query_as::<_, JobRow>(UPDATE)
            .bind(job.as_uuid())
            .bind(names)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?
    });
    Ok(Added::Job(Box::new(Job::try_from(row)?)))
}

/// The content type recorded for a stored photo; `None` when the server never stored that name.
pub async fn content_type(db: &Db, file_name: &str) -> Result<Option<String>, sqlx::Error> {
    super::on_pool!(db, pool => {
        sqlx::query_scalar("SELECT content_type FROM job_photos WHERE file_name = $1")
            .bind(file_name)
            .fetch_optional(pool)
            .await
    })
}

/// Every photo file name the database knows (for the start-up check of the upload directory).
pub async fn all_names(db: &Db) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    super::on_pool!(db, pool => {
        sqlx::query_scalar::<_, String>("SELECT file_name FROM job_photos")
            .fetch_all(pool)
            .await
            .map(|names| names.into_iter().collect())
    })
}
