//! Payments: a job's PaymentIntent, Stripe's webhook, drivers' Connect onboarding, and the
//! outbox of payouts and refunds for dispatchers.

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use serde::{Deserialize, Serialize};
use umuve_actors::ids::{DriverId, JobId, UserId};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::caller::{Authorized, Customers, Dispatchers, Drivers};
use crate::http::{ApiError, ErrorBody, pagination};
use crate::payments::{self, PaymentIntentView};
use crate::state::AppState;
use crate::storage::outbox::{self, OutboxEntry, OutboxState};

/// Creates, or returns, THE PaymentIntent of the caller's job (one per job): the total in USD,
/// `metadata.job_id` and `transfer_group` = the job id. A job whose payment failed goes back to
/// `pending_payment` for another try with the same PaymentIntent.
#[utoipa::path(
    tag = "payments",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 200, body = PaymentIntentView),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Not a customer", body = ErrorBody),
        (status = 404, description = "No such job of the caller's", body = ErrorBody),
        (status = 409, description = "The job needs no payment", body = ErrorBody),
        (status = 503, description = "Payments are off, or Stripe failed", body = ErrorBody),
    )
)]
#[post("/api/jobs/{id}/payment-intent")]
pub async fn payment_intent(
    state: web::Data<AppState>,
    customer: Authorized<Customers>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let customer = UserId::from_uuid(customer.caller.user_id);
    let view =
        payments::payment_intent(&state, JobId::from_uuid(id.into_inner()), customer).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// What the engine did with a delivered event.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookReceipt {
    pub received: bool,
    /// The event was handled before; nothing was done now.
    pub repeat: bool,
    pub outcome: String,
}

/// Stripe's webhook: verifies `Stripe-Signature` (5-minute tolerance), stores every event once
/// in the audit table and applies it once; a repeat is 200 with no effect.
#[utoipa::path(
    tag = "payments",
    request_body(content = String, content_type = "application/json", description = "A Stripe event, as Stripe signed it"),
    params(("Stripe-Signature" = String, Header, description = "t=…,v1=…")),
    responses(
        (status = 200, body = WebhookReceipt),
        (status = 400, description = "Bad or stale signature, or an unreadable event", body = ErrorBody),
        (status = 503, description = "Webhooks are not configured", body = ErrorBody),
    )
)]
#[post("/api/webhooks/stripe")]
pub async fn stripe_webhook(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    // The signature covers the exact bytes, so the body is taken as sent.
    let payload = std::str::from_utf8(&body)
        .map_err(|_| ApiError::BadRequest("the event is not UTF-8".into()))?;
    let signature = request
        .headers()
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    let handled = payments::handle_webhook(&state, payload, signature).await?;
    Ok(HttpResponse::Ok().json(WebhookReceipt {
        received: true,
        repeat: handled.repeat,
        outcome: handled.outcome,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OnboardingLink {
    /// Stripe's single-use onboarding page for the driver's Express account.
    pub url: String,
}

/// The driver's Stripe Connect onboarding link; the Express account is made on the first call.
#[utoipa::path(
    tag = "payments",
    security(("bearer" = [])),
    responses(
        (status = 200, body = OnboardingLink),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Not a driver", body = ErrorBody),
        (status = 503, description = "Payments are off, or Stripe failed", body = ErrorBody),
    )
)]
#[post("/api/drivers/me/connect-account")]
pub async fn connect_account(
    state: web::Data<AppState>,
    driver: Authorized<Drivers>,
) -> Result<HttpResponse, ApiError> {
    let driver = DriverId::from_uuid(driver.caller.user_id);
    let url = payments::connect_onboarding(&state, driver).await?;
    Ok(HttpResponse::Ok().json(OnboardingLink { url }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OutboxQuery {
    pub state: Option<OutboxState>,
    /// 1 to 100, default 50.
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OutboxPage {
    pub entries: Vec<OutboxEntry>,
    pub next_cursor: Option<String>,
}

/// Payouts and refunds waiting, done or failed, newest first (dispatchers).
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(OutboxQuery),
    responses(
        (status = 200, body = OutboxPage),
        (status = 400, description = "Invalid state, limit or cursor", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Not a dispatcher", body = ErrorBody),
    )
)]
#[get("/api/admin/outbox")]
pub async fn list_outbox(
    state: web::Data<AppState>,
    _dispatcher: Authorized<Dispatchers>,
    query: web::Query<OutboxQuery>,
) -> Result<HttpResponse, ApiError> {
    let (limit, after) = pagination::page(query.limit, query.cursor.as_deref())?;
    let mut entries = outbox::list(&state.db, query.state, after, limit + 1).await?;
    let next_cursor = pagination::next_cursor(&mut entries, limit, |e| (e.created_at, e.id));
    Ok(HttpResponse::Ok().json(OutboxPage {
        entries,
        next_cursor,
    }))
}

/// Tries a failed payout or refund again, now, with the same idempotency key (dispatchers).
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Outbox entry id")),
    responses(
        (status = 200, body = OutboxEntry),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Not a dispatcher", body = ErrorBody),
        (status = 404, description = "No failed entry with this id", body = ErrorBody),
    )
)]
#[post("/api/admin/outbox/{id}/retry")]
pub async fn retry_outbox(
    state: web::Data<AppState>,
    _dispatcher: Authorized<Dispatchers>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let entry = outbox::retry(&state.db, id.into_inner(), state.clock.now())
        .await?
        .ok_or_else(|| ApiError::NotFound("no failed outbox entry with this id".into()))?;
    state.outbox.do_send(payments::outbox_worker::WakeOutbox);
    Ok(HttpResponse::Ok().json(entry))
}
