//! The `notifications` table: messages written with the change that caused them (see
//! `crate::notifications`), delivered by the notifier.
//!
//! Claims work like the payments outbox: a lease (`locked_until`) keeps two notifiers off one
//! row, a row whose notifier died is taken again once its lease has passed, and every attempt
//! is counted when claimed. A row is claimed by channel, so a slow provider only ever holds rows
//! of its own channel.

use chrono::{DateTime, Utc};
use umuve_actors::ids::{JobId, UserId};
use umuve_actors::realtime::model::JobStatus;
use uuid::Uuid;

use super::{Db, in_write_transaction, on_pool};
use crate::notifications::{Channel, DeliveryState, Event, NotificationEntry, plan, queue_in};

/// A claimed row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Due {
    pub notification_id: Uuid,
    pub event: String,
    pub channel: String,
    pub user_id: Uuid,
    pub job_id: Uuid,
    pub offer_id: Option<Uuid>,
    /// The job's driver when the row was written.
    pub driver_id: Option<Uuid>,
    pub unless_connected: bool,
    /// This attempt included.
    pub attempts: i64,
    /// Push: device tokens an earlier attempt reached, space-separated.
    pub delivered_to: String,
    pub created_at: DateTime<Utc>,
}

macro_rules! due_columns {
    () => {
        "notification_id, event, channel, user_id, job_id, offer_id, driver_id, \
         unless_connected, CAST(attempts AS BIGINT) AS attempts, delivered_to, created_at"
    };
}

/// Claims up to `limit` due rows of `channel` until `lease_until`: offers first (they expire in
/// seconds), then oldest due first.
pub async fn claim_due(
    db: &Db,
    channel: Channel,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<Due>, sqlx::Error> {
    macro_rules! claim {
        ($lock:literal) => {
            concat!(
                "UPDATE notifications SET locked_until = $2, attempts = attempts + 1, \
                 updated_at = $1 WHERE notification_id IN (SELECT notification_id \
                 FROM notifications WHERE channel = $3 AND state = 'pending' \
                 AND next_attempt_at <= $1 AND (locked_until IS NULL OR locked_until <= $1) \
                 ORDER BY CASE WHEN event = 'offer' THEN 0 ELSE 1 END, next_attempt_at LIMIT $4",
                $lock,
                ") RETURNING ",
                due_columns!()
            )
        };
    }
    // PostgreSQL: rows another process is claiming right now are skipped, not waited for.
    // SQLite's write transaction already excludes other writers.
    let claim = match db {
        Db::Postgres(_) => claim!(" FOR UPDATE SKIP LOCKED"),
        Db::Sqlite(_) => claim!(""),
    };
    // Most polls find nothing: a read says so without taking SQLite's write lock.
    const ANY_DUE: &str = "SELECT COUNT(*) FROM notifications WHERE channel = $2 \
         AND state = 'pending' AND next_attempt_at <= $1 \
         AND (locked_until IS NULL OR locked_until <= $1)";
    let due: i64 = on_pool!(db, pool => {
        sqlx::query_scalar(ANY_DUE).bind(now).bind(channel.as_str()).fetch_one(pool).await
    })?;
    if due == 0 {
        return Ok(Vec::new());
    }
    Ok(in_write_transaction!(db, tx => {
        sqlx::query_as::<_, Due>(claim)
            .bind(now)
            .bind(lease_until)
            .bind(channel.as_str())
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?
    }))
}

/// What sending a claimed row needs to know, read for the whole claim in one query.
#[derive(Debug, Clone)]
pub struct SendContext {
    pub job: umuve_actors::realtime::model::Job,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub recipient_name: Option<String>,
    /// `false` when the recipient's account is gone.
    pub recipient_exists: bool,
    pub driver_name: Option<String>,
    /// The status of the row's offer, for offer pushes.
    pub offer_status: Option<String>,
}

#[derive(sqlx::FromRow)]
struct ContextRow {
    notification_id: Uuid,
    recipient_id: Option<Uuid>,
    phone: Option<String>,
    email: Option<String>,
    recipient_name: Option<String>,
    driver_name: Option<String>,
    offer_status: Option<String>,
    #[sqlx(flatten)]
    job: super::jobs::JobRow,
}

/// The sending context of every row claimed by `channel` until `lease_until` (one claim), by
/// row id. A row whose job is gone has none.
pub async fn contexts(
    db: &Db,
    channel: Channel,
    lease_until: DateTime<Utc>,
) -> Result<std::collections::HashMap<Uuid, SendContext>, sqlx::Error> {
    const SQL: &str = concat!(
        "SELECT n.notification_id, u.user_id AS recipient_id, u.phone, u.email, \
         u.name AS recipient_name, d.name AS driver_name, o.status AS offer_status, j.* \
         FROM notifications n \
         JOIN (SELECT ",
        super::jobs::columns!(),
        " FROM jobs) j ON j.job_id = n.job_id \
         LEFT JOIN users u ON u.user_id = n.user_id \
         LEFT JOIN users d ON d.user_id = j.driver_id \
         LEFT JOIN offers o ON o.offer_id = n.offer_id \
         WHERE n.channel = $1 AND n.locked_until = $2 AND n.state = 'pending'"
    );
    let rows = on_pool!(db, pool => {
        sqlx::query_as::<_, ContextRow>(SQL)
            .bind(channel.as_str())
            .bind(lease_until)
            .fetch_all(pool)
            .await
    })?;
    rows.into_iter()
        .map(|row| {
            Ok((
                row.notification_id,
                SendContext {
                    job: umuve_actors::realtime::model::Job::try_from(row.job)?,
                    phone: row.phone,
                    email: row.email,
                    recipient_name: row.recipient_name,
                    recipient_exists: row.recipient_id.is_some(),
                    driver_name: row.driver_name,
                    offer_status: row.offer_status,
                },
            ))
        })
        .collect()
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered by `provider`.
    Sent { provider: &'static str },
    /// Nothing to send: nobody reachable on this channel, or no longer relevant.
    Skipped(String),
    /// Not this time; due again at `next`. `delivered_to`: push tokens reached so far.
    Retry {
        error: String,
        next: DateTime<Utc>,
        delivered_to: String,
    },
    /// Refused by the provider, or out of attempts: a dead letter for a dispatcher to look at.
    Dead(String),
}

/// What became of one claim of a row: `(row id, the claim's attempt number, outcome)`.
pub type Recorded = (Uuid, i64, Outcome);

/// Records outcomes in one transaction, each only if its row is still pending under that
/// claim (a dispatcher's action, or a later claim after this one's lease ran out, wins). One
/// transaction for many: on SQLite every write transaction takes the one write lock.
pub async fn record(db: &Db, outcomes: &[Recorded], now: DateTime<Utc>) -> Result<(), sqlx::Error> {
    const FINAL: &str = "UPDATE notifications SET state = $2, provider = $3, last_error = $4, \
         locked_until = NULL, updated_at = $5 WHERE notification_id = $1 AND state = 'pending' \
         AND attempts = $6";
    const RETRY: &str = "UPDATE notifications SET last_error = $2, next_attempt_at = $3, \
         delivered_to = $4, locked_until = NULL, updated_at = $5 \
         WHERE notification_id = $1 AND state = 'pending' AND attempts = $6";
    in_write_transaction!(db, tx => {
        for (id, attempt, outcome) in outcomes {
            let (state, provider, note) = match outcome {
                Outcome::Sent { provider } => ("sent", Some(*provider), None),
                Outcome::Skipped(why) => ("skipped", None, Some(why.as_str())),
                Outcome::Dead(why) => ("dead", None, Some(why.as_str())),
                Outcome::Retry {
                    error,
                    next,
                    delivered_to,
                } => {
                    sqlx::query(RETRY)
                        .bind(id)
                        .bind(error)
                        .bind(next)
                        .bind(delivered_to)
                        .bind(now)
                        .bind(attempt)
                        .execute(&mut *tx)
                        .await?;
                    continue;
                }
            };
            sqlx::query(FINAL)
                .bind(id)
                .bind(state)
                .bind(provider)
                .bind(note)
                .bind(now)
                .bind(attempt)
                .execute(&mut *tx)
                .await?;
        }
    });
    Ok(())
}

/// Gives claimed rows back unsent (a notifier stopping before it sent them): due again at
/// once for the next notifier, the attempt not counted.
pub async fn release(db: &Db, claimed: &[(Uuid, i64)]) -> Result<(), sqlx::Error> {
    const SQL: &str = "UPDATE notifications SET locked_until = NULL, attempts = attempts - 1 \
         WHERE notification_id = $1 AND state = 'pending' AND attempts = $2";
    for (id, attempt) in claimed {
        on_pool!(db, pool => {
            sqlx::query(SQL).bind(id).bind(attempt).execute(pool).await.map(|_| ())
        })?;
    }
    Ok(())
}

/// Deletes sent and skipped rows last changed before `before` (dead letters stay until a
/// dispatcher deals with them); returns how many.
pub async fn purge_settled(db: &Db, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    const SQL: &str = "DELETE FROM notifications WHERE state IN ('sent', 'skipped') \
         AND updated_at < $1";
    on_pool!(db, pool => {
        sqlx::query(SQL).bind(before).execute(pool).await.map(|done| done.rows_affected())
    })
}

#[derive(sqlx::FromRow)]
struct EntryRow {
    notification_id: Uuid,
    event: String,
    channel: String,
    user_id: Uuid,
    job_id: Uuid,
    offer_id: Option<Uuid>,
    state: String,
    attempts: i64,
    next_attempt_at: DateTime<Utc>,
    last_error: Option<String>,
    provider: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

macro_rules! entry_columns {
    () => {
        "notification_id, event, channel, user_id, job_id, offer_id, state, \
         CAST(attempts AS BIGINT) AS attempts, next_attempt_at, last_error, provider, \
         created_at, updated_at"
    };
}

impl TryFrom<EntryRow> for NotificationEntry {
    type Error = sqlx::Error;

    fn try_from(row: EntryRow) -> Result<Self, Self::Error> {
        let corrupt = |what: &str, value: &str| {
            sqlx::Error::Decode(format!("notifications.{what} = {value:?}").into())
        };
        Ok(NotificationEntry {
            id: row.notification_id,
            event: Event::parse(&row.event).ok_or_else(|| corrupt("event", &row.event))?,
            channel: Channel::parse(&row.channel)
                .ok_or_else(|| corrupt("channel", &row.channel))?,
            user_id: row.user_id,
            job_id: row.job_id,
            offer_id: row.offer_id,
            state: DeliveryState::parse(&row.state).ok_or_else(|| corrupt("state", &row.state))?,
            attempts: row.attempts,
            next_attempt_at: row.next_attempt_at,
            last_error: row.last_error,
            provider: row.provider,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// Which rows a listing shows.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub state: Option<DeliveryState>,
    pub job: Option<Uuid>,
}

/// Rows, newest first, after the keyset position `after`.
pub async fn list(
    db: &Db,
    filter: &Filter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: u32,
) -> Result<Vec<NotificationEntry>, sqlx::Error> {
    const SQL: &str = concat!(
        "SELECT ",
        entry_columns!(),
        " FROM notifications WHERE ($1 IS NULL OR state = $1) AND ($2 IS NULL OR job_id = $2) \
         AND ($3 IS NULL OR created_at < $3 OR (created_at = $3 AND notification_id < $4)) \
         ORDER BY created_at DESC, notification_id DESC LIMIT $5"
    );
    let (after_time, after_id) = after.unzip();
    let rows = on_pool!(db, pool => {
        sqlx::query_as::<_, EntryRow>(SQL)
            .bind(filter.state.map(DeliveryState::as_str))
            .bind(filter.job)
            .bind(after_time)
            .bind(after_id)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
    })?;
    rows.into_iter().map(NotificationEntry::try_from).collect()
}

/// A dispatcher's "send it again" for a dead letter: due now, attempts counted afresh. `None`
/// when there is no such dead row.
pub async fn retry(
    db: &Db,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<NotificationEntry>, sqlx::Error> {
    const SQL: &str = concat!(
        "UPDATE notifications SET state = 'pending', attempts = 0, next_attempt_at = $2, \
         locked_until = NULL, updated_at = $2 WHERE notification_id = $1 AND state = 'dead' \
         RETURNING ",
        entry_columns!()
    );
    let row = on_pool!(db, pool => {
        sqlx::query_as::<_, EntryRow>(SQL).bind(id).bind(now).fetch_optional(pool).await
    })?;
    row.map(NotificationEntry::try_from).transpose()
}

/// The device tokens of `user` in `app` (`customer` or `driver`).
pub async fn device_tokens(db: &Db, user: Uuid, app: &str) -> Result<Vec<String>, sqlx::Error> {
    const SQL: &str =
        "SELECT token FROM device_tokens WHERE user_id = $1 AND app = $2 ORDER BY created_at";
    on_pool!(db, pool => sqlx::query_scalar(SQL).bind(user).bind(app).fetch_all(pool).await)
}

/// A pickup reminder: which one, and how long before the pickup it is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reminder {
    pub event: Event,
    pub lead: chrono::Duration,
}

pub const REMINDERS: [Reminder; 2] = [
    Reminder {
        event: Event::Reminder24h,
        lead: chrono::Duration::hours(24),
    },
    Reminder {
        event: Event::Reminder1h,
        lead: chrono::Duration::hours(1),
    },
];

/// Statuses in which a job still waits for its pickup.
const AWAITING_PICKUP: [JobStatus; 2] = [JobStatus::Dispatching, JobStatus::Assigned];

pub fn awaits_pickup(status: JobStatus) -> bool {
    AWAITING_PICKUP.contains(&status)
}

/// Writes the reminders that have come due: for each booked job whose pickup is less than a
/// reminder's lead away and that has no row of that reminder yet, its rows, in one
/// transaction per job. A reminder that would say nothing new is written as `skipped` instead,
/// so it is decided once: the job was booked after the reminder's moment (the confirmation said
/// it all), or a later reminder is already due (the engine was down meanwhile). Returns how many
/// rows were written as due.
pub async fn queue_due_reminders(db: &Db, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    const CANDIDATES: &str = "SELECT j.job_id, j.customer_id, j.scheduled_at, j.created_at \
         FROM jobs j WHERE j.scheduled_at IS NOT NULL AND j.scheduled_at > $1 \
         AND j.scheduled_at <= $2 AND j.status IN ($3, $4) AND NOT EXISTS \
         (SELECT 1 FROM notifications n WHERE n.job_id = j.job_id AND n.event = $5) \
         ORDER BY j.scheduled_at LIMIT 500";
    let mut queued = 0;
    for reminder in REMINDERS {
        let horizon = now + reminder.lead;
        let jobs: Vec<(Uuid, Uuid, DateTime<Utc>, DateTime<Utc>)> = on_pool!(db, pool => {
            sqlx::query_as(CANDIDATES)
                .bind(now)
                .bind(horizon)
                .bind(AWAITING_PICKUP[0].as_str())
                .bind(AWAITING_PICKUP[1].as_str())
                .bind(reminder.event.as_str())
                .fetch_all(pool)
                .await
        })?;
        for (job, customer, scheduled_at, created_at) in jobs {
            let moment = scheduled_at - reminder.lead;
            let superseded = REMINDERS
                .iter()
                .any(|other| other.lead < reminder.lead && scheduled_at - other.lead <= now);
            let skipped = if created_at > moment {
                Some("booked after this reminder's time; the confirmation covered it")
            } else if superseded {
                Some("a nearer reminder is already due")
            } else {
                None
            };
            let rows = plan(
                reminder.event,
                JobId::from_uuid(job),
                Some(UserId::from_uuid(customer)),
                None,
                None,
            );
            let written = in_write_transaction!(db, tx => {
                queue_in!(tx, rows, now, skipped: skipped)
            });
            if skipped.is_none() {
                queued += written;
            }
        }
    }
    Ok(queued)
}
