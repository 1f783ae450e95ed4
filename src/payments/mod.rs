//! Payments with Stripe: the customer pays THE PaymentIntent of the job when booking (separate
//! charges and transfers, grouped by the job id); a verified `payment_intent.succeeded` starts
//! dispatch; the driver's payout (a Connect transfer) and refunds are outbox rows written with
//! the job change that causes them and carried out by the [`outbox_worker`].

pub mod outbox_worker;

use serde::Serialize;
use stripe_webhook::{EventObject, Webhook, WebhookError};
use umuve_actors::ids::{DriverId, JobId, UserId};
use umuve_actors::realtime::model::{Job, JobStatus, Mover};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::http::ApiError;
use crate::integrations::stripe::{StripeFailure, StripeGateway};
use crate::jobs::publish;
use crate::state::AppState;
use crate::storage::jobs::{self as job_store, JobEvent, Refund, Written};
use crate::storage::outbox::{self, OutboxKind, OutboxState};
use crate::storage::payments::{
    self, EventEffect, Handled, NewPayment, Payment, PaymentStatus, VerifiedEvent,
};
use crate::storage::users;
use outbox_worker::WakeOutbox;

/// What the customer's app needs to confirm the payment.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentIntentView {
    pub payment_intent_id: String,
    pub client_secret: String,
    pub amount_cents: i64,
}

impl From<&Payment> for PaymentIntentView {
    fn from(payment: &Payment) -> Self {
        Self {
            payment_intent_id: payment.payment_intent_id.clone(),
            client_secret: payment.client_secret.clone(),
            amount_cents: payment.amount_cents,
        }
    }
}

fn gateway(state: &AppState) -> Result<&StripeGateway, ApiError> {
    state
        .stripe
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("payments are not enabled on this server".into()))
}

fn stripe_unavailable(failure: StripeFailure) -> ApiError {
    // The cause goes to the log; the caller hears that the payment service failed.
    tracing::warn!(error = %failure, "a Stripe call failed");
    match failure {
        StripeFailure::Temporary(_) => {
            ApiError::Unavailable("the payment service did not answer; try again".into())
        }
        StripeFailure::Refused(_) => {
            ApiError::Unavailable("the payment service refused the request".into())
        }
    }
}

/// Creates, or returns, THE PaymentIntent of the caller's job. A job whose payment failed goes
/// back to `pending_payment`: the customer tries again with the same PaymentIntent.
pub async fn payment_intent(
    state: &AppState,
    id: JobId,
    customer: UserId,
) -> Result<PaymentIntentView, ApiError> {
    let stripe = gateway(state)?;
    let job = job_store::by_id(&state.db, id)
        .await?
        .filter(|job| job.customer_id == customer)
        .ok_or_else(|| ApiError::NotFound("no such job".into()))?;
    if job.status.is_final() {
        return Err(ApiError::Conflict(format!(
            "this job is {}; it cannot be paid",
            job.status.as_str()
        )));
    }
    let payment = match payments::by_job(&state.db, id).await? {
        Some(payment) => payment,
        None => {
            if !matches!(
                job.status,
                JobStatus::PendingPayment | JobStatus::PaymentFailed
            ) {
                return Err(ApiError::Conflict(format!(
                    "this job needs no payment: it is {}",
                    job.status.as_str()
                )));
            }
            let key = outbox::key(id, "payment-intent");
            let made = stripe
                .create_payment_intent(&id.to_string(), job.total_cents, &key)
                .await
                .map_err(stripe_unavailable)?;
            payments::insert(
                &state.db,
                NewPayment {
                    job: id,
                    payment_intent_id: &made.id,
                    client_secret: &made.client_secret,
                    amount_cents: made.amount_cents,
                    currency: &made.currency,
                },
                state.clock.now(),
            )
            .await?
        }
    };
    if job.status == JobStatus::PaymentFailed && payment.status != PaymentStatus::Succeeded {
        retry_payment(state, &job).await?;
    }
    Ok(PaymentIntentView::from(&payment))
}

/// `payment_failed` → `pending_payment`, by the engine at the customer's request.
async fn retry_payment(state: &AppState, job: &Job) -> Result<(), ApiError> {
    debug_assert!(
        job.status
            .may_move(JobStatus::PendingPayment, Mover::Engine)
    );
    let now = state.clock.now();
    let event = JobEvent {
        from: Some(job.status),
        to: JobStatus::PendingPayment,
        actor: Some(job.customer_id),
        reason: Some("payment_retry"),
    };
    match job_store::move_status(
        &state.db,
        job.id,
        job.status,
        job.driver_id,
        event,
        Refund::Full,
        now,
    )
    .await?
    {
        Written::Done(after, _) => publish(state, Some(job), &after, None, now).await,
        // Moved meanwhile (the retry's payment already succeeded): nothing to do.
        Written::Conflict(_) | Written::NotFound => {}
    }
    Ok(())
}

/// Why a webhook delivery was refused.
fn refused_event(error: WebhookError) -> ApiError {
    let message = match error {
        WebhookError::BadTimestamp(_) => {
            "Stripe-Signature timestamp is outside the 5-minute tolerance"
        }
        WebhookError::BadParse(_) => "the event could not be read",
        WebhookError::BadKey | WebhookError::BadHeader(_) | WebhookError::BadSignature => {
            "Stripe-Signature does not match the payload"
        }
    };
    ApiError::BadRequest(message.into())
}

/// What the engine needs from a parsed event.
fn effect_of(object: EventObject) -> EventEffect {
    match object {
        EventObject::PaymentIntentSucceeded(intent) => EventEffect::PaymentSucceeded {
            payment_intent: intent.id.to_string(),
            job_hint: intent
                .metadata
                .get("job_id")
                .and_then(|raw| Uuid::parse_str(raw).ok())
                .map(JobId::from_uuid),
            client_secret: intent.client_secret.clone(),
            amount_received: intent.amount_received,
            currency: intent.currency.to_string(),
            charge: intent.latest_charge.as_ref().map(|c| c.id().to_string()),
        },
        EventObject::PaymentIntentPaymentFailed(intent) => EventEffect::PaymentFailed {
            payment_intent: intent.id.to_string(),
            message: intent
                .last_payment_error
                .as_ref()
                .and_then(|error| error.message.clone()),
        },
        EventObject::ChargeRefunded(charge) => EventEffect::ChargeRefunded {
            payment_intent: charge.payment_intent.as_ref().map(|p| p.id().to_string()),
            amount_refunded: charge.amount_refunded,
        },
        EventObject::AccountUpdated(account) => EventEffect::AccountUpdated {
            account: account.id.to_string(),
            payouts_enabled: account.payouts_enabled.unwrap_or(false),
        },
        _ => EventEffect::None,
    }
}

/// Verifies a Stripe webhook delivery (signature, 5-minute tolerance on the engine's clock),
/// then records and applies it once (see `storage::payments::handle_event`).
pub async fn handle_webhook(
    state: &AppState,
    payload: &str,
    signature: Option<&str>,
) -> Result<Handled, ApiError> {
    use secrecy::ExposeSecret;
    let stripe = &state.settings.stripe;
    // The platform's endpoint and the Connect endpoint (connected accounts' events) each sign
    // with their own secret; both may point here.
    let secrets: Vec<&str> = [&stripe.webhook_secret, &stripe.connect_webhook_secret]
        .into_iter()
        .flatten()
        .map(|secret| secret.expose_secret())
        .collect();
    if secrets.is_empty() {
        return Err(ApiError::Unavailable(
            "Stripe webhooks are not configured".into(),
        ));
    }
    let signature = signature
        .ok_or_else(|| ApiError::BadRequest("the Stripe-Signature header is missing".into()))?;
    let now = state.clock.now().timestamp();
    let mut refusal = None;
    let mut verified = None;
    for secret in secrets {
        match Webhook::construct_event_with_timestamp(payload, signature, secret, now) {
            Ok(event) => {
                verified = Some(event);
                break;
            }
            // A matching signature with a stale time or a bad body says more than a mismatch.
            Err(WebhookError::BadSignature) if refusal.is_some() => {}
            Err(error) => refusal = Some(error),
        }
    }
    let event =
        verified.ok_or_else(|| refused_event(refusal.unwrap_or(WebhookError::BadSignature)))?;
    let verified = VerifiedEvent {
        id: event.id.to_string(),
        event_type: event.type_.as_str().to_owned(),
        payload: payload.to_owned(),
        effect: effect_of(event.data.object),
    };
    let now = state.clock.now();
    let handled = payments::handle_event(&state.db, &verified, now).await?;
    tracing::info!(event = %verified.id, kind = %verified.event_type, outcome = %handled.outcome, "Stripe event");
    let result = if handled.repeat {
        "repeat"
    } else {
        handled.outcome.split(':').next().unwrap_or("applied")
    };
    umuve_actors::realtime::metrics::METRICS
        .stripe_webhooks
        .with_label_values(&[verified.event_type.as_str(), result])
        .inc();
    if let Some((before, after)) = &handled.job_change {
        publish(state, Some(before), after, None, now).await;
    }
    if handled.outbox_changed {
        state.outbox.do_send(WakeOutbox);
    }
    Ok(handled)
}

/// A driver's Stripe Connect onboarding link; their Express account is made on the first call.
pub async fn connect_onboarding(state: &AppState, driver: DriverId) -> Result<String, ApiError> {
    let stripe = gateway(state)?;
    let account = match payments::connect_account(&state.db, driver).await? {
        Some(account) => account,
        None => {
            let email = users::by_id(&state.db, driver.as_uuid())
                .await?
                .and_then(|user| user.email);
            let key = format!("driver_{}_connect-account", driver.as_uuid());
            let made = stripe
                .create_express_account(&driver.to_string(), email.as_deref(), &key)
                .await
                .map_err(stripe_unavailable)?;
            payments::insert_connect_account(&state.db, driver, &made, state.clock.now()).await?
        }
    };
    let public = &state.settings.public_url;
    let join = |path: &str| {
        public
            .join(path)
            .map(String::from)
            .unwrap_or_else(|_| public.to_string())
    };
    stripe
        .create_onboarding_link(
            &account.account_id,
            &join("driver/payouts/refresh"),
            &join("driver/payouts/done"),
        )
        .await
        .map_err(stripe_unavailable)
}

/// One money movement of a job, as the job's readers see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct MoneyMove {
    pub amount_cents: i64,
    pub state: OutboxState,
    /// Stripe's id once made (`re_…`, `tr_…`).
    pub stripe_id: Option<String>,
}

/// A job's payment, refunds and payout.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentView {
    pub payment_intent_id: String,
    pub status: PaymentStatus,
    pub amount_cents: i64,
    pub currency: String,
    /// Refunded so far (Stripe's figure, or our sent refunds, whichever is ahead).
    pub refunded_cents: i64,
    pub refunds: Vec<MoneyMove>,
    pub payout: Option<MoneyMove>,
}

/// `job` with its payment, as `GET /api/jobs/{id}` shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobWithPayment {
    #[serde(flatten)]
    pub job: Job,
    /// Absent while no PaymentIntent exists (or payments are off).
    pub payment: Option<PaymentView>,
}

pub async fn with_payment(state: &AppState, job: Job) -> Result<JobWithPayment, ApiError> {
    let Some(payment) = payments::by_job(&state.db, job.id).await? else {
        return Ok(JobWithPayment { job, payment: None });
    };
    let moves = outbox::for_job(&state.db, job.id).await?;
    let as_move = |entry: &outbox::OutboxEntry| MoneyMove {
        amount_cents: entry.amount_cents,
        state: entry.state,
        stripe_id: entry.stripe_id.clone(),
    };
    let view = PaymentView {
        refunds: moves
            .iter()
            .filter(|m| m.kind == OutboxKind::Refund)
            .map(as_move)
            .collect(),
        payout: moves
            .iter()
            .find(|m| m.kind == OutboxKind::Transfer)
            .map(as_move),
        payment_intent_id: payment.payment_intent_id,
        status: payment.status,
        amount_cents: payment.amount_cents,
        currency: payment.currency,
        refunded_cents: payment.refunded_cents,
    };
    Ok(JobWithPayment {
        job,
        payment: Some(view),
    })
}
