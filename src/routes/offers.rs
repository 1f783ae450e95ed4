//! `/api/offers`: the offered driver accepts or declines (the same as the WebSocket's
//! `offer.accept` / `offer.decline`).

use actix_web::{HttpResponse, post, web};
use umuve_actors::ids::{DriverId, OfferId};
use umuve_actors::realtime::model::Job;
use uuid::Uuid;

use crate::auth::caller::{Authorized, Drivers};
use crate::http::{ApiError, ErrorBody};
use crate::jobs;
use crate::state::AppState;

/// Accepts an offer: the job is the driver's if the offer is still open and unexpired.
#[utoipa::path(
    tag = "offers",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Offer id")),
    responses(
        (status = 200, description = "The job, now assigned to the driver", body = Job),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Not a driver", body = ErrorBody),
        (status = 404, description = "No such offer for this driver", body = ErrorBody),
        (status = 409, description = "Expired, taken, cancelled, or the driver is busy", body = ErrorBody),
    )
)]
#[post("/api/offers/{id}/accept")]
pub async fn accept_offer(
    state: web::Data<AppState>,
    driver: Authorized<Drivers>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let driver = DriverId::from_uuid(driver.caller.user_id);
    let job = jobs::accept_offer(&state, OfferId::from_uuid(id.into_inner()), driver).await?;
    Ok(HttpResponse::Ok().json(job))
}

/// Declines an offer: the job goes to the next driver and is not offered to this one again.
#[utoipa::path(
    tag = "offers",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Offer id")),
    responses(
        (status = 204, description = "Declined"),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Not a driver", body = ErrorBody),
        (status = 404, description = "No such offer for this driver", body = ErrorBody),
        (status = 409, description = "The offer is no longer open", body = ErrorBody),
    )
)]
#[post("/api/offers/{id}/decline")]
pub async fn decline_offer(
    state: web::Data<AppState>,
    driver: Authorized<Drivers>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let driver = DriverId::from_uuid(driver.caller.user_id);
    jobs::decline_offer(&state, OfferId::from_uuid(id.into_inner()), driver).await?;
    Ok(HttpResponse::NoContent().finish())
}
