//! The `outbox` table: money movements (Stripe transfers and refunds) written in the same
//! transaction as the job change that causes them, then carried out by the outbox worker.
//!
//! A worker claims due rows with a lease (`locked_until`), so two engine processes never work
//! on one row at the same time, and a row whose worker died is taken again once its lease has
//! passed. Every attempt is counted when claimed, so a crash mid-call counts too. The Stripe
//! call carries the row's idempotency key: repeating it after a crash returns what the first
//! call made.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use umuve_actors::ids::{DriverId, JobId};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Db, in_write_transaction, on_pool};

/// What a row asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutboxKind {
    /// The driver's payout to their Connect account.
    Transfer,
    /// Money back to the customer.
    Refund,
}

impl OutboxKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxKind::Transfer => "transfer",
            OutboxKind::Refund => "refund",
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        match raw {
            "transfer" => Some(OutboxKind::Transfer),
            "refund" => Some(OutboxKind::Refund),
            _ => None,
        }
    }
}

/// Where a row stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutboxState {
    /// To do, at `next_attempt_at`.
    Pending,
    /// A payout waiting for the driver's Connect account to become payable.
    Owed,
    /// Done; `stripe_id` names what Stripe made.
    Sent,
    /// Given up (refused by Stripe, or out of attempts): a dispatcher decides.
    Failed,
}

impl OutboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::Owed => "owed",
            OutboxState::Sent => "sent",
            OutboxState::Failed => "failed",
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        [Self::Pending, Self::Owed, Self::Sent, Self::Failed]
            .into_iter()
            .find(|state| state.as_str() == raw)
    }
}

/// The idempotency key of a job's side effect: the same job and purpose always give the same
/// key, so it is written once (a unique column) and made once at Stripe.
pub fn key(job: JobId, purpose: &str) -> String {
    format!("job_{}_{purpose}", job.as_uuid())
}

/// A row about to be written.
#[derive(Debug)]
pub struct NewEntry {
    pub kind: OutboxKind,
    pub job: JobId,
    pub driver: Option<DriverId>,
    pub amount_cents: i64,
    pub idempotency_key: String,
    /// Due now (`pending`), or `owed` until the driver can be paid.
    pub pending: bool,
}

/// Writes an outbox row inside the transaction `$tx` (a row with the same key already there is
/// left as it is); evaluates to the number of rows written.
macro_rules! insert_in {
    ($tx:ident, $entry:expr, $now:expr) => {{
        let entry: $crate::storage::outbox::NewEntry = $entry;
        sqlx::query(
            "INSERT INTO outbox (outbox_id, kind, job_id, driver_id, amount_cents, \
             idempotency_key, state, attempts, next_attempt_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $8, $8) ON CONFLICT DO NOTHING",
        )
        .bind(uuid::Uuid::new_v4())
        .bind(entry.kind.as_str())
        .bind(entry.job.as_uuid())
        .bind(entry.driver.map(|d| d.as_uuid()))
        .bind(entry.amount_cents)
        .bind(&entry.idempotency_key)
        .bind(if entry.pending { "pending" } else { "owed" })
        .bind($now)
        .execute(&mut *$tx)
        .await?
        .rows_affected()
    }};
}
pub(crate) use insert_in;

/// A row as dispatchers see it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OutboxEntry {
    pub id: Uuid,
    pub kind: OutboxKind,
    pub job_id: Uuid,
    pub driver_id: Option<Uuid>,
    pub amount_cents: i64,
    pub idempotency_key: String,
    pub state: OutboxState,
    pub attempts: i64,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    /// What Stripe made (`tr_…`, `re_…`) once sent.
    pub stripe_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct EntryRow {
    outbox_id: Uuid,
    kind: String,
    job_id: Uuid,
    driver_id: Option<Uuid>,
    amount_cents: i64,
    idempotency_key: String,
    state: String,
    attempts: i64,
    next_attempt_at: DateTime<Utc>,
    last_error: Option<String>,
    stripe_id: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

macro_rules! entry_columns {
    () => {
        "outbox_id, kind, job_id, driver_id, amount_cents, idempotency_key, state, \
         CAST(attempts AS BIGINT) AS attempts, next_attempt_at, last_error, stripe_id, \
         created_at, updated_at"
    };
}

impl TryFrom<EntryRow> for OutboxEntry {
    type Error = sqlx::Error;

    fn try_from(row: EntryRow) -> Result<Self, Self::Error> {
        let corrupt = |what: &str, value: &str| {
            sqlx::Error::Decode(format!("outbox.{what} = {value:?}").into())
        };
        Ok(OutboxEntry {
            id: row.outbox_id,
            kind: OutboxKind::parse(&row.kind).ok_or_else(|| corrupt("kind", &row.kind))?,
            job_id: row.job_id,
            driver_id: row.driver_id,
            amount_cents: row.amount_cents,
            idempotency_key: row.idempotency_key,
            state: OutboxState::parse(&row.state).ok_or_else(|| corrupt("state", &row.state))?,
            attempts: row.attempts,
            next_attempt_at: row.next_attempt_at,
            last_error: row.last_error,
            stripe_id: row.stripe_id,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// Rows, newest first, optionally in one state, after the keyset position `after`.
pub async fn list(
    db: &Db,
    state: Option<OutboxState>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: u32,
) -> Result<Vec<OutboxEntry>, sqlx::Error> {
    const SQL: &str = concat!(
        "SELECT ",
        entry_columns!(),
        " FROM outbox WHERE ($1 IS NULL OR state = $1) \
         AND ($2 IS NULL OR created_at < $2 OR (created_at = $2 AND outbox_id < $3)) \
         ORDER BY created_at DESC, outbox_id DESC LIMIT $4"
    );
    let (after_time, after_id) = after.unzip();
    let rows = on_pool!(db, pool => {
        sqlx::query_as::<_, EntryRow>(SQL)
            .bind(state.map(OutboxState::as_str))
            .bind(after_time)
            .bind(after_id)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
    })?;
    rows.into_iter().map(OutboxEntry::try_from).collect()
}

/// A job's rows, oldest first.
pub async fn for_job(db: &Db, job: JobId) -> Result<Vec<OutboxEntry>, sqlx::Error> {
    const SQL: &str = concat!(
        "SELECT ",
        entry_columns!(),
        " FROM outbox WHERE job_id = $1 ORDER BY created_at, outbox_id"
    );
    let rows = on_pool!(db, pool => {
        sqlx::query_as::<_, EntryRow>(SQL).bind(job.as_uuid()).fetch_all(pool).await
    })?;
    rows.into_iter().map(OutboxEntry::try_from).collect()
}

/// A dispatcher's "try again" for a failed row: due now, attempts counted afresh. A row Stripe
/// refused gets a new idempotency key (Stripe would repeat its refusal for the old one; nothing
/// was made under it); a row that ran out of attempts keeps its key, since one of them may have
/// succeeded unseen. `None` when there is no such failed row.
pub async fn retry(
    db: &Db,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<OutboxEntry>, sqlx::Error> {
    const SQL: &str = concat!(
        "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = $2, \
         locked_until = NULL, updated_at = $2, refused = FALSE, \
         idempotency_key = CASE WHEN refused THEN idempotency_key || $3 ELSE idempotency_key END \
         WHERE outbox_id = $1 AND state = 'failed' RETURNING ",
        entry_columns!()
    );
    let suffix = format!("_retry-{}", &Uuid::new_v4().simple().to_string()[..8]);
    let row = on_pool!(db, pool => {
        sqlx::query_as::<_, EntryRow>(SQL)
            .bind(id)
            .bind(now)
            .bind(&suffix)
            .fetch_optional(pool)
            .await
    })?;
    row.map(OutboxEntry::try_from).transpose()
}

/// A claimed row with what its Stripe call needs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DueEntry {
    pub outbox_id: Uuid,
    pub kind: String,
    pub job_id: Uuid,
    pub amount_cents: i64,
    pub idempotency_key: String,
    pub attempts: i64,
    /// Why the previous attempt failed, if one did.
    pub last_error: Option<String>,
    pub payment_intent_id: Option<String>,
    pub charge_id: Option<String>,
    /// The driver's Connect account, for transfers.
    pub account_id: Option<String>,
    pub payouts_enabled: Option<bool>,
}

impl DueEntry {
    pub fn kind(&self) -> Option<OutboxKind> {
        OutboxKind::parse(&self.kind)
    }
}

/// Claims up to `limit` due rows until `lease_until` and returns them.
pub async fn claim_due(
    db: &Db,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<DueEntry>, sqlx::Error> {
    macro_rules! claim {
        ($lock:literal) => {
            concat!(
                "UPDATE outbox SET locked_until = $2, attempts = attempts + 1, updated_at = $1 \
                 WHERE outbox_id IN (SELECT outbox_id FROM outbox WHERE state = 'pending' \
                 AND next_attempt_at <= $1 AND (locked_until IS NULL OR locked_until <= $1) \
                 ORDER BY next_attempt_at LIMIT $3",
                $lock,
                ") RETURNING outbox_id"
            )
        };
    }
    // PostgreSQL: rows another process is claiming right now are skipped, not waited for.
    // SQLite's write transaction already excludes other writers.
    let claim = match db {
        Db::Postgres(_) => claim!(" FOR UPDATE SKIP LOCKED"),
        Db::Sqlite(_) => claim!(""),
    };
    const DETAILS: &str = "SELECT o.outbox_id, o.kind, o.job_id, o.amount_cents, \
         o.idempotency_key, CAST(o.attempts AS BIGINT) AS attempts, o.last_error, \
         p.payment_intent_id, p.charge_id, c.account_id, c.payouts_enabled FROM outbox o \
         LEFT JOIN payments p ON p.job_id = o.job_id \
         LEFT JOIN connect_accounts c ON c.driver_id = o.driver_id WHERE o.outbox_id = $1";
    let claimed: Vec<Uuid> = in_write_transaction!(db, tx => {
        sqlx::query_scalar(claim)
            .bind(now)
            .bind(lease_until)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?
    });
    let mut due = Vec::with_capacity(claimed.len());
    for id in claimed {
        let entry = on_pool!(db, pool => {
            sqlx::query_as::<_, DueEntry>(DETAILS).bind(id).fetch_optional(pool).await
        })?;
        due.extend(entry);
    }
    Ok(due)
}

/// Done: Stripe made `stripe_id`. A sent refund adds to the payment's refunded total (at most
/// the amount paid; Stripe's own `charge.refunded` figure only ever raises it).
pub async fn mark_sent(
    db: &Db,
    id: Uuid,
    stripe_id: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    const SENT: &str = "UPDATE outbox SET state = 'sent', stripe_id = $2, last_error = NULL, \
         locked_until = NULL, updated_at = $3 WHERE outbox_id = $1 AND state = 'pending' \
         RETURNING job_id, kind, amount_cents";
    const REFUNDED: &str = "UPDATE payments SET refunded_cents = CASE \
         WHEN refunded_cents + $2 > amount_cents THEN amount_cents \
         ELSE refunded_cents + $2 END, updated_at = $3 WHERE job_id = $1";
    in_write_transaction!(db, tx => {
        let sent: Option<(Uuid, String, i64)> = sqlx::query_as(SENT)
            .bind(id)
            .bind(stripe_id)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some((job, kind, amount)) = sent
            && kind == OutboxKind::Refund.as_str()
        {
            sqlx::query(REFUNDED).bind(job).bind(amount).bind(now).execute(&mut *tx).await?;
        }
    });
    Ok(())
}

/// Not done this time: due again at `next_attempt_at`.
pub async fn mark_retry(
    db: &Db,
    id: Uuid,
    error: &str,
    next_attempt_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    const SQL: &str = "UPDATE outbox SET last_error = $2, next_attempt_at = $3, \
         locked_until = NULL, updated_at = $4 WHERE outbox_id = $1 AND state = 'pending'";
    on_pool!(db, pool => {
        sqlx::query(SQL).bind(id).bind(error).bind(next_attempt_at).bind(now).execute(pool).await.map(|_| ())
    })?;
    Ok(())
}

/// Given up (`refused`: by Stripe itself), or waiting for the driver's account (`state` =
/// failed / owed).
pub async fn mark(
    db: &Db,
    id: Uuid,
    state: OutboxState,
    error: &str,
    refused: bool,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    // `owed` only while the driver's account is still not payable: an `account.updated` that
    // committed since the worker read the account released nothing (the row was not owed yet),
    // so the row stays due instead.
    const SQL: &str = "UPDATE outbox SET state = CASE WHEN $2 = 'owed' AND EXISTS \
         (SELECT 1 FROM connect_accounts c WHERE c.driver_id = outbox.driver_id \
         AND c.payouts_enabled) THEN 'pending' ELSE $2 END, last_error = $3, refused = $5, \
         locked_until = NULL, updated_at = $4 WHERE outbox_id = $1 AND state = 'pending'";
    on_pool!(db, pool => {
        sqlx::query(SQL)
            .bind(id)
            .bind(state.as_str())
            .bind(error)
            .bind(now)
            .bind(refused)
            .execute(pool)
            .await
            .map(|_| ())
    })?;
    Ok(())
}
