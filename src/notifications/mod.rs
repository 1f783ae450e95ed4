//! Who hears about what, and how. Every change of a job that someone must hear about writes its
//! notifications in the same transaction as the change ([`queue_in!`]): one row per recipient and
//! channel, as [`Event::deliveries`] plans them. The [`notifier::Notifier`] sends them with
//! retries, renders them from the job as it is when they go out, and decides what only its
//! runtime knows (is the driver's socket open?).
//!
//! WebSocket frames are not rows here: job rooms, the session registry and the matcher send
//! them as the change happens. Login codes and password-reset links are not rows either: they are
//! secrets (never stored in clear) and short-lived, so they go straight to the SMS and email
//! senders.

pub mod notifier;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use umuve_actors::ids::{JobId, OfferId, UserId};
use umuve_actors::realtime::model::{Job, JobStatus};
use utoipa::ToSchema;
use uuid::Uuid;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// The job is booked: paid, or created when payments are off.
    BookingConfirmed,
    /// The customer's payment succeeded.
    PaymentReceipt,
    /// A driver is offered the job.
    Offer,
    /// A driver has the job (accepted an offer, or a dispatcher assigned it).
    JobAssigned,
    DriverEnRoute,
    DriverArrived,
    JobCompleted,
    JobCancelled,
    /// 24 hours before a scheduled pickup.
    #[serde(rename = "reminder_24h")]
    Reminder24h,
    /// 1 hour before a scheduled pickup.
    #[serde(rename = "reminder_1h")]
    Reminder1h,
}

/// How a message travels. (WebSocket frames are sent by the realtime actors, not from here.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// APNs, to every device of the recipient's app.
    Push,
    Sms,
    Email,
}

/// Whom, relative to the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    Customer,
    /// The job's driver (for an offer: the offered driver).
    Driver,
}

/// One planned message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub audience: Audience,
    pub channel: Channel,
    /// Only when the recipient has no open socket when it is sent: the socket carried it.
    pub unless_connected: bool,
}

const fn always(audience: Audience, channel: Channel) -> Delivery {
    Delivery {
        audience,
        channel,
        unless_connected: false,
    }
}

const fn without_socket(audience: Audience, channel: Channel) -> Delivery {
    Delivery {
        audience,
        channel,
        unless_connected: true,
    }
}

use Audience::{Customer, Driver};
use Channel::{Email, Push, Sms};

impl Event {
    pub const ALL: [Event; 10] = [
        Event::BookingConfirmed,
        Event::PaymentReceipt,
        Event::Offer,
        Event::JobAssigned,
        Event::DriverEnRoute,
        Event::DriverArrived,
        Event::JobCompleted,
        Event::JobCancelled,
        Event::Reminder24h,
        Event::Reminder1h,
    ];

    /// Who is told on which channel (besides the WebSocket frames of the realtime actors).
    pub fn deliveries(self) -> &'static [Delivery] {
        // Inline consts: the tables are built at compile time and live for the whole program.
        match self {
            Event::BookingConfirmed => const { &[always(Customer, Sms), always(Customer, Email)] },
            Event::PaymentReceipt => const { &[always(Customer, Email)] },
            Event::Offer => const { &[without_socket(Driver, Push)] },
            Event::JobAssigned => {
                const {
                    &[
                        always(Customer, Push),
                        always(Customer, Sms),
                        always(Customer, Email),
                        without_socket(Driver, Push),
                    ]
                }
            }
            Event::DriverEnRoute => const { &[always(Customer, Push), always(Customer, Sms)] },
            Event::DriverArrived | Event::JobCompleted => const { &[always(Customer, Push)] },
            Event::JobCancelled => {
                const {
                    &[
                        always(Customer, Push),
                        always(Customer, Sms),
                        without_socket(Driver, Push),
                    ]
                }
            }
            Event::Reminder24h | Event::Reminder1h => {
                const { &[always(Customer, Push), always(Customer, Email)] }
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Event::BookingConfirmed => "booking_confirmed",
            Event::PaymentReceipt => "payment_receipt",
            Event::Offer => "offer",
            Event::JobAssigned => "job_assigned",
            Event::DriverEnRoute => "driver_en_route",
            Event::DriverArrived => "driver_arrived",
            Event::JobCompleted => "job_completed",
            Event::JobCancelled => "job_cancelled",
            Event::Reminder24h => "reminder_24h",
            Event::Reminder1h => "reminder_1h",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|event| event.as_str() == raw)
    }

    /// The notifications a job's move from `from` to `to` brings (the payment webhook adds the
    /// receipt itself).
    pub fn of_change(from: JobStatus, to: JobStatus) -> &'static [Event] {
        use JobStatus as S;
        let unpaid = matches!(from, S::PendingPayment | S::PaymentFailed);
        match to {
            // A dispatcher starting an unpaid booking by hand books it.
            S::Dispatching if unpaid => &[Event::BookingConfirmed],
            S::Assigned => &[Event::JobAssigned],
            S::EnRoute => &[Event::DriverEnRoute],
            S::Arrived => &[Event::DriverArrived],
            S::Completed => &[Event::JobCompleted],
            // A booking never confirmed is dropped without a word.
            S::Cancelled if unpaid => &[],
            S::Cancelled => &[Event::JobCancelled],
            S::Dispatching | S::PendingPayment | S::InProgress | S::PaymentFailed => &[],
        }
    }

    /// Whether a message of this event about `job`, written when `driver` had it, still says
    /// something true: a message sent late (a retry) after the job moved on, or to another
    /// driver, is dropped instead of announcing the past.
    pub fn still_relevant(self, job: &Job, driver: Option<UserId>) -> bool {
        use JobStatus as S;
        let same_driver = job.driver_id.map(UserId::from) == driver;
        match self {
            Event::BookingConfirmed => job.status != S::Cancelled,
            Event::PaymentReceipt | Event::JobCancelled | Event::JobCompleted => true,
            // Offers and reminders are checked against the offer and the pickup.
            Event::Offer | Event::Reminder24h | Event::Reminder1h => true,
            Event::JobAssigned => same_driver && matches!(job.status, S::Assigned | S::EnRoute),
            Event::DriverEnRoute => same_driver && job.status == S::EnRoute,
            Event::DriverArrived => same_driver && matches!(job.status, S::Arrived | S::InProgress),
        }
    }
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Push, Channel::Sms, Channel::Email];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Push => "push",
            Channel::Sms => "sms",
            Channel::Email => "email",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|channel| channel.as_str() == raw)
    }
}

/// A notification row about to be written.
#[derive(Debug, Clone)]
pub struct NewNotification {
    pub event: Event,
    pub channel: Channel,
    pub user: Uuid,
    pub job: JobId,
    pub offer: Option<OfferId>,
    /// The job's driver when it was written.
    pub driver: Option<Uuid>,
    pub unless_connected: bool,
    pub dedupe_key: String,
}

/// The rows `event` about `job` plans: one per delivery whose recipient is given (a job without
/// a driver tells no driver). `offer` names the offer of an [`Event::Offer`].
pub fn plan(
    event: Event,
    job: JobId,
    customer: Option<UserId>,
    driver: Option<UserId>,
    offer: Option<OfferId>,
) -> Vec<NewNotification> {
    event
        .deliveries()
        .iter()
        .filter_map(|delivery| {
            let user = match delivery.audience {
                Audience::Customer => customer?,
                Audience::Driver => driver?,
            };
            // The offer is part of the key: a job offered to the same driver twice (after a
            // restart of dispatching) is two offers. So is the driver: a job given back and
            // taken by another driver is announced again.
            let subject = match (offer, driver) {
                (Some(offer), _) => format!("offer_{}", offer.as_uuid()),
                (None, Some(driver)) => {
                    format!("job_{}_driver_{}", job.as_uuid(), driver.as_uuid())
                }
                (None, None) => format!("job_{}", job.as_uuid()),
            };
            Some(NewNotification {
                event,
                channel: delivery.channel,
                user: user.as_uuid(),
                job,
                offer,
                driver: driver.map(|d| d.as_uuid()),
                unless_connected: delivery.unless_connected,
                dedupe_key: format!(
                    "{}:{subject}:{}:{}",
                    event.as_str(),
                    delivery.channel.as_str(),
                    user.as_uuid()
                ),
            })
        })
        .collect()
}

/// The insert of one planned row; a row with the same key already there is left alone.
pub(crate) const INSERT_NOTIFICATION: &str = "INSERT INTO notifications \
     (notification_id, event, channel, user_id, job_id, offer_id, driver_id, unless_connected, \
      dedupe_key, state, attempts, next_attempt_at, last_error, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, $11, $12, $11, $11) \
     ON CONFLICT DO NOTHING";

/// Writes the notifications `$rows` (from [`plan`]) inside the transaction `$tx`, due at `$now`;
/// with `skipped: why`, written as already decided not to send. Evaluates to the number of rows
/// written (those whose key was new).
macro_rules! queue_in {
    ($tx:ident, $rows:expr, $now:expr) => {
        $crate::notifications::queue_in!($tx, $rows, $now, skipped: None::<&str>)
    };
    ($tx:ident, $rows:expr, $now:expr, skipped: $why:expr) => {{
        let now: chrono::DateTime<chrono::Utc> = $now;
        let why: Option<&str> = $why;
        let mut written: u64 = 0;
        for row in $rows {
            let row: $crate::notifications::NewNotification = row;
            written += sqlx::query($crate::notifications::INSERT_NOTIFICATION)
                .bind(uuid::Uuid::new_v4())
                .bind(row.event.as_str())
                .bind(row.channel.as_str())
                .bind(row.user)
                .bind(row.job.as_uuid())
                .bind(row.offer.map(|offer| offer.as_uuid()))
                .bind(row.driver)
                .bind(row.unless_connected)
                .bind(&row.dedupe_key)
                .bind(if why.is_some() { "skipped" } else { "pending" })
                .bind(now)
                .bind(why)
                .execute(&mut *$tx)
                .await?
                .rows_affected();
        }
        written
    }};
}
pub(crate) use queue_in;

/// Where a notification stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// To send, at `next_attempt_at`.
    Pending,
    /// Delivered to the provider.
    Sent,
    /// Nothing to send: nobody reachable on this channel, or no longer relevant (`last_error`
    /// says why).
    Skipped,
    /// Refused, or out of attempts: a dead letter a dispatcher may send again.
    Dead,
}

impl DeliveryState {
    pub const ALL: [DeliveryState; 4] = [
        DeliveryState::Pending,
        DeliveryState::Sent,
        DeliveryState::Skipped,
        DeliveryState::Dead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Sent => "sent",
            DeliveryState::Skipped => "skipped",
            DeliveryState::Dead => "dead",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == raw)
    }
}

/// A row as dispatchers see it (`GET /api/admin/notifications`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NotificationEntry {
    pub id: Uuid,
    pub event: Event,
    pub channel: Channel,
    pub user_id: Uuid,
    pub job_id: Uuid,
    pub offer_id: Option<Uuid>,
    pub state: DeliveryState,
    pub attempts: i64,
    pub next_attempt_at: DateTime<Utc>,
    /// Why the last attempt failed, or why it was skipped.
    pub last_error: Option<String>,
    /// Who delivered it: `twilio`, `resend`, `sendgrid`, `apns`, `log`.
    pub provider: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for event in Event::ALL {
            assert_eq!(Event::parse(event.as_str()), Some(event));
            // The API shows the names the table stores.
            assert_eq!(serde_json::to_value(event).unwrap(), event.as_str());
        }
        for channel in Channel::ALL {
            assert_eq!(Channel::parse(channel.as_str()), Some(channel));
        }
    }

    #[test]
    fn changes_bring_their_notifications() {
        use JobStatus as S;
        assert_eq!(
            Event::of_change(S::PendingPayment, S::Dispatching),
            [Event::BookingConfirmed]
        );
        assert!(Event::of_change(S::Assigned, S::Dispatching).is_empty());
        // An unconfirmed booking dropped: no word; a booked job cancelled: told.
        assert!(Event::of_change(S::PendingPayment, S::Cancelled).is_empty());
        assert!(Event::of_change(S::PaymentFailed, S::Cancelled).is_empty());
        assert_eq!(
            Event::of_change(S::Dispatching, S::Cancelled),
            [Event::JobCancelled]
        );
        assert_eq!(
            Event::of_change(S::InProgress, S::Completed),
            [Event::JobCompleted]
        );
    }

    #[test]
    fn a_job_without_a_driver_tells_no_driver() {
        let job = JobId::from_uuid(Uuid::new_v4());
        let customer = UserId::from_uuid(Uuid::new_v4());
        let rows = plan(Event::JobCancelled, job, Some(customer), None, None);
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|row| row.user == customer.as_uuid()));
        let driver = UserId::from_uuid(Uuid::new_v4());
        let rows = plan(Event::JobCancelled, job, Some(customer), Some(driver), None);
        let to_driver: Vec<_> = rows.iter().filter(|r| r.user == driver.as_uuid()).collect();
        assert_eq!(to_driver.len(), 1);
        assert_eq!(to_driver[0].channel, Channel::Push);
        assert!(to_driver[0].unless_connected);
    }

    #[test]
    fn keys_differ_per_offer_channel_and_recipient() {
        let job = JobId::from_uuid(Uuid::new_v4());
        let customer = UserId::from_uuid(Uuid::new_v4());
        let driver = UserId::from_uuid(Uuid::new_v4());
        let first = OfferId::from_uuid(Uuid::new_v4());
        let second = OfferId::from_uuid(Uuid::new_v4());
        let a = plan(Event::Offer, job, None, Some(driver), Some(first));
        let b = plan(Event::Offer, job, None, Some(driver), Some(second));
        assert_eq!(a.len(), 1);
        assert_ne!(a[0].dedupe_key, b[0].dedupe_key);
        let assigned = plan(Event::JobAssigned, job, Some(customer), Some(driver), None);
        let mut keys: Vec<_> = assigned.iter().map(|r| r.dedupe_key.clone()).collect();
        keys.dedup();
        assert_eq!(keys.len(), 4);
    }
}
