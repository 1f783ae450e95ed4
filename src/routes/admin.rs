//! `/api/admin/*`: the first admin, staff-made accounts, driver approval, user listing.

use actix_web::{HttpRequest, HttpResponse, get, post, web};

use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::caller::{Admins, Authorized, Dispatchers};
use crate::domain::{EmailAddress, Password, PersonName, Phone, Role};
use crate::http::client_ip::client_ip;
use crate::http::{ApiError, ErrorBody, pagination};
use crate::state::AppState;
use crate::storage::users::{self, NewUser, SeedOutcome, User, UserFilter, approved_on_creation};
use umuve_actors::ids::UserId;
use umuve_actors::realtime::geo_index::DriverApproved;

#[derive(Debug, Deserialize, ToSchema)]
pub struct SeedRequest {
    /// Must equal `ADMIN_SEED_SECRET`.
    pub secret: String,
    pub email: String,
    pub password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateUserRequest {
    pub role: Role,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub name: Option<String>,
    /// Lets the user sign in with email + password (requires `email`).
    pub password: Option<String>,
    /// Drivers start unapproved unless this is true; other roles are always approved.
    pub approved: Option<bool>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListUsersQuery {
    pub role: Option<Role>,
    pub approved: Option<bool>,
    /// 1 to 100, default 50.
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserPage {
    pub users: Vec<User>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Compares secrets in constant time (over their digests, so lengths do not leak either).
fn secrets_match(given: &str, expected: &str) -> bool {
    Sha256::digest(given.as_bytes())
        .ct_eq(&Sha256::digest(expected.as_bytes()))
        .into()
}

/// Creates the first admin when `secret` equals `ADMIN_SEED_SECRET` and no admin exists yet.
#[utoipa::path(
    tag = "admin",
    request_body = SeedRequest,
    responses(
        (status = 201, description = "The first admin", body = User),
        (status = 400, description = "Invalid email or password", body = ErrorBody),
        (status = 403, description = "Wrong secret", body = ErrorBody),
        (status = 404, description = "Seeding is off (ADMIN_SEED_SECRET unset)", body = ErrorBody),
        (status = 409, description = "An admin exists already, or the email is taken", body = ErrorBody),
        (status = 429, description = "Too many attempts from this IP", body = ErrorBody),
    )
)]
#[post("/api/admin/seed")]
pub async fn seed(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<SeedRequest>,
) -> Result<HttpResponse, ApiError> {
    let Some(expected) = &state.settings.admin_seed_secret else {
        return Err(ApiError::NotFound("no route for /api/admin/seed".into()));
    };
    let ip = client_ip(&req, state.settings.trusted_proxy_hops);
    state.limits.check_auth_attempt(ip).await?;
    if !secrets_match(&body.secret, expected.expose_secret()) {
        return Err(ApiError::Forbidden("wrong seed secret".into()));
    }
    let body = body.into_inner();
    let email = EmailAddress::parse(&body.email).map_err(ApiError::BadRequest)?;
    let password = Password::parse(body.password).map_err(ApiError::BadRequest)?;
    let hash = state.passwords.hash(password.expose()).await?;
    match users::seed_first_admin(&state.db, &email, hash, state.clock.now())
        .await
        .map_err(|e| ApiError::from_db(e, "this email belongs to another account"))?
    {
        SeedOutcome::Seeded(user) => {
            tracing::info!(user_id = %user.id, "first admin seeded");
            Ok(HttpResponse::Created().json(user))
        }
        SeedOutcome::AdminAlreadyExists => {
            Err(ApiError::Conflict("an admin exists already".into()))
        }
    }
}

/// Creates an account of any role (admins only).
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    request_body = CreateUserRequest,
    responses(
        (status = 201, body = User),
        (status = 400, description = "Invalid field, or neither email nor phone", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 409, description = "Email or phone taken", body = ErrorBody),
    )
)]
#[post("/api/admin/users")]
pub async fn create_user(
    state: web::Data<AppState>,
    _admin: Authorized<Admins>,
    body: web::Json<CreateUserRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let email = body
        .email
        .as_deref()
        .map(EmailAddress::parse)
        .transpose()
        .map_err(ApiError::BadRequest)?;
    let phone = body
        .phone
        .as_deref()
        .map(Phone::parse)
        .transpose()
        .map_err(ApiError::BadRequest)?;
    let name = body
        .name
        .as_deref()
        .map(PersonName::parse)
        .transpose()
        .map_err(ApiError::BadRequest)?;
    if email.is_none() && phone.is_none() {
        return Err(ApiError::BadRequest(
            "an account needs an email or a phone".into(),
        ));
    }
    let password_hash = match body.password {
        None => None,
        Some(_) if email.is_none() => {
            return Err(ApiError::BadRequest(
                "a password needs an email to sign in with".into(),
            ));
        }
        Some(password) => {
            let password = Password::parse(password).map_err(ApiError::BadRequest)?;
            Some(state.passwords.hash(password.expose()).await?)
        }
    };
    let approved = approved_on_creation(body.role) || body.approved.unwrap_or(false);
    let user = users::insert(
        &state.db,
        NewUser {
            role: Some(body.role),
            phone: phone.as_ref(),
            email: email.as_ref(),
            password_hash,
            apple_id: None,
            name: name.as_ref().map(PersonName::as_str),
            approved,
        },
        state.clock.now(),
    )
    .await
    .map_err(|e| ApiError::from_db(e, "the email or phone belongs to another account"))?;
    Ok(HttpResponse::Created().json(user))
}

/// Approves a driver: from now on they can be offered jobs.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The driver's user id")),
    responses(
        (status = 200, body = User),
        (status = 400, description = "Not a UUID", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Not a dispatcher", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 409, description = "The user is not a driver", body = ErrorBody),
    )
)]
#[post("/api/admin/drivers/{id}/approve")]
pub async fn approve_driver(
    state: web::Data<AppState>,
    _dispatcher: Authorized<Dispatchers>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    if let Some(driver) = users::approve_driver(&state.db, id, state.clock.now()).await? {
        tracing::info!(driver_id = %driver.id, "driver approved");
        // A connected driver may go available at once, over the socket too.
        state.hub.geo.do_send(DriverApproved {
            driver: UserId::from_uuid(driver.id).as_driver(),
        });
        return Ok(HttpResponse::Ok().json(driver));
    }
    match users::by_id(&state.db, id).await? {
        Some(_) => Err(ApiError::Conflict("this user is not a driver".into())),
        None => Err(ApiError::NotFound("no such user".into())),
    }
}

/// Lists users, newest first (dispatchers).
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(ListUsersQuery),
    responses(
        (status = 200, body = UserPage),
        (status = 400, description = "Invalid filter, limit or cursor", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Not a dispatcher", body = ErrorBody),
    )
)]
#[get("/api/admin/users")]
pub async fn list_users(
    state: web::Data<AppState>,
    _dispatcher: Authorized<Dispatchers>,
    query: web::Query<ListUsersQuery>,
) -> Result<HttpResponse, ApiError> {
    let (limit, after) = pagination::page(query.limit, query.cursor.as_deref())?;
    let filter = UserFilter {
        role: query.role,
        approved: query.approved,
    };
    // One extra row tells whether another page exists.
    let mut users = users::list(&state.db, filter, after, limit + 1).await?;
    let next_cursor = pagination::next_cursor(&mut users, limit, |u| (u.created_at, u.id));
    Ok(HttpResponse::Ok().json(UserPage { users, next_cursor }))
}
