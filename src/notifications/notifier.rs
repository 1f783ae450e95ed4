//! The `Notifier` actor: sends the notifications written to the `notifications` table.
//!
//! It claims due rows channel by channel, at most `NOTIFY_CONCURRENCY` in flight per channel,
//! and sends each as its own future through the channel's actor (`Apns`, `SmsSender`,
//! `EmailSender`); the handlers only start work, so a provider that takes seconds to answer
//! holds one slot of its own channel and nothing else. WebSocket frames never pass through here.
//!
//! At sending time it decides what only it can know: whether the driver's socket is open (an
//! offer the socket carried is not pushed), whether an offer is still open, whether the job
//! still waits for a reminded pickup; and it renders the words from the job as it is now.
//! Outcomes: sent; skipped (nobody reachable, no longer relevant); a failure retried with a
//! doubling wait; a dead letter after `NOTIFY_MAX_ATTEMPTS` tries or a refusal.
//!
//! It also writes pickup reminders as they come due (see
//! `storage::notifications::queue_due_reminders`): each poll, on the engine's clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::join_all;
use tokio::sync::{Notify, oneshot};
use umuve_actors::clock::{SharedClock, after};
use umuve_actors::ids::UserId;
use umuve_actors::outbound::{
    Apns, DeliverEmail, DeliverSms, DeliveryError, Email, EmailKind, EmailSender, Push, PushApp,
    PushError, SendPush, Sms, SmsKind, SmsSender, doubling_wait,
};
use umuve_actors::realtime::metrics::METRICS;
use umuve_actors::realtime::registry::{IsConnected, SessionRegistry};

use super::{Channel, Event};
use crate::config::NotifyConfig;
use crate::storage::Db;
use crate::storage::notifications::{self as store, Due, Outcome, SendContext};
use crate::templates::job_messages::{Facts, Message, render};

/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30 * 60);
/// How long a claimed row stays with its notifier; longer than any provider call may take.
const LEASE: Duration = Duration::from_secs(120);
/// Wake-ups closer together than this are served by one claim: at a high rate of changes the
/// notifier claims rows in batches instead of one transaction per change.
const WAKE_BATCH: Duration = Duration::from_millis(50);
/// Outcomes are written this many at a time, or after [`RECORD_WAIT`]: one write transaction
/// for many sends, so notifications do not queue dispatch's writes behind SQLite's lock.
const RECORD_BATCH: usize = 64;
const RECORD_WAIT: Duration = Duration::from_millis(20);
/// A notification sent this long after its change is checked against the job first.
const LATE_AFTER: chrono::Duration = chrono::Duration::minutes(1);

/// What the notifier sends through.
#[derive(Clone)]
pub struct Senders {
    pub registry: Addr<SessionRegistry>,
    pub apns: Addr<Apns>,
    /// The push transport's name (`apns`, or `log` without credentials), for the record.
    pub push_provider: &'static str,
    /// `None` in production without Twilio: SMS rows are skipped as unsendable.
    pub sms: Option<Addr<SmsSender>>,
    pub email: Addr<EmailSender>,
}

/// How many database operations the notifier runs at once. The pool is shared with requests
/// and dispatch; with up to NOTIFY_CONCURRENCY sends per channel finishing together, the
/// notifier would otherwise take every connection and make dispatch queue for one.
const DB_SLOTS: usize = 2;

/// Everything one send needs, cheap to clone into its future.
#[derive(Clone)]
struct Deps {
    db: Db,
    /// At most [`DB_SLOTS`] of the notifier's queries at a time.
    db_slots: Arc<tokio::sync::Semaphore>,
    clock: SharedClock,
    senders: Senders,
    settings: NotifyConfig,
}

/// Where one channel stands.
#[derive(Debug, Default)]
struct Lane {
    /// Sends (or give-backs) running.
    in_flight: u32,
    /// A claim is running; another pump waits for it.
    claiming: bool,
    /// Asked to pump while the claim ran: pump again after it.
    again: bool,
    /// The last claim found less than it had room for: nothing more is due until a wake-up or
    /// a poll, so finished sends do not claim again.
    idle: bool,
}

pub struct Notifier {
    deps: Deps,
    /// Rung by whoever writes notifications, so they go out without waiting for a poll.
    wake: Arc<Notify>,
    lanes: HashMap<Channel, Lane>,
    scanning_reminders: bool,
    /// Outcomes of finished sends, written together (see [`RECORD_BATCH`]).
    outcomes: Vec<store::Recorded>,
    recording: bool,
    record_scheduled: bool,
    /// When a wake-up last pumped, and whether a batched pump is already scheduled.
    last_wake: Option<std::time::Instant>,
    wake_scheduled: bool,
    draining: bool,
    drained: Vec<oneshot::Sender<()>>,
}

impl Notifier {
    pub fn new(
        db: Db,
        clock: SharedClock,
        senders: Senders,
        settings: NotifyConfig,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            deps: Deps {
                db,
                db_slots: Arc::new(tokio::sync::Semaphore::new(DB_SLOTS)),
                clock,
                senders,
                settings,
            },
            wake,
            lanes: HashMap::new(),
            scanning_reminders: false,
            outcomes: Vec::new(),
            recording: false,
            record_scheduled: false,
            last_wake: None,
            wake_scheduled: false,
            draining: false,
            drained: Vec::new(),
        }
    }

    fn lane(&mut self, channel: Channel) -> &mut Lane {
        self.lanes.entry(channel).or_default()
    }

    /// Something may be due on any channel (a wake-up, a poll).
    fn pump_all(&mut self, ctx: &mut Context<Self>) {
        for channel in Channel::ALL {
            self.lane(channel).idle = false;
            self.pump(channel, ctx);
        }
    }

    /// Claims what `channel` has room for and starts sending it.
    fn pump(&mut self, channel: Channel, ctx: &mut Context<Self>) {
        let concurrency = self.deps.settings.concurrency;
        let draining = self.draining;
        let lane = self.lane(channel);
        if draining || lane.idle {
            return;
        }
        if lane.claiming {
            lane.again = true;
            return;
        }
        let room = concurrency.saturating_sub(lane.in_flight);
        if room == 0 {
            return;
        }
        lane.claiming = true;
        let deps = self.deps.clone();
        let claim = off_actor(async move {
            let now = deps.clock.now();
            let lease_until = now + chrono::Duration::from_std(LEASE).expect("a short lease");
            let _slot = deps.db_slots.acquire().await.expect("never closed");
            let due = store::claim_due(&deps.db, channel, now, lease_until, room).await?;
            // What the sends need, for the whole claim in one read.
            let contexts = if due.is_empty() {
                HashMap::new()
            } else {
                store::contexts(&deps.db, channel, lease_until).await?
            };
            Ok::<_, sqlx::Error>((due, contexts))
        });
        ctx.spawn(claim.into_actor(self).map(move |claimed, this, ctx| {
            this.lane(channel).claiming = false;
            let (due, mut contexts) = match claimed
                .and_then(|claimed| claimed.map_err(|e| e.to_string()))
            {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::warn!(%error, channel = channel.as_str(), "could not read due notifications");
                    this.check_drained();
                    return;
                }
            };
            if this.draining {
                this.give_back(channel, due, ctx);
                return;
            }
            let full = due.len() as u32 == room;
            for row in due {
                let context = contexts.remove(&row.notification_id);
                this.start_send(channel, row, context, ctx);
            }
            let lane = this.lane(channel);
            // Asked again meanwhile: something new may be due.
            lane.idle = !full && !std::mem::take(&mut lane.again);
            this.pump(channel, ctx);
        }));
    }

    /// Rows claimed while stopping go back unsent, for the next notifier.
    fn give_back(&mut self, channel: Channel, due: Vec<Due>, ctx: &mut Context<Self>) {
        if due.is_empty() {
            self.check_drained();
            return;
        }
        self.lane(channel).in_flight += 1;
        let deps = self.deps.clone();
        let claimed: Vec<_> = due
            .iter()
            .map(|row| (row.notification_id, row.attempts))
            .collect();
        let release = off_actor(async move {
            let _slot = deps.db_slots.acquire().await.expect("never closed");
            store::release(&deps.db, &claimed).await
        });
        ctx.spawn(release.into_actor(self).map(move |released, this, _| {
            if !matches!(released, Ok(Ok(()))) {
                tracing::warn!("could not give back claimed notifications; their lease will");
            }
            this.finished(channel);
        }));
    }

    /// A send (or a give-back) of `channel` ended.
    fn finished(&mut self, channel: Channel) {
        let lane = self.lane(channel);
        lane.in_flight = lane.in_flight.saturating_sub(1);
        self.check_drained();
    }

    /// Writes the outcomes collected so far when enough have gathered, or shortly.
    fn record_soon(&mut self, ctx: &mut Context<Self>) {
        if self.outcomes.len() >= RECORD_BATCH || self.draining {
            self.record_now(ctx);
        } else if !self.record_scheduled && !self.outcomes.is_empty() {
            self.record_scheduled = true;
            ctx.run_later(RECORD_WAIT, |this, ctx| {
                this.record_scheduled = false;
                this.record_now(ctx);
            });
        }
    }

    fn record_now(&mut self, ctx: &mut Context<Self>) {
        if self.recording || self.outcomes.is_empty() {
            return;
        }
        self.recording = true;
        let outcomes = std::mem::take(&mut self.outcomes);
        let deps = self.deps.clone();
        let write = off_actor(async move {
            let _slot = deps.db_slots.acquire().await.expect("never closed");
            store::record(&deps.db, &outcomes, deps.clock.now()).await
        });
        ctx.spawn(write.into_actor(self).map(|written, this, ctx| {
            this.recording = false;
            if !matches!(written, Ok(Ok(()))) {
                // Their leases pass and the rows are tried again.
                tracing::warn!("could not record notification outcomes; they will be retried");
            }
            this.record_soon(ctx);
            this.check_drained();
        }));
    }

    /// While stopping: answers the waiting `Drain` once nothing is claimed, being sent or
    /// waiting to be recorded.
    fn check_drained(&mut self) {
        let busy = self
            .lanes
            .values()
            .any(|lane| lane.claiming || lane.in_flight > 0);
        let recording = self.recording || !self.outcomes.is_empty();
        if self.draining && !busy && !recording {
            for done in self.drained.drain(..) {
                let _ = done.send(());
            }
        }
    }

    fn start_send(
        &mut self,
        channel: Channel,
        row: Due,
        context: Option<SendContext>,
        ctx: &mut Context<Self>,
    ) {
        self.lane(channel).in_flight += 1;
        let deps = self.deps.clone();
        let send = off_actor(async move {
            let id = row.notification_id;
            let outcome = attempt(&deps, &row, context).await;
            let counted = match &outcome {
                Outcome::Sent { .. } => "sent",
                Outcome::Skipped(_) => "skipped",
                Outcome::Retry { .. } => "retry",
                Outcome::Dead(_) => "dead",
            };
            METRICS
                .notifications
                .with_label_values(&[channel.as_str(), counted])
                .inc();
            match &outcome {
                Outcome::Sent { provider } => {
                    tracing::info!(notification = %id, event = %row.event, channel = channel.as_str(), provider, "notification sent")
                }
                Outcome::Skipped(why) => {
                    tracing::info!(notification = %id, event = %row.event, channel = channel.as_str(), why = %why, "notification skipped")
                }
                Outcome::Retry { error, next, .. } => {
                    tracing::warn!(notification = %id, event = %row.event, channel = channel.as_str(), attempts = row.attempts, %error, %next, "notification will be retried")
                }
                Outcome::Dead(error) => {
                    tracing::error!(notification = %id, event = %row.event, channel = channel.as_str(), attempts = row.attempts, %error, "notification dead-lettered")
                }
            }
            (id, row.attempts, outcome)
        });
        ctx.spawn(send.into_actor(self).map(move |sent, this, ctx| {
            match sent {
                Ok(outcome) => this.outcomes.push(outcome),
                // Not recorded: the lease passes and the row is tried again.
                Err(error) => tracing::warn!(%error, "a notification's send ended early"),
            }
            this.finished(channel);
            this.record_soon(ctx);
            this.pump(channel, ctx);
        }));
    }

    fn scan_reminders(&mut self, ctx: &mut Context<Self>) {
        if self.scanning_reminders || self.draining {
            return;
        }
        self.scanning_reminders = true;
        let deps = self.deps.clone();
        let scan = off_actor(async move {
            let _slot = deps.db_slots.acquire().await.expect("never closed");
            store::queue_due_reminders(&deps.db, deps.clock.now())
                .await
                .map_err(|e| e.to_string())
        });
        ctx.spawn(scan.into_actor(self).map(|queued, this, ctx| {
            this.scanning_reminders = false;
            match queued.and_then(|queued| queued) {
                Ok(0) => {}
                Ok(count) => {
                    tracing::info!(count, "pickup reminders queued");
                    this.pump_all(ctx);
                }
                Err(error) => tracing::warn!(%error, "could not queue pickup reminders"),
            }
        }));
    }
}

impl Actor for Notifier {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let wake = self.wake.clone();
        ctx.add_stream(futures_util::stream::unfold(wake, |wake| async move {
            wake.notified().await;
            Some(((), wake))
        }));
        self.pump_all(ctx);
        self.scan_reminders(ctx);
        ctx.run_interval(self.deps.settings.poll_every, |this, ctx| {
            this.pump_all(ctx);
            this.scan_reminders(ctx);
        });
    }
}

impl StreamHandler<()> for Notifier {
    fn handle(&mut self, (): (), ctx: &mut Self::Context) {
        if self.wake_scheduled {
            return;
        }
        let since = self.last_wake.map(|at| at.elapsed());
        match since {
            Some(since) if since < WAKE_BATCH => {
                self.wake_scheduled = true;
                ctx.run_later(WAKE_BATCH - since, |this, ctx| {
                    this.wake_scheduled = false;
                    this.last_wake = Some(std::time::Instant::now());
                    this.pump_all(ctx);
                });
            }
            _ => {
                self.last_wake = Some(std::time::Instant::now());
                self.pump_all(ctx);
            }
        }
    }

    fn finished(&mut self, _: &mut Self::Context) {}
}

/// Stop claiming and answer once the sends in flight have ended (shutdown); rows claimed in
/// the meantime are given back unsent. Rows not yet claimed stay for the next engine; a send
/// cut short by the process ending is retried once its lease passes.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

impl Handler<Drain> for Notifier {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Drain, ctx: &mut Self::Context) -> Self::Result {
        self.draining = true;
        let (done, wait) = oneshot::channel();
        self.drained.push(done);
        self.record_now(ctx);
        self.check_drained();
        Box::pin(async move {
            let _ = wait.await;
        })
    }
}

/// Runs `work` as a task of the thread's runtime and waits for it. Database work must not live
/// in the actor's own futures: when the thread stops, those are dropped after its runtime is
/// gone, and a pooled connection dropped then panics; a task is dropped while the runtime
/// shuts down.
async fn off_actor<T: Send + 'static>(
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> Result<T, String> {
    tokio::spawn(work)
        .await
        .map_err(|e| format!("the task ended early: {e}"))
}

/// The notification's id with a digest of its words.
fn idempotency_key(id: uuid::Uuid, parts: [&str; 3]) -> String {
    use sha2::{Digest, Sha256};
    let mut digest = Sha256::new();
    for part in parts {
        digest.update(part.as_bytes());
        digest.update([0u8]);
    }
    let words: String = digest
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{id}-{words}")
}

/// The wait before attempt `attempts + 1`.
fn backoff(settings: NotifyConfig, attempts: i64) -> Duration {
    let failed = u32::try_from(attempts).unwrap_or(u32::MAX);
    doubling_wait(settings.retry_base, failed, MAX_BACKOFF)
}

/// A failed attempt: retried while attempts are left, otherwise a dead letter.
fn failed(deps: &Deps, row: &Due, error: String, delivered_to: String) -> Outcome {
    if row.attempts >= i64::from(deps.settings.max_attempts) {
        Outcome::Dead(format!("{error} (after {} attempts)", row.attempts))
    } else {
        Outcome::Retry {
            error,
            next: after(deps.clock.now(), backoff(deps.settings, row.attempts)),
            delivered_to,
        }
    }
}

/// One attempt at one row.
async fn attempt(deps: &Deps, row: &Due, context: Option<SendContext>) -> Outcome {
    match prepare_and_send(deps, row, context).await {
        Ok(outcome) => outcome,
        // The database failed us: try again later like any temporary failure.
        Err(error) => failed(
            deps,
            row,
            format!("database: {error}"),
            row.delivered_to.clone(),
        ),
    }
}

async fn prepare_and_send(
    deps: &Deps,
    row: &Due,
    context: Option<SendContext>,
) -> Result<Outcome, sqlx::Error> {
    let skipped = |why: &str| Ok(Outcome::Skipped(why.to_owned()));
    let (Some(event), Some(channel)) = (Event::parse(&row.event), Channel::parse(&row.channel))
    else {
        return Ok(Outcome::Dead(format!(
            "unknown event or channel {}/{}",
            row.event, row.channel
        )));
    };
    let Some(context) = context else {
        return skipped("the job is gone");
    };
    let job = &context.job;
    // A first attempt goes out right after its change and says what happened, even if the job
    // moved again in the same second; a late one (a retry, or long after its change) must still
    // be true.
    let late = row.attempts > 1 || deps.clock.now() - row.created_at > LATE_AFTER;
    if late && !event.still_relevant(job, row.driver_id.map(UserId::from_uuid)) {
        return skipped("the job has moved on since");
    }
    let user = UserId::from_uuid(row.user_id);
    if row.unless_connected
        && deps
            .senders
            .registry
            .send(IsConnected(user))
            .await
            .unwrap_or(false)
    {
        return skipped("the recipient's socket carried it");
    }
    if row.offer_id.is_some() && context.offer_status.as_deref() != Some("open") {
        return skipped("the offer closed before it could be pushed");
    }
    if matches!(event, Event::Reminder24h | Event::Reminder1h) && !store::awaits_pickup(job.status)
    {
        return skipped("the job no longer waits for its pickup");
    }
    if !context.recipient_exists {
        return skipped("the recipient's account is gone");
    }
    let to_driver = job.customer_id != user;
    let facts = Facts {
        job,
        recipient_name: context.recipient_name.as_deref(),
        driver_name: context.driver_name.as_deref(),
        to_driver,
    };
    let Some(message) = render(event, channel, &facts) else {
        return Ok(Outcome::Dead(format!(
            "no words for {} by {}",
            event.as_str(),
            channel.as_str()
        )));
    };
    Ok(match message {
        Message::Sms(body) => {
            let Some(phone) = context.phone.clone() else {
                return skipped("the recipient has no phone number");
            };
            let Some(sms) = &deps.senders.sms else {
                return skipped("no SMS provider is configured");
            };
            let sent = sms
                .send(DeliverSms(Sms {
                    to: phone,
                    body,
                    kind: SmsKind::Notification,
                }))
                .await;
            delivery_outcome(deps, row, sent)
        }
        Message::Email {
            subject,
            text,
            html,
        } => {
            let Some(address) = context.email.clone() else {
                return skipped("the recipient has no email address");
            };
            // The same words on a repeated attempt carry the same key (Resend sends them once);
            // words that changed in between (the job moved) are a new message.
            let key = idempotency_key(row.notification_id, [&subject, &text, &html]);
            let sent = deps
                .senders
                .email
                .send(DeliverEmail(Email {
                    to: address,
                    subject,
                    text,
                    html,
                    kind: EmailKind::Notification,
                    idempotency_key: Some(key),
                }))
                .await;
            delivery_outcome(deps, row, sent)
        }
        Message::Push { title, body, badge } => {
            let app = if to_driver {
                PushApp::Driver
            } else {
                PushApp::Customer
            };
            let app_name = if to_driver { "driver" } else { "customer" };
            let tokens = {
                let _slot = deps.db_slots.acquire().await.expect("never closed");
                store::device_tokens(&deps.db, row.user_id, app_name).await?
            };
            let push = Push {
                token: String::new(),
                app,
                title,
                body,
                badge,
                sound: Some("default".into()),
                job_id: Some(job.id.to_string()),
                offer_id: row.offer_id.map(|o| o.to_string()),
            };
            push_to_devices(deps, row, tokens, push).await
        }
    })
}

fn delivery_outcome(
    deps: &Deps,
    row: &Due,
    sent: Result<Result<&'static str, DeliveryError>, MailboxError>,
) -> Outcome {
    match sent {
        Ok(Ok(provider)) => Outcome::Sent { provider },
        Ok(Err(DeliveryError::Rejected(why))) => Outcome::Dead(why),
        Ok(Err(DeliveryError::Temporary(why))) => failed(deps, row, why, String::new()),
        Err(mailbox) => failed(
            deps,
            row,
            format!("sender unavailable: {mailbox}"),
            String::new(),
        ),
    }
}

/// Pushes to each of the recipient's devices not reached by an earlier attempt, concurrently.
async fn push_to_devices(deps: &Deps, row: &Due, tokens: Vec<String>, push: Push) -> Outcome {
    let mut reached: Vec<String> = row
        .delivered_to
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let to_send: Vec<String> = tokens
        .into_iter()
        .filter(|token| !reached.contains(token))
        .collect();
    if to_send.is_empty() {
        return if reached.is_empty() {
            Outcome::Skipped("the recipient has no device registered".into())
        } else {
            Outcome::Sent {
                provider: deps.senders.push_provider,
            }
        };
    }
    let sends = to_send.iter().map(|token| {
        let push = Push {
            token: token.clone(),
            ..push.clone()
        };
        deps.senders.apns.send(SendPush(push))
    });
    let results = join_all(sends).await;
    let mut temporary = None;
    let mut gone = 0;
    for (token, result) in to_send.iter().zip(results) {
        match result {
            Ok(Ok(())) => reached.push(token.clone()),
            Ok(Err(PushError::TokenGone)) => gone += 1,
            Ok(Err(PushError::Refused(why))) => {
                // Refused for this device only (its payload or topic): the others still count.
                tracing::warn!(notification = %row.notification_id, %why, "APNs refused a push");
            }
            Ok(Err(PushError::Temporary(why))) => temporary = Some(why),
            Err(mailbox) => temporary = Some(format!("push sender unavailable: {mailbox}")),
        }
    }
    match temporary {
        Some(error) => failed(deps, row, error, reached.join(" ")),
        None if !reached.is_empty() => Outcome::Sent {
            provider: deps.senders.push_provider,
        },
        None if gone == to_send.len() => {
            Outcome::Skipped("every device token of the recipient was dead".into())
        }
        None => Outcome::Dead("APNs refused the push for every device".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_half_an_hour() {
        let settings = NotifyConfig {
            poll_every: Duration::from_secs(1),
            retry_base: Duration::from_secs(30),
            max_attempts: 5,
            concurrency: 4,
        };
        let waits: Vec<u64> = (1..=7).map(|n| backoff(settings, n).as_secs()).collect();
        assert_eq!(waits, [30, 60, 120, 240, 480, 960, 1800]);
        assert_eq!(backoff(settings, i64::MAX), MAX_BACKOFF);
    }
}
