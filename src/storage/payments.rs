//! The `payments`, `connect_accounts` and `webhook_events` tables, and the one transaction in
//! which a verified Stripe event is recorded and applied.
//!
//! A webhook event is inserted into `webhook_events` in the same transaction as its effect
//! (payment row, job status and event, outbox rows), so an event id is handled exactly once:
//! a concurrent repeat waits on the key and then finds it; a failed handling leaves no row and
//! Stripe's redelivery is handled afresh. Lock order as elsewhere: the job row first.

use chrono::{DateTime, Utc};
use umuve_actors::ids::{DriverId, JobId};
use umuve_actors::realtime::model::{Job, JobStatus};
use uuid::Uuid;

use super::jobs::{INSERT_EVENT, JobRow, columns};
use super::outbox::{self, OutboxKind};
use super::{Db, in_write_transaction, on_pool};
use crate::notifications::{Event, queue_in};

/// Where a job's PaymentIntent stands, as far as the engine knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Made; the customer has not paid (yet).
    Created,
    Succeeded,
    /// The last attempt failed; the customer may try again with the same PaymentIntent.
    Failed,
}

impl PaymentStatus {
    fn parse(raw: &str) -> Option<Self> {
        match raw {
            "created" => Some(Self::Created),
            "succeeded" => Some(Self::Succeeded),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// A job's payment.
#[derive(Debug, Clone)]
pub struct Payment {
    pub job_id: JobId,
    pub payment_intent_id: String,
    pub client_secret: String,
    pub amount_cents: i64,
    pub currency: String,
    pub status: PaymentStatus,
    pub charge_id: Option<String>,
    pub refunded_cents: i64,
    pub last_error: Option<String>,
}

#[derive(sqlx::FromRow)]
struct PaymentRow {
    job_id: Uuid,
    payment_intent_id: String,
    client_secret: String,
    amount_cents: i64,
    currency: String,
    status: String,
    charge_id: Option<String>,
    refunded_cents: i64,
    last_error: Option<String>,
}

impl TryFrom<PaymentRow> for Payment {
    type Error = sqlx::Error;

    fn try_from(row: PaymentRow) -> Result<Self, Self::Error> {
        Ok(Payment {
            job_id: JobId::from_uuid(row.job_id),
            status: PaymentStatus::parse(&row.status).ok_or_else(|| {
                sqlx::Error::Decode(format!("payments.status = {:?}", row.status).into())
            })?,
            payment_intent_id: row.payment_intent_id,
            client_secret: row.client_secret,
            amount_cents: row.amount_cents,
            currency: row.currency,
            charge_id: row.charge_id,
            refunded_cents: row.refunded_cents,
            last_error: row.last_error,
        })
    }
}

pub async fn by_job(db: &Db, job: JobId) -> Result<Option<Payment>, sqlx::Error> {
    const SQL: &str = "SELECT job_id, payment_intent_id, client_secret, amount_cents, currency, \
         status, charge_id, refunded_cents, last_error FROM payments WHERE job_id = $1";
    let row = on_pool!(db, pool => {
        sqlx::query_as::<_, PaymentRow>(SQL).bind(job.as_uuid()).fetch_optional(pool).await
    })?;
    row.map(Payment::try_from).transpose()
}

/// A PaymentIntent Stripe made for a job.
pub struct NewPayment<'a> {
    pub job: JobId,
    pub payment_intent_id: &'a str,
    pub client_secret: &'a str,
    pub amount_cents: i64,
    pub currency: &'a str,
}

/// A job's PaymentIntent, `created`, unless the job has one: (job, PaymentIntent, client secret,
/// amount, currency, now).
const INSERT_PAYMENT: &str = "INSERT INTO payments (job_id, payment_intent_id, client_secret, \
     amount_cents, currency, status, refunded_cents, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, 'created', 0, $6, $6) ON CONFLICT DO NOTHING";

/// Stores a job's PaymentIntent unless it has one (two racing requests got the same one from
/// Stripe through the idempotency key); returns the stored one.
pub async fn insert(
    db: &Db,
    new: NewPayment<'_>,
    now: DateTime<Utc>,
) -> Result<Payment, sqlx::Error> {
    on_pool!(db, pool => {
        sqlx::query(INSERT_PAYMENT)
            .bind(new.job.as_uuid())
            .bind(new.payment_intent_id)
            .bind(new.client_secret)
            .bind(new.amount_cents)
            .bind(new.currency)
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ())
    })?;
    by_job(db, new.job)
        .await?
        .ok_or_else(|| sqlx::Error::Protocol("payment vanished after insert".into()))
}

/// A driver's Connect account.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ConnectAccount {
    pub account_id: String,
    pub payouts_enabled: bool,
}

pub async fn connect_account(
    db: &Db,
    driver: DriverId,
) -> Result<Option<ConnectAccount>, sqlx::Error> {
    const SQL: &str =
        "SELECT account_id, payouts_enabled FROM connect_accounts WHERE driver_id = $1";
    on_pool!(db, pool => {
        sqlx::query_as::<_, ConnectAccount>(SQL).bind(driver.as_uuid()).fetch_optional(pool).await
    })
}

/// Records a driver's account unless they have one; returns the stored one.
pub async fn insert_connect_account(
    db: &Db,
    driver: DriverId,
    account_id: &str,
    now: DateTime<Utc>,
) -> Result<ConnectAccount, sqlx::Error> {
    const SQL: &str = "INSERT INTO connect_accounts \
         (driver_id, account_id, payouts_enabled, created_at, updated_at) \
         VALUES ($1, $2, FALSE, $3, $3) ON CONFLICT DO NOTHING";
    on_pool!(db, pool => {
        sqlx::query(SQL)
            .bind(driver.as_uuid())
            .bind(account_id)
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ())
    })?;
    connect_account(db, driver)
        .await?
        .ok_or_else(|| sqlx::Error::Protocol("connect account vanished after insert".into()))
}

/// What a verified Stripe event asks of the engine (the fields it needs, read from the typed
/// object async-stripe parsed).
#[derive(Debug, Clone)]
pub enum EventEffect {
    PaymentSucceeded {
        payment_intent: String,
        /// `metadata.job_id`: finds the job when the PaymentIntent was made but not stored.
        job_hint: Option<JobId>,
        client_secret: Option<String>,
        amount_received: i64,
        currency: String,
        charge: Option<String>,
    },
    PaymentFailed {
        payment_intent: String,
        message: Option<String>,
    },
    ChargeRefunded {
        payment_intent: Option<String>,
        amount_refunded: i64,
    },
    AccountUpdated {
        account: String,
        payouts_enabled: bool,
    },
    /// Stored for the record; nothing to do.
    None,
}

/// A verified event.
#[derive(Debug, Clone)]
pub struct VerifiedEvent {
    pub id: String,
    pub event_type: String,
    pub payload: String,
    pub effect: EventEffect,
}

/// What handling an event did.
#[derive(Debug, Default)]
pub struct Handled {
    /// The event id was handled before: nothing was done now.
    pub repeat: bool,
    /// The job's status change it caused: (before, after).
    pub job_change: Option<(Job, Job)>,
    /// Outbox rows were added or released: the worker should look.
    pub outbox_changed: bool,
    pub outcome: String,
}

/// Records the event and applies its effect in one transaction (see the module notes).
pub async fn handle_event(
    db: &Db,
    event: &VerifiedEvent,
    now: DateTime<Utc>,
) -> Result<Handled, sqlx::Error> {
    const RECORD: &str = "INSERT INTO webhook_events (event_id, event_type, payload, outcome, \
         received_at) VALUES ($1, $2, $3, '', $4) ON CONFLICT DO NOTHING RETURNING event_id";
    const OUTCOME: &str = "UPDATE webhook_events SET outcome = $2 WHERE event_id = $1";
    // Only PostgreSQL locks rows; SQLite's write transaction already excludes other writers.
    macro_rules! job_where {
        ($condition:literal, $lock:literal) => {
            concat!(
                "SELECT ",
                columns!(),
                " FROM jobs WHERE ",
                $condition,
                $lock
            )
        };
    }
    let (job_by_payment, job_by_id) = match db {
        Db::Postgres(_) => (
            job_where!(
                "job_id = (SELECT job_id FROM payments WHERE payment_intent_id = $1)",
                " FOR UPDATE"
            ),
            job_where!("job_id = $1", " FOR UPDATE"),
        ),
        Db::Sqlite(_) => (
            job_where!(
                "job_id = (SELECT job_id FROM payments WHERE payment_intent_id = $1)",
                ""
            ),
            job_where!("job_id = $1", ""),
        ),
    };
    let move_job = concat!(
        "UPDATE jobs SET status = $3, updated_at = $4 WHERE job_id = $1 AND status = $2 RETURNING ",
        columns!()
    );

    Ok(in_write_transaction!(db, tx => {
        let recorded: Option<String> = sqlx::query_scalar(RECORD)
            .bind(&event.id)
            .bind(&event.event_type)
            .bind(&event.payload)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
        let mut handled = Handled::default();
        if recorded.is_none() {
            handled.repeat = true;
            handled.outcome = "repeat".into();
        } else {
            // The job (locked) and whether it moved.
            let mut job: Option<JobRow> = None;
            let mut to: Option<(JobStatus, &str)> = None;
            match &event.effect {
                EventEffect::PaymentSucceeded {
                    payment_intent,
                    job_hint,
                    client_secret,
                    amount_received,
                    currency,
                    charge,
                } => {
                    job = sqlx::query_as::<_, JobRow>(job_by_payment)
                        .bind(payment_intent)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if job.is_none()
                        && let Some(hint) = job_hint
                    {
                        // Made at Stripe but not stored here (a crash between the two): the
                        // event brings what the row needs.
                        job = sqlx::query_as::<_, JobRow>(job_by_id)
                            .bind(hint.as_uuid())
                            .fetch_optional(&mut *tx)
                            .await?;
                        if job.is_some() {
                            sqlx::query(INSERT_PAYMENT)
                            .bind(hint.as_uuid())
                            .bind(payment_intent)
                            .bind(client_secret.as_deref().unwrap_or(""))
                            .bind(amount_received)
                            .bind(currency)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                        }
                    }
                    match job.as_ref().map(JobRow::status).transpose()? {
                        None => handled.outcome = "ignored: not a payment of this engine".into(),
                        Some(status) => {
                            let recorded = sqlx::query(
                                "UPDATE payments SET status = 'succeeded', \
                                 charge_id = COALESCE($2, charge_id), last_error = NULL, \
                                 updated_at = $3 WHERE payment_intent_id = $1",
                            )
                            .bind(payment_intent)
                            .bind(charge)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?
                            .rows_affected();
                            if recorded == 0 {
                                // Paid through a PaymentIntent other than the job's own (found
                                // by metadata only): nothing here accounts for that money.
                                tracing::error!(payment_intent = %payment_intent, "a payment for a job through a PaymentIntent that is not the job's; refund it in Stripe's dashboard");
                                handled.outcome =
                                    "ignored: not the job's PaymentIntent (needs a person)".into();
                                job = None;
                            }
                            match Some(status).filter(|_| recorded > 0) {
                                None => {}
                                Some(JobStatus::PendingPayment | JobStatus::PaymentFailed) => {
                                    to = Some((JobStatus::Dispatching, "payment_succeeded"));
                                    handled.outcome = "applied: job dispatching".into();
                                }
                                Some(JobStatus::Cancelled) => {
                                    // Paid after the customer cancelled: the money goes back.
                                    let job_id = job.as_ref().map(|j| j.id()).expect("a job");
                                    let refunded: i64 = sqlx::query_scalar(
                                        "SELECT refunded_cents FROM payments WHERE job_id = $1",
                                    )
                                    .bind(job_id.as_uuid())
                                    .fetch_one(&mut *tx)
                                    .await?;
                                    let amount = amount_received - refunded;
                                    if amount > 0 {
                                        outbox::insert_in!(tx, outbox::NewEntry {
                                            kind: OutboxKind::Refund,
                                            job: job_id,
                                            driver: None,
                                            amount_cents: amount,
                                            idempotency_key: outbox::key(job_id, "refund-late-payment"),
                                            pending: true,
                                        }, now);
                                        handled.outbox_changed = true;
                                    }
                                    handled.outcome =
                                        "applied: paid after cancellation, full refund queued".into();
                                }
                                Some(JobStatus::Completed) => {
                                    // Completed before the payment was recorded (a
                                    // dispatcher started it by hand): the driver's payout was
                                    // not owed then; it is now.
                                    let row = job.as_ref().expect("a job");
                                    if row.driver_payout_cents() > 0 {
                                        outbox::insert_in!(tx, outbox::NewEntry {
                                            kind: OutboxKind::Transfer,
                                            job: row.id(),
                                            driver: row.driver(),
                                            amount_cents: row.driver_payout_cents(),
                                            idempotency_key: outbox::key(row.id(), "payout"),
                                            pending: true,
                                        }, now);
                                        handled.outbox_changed = true;
                                    }
                                    handled.outcome =
                                        "applied: payment recorded; job completed, payout queued"
                                            .into();
                                }
                                Some(other) => {
                                    handled.outcome = format!(
                                        "applied: payment recorded; job already {}",
                                        other.as_str()
                                    );
                                }
                            }
                        }
                    }
                }
                EventEffect::PaymentFailed { payment_intent, message } => {
                    job = sqlx::query_as::<_, JobRow>(job_by_payment)
                        .bind(payment_intent)
                        .fetch_optional(&mut *tx)
                        .await?;
                    match job.as_ref().map(JobRow::status).transpose()? {
                        None => handled.outcome = "ignored: not a payment of this engine".into(),
                        Some(status) => {
                            // Never over a success: events may arrive out of order.
                            sqlx::query(
                                "UPDATE payments SET status = 'failed', last_error = $2, \
                                 updated_at = $3 WHERE payment_intent_id = $1 \
                                 AND status <> 'succeeded'",
                            )
                            .bind(payment_intent)
                            .bind(message.as_deref())
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                            if status == JobStatus::PendingPayment {
                                to = Some((JobStatus::PaymentFailed, "payment_failed"));
                                handled.outcome = "applied: job payment_failed".into();
                            } else {
                                handled.outcome =
                                    format!("ignored: job is already {}", status.as_str());
                            }
                        }
                    }
                }
                EventEffect::ChargeRefunded { payment_intent, amount_refunded } => {
                    let updated = match payment_intent {
                        Some(payment_intent) => sqlx::query(
                            "UPDATE payments SET refunded_cents = CASE WHEN $2 > refunded_cents \
                             THEN $2 ELSE refunded_cents END, updated_at = $3 \
                             WHERE payment_intent_id = $1",
                        )
                        .bind(payment_intent)
                        .bind(amount_refunded)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected(),
                        None => 0,
                    };
                    handled.outcome = if updated == 1 {
                        format!("applied: {amount_refunded} cents refunded in all")
                    } else {
                        "ignored: not a payment of this engine".into()
                    };
                }
                EventEffect::AccountUpdated { account, payouts_enabled } => {
                    let driver: Option<Uuid> = sqlx::query_scalar(
                        "UPDATE connect_accounts SET payouts_enabled = $2, updated_at = $3 \
                         WHERE account_id = $1 RETURNING driver_id",
                    )
                    .bind(account)
                    .bind(payouts_enabled)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?;
                    handled.outcome = match driver {
                        None => "ignored: not a driver's account".into(),
                        Some(driver) if *payouts_enabled => {
                            let released = sqlx::query(
                                "UPDATE outbox SET state = 'pending', next_attempt_at = $2, \
                                 updated_at = $2 WHERE driver_id = $1 AND state = 'owed'",
                            )
                            .bind(driver)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?
                            .rows_affected();
                            handled.outbox_changed = released > 0;
                            format!("applied: payouts enabled, {released} owed payouts released")
                        }
                        Some(_) => "applied: payouts disabled".into(),
                    };
                }
                EventEffect::None => handled.outcome = "stored".into(),
            }
            if let (Some(before), Some((to, reason))) = (job, to) {
                let from = before.status()?;
                let after = sqlx::query_as::<_, JobRow>(move_job)
                    .bind(before.id().as_uuid())
                    .bind(from.as_str())
                    .bind(to.as_str())
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?;
                sqlx::query(INSERT_EVENT)
                    .bind(before.id().as_uuid())
                    .bind(Some(from.as_str()))
                    .bind(to.as_str())
                    .bind(None::<Uuid>)
                    .bind(Some(reason))
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                if to == JobStatus::Dispatching {
                    let told = [Event::BookingConfirmed, Event::PaymentReceipt];
                    queue_in!(tx, told.into_iter().flat_map(|e| after.notifications(e)), now);
                }
                handled.job_change = Some((Job::try_from(before)?, Job::try_from(after)?));
            }
            sqlx::query(OUTCOME)
                .bind(&event.id)
                .bind(&handled.outcome)
                .execute(&mut *tx)
                .await?;
        }
        handled
    }))
}

/// A stored event: (type, outcome), for tests and support.
pub async fn webhook_event(db: &Db, id: &str) -> Result<Option<(String, String)>, sqlx::Error> {
    const SQL: &str = "SELECT event_type, outcome FROM webhook_events WHERE event_id = $1";
    on_pool!(db, pool => sqlx::query_as(SQL).bind(id).fetch_optional(pool).await)
}
