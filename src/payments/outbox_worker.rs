//! The outbox worker: carries out the money movements written to the outbox (see
//! `crate::storage::outbox`). It looks for due rows every `OUTBOX_POLL_MS` and at once when
//! told a row was written, runs at most `OUTBOX_CONCURRENCY` Stripe calls at a time, and never
//! waits on Stripe or the database in its handlers (the work is a spawned future).
//!
//! Outcomes: made → `sent`; a temporary failure (network, timeout, 409/429/5xx) → due again
//! after an exponential backoff (`OUTBOX_RETRY_BASE_SECS` doubling, at most an hour), `failed`
//! after `OUTBOX_MAX_ATTEMPTS`; refused by Stripe (4xx) → `failed` at once; a payout whose
//! driver cannot be paid yet → `owed`, until Stripe enables their payouts.

use std::time::Duration;

use actix::{Actor, ActorFutureExt, AsyncContext, Context, Handler, Message, WrapFuture};
use futures_util::future::join_all;
use umuve_actors::clock::{SharedClock, after};
use umuve_actors::outbound::doubling_wait;

use crate::config::OutboxConfig;
use crate::integrations::stripe::{Payout, StripeFailure, StripeGateway};
use crate::storage::Db;
use crate::storage::outbox::{self, DueEntry, OutboxKind, OutboxState};

/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// How long a claimed row stays with its worker; longer than any Stripe call may take.
const LEASE: Duration = Duration::from_secs(120);

/// Look for due rows now (one was just written or released).
#[derive(Message)]
#[rtype(result = "()")]
pub struct WakeOutbox;

pub struct OutboxWorker {
    db: Db,
    clock: SharedClock,
    stripe: Option<StripeGateway>,
    settings: OutboxConfig,
    /// A batch is in flight; a wake-up meanwhile runs another batch right after it.
    busy: bool,
    again: bool,
}

impl OutboxWorker {
    pub fn new(
        db: Db,
        clock: SharedClock,
        stripe: Option<StripeGateway>,
        settings: OutboxConfig,
    ) -> Self {
        Self {
            db,
            clock,
            stripe,
            settings,
            busy: false,
            again: false,
        }
    }

    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            self.again = true;
            return;
        }
        self.busy = true;
        let db = self.db.clone();
        let clock = self.clock.clone();
        let stripe = self.stripe.clone();
        let settings = self.settings;
        // A task of the thread's runtime, not the actor's own future: when the thread stops,
        // an actor's futures are dropped after the runtime is gone, and a pooled connection
        // dropped then panics.
        let batch = tokio::spawn(async move {
            let now = clock.now();
            let lease_until = now + chrono::Duration::from_std(LEASE).expect("a short lease");
            let due = match outbox::claim_due(&db, now, lease_until, settings.concurrency).await {
                Ok(due) => due,
                Err(error) => {
                    tracing::warn!(%error, "could not read the outbox");
                    return 0;
                }
            };
            let claimed = due.len();
            join_all(
                due.into_iter()
                    .map(|entry| carry_out(&db, &clock, stripe.as_ref(), settings, entry)),
            )
            .await;
            claimed
        });
        let batch = async move { batch.await.unwrap_or(0) };
        ctx.spawn(batch.into_actor(self).map(move |claimed, this, ctx| {
            this.busy = false;
            // A full batch may have left more due rows behind.
            if std::mem::take(&mut this.again) || claimed as u32 == settings.concurrency {
                this.pump(ctx);
            }
        }));
    }
}

impl Actor for OutboxWorker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.pump(ctx);
        ctx.run_interval(self.settings.poll_every, |this, ctx| this.pump(ctx));
    }
}

impl Handler<WakeOutbox> for OutboxWorker {
    type Result = ();

    fn handle(&mut self, _: WakeOutbox, ctx: &mut Self::Context) {
        self.pump(ctx);
    }
}

/// The wait before attempt `attempts + 1`.
fn backoff(settings: OutboxConfig, attempts: i64) -> Duration {
    let failed = u32::try_from(attempts).unwrap_or(u32::MAX);
    doubling_wait(settings.retry_base, failed, MAX_BACKOFF)
}

fn counted(entry: &DueEntry, result: &str) {
    umuve_actors::realtime::metrics::METRICS
        .outbox_outcomes
        .with_label_values(&[entry.kind.as_str(), result])
        .inc();
}

/// One row: the Stripe call, then its outcome recorded.
async fn carry_out(
    db: &Db,
    clock: &SharedClock,
    stripe: Option<&StripeGateway>,
    settings: OutboxConfig,
    entry: DueEntry,
) {
    let job_id = entry.job_id.to_string();
    let result = match (entry.kind(), stripe) {
        (_, None) => Err(StripeFailure::Temporary(
            "payments are off on this engine (STRIPE_SECRET_KEY is not set)".into(),
        )),
        (None, _) => Err(StripeFailure::Refused(format!(
            "unknown outbox kind {:?}",
            entry.kind
        ))),
        (Some(OutboxKind::Transfer), Some(stripe)) => {
            match (&entry.account_id, entry.payouts_enabled) {
                (Some(account), Some(true)) => {
                    let payout = Payout {
                        job_id: &job_id,
                        amount_cents: entry.amount_cents,
                        destination: account,
                        source_charge: entry.charge_id.as_deref(),
                    };
                    let key = &entry.idempotency_key;
                    match made_before(&entry, stripe.find_transfer(&job_id, key)).await {
                        Ok(Some(made)) => Ok(made),
                        Ok(None) => stripe.create_transfer(&payout, key).await,
                        Err(failure) => Err(failure),
                    }
                }
                _ => {
                    let why = "the driver has no payable Stripe account yet";
                    record(
                        outbox::mark(
                            db,
                            entry.outbox_id,
                            OutboxState::Owed,
                            why,
                            false,
                            clock.now(),
                        )
                        .await,
                    );
                    tracing::info!(outbox = %entry.outbox_id, job = %job_id, "payout owed until the driver's account is payable");
                    counted(&entry, "owed");
                    return;
                }
            }
        }
        (Some(OutboxKind::Refund), Some(stripe)) => match &entry.payment_intent_id {
            Some(payment_intent) => {
                let key = &entry.idempotency_key;
                match made_before(&entry, stripe.find_refund(payment_intent, key)).await {
                    Ok(Some(made)) => Ok(made),
                    Ok(None) => {
                        stripe
                            .create_refund(&job_id, payment_intent, entry.amount_cents, key)
                            .await
                    }
                    Err(failure) => Err(failure),
                }
            }
            None => Err(StripeFailure::Refused(
                "the job has no payment to refund".into(),
            )),
        },
    };
    let now = clock.now();
    match result {
        Ok(stripe_id) => {
            tracing::info!(outbox = %entry.outbox_id, kind = %entry.kind, job = %job_id, %stripe_id, "outbox entry sent");
            counted(&entry, "sent");
            record(outbox::mark_sent(db, entry.outbox_id, &stripe_id, now).await);
        }
        Err(StripeFailure::Temporary(error))
            if entry.attempts < i64::from(settings.max_attempts) =>
        {
            let next = after(now, backoff(settings, entry.attempts));
            tracing::warn!(outbox = %entry.outbox_id, kind = %entry.kind, job = %job_id, attempts = entry.attempts, %error, %next, "outbox entry will be retried");
            counted(&entry, "retry");
            record(outbox::mark_retry(db, entry.outbox_id, &error, next, now).await);
        }
        Err(failure) => {
            let refused = matches!(failure, StripeFailure::Refused(_));
            counted(&entry, "failed");
            let error = failure.to_string();
            tracing::error!(outbox = %entry.outbox_id, kind = %entry.kind, job = %job_id, attempts = entry.attempts, %error, "outbox entry failed; a dispatcher must look");
            record(
                outbox::mark(
                    db,
                    entry.outbox_id,
                    OutboxState::Failed,
                    &error,
                    refused,
                    now,
                )
                .await,
            );
        }
    }
}

/// What an earlier attempt of `entry` made at Stripe, looked up when there was one (a failure
/// or a crash may hide a success). The idempotency key alone would not do: Stripe forgets keys
/// after 24 hours, and a dispatcher may retry later than that.
async fn made_before(
    entry: &DueEntry,
    lookup: impl std::future::Future<Output = Result<Option<String>, StripeFailure>>,
) -> Result<Option<String>, StripeFailure> {
    if entry.attempts <= 1 && entry.last_error.is_none() {
        return Ok(None);
    }
    let found = lookup.await?;
    if let Some(made) = &found {
        tracing::info!(outbox = %entry.outbox_id, stripe_id = %made, "an earlier attempt had made it");
    }
    Ok(found)
}

/// An outcome that could not be written is retried by the lease: the row is claimed again
/// once it passes, and the idempotency key keeps Stripe from doing it twice.
fn record(written: Result<(), sqlx::Error>) {
    if let Err(error) = written {
        tracing::warn!(%error, "could not record an outbox outcome; it will be retried");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        let settings = OutboxConfig {
            poll_every: Duration::from_secs(1),
            retry_base: Duration::from_secs(30),
            max_attempts: 12,
            concurrency: 4,
        };
        let waits: Vec<u64> = (1..=9).map(|n| backoff(settings, n).as_secs()).collect();
        assert_eq!(waits, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(backoff(settings, i64::MAX), MAX_BACKOFF);
    }
}
