//! `/api/jobs`: booking, reading, listing, cancelling, status moves, manual assignment.

use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use umuve_actors::geo::LatLng;
use umuve_actors::ids::{DriverId, JobId, UserId};
use umuve_actors::realtime::model::{Job, JobStatus, LoadSize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::caller::{Authorized, Caller, Customers, Dispatchers};
use crate::domain::Role;
use crate::domain::text::bounded_text;
use crate::http::{ApiError, ErrorBody, pagination};
use crate::jobs::{self, Change};
use crate::payments::{self, JobWithPayment};
use crate::state::AppState;
use crate::storage::jobs::{self as job_store, JobScope, NewJob};

const MAX_ADDRESS_CHARS: usize = 500;
const MAX_DESCRIPTION_CHARS: usize = 2000;
/// How far ahead a pickup may be booked.
const MAX_SCHEDULE_AHEAD: Duration = Duration::days(90);

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateJobRequest {
    pub address: String,
    pub lat: f64,
    pub lng: f64,
    pub description: String,
    pub load_size: LoadSize,
    /// When the pickup should happen; absent for as soon as possible.
    pub scheduled_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct StatusRequest {
    pub status: JobStatus,
}

/// An optional body of `/cancel`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Dispatchers only, for a paid job whose driver has set off (`en_route`, `arrived`): how
    /// much of the payment goes back, 0 to what is left. Before that the refund is always full.
    pub refund_cents: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct AssignRequest {
    #[schema(value_type = String, format = Uuid)]
    pub driver_id: DriverId,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListJobsQuery {
    pub status: Option<JobStatus>,
    /// 1 to 100, default 50.
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    pub next_cursor: Option<String>,
}

/// An address or description: line breaks and tabs are fine, other control characters not.
fn text_field(name: &str, value: &str, max: usize, required: bool) -> Result<String, ApiError> {
    bounded_text(name, value, max, required, &['\n', '\t']).map_err(ApiError::BadRequest)
}

/// Books a pickup (customers). With payments on, the job waits in `pending_payment` until its
/// PaymentIntent succeeds; with payments off it goes straight to `dispatching`.
#[utoipa::path(
    tag = "jobs",
    security(("bearer" = [])),
    request_body = CreateJobRequest,
    responses(
        (status = 201, body = Job),
        (status = 400, description = "Invalid field", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Not a customer", body = ErrorBody),
        (status = 422, description = "Outside Miami-Dade, Broward and Palm Beach", body = ErrorBody),
    )
)]
#[post("/api/jobs")]
pub async fn create_job(
    state: web::Data<AppState>,
    customer: Authorized<Customers>,
    body: web::Json<CreateJobRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let at = LatLng::new(body.lat, body.lng).map_err(ApiError::BadRequest)?;
    let address = text_field("address", &body.address, MAX_ADDRESS_CHARS, true)?;
    let description = text_field(
        "description",
        &body.description,
        MAX_DESCRIPTION_CHARS,
        false,
    )?;
    let now = state.clock.now();
    if let Some(when) = body.scheduled_at
        && (when < now || when > now + MAX_SCHEDULE_AHEAD)
    {
        return Err(ApiError::BadRequest(
            "scheduled_at must be in the future, at most 90 days ahead".into(),
        ));
    }
    let county = state.hub.area.county_at(&at).ok_or_else(|| {
        ApiError::OutsideServiceArea(
            "we serve Miami-Dade, Broward and Palm Beach counties only".into(),
        )
    })?;
    state
        .limits
        .check_job_creation(customer.caller.user_id)
        .await?;
    let customer_id = UserId::from_uuid(customer.caller.user_id);
    let new = NewJob {
        customer: customer_id,
        status: if state.stripe.is_some() {
            JobStatus::PendingPayment
        } else {
            JobStatus::Dispatching
        },
        address,
        lat: at.lat(),
        lng: at.lng(),
        county: Some(county.name().to_owned()),
        description,
        load_size: body.load_size,
        scheduled_at: body.scheduled_at,
        quote: state.pricing.quote(body.load_size),
    };
    let job = jobs::create(&state, new, customer_id).await?;
    Ok(HttpResponse::Created().json(job))
}

/// The job, if the caller may see it; others get 404, as if it did not exist.
pub(crate) async fn visible_job(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<Job, ApiError> {
    job_store::by_id(&state.db, JobId::from_uuid(id))
        .await?
        .filter(|job| {
            job.visible_to(
                UserId::from_uuid(caller.user_id),
                caller.role.is_dispatcher(),
            )
        })
        .ok_or_else(|| ApiError::NotFound("no such job".into()))
}

/// One job (its customer, its driver, dispatchers).
#[utoipa::path(
    tag = "jobs",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 200, body = JobWithPayment),
        (status = 400, description = "Not a UUID", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, description = "No such job, or not the caller's", body = ErrorBody),
    )
)]
#[get("/api/jobs/{id}")]
pub async fn get_job(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let job = visible_job(&state, &caller, id.into_inner()).await?;
    Ok(HttpResponse::Ok().json(payments::with_payment(&state, job).await?))
}

/// Jobs, newest first: customers see theirs, drivers theirs, dispatchers all.
#[utoipa::path(
    tag = "jobs",
    security(("bearer" = [])),
    params(ListJobsQuery),
    responses(
        (status = 200, body = JobPage),
        (status = 400, description = "Invalid status, limit or cursor", body = ErrorBody),
        (status = 401, body = ErrorBody),
    )
)]
#[get("/api/jobs")]
pub async fn list_jobs(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<ListJobsQuery>,
) -> Result<HttpResponse, ApiError> {
    let (limit, after) = pagination::page(query.limit, query.cursor.as_deref())?;
    let scope = match caller.role {
        Role::Customer => JobScope::Customer(UserId::from_uuid(caller.user_id)),
        Role::Driver => JobScope::Driver(DriverId::from_uuid(caller.user_id)),
        Role::Admin | Role::Operator => JobScope::All,
    };
    let mut jobs = job_store::list(&state.db, scope, query.status, after, limit + 1).await?;
    let next_cursor = pagination::next_cursor(&mut jobs, limit, |j| (j.created_at, j.id.as_uuid()));
    Ok(HttpResponse::Ok().json(JobPage { jobs, next_cursor }))
}

/// Cancels a job (its customer, dispatchers) before the work starts. A paid job is refunded in
/// full before its driver sets off; after that a dispatcher chooses `refund_cents` (a customer
/// cannot cancel a paid job then: 409). The refund goes out through the outbox; the job's
/// `payment` shows it.
#[utoipa::path(
    tag = "jobs",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Job id")),
    request_body(content = CancelRequest, description = "Optional: no body cancels with the default refund"),
    responses(
        (status = 200, body = JobWithPayment),
        (status = 400, description = "Invalid refund_cents", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Drivers cannot cancel; only dispatchers choose a refund", body = ErrorBody),
        (status = 404, description = "No such job, or not the caller's", body = ErrorBody),
        (status = 409, description = "Too late to cancel (in progress or final), or a paid job's driver is on the way", body = ErrorBody),
    )
)]
#[post("/api/jobs/{id}/cancel")]
pub async fn cancel_job(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<Uuid>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let id = JobId::from_uuid(id.into_inner());
    // The body is optional, so it is read by hand: an empty one is the default, a bad one an
    // error (actix's optional extractor would silently drop it).
    let request: CancelRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CancelRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid request: {e}")))?
    };
    let refund_cents = request.refund_cents;
    let job = jobs::change(&state, id, Change::Cancel { refund_cents }, &caller).await?;
    Ok(HttpResponse::Ok().json(payments::with_payment(&state, job).await?))
}

/// Moves a job on: its driver through `en_route`, `arrived`, `in_progress`, `completed` in order;
/// dispatchers any legal move (assignment goes through `/assign`).
#[utoipa::path(
    tag = "jobs",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Job id")),
    request_body = StatusRequest,
    responses(
        (status = 200, body = Job),
        (status = 400, description = "Unknown status, or `assigned` (use /assign)", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Customers cannot move jobs", body = ErrorBody),
        (status = 404, description = "No such job, or not the caller's", body = ErrorBody),
        (status = 409, description = "Illegal move from the current status", body = ErrorBody),
    )
)]
#[post("/api/jobs/{id}/status")]
pub async fn move_job(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<Uuid>,
    body: web::Json<StatusRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = JobId::from_uuid(id.into_inner());
    let job = jobs::change(&state, id, Change::Move(body.status), &caller).await?;
    Ok(HttpResponse::Ok().json(job))
}

/// Gives a dispatching job to a driver by hand (dispatchers). The driver must be approved and
/// not on another active job.
#[utoipa::path(
    tag = "jobs",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Job id")),
    request_body = AssignRequest,
    responses(
        (status = 200, body = Job),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Not a dispatcher", body = ErrorBody),
        (status = 404, description = "No such job or driver", body = ErrorBody),
        (status = 409, description = "Job not dispatching; driver unapproved or busy", body = ErrorBody),
    )
)]
#[post("/api/jobs/{id}/assign")]
pub async fn assign_job(
    state: web::Data<AppState>,
    dispatcher: Authorized<Dispatchers>,
    id: web::Path<Uuid>,
    body: web::Json<AssignRequest>,
) -> Result<HttpResponse, ApiError> {
    let change = Change::Assign {
        driver: body.driver_id,
    };
    let id = JobId::from_uuid(id.into_inner());
    let job = jobs::change(&state, id, change, &dispatcher.caller).await?;
    Ok(HttpResponse::Ok().json(job))
}
