//! The `offers` table: a job offered to one driver, open until accepted, declined, expired,
//! taken by someone else or cancelled. Unique indexes allow one open offer per job and one per
//! driver; accepting is one transaction that also assigns the job and records its event, so
//! exactly one driver wins a job whatever races (expiry, a dispatcher, the customer, another
//! engine process).
//!
//! Lock order, on PostgreSQL: the job row first, then its offers (opening, accepting, moving a
//! job all follow it), so two transactions never wait on each other in a circle.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use umuve_actors::ids::{DriverId, JobId, OfferId, UserId};
use umuve_actors::realtime::matcher::{DispatchJob, DispatchStore, NewOffer, OpenOffer};
use umuve_actors::realtime::model::{Job, JobStatus};
use umuve_actors::realtime::protocol::OfferClosedReason;
use uuid::Uuid;

use super::jobs::{self, INSERT_EVENT, JobRow};
use super::{Db, in_write_transaction, is_unique_violation, on_pool};
use crate::notifications::{Event, queue_in};

/// The matcher's storage.
pub struct DbDispatchStore {
    pub db: Db,
    /// Rung when offers (and so their push notifications) were written.
    pub notifications_written: std::sync::Arc<tokio::sync::Notify>,
}

#[async_trait]
impl DispatchStore for DbDispatchStore {
    async fn open_offers(
        &self,
        offers: Vec<NewOffer>,
        now: DateTime<Utc>,
    ) -> Result<Vec<OfferId>, String> {
        let opened = open(&self.db, offers, now)
            .await
            .map_err(|e| e.to_string())?;
        if !opened.is_empty() {
            self.notifications_written.notify_one();
        }
        Ok(opened)
    }

    async fn expire_offers(
        &self,
        offers: Vec<OfferId>,
        now: DateTime<Utc>,
    ) -> Result<Vec<OfferId>, String> {
        expire(&self.db, &offers, now)
            .await
            .map_err(|e| e.to_string())
    }

    async fn dispatching(&self, only: Option<Vec<JobId>>) -> Result<Vec<DispatchJob>, String> {
        dispatching(&self.db, only.as_deref())
            .await
            .map_err(|e| e.to_string())
    }
}

/// An offer that closed because its job moved on: whom to tell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClosedOffer {
    pub offer: OfferId,
    pub driver: DriverId,
    pub reason: OfferClosedReason,
}

/// Writes offers whose job is still `dispatching` and that neither the job nor the driver
/// already has open; returns those written. Jobs are locked in id order (see the module notes).
pub async fn open(
    db: &Db,
    mut offers: Vec<NewOffer>,
    now: DateTime<Utc>,
) -> Result<Vec<OfferId>, sqlx::Error> {
    const INSERT: &str = "INSERT INTO offers \
         (offer_id, job_id, driver_id, status, distance_m, expires_at, created_at) \
         SELECT $1, job_id, $3, 'open', $4, $5, $6 FROM jobs \
         WHERE job_id = $2 AND status = 'dispatching' \
         ON CONFLICT DO NOTHING RETURNING offer_id";
    offers.sort_by_key(|offer| offer.job);
    // A driver without a socket (app in the background) gets the offer by push too, written
    // with the offer. A connected driver has it on the socket, and again on reconnecting while
    // it is open: no row, which keeps the common case's write as it was.
    let told = |offer: &NewOffer| {
        if !offer.by_push {
            return Vec::new();
        }
        crate::notifications::plan(
            Event::Offer,
            offer.job,
            None,
            Some(UserId::from(offer.driver)),
            Some(offer.id),
        )
    };
    let mut opened = Vec::new();
    match db {
        Db::Postgres(pool) => {
            // One statement for the whole batch: the jobs still dispatching are locked in id
            // order, then every offer for them is inserted unless a unique index refuses it,
            // and the notifications of the offers inserted with them.
            const BATCH: &str = "WITH locked AS ( \
                     SELECT job_id FROM jobs WHERE job_id = ANY($1) AND status = 'dispatching' \
                     ORDER BY job_id FOR UPDATE), \
                 opened AS ( \
                     INSERT INTO offers \
                         (offer_id, job_id, driver_id, status, distance_m, expires_at, created_at) \
                     SELECT o.offer_id, o.job_id, o.driver_id, 'open', o.distance_m, o.expires_at, $6 \
                     FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::float8[], $5::timestamptz[]) \
                         AS o (job_id, offer_id, driver_id, distance_m, expires_at) \
                     JOIN locked USING (job_id) \
                     ON CONFLICT DO NOTHING RETURNING offer_id), \
                 told AS ( \
                     INSERT INTO notifications (notification_id, event, channel, user_id, job_id, \
                         offer_id, driver_id, unless_connected, dedupe_key, state, attempts, \
                         next_attempt_at, created_at, updated_at) \
                     SELECT n.notification_id, n.event, n.channel, n.user_id, n.job_id, \
                         n.offer_id, n.driver_id, n.unless_connected, n.dedupe_key, 'pending', 0, \
                         $6, $6, $6 \
                     FROM UNNEST($7::uuid[], $8::text[], $9::text[], $10::uuid[], $11::uuid[], \
                         $12::uuid[], $13::uuid[], $14::bool[], $15::text[]) \
                         AS n (notification_id, event, channel, user_id, job_id, offer_id, \
                             driver_id, unless_connected, dedupe_key) \
                     JOIN opened USING (offer_id) \
                     ON CONFLICT DO NOTHING) \
                 SELECT offer_id FROM opened";
            let column = |f: fn(&NewOffer) -> Uuid| offers.iter().map(f).collect::<Vec<_>>();
            let notes: Vec<_> = offers.iter().flat_map(told).collect();
            let note = |f: fn(&crate::notifications::NewNotification) -> Uuid| {
                notes.iter().map(f).collect::<Vec<_>>()
            };
            let ids: Vec<Uuid> = sqlx::query_scalar(BATCH)
                .bind(column(|o| o.job.as_uuid()))
                .bind(column(|o| o.id.as_uuid()))
                .bind(column(|o| o.driver.as_uuid()))
                .bind(offers.iter().map(|o| o.distance_m).collect::<Vec<_>>())
                .bind(offers.iter().map(|o| o.expires_at).collect::<Vec<_>>())
                .bind(now)
                .bind(notes.iter().map(|_| Uuid::new_v4()).collect::<Vec<_>>())
                .bind(notes.iter().map(|n| n.event.as_str()).collect::<Vec<_>>())
                .bind(notes.iter().map(|n| n.channel.as_str()).collect::<Vec<_>>())
                .bind(note(|n| n.user))
                .bind(note(|n| n.job.as_uuid()))
                .bind(note(|n| n.offer.map_or(Uuid::nil(), |o| o.as_uuid())))
                .bind(note(|n| n.driver.unwrap_or(Uuid::nil())))
                .bind(notes.iter().map(|n| n.unless_connected).collect::<Vec<_>>())
                .bind(
                    notes
                        .iter()
                        .map(|n| n.dedupe_key.as_str())
                        .collect::<Vec<_>>(),
                )
                .fetch_all(pool)
                .await?;
            opened.extend(ids.into_iter().map(OfferId::from_uuid));
        }
        Db::Sqlite(pool) => {
            // One writer at a time (BEGIN IMMEDIATE): nothing to lock row by row.
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            for offer in &offers {
                let id: Option<Uuid> = sqlx::query_scalar(INSERT)
                    .bind(offer.id.as_uuid())
                    .bind(offer.job.as_uuid())
                    .bind(offer.driver.as_uuid())
                    .bind(offer.distance_m)
                    .bind(offer.expires_at)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?;
                if id.is_some() {
                    queue_in!(tx, told(offer), now);
                }
                opened.extend(id.map(OfferId::from_uuid));
            }
            tx.commit().await?;
        }
    }
    Ok(opened)
}

/// Closes as expired those of `offers` still open and past their expiry; returns them.
pub async fn expire(
    db: &Db,
    offers: &[OfferId],
    now: DateTime<Utc>,
) -> Result<Vec<OfferId>, sqlx::Error> {
    const SQL: &str = "UPDATE offers SET status = 'expired', closed_at = $2 \
         WHERE offer_id = $1 AND status = 'open' AND expires_at <= $2 RETURNING offer_id";
    let mut closed = Vec::new();
    in_write_transaction!(db, tx => {
        for offer in offers {
            let id: Option<Uuid> = sqlx::query_scalar(SQL)
                .bind(offer.as_uuid())
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
            closed.extend(id.map(OfferId::from_uuid));
        }
    });
    Ok(closed)
}

type OfferRow = (Uuid, Uuid, Uuid, String, f64, DateTime<Utc>);

/// The `dispatching` jobs (all, or those of `only` that still are), each with the drivers it
/// must not be offered to again and its open offer.
pub async fn dispatching(db: &Db, only: Option<&[JobId]>) -> Result<Vec<DispatchJob>, sqlx::Error> {
    const ALL_JOBS: &str = concat!(
        "SELECT ",
        jobs::columns!(),
        " FROM jobs WHERE status = 'dispatching' ORDER BY created_at"
    );
    const ALL_OFFERS: &str = "SELECT o.offer_id, o.job_id, o.driver_id, o.status, o.distance_m, o.expires_at \
         FROM offers o JOIN jobs j ON j.job_id = o.job_id \
         WHERE j.status = 'dispatching' AND o.status IN ('open', 'declined', 'expired', 'accepted')";
    const ONE_JOB: &str = concat!(
        "SELECT ",
        jobs::columns!(),
        " FROM jobs WHERE job_id = $1 AND status = 'dispatching'"
    );
    const ONE_JOBS_OFFERS: &str = "SELECT offer_id, job_id, driver_id, status, distance_m, expires_at \
         FROM offers WHERE job_id = $1 AND status IN ('open', 'declined', 'expired', 'accepted')";
    let (rows, offers): (Vec<JobRow>, Vec<OfferRow>) = match only {
        None => on_pool!(db, pool => {
            let rows = sqlx::query_as::<_, JobRow>(ALL_JOBS).fetch_all(pool).await?;
            let offers = sqlx::query_as::<_, OfferRow>(ALL_OFFERS).fetch_all(pool).await?;
            (rows, offers)
        }),
        Some(ids) => {
            let mut rows = Vec::new();
            let mut offers = Vec::new();
            for id in ids {
                on_pool!(db, pool => {
                    if let Some(row) = sqlx::query_as::<_, JobRow>(ONE_JOB)
                        .bind(id.as_uuid())
                        .fetch_optional(pool)
                        .await?
                    {
                        rows.push(row);
                        offers.extend(
                            sqlx::query_as::<_, OfferRow>(ONE_JOBS_OFFERS)
                                .bind(id.as_uuid())
                                .fetch_all(pool)
                                .await?,
                        );
                    }
                });
            }
            (rows, offers)
        }
    };
    let mut by_job: HashMap<Uuid, DispatchJob> = HashMap::new();
    let mut order = Vec::new();
    for row in rows {
        let job = Job::try_from(row)?;
        order.push(job.id.as_uuid());
        by_job.insert(
            job.id.as_uuid(),
            DispatchJob {
                job,
                excluded: Vec::new(),
                open_offer: None,
            },
        );
    }
    for (offer_id, job_id, driver_id, status, distance_m, expires_at) in offers {
        let Some(entry) = by_job.get_mut(&job_id) else {
            continue;
        };
        let driver = DriverId::from_uuid(driver_id);
        if status == "open" {
            entry.open_offer = Some(OpenOffer {
                id: OfferId::from_uuid(offer_id),
                driver,
                distance_m,
                expires_at,
            });
        } else {
            entry.excluded.push(driver);
        }
    }
    Ok(order
        .into_iter()
        .filter_map(|id| by_job.remove(&id))
        .collect())
}

/// Why an offer could not be accepted or declined.
#[derive(Debug, Clone, PartialEq)]
pub enum Refused {
    /// No such offer, or not this driver's.
    NotFound,
    /// Closed already (`expired`, `taken`, …), past its expiry, or the job is gone.
    Closed(String),
    /// The driver is on another active job.
    DriverBusy,
}

/// The job an offer is for, if the offer is this driver's; locks the job row on PostgreSQL.
macro_rules! offer_job {
    ($tx:expr, $offer:expr, $driver:expr, $lock:expr) => {{
        let sql = if $lock {
            "SELECT job_id FROM jobs WHERE job_id = \
             (SELECT job_id FROM offers WHERE offer_id = $1 AND driver_id = $2) FOR UPDATE"
        } else {
            "SELECT job_id FROM offers WHERE offer_id = $1 AND driver_id = $2"
        };
        let job: Option<Uuid> = sqlx::query_scalar(sql)
            .bind($offer.as_uuid())
            .bind($driver.as_uuid())
            .fetch_optional(&mut *$tx)
            .await?;
        job
    }};
}

/// Why an answer to `offer` by `driver` was refused, from the offer as it is now (read after
/// the refused transaction rolled back).
async fn why_refused(
    db: &Db,
    offer: OfferId,
    driver: DriverId,
    now: DateTime<Utc>,
) -> Result<Refused, sqlx::Error> {
    const SQL: &str =
        "SELECT status, expires_at FROM offers WHERE offer_id = $1 AND driver_id = $2";
    let row: Option<(String, DateTime<Utc>)> = on_pool!(db, pool => {
        sqlx::query_as(SQL)
            .bind(offer.as_uuid())
            .bind(driver.as_uuid())
            .fetch_optional(pool)
            .await
    })?;
    Ok(match row {
        None => Refused::NotFound,
        Some((status, expires_at)) if status == "open" && expires_at <= now => {
            Refused::Closed("the offer expired".into())
        }
        // Open and unexpired, yet refused: the job moved on.
        Some((status, _)) if status == "open" => {
            Refused::Closed("the job is no longer being dispatched".into())
        }
        Some((status, _)) => Refused::Closed(format!("the offer is closed ({status})")),
    })
}

/// Accepts an open, unexpired offer: in one transaction the offer becomes `accepted`, the job
/// (still `dispatching`) is `assigned` to the driver (whom the database's one-active-job index
/// refuses if busy) and the event is recorded. Returns the job before and after.
pub async fn accept(
    db: &Db,
    offer: OfferId,
    driver: DriverId,
    now: DateTime<Utc>,
) -> Result<Result<(Job, Job), Refused>, sqlx::Error> {
    const CLOSE: &str = "UPDATE offers SET status = 'accepted', closed_at = $2 \
         WHERE offer_id = $1 AND status = 'open' AND expires_at > $2 RETURNING offer_id";
    const ASSIGN: &str = concat!(
        "UPDATE jobs SET status = 'assigned', driver_id = $2, updated_at = $3 ",
        "WHERE job_id = $1 AND status = 'dispatching' RETURNING ",
        jobs::columns!()
    );
    let postgres = matches!(db, Db::Postgres(_));
    // `Ok(None)`: refused (not this driver's offer, closed, expired, or the job moved on); the
    // transaction is dropped, which undoes whatever it changed.
    let outcome: Result<Option<JobRow>, sqlx::Error> = async {
        Ok(in_write_transaction!(db, tx => {
            let Some(job) = offer_job!(tx, offer, driver, postgres) else {
                return Ok(None);
            };
            let closed: Option<Uuid> = sqlx::query_scalar(CLOSE)
                .bind(offer.as_uuid())
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
            if closed.is_none() {
                return Ok(None);
            }
            let Some(row) = sqlx::query_as::<_, JobRow>(ASSIGN)
                .bind(job)
                .bind(driver.as_uuid())
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?
            else {
                return Ok(None);
            };
            sqlx::query(INSERT_EVENT)
                .bind(job)
                .bind(Some(JobStatus::Dispatching.as_str()))
                .bind(JobStatus::Assigned.as_str())
                .bind(Some(UserId::from(driver).as_uuid()))
                .bind(Some("offer accepted"))
                .bind(now)
                .execute(&mut *tx)
                .await?;
            // The driver accepted it: nobody needs to tell them.
            let told = row.notifications(Event::JobAssigned);
            let driver_uuid = UserId::from(driver).as_uuid();
            queue_in!(tx, told.into_iter().filter(|n| n.user != driver_uuid), now);
            Some(row)
        }))
    }
    .await;
    match outcome {
        Err(error) if is_unique_violation(&error) => Ok(Err(Refused::DriverBusy)),
        Err(error) => Err(error),
        Ok(None) => Ok(Err(why_refused(db, offer, driver, now).await?)),
        Ok(Some(row)) => {
            let after = Job::try_from(row)?;
            let before = Job {
                status: JobStatus::Dispatching,
                driver_id: None,
                ..after.clone()
            };
            Ok(Ok((before, after)))
        }
    }
}

/// Declines an open offer; returns its job.
pub async fn decline(
    db: &Db,
    offer: OfferId,
    driver: DriverId,
    now: DateTime<Utc>,
) -> Result<Result<JobId, Refused>, sqlx::Error> {
    const SQL: &str = "UPDATE offers SET status = 'declined', closed_at = $3 \
         WHERE offer_id = $1 AND driver_id = $2 AND status = 'open' RETURNING job_id";
    let job: Option<Uuid> = on_pool!(db, pool => {
        sqlx::query_scalar(SQL)
            .bind(offer.as_uuid())
            .bind(driver.as_uuid())
            .bind(now)
            .fetch_optional(pool)
            .await
    })?;
    match job {
        Some(job) => Ok(Ok(JobId::from_uuid(job))),
        None => Ok(Err(why_refused(db, offer, driver, now).await?)),
    }
}

/// Closes a job's open offer with a reason (`$2`) at `$3`, inside the transaction that moves
/// the job on; returns `(offer_id, driver_id)`.
pub(super) const CLOSE_OPEN: &str = "UPDATE offers SET status = $2, closed_at = $3 \
     WHERE job_id = $1 AND status = 'open' RETURNING offer_id, driver_id";

impl ClosedOffer {
    pub(super) fn from_row((offer, driver): (Uuid, Uuid), reason: OfferClosedReason) -> Self {
        Self {
            offer: OfferId::from_uuid(offer),
            driver: DriverId::from_uuid(driver),
            reason,
        }
    }
}

/// A driver's open offer (with its job), for a driver who reconnects.
pub async fn open_for_driver(
    db: &Db,
    driver: DriverId,
    now: DateTime<Utc>,
) -> Result<Option<(OpenOffer, Job)>, sqlx::Error> {
    const SQL: &str = "SELECT offer_id, job_id, driver_id, status, distance_m, expires_at \
         FROM offers WHERE driver_id = $1 AND status = 'open' AND expires_at > $2";
    let row: Option<OfferRow> = on_pool!(db, pool => {
        sqlx::query_as(SQL)
            .bind(driver.as_uuid())
            .bind(now)
            .fetch_optional(pool)
            .await
    })?;
    let Some((offer_id, job_id, _, _, distance_m, expires_at)) = row else {
        return Ok(None);
    };
    let Some(job) = jobs::by_id(db, JobId::from_uuid(job_id)).await? else {
        return Ok(None);
    };
    if job.status != JobStatus::Dispatching {
        return Ok(None);
    }
    Ok(Some((
        OpenOffer {
            id: OfferId::from_uuid(offer_id),
            driver,
            distance_m,
            expires_at,
        },
        job,
    )))
}

/// One offer's status, for tests and the admin view.
pub async fn status(db: &Db, offer: OfferId) -> Result<Option<String>, sqlx::Error> {
    const SQL: &str = "SELECT status FROM offers WHERE offer_id = $1";
    on_pool!(db, pool => sqlx::query_scalar(SQL).bind(offer.as_uuid()).fetch_optional(pool).await)
}
