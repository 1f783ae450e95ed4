//! Notifications as dispatchers see them: what went out, what was skipped and why, and the dead
//! letters, which they can send again.

use actix_web::{HttpResponse, get, post, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::caller::{Authorized, Dispatchers};
use crate::http::{ApiError, ErrorBody, pagination};
use crate::notifications::{DeliveryState, NotificationEntry};
use crate::state::AppState;
use crate::storage::notifications::{self, Filter};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NotificationsQuery {
    pub state: Option<DeliveryState>,
    /// Only this job's notifications.
    pub job_id: Option<Uuid>,
    /// 1 to 100, default 50.
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationsPage {
    pub notifications: Vec<NotificationEntry>,
    pub next_cursor: Option<String>,
}

/// Push, SMS and email notifications, newest first (dispatchers).
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(NotificationsQuery),
    responses(
        (status = 200, body = NotificationsPage),
        (status = 400, description = "Invalid state, job id, limit or cursor", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Not a dispatcher", body = ErrorBody),
    )
)]
#[get("/api/admin/notifications")]
pub async fn list_notifications(
    state: web::Data<AppState>,
    _dispatcher: Authorized<Dispatchers>,
    query: web::Query<NotificationsQuery>,
) -> Result<HttpResponse, ApiError> {
    let (limit, after) = pagination::page(query.limit, query.cursor.as_deref())?;
    let filter = Filter {
        state: query.state,
        job: query.job_id,
    };
    let mut notifications = notifications::list(&state.db, &filter, after, limit + 1).await?;
    let next_cursor = pagination::next_cursor(&mut notifications, limit, |n| (n.created_at, n.id));
    Ok(HttpResponse::Ok().json(NotificationsPage {
        notifications,
        next_cursor,
    }))
}

/// Sends a dead letter again, now, with fresh attempts (dispatchers).
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Notification id")),
    responses(
        (status = 200, body = NotificationEntry),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Not a dispatcher", body = ErrorBody),
        (status = 404, description = "No dead notification with this id", body = ErrorBody),
    )
)]
#[post("/api/admin/notifications/{id}/retry")]
pub async fn retry_notification(
    state: web::Data<AppState>,
    _dispatcher: Authorized<Dispatchers>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let entry = notifications::retry(&state.db, id.into_inner(), state.clock.now())
        .await?
        .ok_or_else(|| ApiError::NotFound("no dead notification with this id".into()))?;
    state.notifications_written.notify_one();
    Ok(HttpResponse::Ok().json(entry))
}
