//! `/api/devices`: APNs device tokens of the caller's phones.

use actix_web::{HttpResponse, delete, post, web};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::auth::caller::Caller;
use crate::http::{ApiError, ErrorBody};
use crate::state::AppState;
use crate::storage::devices;

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    Ios,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeviceApp {
    Customer,
    Driver,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterDeviceRequest {
    /// The APNs device token, hex.
    pub token: String,
    pub platform: Platform,
    pub app: DeviceApp,
}

/// APNs tokens are hex strings (64 characters today; Apple allows them to grow).
fn parse_device_token(token: &str) -> Result<String, ApiError> {
    let token = token.trim();
    let valid = (32..=200).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_hexdigit());
    if valid {
        Ok(token.to_ascii_lowercase())
    } else {
        Err(ApiError::BadRequest(
            "token must be an APNs device token (hex)".into(),
        ))
    }
}

/// Registers a device for push notifications.
#[utoipa::path(
    tag = "devices",
    security(("bearer" = [])),
    request_body = RegisterDeviceRequest,
    responses(
        (status = 204, description = "Registered"),
        (status = 400, description = "Not a device token, or unknown platform/app", body = ErrorBody),
        (status = 401, body = ErrorBody),
    )
)]
#[post("/api/devices")]
pub async fn register_device(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<RegisterDeviceRequest>,
) -> Result<HttpResponse, ApiError> {
    let token = parse_device_token(&body.token)?;
    let app = match body.app {
        DeviceApp::Customer => "customer",
        DeviceApp::Driver => "driver",
    };
    devices::register(
        &state.db,
        &token,
        caller.user_id,
        "ios",
        app,
        state.clock.now(),
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Unregisters one of the caller's devices.
#[utoipa::path(
    tag = "devices",
    security(("bearer" = [])),
    params(("token" = String, Path, description = "The APNs device token")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, body = ErrorBody),
        (status = 404, description = "The caller has no such device", body = ErrorBody),
    )
)]
#[delete("/api/devices/{token}")]
pub async fn remove_device(
    state: web::Data<AppState>,
    caller: Caller,
    token: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let token = parse_device_token(&token)?;
    if devices::remove(&state.db, &token, caller.user_id).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound("no such device for this account".into()))
    }
}
