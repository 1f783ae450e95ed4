//! `/api/auth/*`: SMS codes, email + password, Sign in with Apple, password reset.

use actix_web::{HttpRequest, HttpResponse, post, web};
use chrono::Duration;
use serde::{Deserialize, Serialize};
use umuve_actors::outbound::{SendEmail, SendSms, Sms, SmsKind};
use utoipa::ToSchema;

use crate::auth::apple::AppleError;
use crate::auth::one_time::{looks_like_sms_code, new_reset_token, new_sms_code};
use crate::domain::{EmailAddress, Password, PersonName, Phone, Role};
use crate::http::client_ip::client_ip;
use crate::http::{ApiError, ErrorBody};
use crate::state::AppState;
use crate::storage::auth_codes::{self, CodeCheck};
use crate::storage::users::{self, User};
use crate::templates;

/// How long an SMS code stays valid.
pub const SMS_CODE_LIFETIME: Duration = Duration::minutes(10);
/// Wrong tries that burn a code (the fifth).
pub const SMS_CODE_MAX_FAILURES: i32 = 5;
/// How long a password-reset link works.
pub const RESET_TOKEN_LIFETIME: Duration = Duration::hours(1);

#[derive(Debug, Deserialize, ToSchema)]
pub struct SmsSendRequest {
    /// E.164, or a US number without country code (`305-555-0100`).
    pub phone: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SmsSendResponse {
    /// Seconds until the code expires.
    pub expires_in: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SmsVerifyRequest {
    pub phone: String,
    /// The 6-digit code.
    pub code: String,
    /// Role of a new account: `customer` (default) or `driver`. Ignored for existing accounts.
    pub role: Option<Role>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct AppleLoginRequest {
    /// The identity token (JWT) from Sign in with Apple.
    pub identity_token: String,
    /// Apple gives the name only on the first sign-in; the app passes it on.
    pub name: Option<String>,
    /// Role of a new account: `customer` (default) or `driver`. Ignored for existing accounts.
    pub role: Option<Role>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PasswordForgotRequest {
    pub email: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PasswordResetRequest {
    /// The token from the reset link.
    pub token: String,
    pub password: String,
}

/// A signed-in session.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionResponse {
    /// Bearer token (JWT, 30 days).
    pub token: String,
    pub user: User,
}

async fn check_auth_attempt(state: &AppState, req: &HttpRequest) -> Result<(), ApiError> {
    let ip = client_ip(req, state.settings.trusted_proxy_hops);
    state.limits.check_auth_attempt(ip).await?;
    Ok(())
}

/// Only customers and drivers sign themselves up; staff accounts are made by admins.
fn self_service_role(role: Option<Role>) -> Result<Role, ApiError> {
    match role.unwrap_or(Role::Customer) {
        role @ (Role::Customer | Role::Driver) => Ok(role),
        _ => Err(ApiError::BadRequest(
            "role must be customer or driver; staff accounts are created by an admin".into(),
        )),
    }
}

fn session(state: &AppState, user: User) -> HttpResponse {
    let token = state.tokens.issue(user.id, user.role, state.clock.now());
    HttpResponse::Ok().json(SessionResponse { token, user })
}

/// Sends a 6-digit login code by SMS.
#[utoipa::path(
    tag = "auth",
    request_body = SmsSendRequest,
    responses(
        (status = 202, description = "Code stored and on its way", body = SmsSendResponse),
        (status = 400, description = "Not a phone number", body = ErrorBody),
        (status = 429, description = "Too many codes for this phone or IP", body = ErrorBody),
        (status = 503, description = "SMS is not configured (production)", body = ErrorBody),
    )
)]
#[post("/api/auth/sms/send")]
pub async fn sms_send(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<SmsSendRequest>,
) -> Result<HttpResponse, ApiError> {
    let phone = Phone::parse(&body.phone).map_err(ApiError::BadRequest)?;
    let Some(sms) = &state.sms else {
        return Err(ApiError::Unavailable(
            "SMS sign-in is not available right now".into(),
        ));
    };
    let ip = client_ip(&req, state.settings.trusted_proxy_hops);
    state.limits.check_sms_send(ip, phone.as_str()).await?;

    let code = new_sms_code();
    let now = state.clock.now();
    auth_codes::store_sms_code(
        &state.db,
        phone.as_str(),
        &state.one_time.sms_code(phone.as_str(), &code),
        now + SMS_CODE_LIFETIME,
        now,
    )
    .await?;
    sms.try_send(SendSms(Sms {
        to: phone.to_string(),
        body: templates::sms_login_code(&code),
        kind: SmsKind::VerificationCode,
    }))
    .map_err(|_| {
        ApiError::Unavailable("too many messages are waiting to be sent; try again shortly".into())
    })?;
    Ok(HttpResponse::Accepted().json(SmsSendResponse {
        expires_in: SMS_CODE_LIFETIME.num_seconds(),
    }))
}

/// Exchanges a code for a session; creates the account on first login.
#[utoipa::path(
    tag = "auth",
    request_body = SmsVerifyRequest,
    responses(
        (status = 200, description = "Signed in", body = SessionResponse),
        (status = 400, description = "Malformed phone, code or role", body = ErrorBody),
        (status = 401, description = "Wrong, expired, used or burned code", body = ErrorBody),
        (status = 429, description = "Too many attempts from this IP", body = ErrorBody),
    )
)]
#[post("/api/auth/sms/verify")]
pub async fn sms_verify(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<SmsVerifyRequest>,
) -> Result<HttpResponse, ApiError> {
    check_auth_attempt(&state, &req).await?;
    let phone = Phone::parse(&body.phone).map_err(ApiError::BadRequest)?;
    if !looks_like_sms_code(&body.code) {
        return Err(ApiError::BadRequest("code must be 6 digits".into()));
    }
    let role = self_service_role(body.role)?;
    let now = state.clock.now();
    let check = auth_codes::check_sms_code(
        &state.db,
        phone.as_str(),
        &state.one_time.sms_code(phone.as_str(), &body.code),
        now,
        SMS_CODE_MAX_FAILURES,
    )
    .await?;
    match check {
        CodeCheck::Accepted => {
            let user = users::find_or_create_by_phone(&state.db, &phone, role, now).await?;
            // A phone alone never opens a staff account: holding a SIM is not enough.
            if user.role.is_dispatcher() {
                return Err(ApiError::Forbidden(
                    "staff accounts sign in with email and password".into(),
                ));
            }
            Ok(session(&state, user))
        }
        CodeCheck::Wrong { burned: false } => Err(ApiError::Unauthorized("wrong code".into())),
        CodeCheck::Wrong { burned: true } => Err(ApiError::Unauthorized(
            "wrong code; too many wrong tries, so this code no longer works: request a new one"
                .into(),
        )),
        CodeCheck::NoLiveCode => Err(ApiError::Unauthorized(
            "no valid code for this phone (expired, used or never sent): request a new one".into(),
        )),
    }
}

/// Email + password sign-in (admins, operators, any user with a password).
#[utoipa::path(
    tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in", body = SessionResponse),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 401, description = "Wrong email or password", body = ErrorBody),
        (status = 429, description = "Too many attempts from this IP", body = ErrorBody),
    )
)]
#[post("/api/auth/login")]
pub async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    check_auth_attempt(&state, &req).await?;
    let wrong = || ApiError::Unauthorized("wrong email or password".into());
    let Ok(email) = EmailAddress::parse(&body.email) else {
        return Err(wrong());
    };
    // No stored password is this long; don't spend argon2 time on megabytes of input.
    if body.password.len() > Password::MAX_BYTES {
        return Err(wrong());
    }
    let user = users::by_email(&state.db, &email).await?;
    let stored_hash = user.as_ref().and_then(|u| u.password_hash.as_deref());
    let matches = state.passwords.verify(&body.password, stored_hash).await?;
    match user {
        Some(user) if matches => Ok(session(&state, user)),
        _ => Err(wrong()),
    }
}

/// Sign in with Apple.
#[utoipa::path(
    tag = "auth",
    request_body = AppleLoginRequest,
    responses(
        (status = 200, description = "Signed in", body = SessionResponse),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 401, description = "Token invalid: signature, issuer, audience, expiry or key id", body = ErrorBody),
        (status = 429, description = "Too many attempts from this IP", body = ErrorBody),
        (status = 503, description = "Apple's key set unreachable, or Apple sign-in not configured", body = ErrorBody),
    )
)]
#[post("/api/auth/apple")]
pub async fn apple(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<AppleLoginRequest>,
) -> Result<HttpResponse, ApiError> {
    check_auth_attempt(&state, &req).await?;
    let role = self_service_role(body.role)?;
    let name = body
        .name
        .as_deref()
        .map(PersonName::parse)
        .transpose()
        .map_err(ApiError::BadRequest)?;
    let identity = state
        .apple
        .verify(&body.identity_token)
        .await
        .map_err(|error| match error {
            AppleError::Invalid(why) => ApiError::Unauthorized(why),
            AppleError::Unavailable(why) => ApiError::Unavailable(why),
        })?;
    let email = identity
        .email
        .as_deref()
        .and_then(|e| EmailAddress::parse(e).ok());
    let now = state.clock.now();
    let mut user = users::find_or_create_by_apple_id(
        &state.db,
        &identity.subject,
        email.as_ref(),
        name.as_ref().map(PersonName::as_str),
        role,
        now,
    )
    .await?;
    if user.name.is_none()
        && let Some(name) = &name
        && let Some(named) =
            users::update_profile(&state.db, user.id, Some(name.as_str()), None, now).await?
    {
        user = named;
    }
    Ok(session(&state, user))
}

/// Emails a password-reset link. Always 202, whether or not the address has an account.
#[utoipa::path(
    tag = "auth",
    request_body = PasswordForgotRequest,
    responses(
        (status = 202, description = "If the address has an account, a link is on its way"),
        (status = 400, description = "Not an email address", body = ErrorBody),
        (status = 429, description = "Too many attempts from this IP", body = ErrorBody),
    )
)]
#[post("/api/auth/password/forgot")]
pub async fn password_forgot(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<PasswordForgotRequest>,
) -> Result<HttpResponse, ApiError> {
    check_auth_attempt(&state, &req).await?;
    let email = EmailAddress::parse(&body.email).map_err(ApiError::BadRequest)?;
    // Every branch answers 202 alike: the answer never tells whether the account exists.
    if let Some(user) = users::by_email(&state.db, &email).await? {
        if state.limits.check_recipient(email.as_str()).await.is_ok() {
            send_reset_link(&state, &user, &email).await?;
        } else {
            tracing::info!(user_id = %user.id, "password-reset email skipped: sent too often to this address");
        }
    }
    Ok(HttpResponse::Accepted().finish())
}

/// Stores a fresh reset token for `user` and queues the email carrying its link.
async fn send_reset_link(
    state: &AppState,
    user: &User,
    email: &EmailAddress,
) -> Result<(), ApiError> {
    let token = new_reset_token();
    let now = state.clock.now();
    auth_codes::store_reset_token(
        &state.db,
        &state.one_time.reset_token(&token),
        user.id,
        now + RESET_TOKEN_LIFETIME,
        now,
    )
    .await?;
    let mut link = state
        .settings
        .public_url
        .join("reset-password")
        .map_err(anyhow::Error::from)?;
    link.query_pairs_mut().append_pair("token", &token);
    let message = templates::password_reset_email(email.as_str(), link.as_str());
    if state.email.try_send(SendEmail(message)).is_err() {
        tracing::error!(user_id = %user.id, "password-reset email dropped: the email queue is full");
    }
    Ok(())
}

/// Sets a new password with the token of a reset link (single use, one hour).
#[utoipa::path(
    tag = "auth",
    request_body = PasswordResetRequest,
    responses(
        (status = 204, description = "Password changed"),
        (status = 400, description = "Token invalid, used or expired; or password too short", body = ErrorBody),
        (status = 429, description = "Too many attempts from this IP", body = ErrorBody),
    )
)]
#[post("/api/auth/password/reset")]
pub async fn password_reset(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<PasswordResetRequest>,
) -> Result<HttpResponse, ApiError> {
    check_auth_attempt(&state, &req).await?;
    let body = body.into_inner();
    let password = Password::parse(body.password).map_err(ApiError::BadRequest)?;
    let token_hash = state.one_time.reset_token(body.token.trim());
    let invalid = || {
        ApiError::BadRequest(
            "this reset link is invalid, already used or expired: ask for a new one".into(),
        )
    };
    // Look before hashing, so a made-up token costs no argon2 work. The reset itself re-checks
    // the token atomically: two requests racing with one token cannot both succeed.
    if !auth_codes::reset_token_is_live(&state.db, &token_hash, state.clock.now()).await? {
        return Err(invalid());
    }
    let hash = state.passwords.hash(password.expose()).await?;
    auth_codes::reset_password(&state.db, &token_hash, &hash, state.clock.now())
        .await?
        .map(|_| HttpResponse::NoContent().finish())
        .ok_or_else(invalid)
}
