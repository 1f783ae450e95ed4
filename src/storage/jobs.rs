//! The `jobs` and `job_events` tables. Every write that changes a job's status writes its event
//! in the same transaction (see `crate::jobs` for the one function that does it).

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use umuve_actors::ids::{DriverId, JobId, UserId};
use umuve_actors::realtime::model::{Job, JobStatus, LoadSize};
use umuve_actors::realtime::protocol::OfferClosedReason;
use uuid::Uuid;

use super::offers::{self, ClosedOffer};
use super::{Db, on_pool};
use crate::jobs::Quote;
use crate::notifications::{Event, NewNotification, queue_in};

macro_rules! columns {
    () => {
        "job_id, customer_id, driver_id, status, address, lat, lng, county, description, load_size, \
         scheduled_at, price_cents, service_fee_cents, commission_cents, total_cents, \
         driver_payout_cents, created_at, updated_at, photos"
    };
}

pub(super) use columns;

#[derive(Debug, sqlx::FromRow)]
pub(super) struct JobRow {
    job_id: Uuid,
    customer_id: Uuid,
    driver_id: Option<Uuid>,
    status: String,
    address: String,
    lat: f64,
    lng: f64,
    county: Option<String>,
    description: String,
    load_size: String,
    scheduled_at: Option<DateTime<Utc>>,
    price_cents: i64,
    service_fee_cents: i64,
    #[allow(dead_code)]
    commission_cents: i64,
    total_cents: i64,
    driver_payout_cents: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    /// A JSON array of file names in `UPLOAD_DIR`.
    photos: String,
}

impl TryFrom<JobRow> for Job {
    type Error = sqlx::Error;

    fn try_from(row: JobRow) -> Result<Self, Self::Error> {
        let corrupt = |what: &str, value: &str| {
            sqlx::Error::Decode(format!("jobs.{what} = {value:?}").into())
        };
        Ok(Job {
            id: JobId::from_uuid(row.job_id),
            customer_id: UserId::from_uuid(row.customer_id),
            driver_id: row.driver_id.map(DriverId::from_uuid),
            status: JobStatus::parse(&row.status).ok_or_else(|| corrupt("status", &row.status))?,
            address: row.address,
            lat: row.lat,
            lng: row.lng,
            county: row.county,
            description: row.description,
            load_size: LoadSize::parse(&row.load_size)
                .ok_or_else(|| corrupt("load_size", &row.load_size))?,
            scheduled_at: row.scheduled_at,
            price_cents: row.price_cents,
            service_fee_cents: row.service_fee_cents,
            total_cents: row.total_cents,
            driver_payout_cents: row.driver_payout_cents,
            photos: crate::uploads::photo_urls(&row.photos)
                .map_err(|_| corrupt("photos", &row.photos))?,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

impl JobRow {
    pub(super) fn id(&self) -> JobId {
        JobId::from_uuid(self.job_id)
    }

    pub(super) fn driver(&self) -> Option<DriverId> {
        self.driver_id.map(DriverId::from_uuid)
    }

    pub(super) fn driver_payout_cents(&self) -> i64 {
        self.driver_payout_cents
    }

    pub(super) fn status(&self) -> Result<JobStatus, sqlx::Error> {
        JobStatus::parse(&self.status)
            .ok_or_else(|| sqlx::Error::Decode(format!("jobs.status = {:?}", self.status).into()))
    }

    /// The notifications `event` about this job brings, to its customer and driver.
    pub(super) fn notifications(&self, event: Event) -> Vec<NewNotification> {
        crate::notifications::plan(
            event,
            self.id(),
            Some(UserId::from_uuid(self.customer_id)),
            self.driver_id.map(UserId::from_uuid),
            None,
        )
    }
}

fn into_job(row: Option<JobRow>) -> Result<Option<Job>, sqlx::Error> {
    row.map(Job::try_from).transpose()
}

/// A job about to be stored.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub customer: UserId,
    pub status: JobStatus,
    pub address: String,
    pub lat: f64,
    pub lng: f64,
    pub county: Option<String>,
    pub description: String,
    pub load_size: LoadSize,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub quote: Quote,
}

/// One line of a job's history.
#[derive(Debug, Clone)]
pub struct JobEvent<'a> {
    pub from: Option<JobStatus>,
    pub to: JobStatus,
    pub actor: Option<UserId>,
    pub reason: Option<&'a str>,
}

pub(super) const INSERT_EVENT: &str = "INSERT INTO job_events (job_id, from_status, to_status, actor_id, reason, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6)";

/// What a conditional status write found.
#[derive(Debug)]
pub enum Written {
    /// Changed; the job as it is now, and the offer of it that closed with the change.
    Done(Job, Option<ClosedOffer>),
    /// The job exists but was not in the expected state (a race, or an illegal move).
    Conflict(Job),
    NotFound,
}

pub async fn by_id(db: &Db, id: JobId) -> Result<Option<Job>, sqlx::Error> {
    const SQL: &str = concat!("SELECT ", columns!(), " FROM jobs WHERE job_id = $1");
    let row = on_pool!(db, pool => sqlx::query_as::<_, JobRow>(SQL).bind(id.as_uuid()).fetch_optional(pool).await)?;
    into_job(row)
}

/// Stores a new job and its first event, in one transaction.
pub async fn insert(
    db: &Db,
    new: NewJob,
    actor: UserId,
    now: DateTime<Utc>,
) -> Result<Job, sqlx::Error> {
    const SQL: &str = concat!(
        "INSERT INTO jobs (",
        columns!(),
        ") VALUES ($1, $2, NULL, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $16, '[]') RETURNING ",
        columns!()
    );
    let id = Uuid::new_v4();
    let row = super::in_write_transaction!(db, tx => {
        let row = sqlx::query_as::<_, JobRow>(SQL)
            .bind(id)
            .bind(new.customer.as_uuid())
            .bind(new.status.as_str())
            .bind(&new.address)
            .bind(new.lat)
            .bind(new.lng)
            .bind(&new.county)
            .bind(&new.description)
            .bind(new.load_size.as_str())
            .bind(new.scheduled_at)
            .bind(new.quote.price_cents)
            .bind(new.quote.service_fee_cents)
            .bind(new.quote.commission_cents)
            .bind(new.quote.total_cents)
            .bind(new.quote.driver_payout_cents)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query(INSERT_EVENT)
            .bind(id)
            .bind(None::<&str>)
            .bind(new.status.as_str())
            .bind(actor.as_uuid())
            .bind("created")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        // Booked at once when payments are off; otherwise once paid (the webhook).
        if new.status == JobStatus::Dispatching {
            queue_in!(tx, row.notifications(Event::BookingConfirmed), now);
        }
        row
    });
    Job::try_from(row)
}

/// How much of a job's payment a cancellation gives back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refund {
    /// Everything not refunded yet (a cancellation before the driver set off).
    Full,
    /// This much, at most what is left (chosen by a dispatcher).
    Cents(i64),
}

/// Moves the job from `from` to `event.to` and records the event, in one transaction, only if
/// it is still in `from` with `driver` (the state the move was allowed for: a job released and
/// given to another driver in between has the same status but is no longer the mover's). Going
/// back to `dispatching` releases the driver. Money follows in the same transaction, as outbox
/// rows: a paid job that completes owes its driver the payout; a paid job cancelled gets
/// `refund`.
pub async fn move_status(
    db: &Db,
    id: JobId,
    from: JobStatus,
    driver: Option<DriverId>,
    event: JobEvent<'_>,
    refund: Refund,
    now: DateTime<Utc>,
) -> Result<Written, sqlx::Error> {
    use super::outbox::{self, NewEntry, OutboxKind};
    const PAID: &str = "SELECT amount_cents - refunded_cents FROM payments \
         WHERE job_id = $1 AND status = 'succeeded'";
    const SQL: &str = concat!(
        "UPDATE jobs SET status = $3, updated_at = $4, ",
        "driver_id = CASE WHEN $3 = 'dispatching' THEN NULL ELSE driver_id END ",
        "WHERE job_id = $1 AND status = $2 AND driver_id IS NOT DISTINCT FROM $5 RETURNING ",
        columns!()
    );
    let row = super::in_write_transaction!(db, tx => {
        let row = sqlx::query_as::<_, JobRow>(SQL)
            .bind(id.as_uuid())
            .bind(from.as_str())
            .bind(event.to.as_str())
            .bind(now)
            .bind(driver.map(|d| d.as_uuid()))
            .fetch_optional(&mut *tx)
            .await?;
        let mut closed = None;
        if row.is_some() {
            sqlx::query(INSERT_EVENT)
                .bind(id.as_uuid())
                .bind(Some(from.as_str()))
                .bind(event.to.as_str())
                .bind(event.actor.map(|a| a.as_uuid()))
                .bind(event.reason)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            if let Some(job) = &row {
                for told in Event::of_change(from, event.to) {
                    queue_in!(tx, job.notifications(*told), now);
                }
            }
            let money_moves = matches!(event.to, JobStatus::Completed | JobStatus::Cancelled);
            let paid: Option<i64> = if money_moves {
                sqlx::query_scalar(PAID)
                    .bind(id.as_uuid())
                    .fetch_optional(&mut *tx)
                    .await?
            } else {
                None
            };
            // Written as due: the worker decides whether the driver can be paid yet, reading
            // their account when it runs (a read here could miss an account enabled meanwhile).
            if let (Some(_), JobStatus::Completed, Some(job)) = (paid, event.to, &row)
                && job.driver_payout_cents > 0
            {
                outbox::insert_in!(tx, NewEntry {
                    kind: OutboxKind::Transfer,
                    job: id,
                    driver,
                    amount_cents: job.driver_payout_cents,
                    idempotency_key: outbox::key(id, "payout"),
                    pending: true,
                }, now);
            }
            if let (Some(left), JobStatus::Cancelled) = (paid, event.to) {
                let amount = match refund {
                    Refund::Full => left,
                    Refund::Cents(cents) => cents.min(left),
                };
                if amount > 0 {
                    outbox::insert_in!(tx, NewEntry {
                        kind: OutboxKind::Refund,
                        job: id,
                        driver: None,
                        amount_cents: amount,
                        idempotency_key: outbox::key(id, "refund-cancel"),
                        pending: true,
                    }, now);
                }
            }
            if from == JobStatus::Dispatching {
                let reason = if event.to == JobStatus::Cancelled {
                    OfferClosedReason::Cancelled
                } else {
                    OfferClosedReason::Taken
                };
                let offer: Option<(Uuid, Uuid)> = sqlx::query_as(offers::CLOSE_OPEN)
                    .bind(id.as_uuid())
                    .bind(reason.as_str())
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?;
                closed = offer.map(|row| ClosedOffer::from_row(row, reason));
            }
        }
        (row, closed)
    });
    let (row, closed) = row;
    match into_job(row)? {
        Some(job) => Ok(Written::Done(job, closed)),
        None => Ok(by_id(db, id)
            .await?
            .map_or(Written::NotFound, Written::Conflict)),
    }
}

/// Why an assignment was refused.
#[derive(Debug)]
pub enum AssignRefused {
    NoSuchDriver,
    DriverNotApproved,
    /// The database's one-active-job-per-driver index refused it.
    DriverBusy,
    /// Only a `dispatching` job can be assigned; this is where it stands.
    JobNotDispatching(JobStatus),
    NoSuchJob,
}

/// The job row after an assignment, and the offer that closed with it.
type Assigned = (JobRow, Option<ClosedOffer>);

/// Gives a `dispatching` job to a driver and records the event, in one transaction; an open
/// offer of the job closes as `taken`.
pub async fn assign(
    db: &Db,
    id: JobId,
    driver: DriverId,
    actor: Option<UserId>,
    now: DateTime<Utc>,
) -> Result<Result<(Job, Option<ClosedOffer>), AssignRefused>, sqlx::Error> {
    const DRIVER: &str = "SELECT approved FROM users WHERE user_id = $1 AND role = 'driver'";
    const SQL: &str = concat!(
        "UPDATE jobs SET status = 'assigned', driver_id = $2, updated_at = $3 ",
        "WHERE job_id = $1 AND status = 'dispatching' RETURNING ",
        columns!()
    );
    let outcome: Result<Result<Option<Assigned>, AssignRefused>, sqlx::Error> = async {
        Ok(super::in_write_transaction!(db, tx => {
            let approved: Option<bool> = sqlx::query_scalar(DRIVER)
                .bind(driver.as_uuid())
                .fetch_optional(&mut *tx)
                .await?;
            match approved {
                None => return Ok(Err(AssignRefused::NoSuchDriver)),
                Some(false) => return Ok(Err(AssignRefused::DriverNotApproved)),
                Some(true) => {}
            }
            let row = sqlx::query_as::<_, JobRow>(SQL)
                .bind(id.as_uuid())
                .bind(driver.as_uuid())
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
            let mut closed = None;
            if row.is_some() {
                sqlx::query(INSERT_EVENT)
                    .bind(id.as_uuid())
                    .bind(Some(JobStatus::Dispatching.as_str()))
                    .bind(JobStatus::Assigned.as_str())
                    .bind(actor.map(|a| a.as_uuid()))
                    .bind(Some("assigned"))
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                if let Some(job) = &row {
                    queue_in!(tx, job.notifications(Event::JobAssigned), now);
                }
                let offer: Option<(Uuid, Uuid)> = sqlx::query_as(offers::CLOSE_OPEN)
                    .bind(id.as_uuid())
                    .bind(OfferClosedReason::Taken.as_str())
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?;
                closed = offer.map(|row| ClosedOffer::from_row(row, OfferClosedReason::Taken));
            }
            Ok(row.map(|row| (row, closed)))
        }))
    }
    .await;
    match outcome {
        Err(error) if super::is_unique_violation(&error) => Ok(Err(AssignRefused::DriverBusy)),
        Err(error) => Err(error),
        Ok(Err(refused)) => Ok(Err(refused)),
        Ok(Ok(Some((row, closed)))) => Ok(Ok((Job::try_from(row)?, closed))),
        Ok(Ok(None)) => Ok(Err(match by_id(db, id).await? {
            Some(job) => AssignRefused::JobNotDispatching(job.status),
            None => AssignRefused::NoSuchJob,
        })),
    }
}

/// Whose jobs a listing shows.
#[derive(Debug, Clone, Copy)]
pub enum JobScope {
    Customer(UserId),
    Driver(DriverId),
    All,
}

/// Jobs newest first, after the keyset position `after` when given.
pub async fn list(
    db: &Db,
    scope: JobScope,
    status: Option<JobStatus>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: u32,
) -> Result<Vec<Job>, sqlx::Error> {
    const SQL: &str = concat!(
        "SELECT ",
        columns!(),
        " FROM jobs",
        " WHERE ($1 IS NULL OR customer_id = $1)",
        " AND ($2 IS NULL OR driver_id = $2)",
        " AND ($3 IS NULL OR status = $3)",
        " AND ($4 IS NULL OR created_at < $4 OR (created_at = $4 AND job_id < $5))",
        " ORDER BY created_at DESC, job_id DESC LIMIT $6"
    );
    let (customer, driver) = match scope {
        JobScope::Customer(id) => (Some(id.as_uuid()), None),
        JobScope::Driver(id) => (None, Some(id.as_uuid())),
        JobScope::All => (None, None),
    };
    let (after_time, after_id) = after.unzip();
    let rows = on_pool!(db, pool => {
        sqlx::query_as::<_, JobRow>(SQL)
            .bind(customer)
            .bind(driver)
            .bind(status.map(JobStatus::as_str))
            .bind(after_time)
            .bind(after_id)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
    })?;
    rows.into_iter().map(Job::try_from).collect()
}

/// `('a', 'b', …)`: the statuses for which `holds` is true, for an SQL `IN`, so queries follow
/// the rules in `JobStatus` instead of restating them.
pub(crate) fn statuses_where(holds: fn(JobStatus) -> bool) -> String {
    let names: Vec<String> = JobStatus::ALL
        .into_iter()
        .filter(|status| holds(*status))
        .map(|status| format!("'{}'", status.as_str()))
        .collect();
    format!("({})", names.join(", "))
}

/// Jobs the dispatch map shows at start-up (and the drivers they hold).
pub async fn active(db: &Db) -> Result<Vec<Job>, sqlx::Error> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT {} FROM jobs WHERE status IN {}",
            columns!(),
            statuses_where(JobStatus::is_on_map)
        )
    });
    let rows =
        on_pool!(db, pool => sqlx::query_as::<_, JobRow>(SQL.as_str()).fetch_all(pool).await)?;
    rows.into_iter().map(Job::try_from).collect()
}

/// The job a driver is on now, if any.
pub async fn active_for_driver(db: &Db, driver: DriverId) -> Result<Option<Job>, sqlx::Error> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT {} FROM jobs WHERE driver_id = $1 AND status IN {}",
            columns!(),
            statuses_where(JobStatus::has_active_driver)
        )
    });
    let row = on_pool!(db, pool => {
        sqlx::query_as::<_, JobRow>(SQL.as_str())
            .bind(driver.as_uuid())
            .fetch_optional(pool)
            .await
    })?;
    into_job(row)
}

/// A job's history, oldest first: (from, to, actor, at).
pub async fn events(
    db: &Db,
    id: JobId,
) -> Result<Vec<(Option<String>, String, Option<Uuid>, DateTime<Utc>)>, sqlx::Error> {
    const SQL: &str = "SELECT from_status, to_status, actor_id, created_at FROM job_events \
         WHERE job_id = $1 ORDER BY job_event_id";
    on_pool!(db, pool => sqlx::query_as(SQL).bind(id.as_uuid()).fetch_all(pool).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lists_follow_the_rules_of_job_status() {
        assert_eq!(
            statuses_where(JobStatus::has_active_driver),
            "('assigned', 'en_route', 'arrived', 'in_progress')"
        );
        assert_eq!(
            statuses_where(JobStatus::is_on_map),
            "('dispatching', 'assigned', 'en_route', 'arrived', 'in_progress')"
        );
    }
}
