//! Extractors that hand handlers the authenticated caller. `Caller` takes any valid token;
//! `Authorized<P>` also requires one of the roles of policy `P`, answering 403 otherwise.

use std::future::{Ready, ready};
use std::marker::PhantomData;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use uuid::Uuid;

use super::tokens::TokenError;
use crate::domain::Role;
use crate::http::ApiError;
use crate::state::AppState;

/// The authenticated caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub user_id: Uuid,
    pub role: Role,
}

/// The token of a request: `Authorization: Bearer <JWT>`.
pub fn bearer_token(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl Caller {
    /// Verifies a token against the engine's keys and clock.
    pub fn from_token(state: &AppState, token: &str) -> Result<Self, ApiError> {
        let claims =
            state
                .tokens
                .verify(token, state.clock.now())
                .map_err(|error| match error {
                    TokenError::Expired => {
                        ApiError::Unauthorized("token expired; sign in again".into())
                    }
                    TokenError::Invalid => ApiError::Unauthorized("invalid token".into()),
                })?;
        Ok(Caller {
            user_id: claims.sub,
            role: claims.role,
        })
    }

    fn extract_from(req: &HttpRequest) -> Result<Self, ApiError> {
        let state = req
            .app_data::<web::Data<AppState>>()
            .ok_or_else(|| ApiError::Unexpected(anyhow::anyhow!("AppState is not registered")))?;
        let token = bearer_token(req).ok_or_else(|| {
            ApiError::Unauthorized("missing bearer token (Authorization: Bearer <token>)".into())
        })?;
        Self::from_token(state, token)
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Self::extract_from(req))
    }
}

/// A set of roles allowed to use an endpoint.
pub trait RolePolicy {
    const ROLES: &'static [Role];
    /// For the 403 message: "this endpoint is for ...".
    const WHO: &'static str;
}

/// Admins only.
pub struct Admins;
impl RolePolicy for Admins {
    const ROLES: &'static [Role] = &[Role::Admin];
    const WHO: &'static str = "admins";
}

/// Admins and operators.
pub struct Dispatchers;
impl RolePolicy for Dispatchers {
    const ROLES: &'static [Role] = &[Role::Admin, Role::Operator];
    const WHO: &'static str = "dispatchers (admins and operators)";
}

/// Customers only.
pub struct Customers;
impl RolePolicy for Customers {
    const ROLES: &'static [Role] = &[Role::Customer];
    const WHO: &'static str = "customers";
}

/// Drivers only.
pub struct Drivers;
impl RolePolicy for Drivers {
    const ROLES: &'static [Role] = &[Role::Driver];
    const WHO: &'static str = "drivers";
}

/// A caller whose role the policy `P` allows.
#[derive(Debug)]
pub struct Authorized<P> {
    pub caller: Caller,
    policy: PhantomData<P>,
}

impl<P: RolePolicy> FromRequest for Authorized<P> {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Caller::extract_from(req).and_then(|caller| {
            if P::ROLES.contains(&caller.role) {
                Ok(Authorized {
                    caller,
                    policy: PhantomData,
                })
            } else {
                Err(ApiError::Forbidden(format!(
                    "this endpoint is for {}",
                    P::WHO
                )))
            }
        }))
    }
}
