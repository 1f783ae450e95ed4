//! `/api/me`: the caller's own account.

use actix_web::{HttpResponse, get, patch, web};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::auth::caller::Caller;
use crate::domain::{EmailAddress, PersonName};
use crate::http::{ApiError, ErrorBody};
use crate::state::AppState;
use crate::storage::users::{self, User};

#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateMeRequest {
    pub name: Option<String>,
    /// Receipts and confirmations go here.
    pub email: Option<String>,
}

fn account_gone() -> ApiError {
    ApiError::Unauthorized("this account no longer exists".into())
}

/// The caller's account.
#[utoipa::path(
    tag = "account",
    security(("bearer" = [])),
    responses(
        (status = 200, body = User),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
    )
)]
#[get("/api/me")]
pub async fn get_me(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let user = users::by_id(&state.db, caller.user_id)
        .await?
        .ok_or_else(account_gone)?;
    Ok(HttpResponse::Ok().json(user))
}

/// Changes the caller's name and/or email.
#[utoipa::path(
    tag = "account",
    security(("bearer" = [])),
    request_body = UpdateMeRequest,
    responses(
        (status = 200, body = User),
        (status = 400, description = "Invalid name or email", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 409, description = "The email belongs to another account", body = ErrorBody),
    )
)]
#[patch("/api/me")]
pub async fn update_me(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<UpdateMeRequest>,
) -> Result<HttpResponse, ApiError> {
    let name = body
        .name
        .as_deref()
        .map(PersonName::parse)
        .transpose()
        .map_err(ApiError::BadRequest)?;
    let email = body
        .email
        .as_deref()
        .map(EmailAddress::parse)
        .transpose()
        .map_err(ApiError::BadRequest)?;
    let user = users::update_profile(
        &state.db,
        caller.user_id,
        name.as_ref().map(PersonName::as_str),
        email.as_ref(),
        state.clock.now(),
    )
    .await
    .map_err(|e| ApiError::from_db(e, "this email belongs to another account"))?
    .ok_or_else(account_gone)?;
    Ok(HttpResponse::Ok().json(user))
}
