//! `GET /ws`: the WebSocket endpoint. Authenticates before the upgrade (401 otherwise), then
//! starts a `DriverSession` or a `ClientSession` whose frames come from a bounded reader and
//! whose output is metered for back-pressure. Protocol: docs/protocol.md.

mod inbound;
mod outbound;
pub mod protocol;
pub mod session;

use actix_web::{HttpRequest, HttpResponse, get, web};
use actix_web_actors::ws::{self, WebsocketContext};
use serde::Deserialize;
use umuve_actors::ids::UserId;
use utoipa::IntoParams;

use self::inbound::InboundFrames;
use self::outbound::{OutboundGauge, decouple};
use self::session::{
    ClientRole, ClientSession, DriverRole, DriverSession, MAX_FRAME, SessionRole, WsSession,
};
use crate::auth::caller::{Caller, bearer_token};
use crate::domain::Role;
use crate::http::{ApiError, ErrorBody};
use crate::state::AppState;
use crate::storage::users;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WsQuery {
    /// The bearer token, for browsers (which cannot set headers on a WebSocket).
    pub token: Option<String>,
}

/// Opens the realtime socket (upgrade to WebSocket).
#[utoipa::path(
    tag = "realtime",
    params(WsQuery),
    security(("bearer" = [])),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol (see docs/protocol.md)"),
        (status = 400, description = "Not a WebSocket handshake", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 429, description = "Too many connections for this user (WS_CONNECTS_PER_USER_PER_MINUTE)", body = ErrorBody),
    )
)]
#[get("/ws")]
pub async fn upgrade(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    query: web::Query<WsQuery>,
) -> Result<HttpResponse, ApiError> {
    let token = bearer_token(&req)
        .or(query.token.as_deref())
        .ok_or_else(|| {
            ApiError::Unauthorized("missing token (Authorization: Bearer, or ?token=)".into())
        })?;
    let caller = Caller::from_token(&state, token)?;
    state.limits.check_ws_connect(caller.user_id).await?;
    // The account as stored now: its role and approval, not what the token said a month ago.
    let user = users::by_id(&state.db, caller.user_id)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("this account no longer exists".into()))?;
    let handshake = ws::handshake(&req)
        .map_err(|error| ApiError::BadRequest(format!("not a WebSocket handshake: {error}")))?;
    let user_id = UserId::from_uuid(user.id);
    let gauge = OutboundGauge::default();
    let response = match user.role {
        Role::Driver => {
            let role = DriverRole {
                driver: user_id.as_driver(),
                approved: user.approved,
            };
            start(
                handshake,
                DriverSession::new(user_id, role, state, gauge.clone()),
                payload,
                gauge,
            )
        }
        role => {
            let role = ClientRole { role };
            start(
                handshake,
                ClientSession::new(user_id, role, state, gauge.clone()),
                payload,
                gauge,
            )
        }
    };
    Ok(response)
}

fn start<R: SessionRole>(
    mut handshake: actix_web::HttpResponseBuilder,
    session: WsSession<R>,
    payload: web::Payload,
    gauge: OutboundGauge,
) -> HttpResponse {
    let frames = InboundFrames::new(payload, MAX_FRAME);
    // actix-web-actors' own reader gets a stream that never yields; ours feeds the session.
    let output = WebsocketContext::with_factory(futures_util::stream::pending(), move |ctx| {
        use actix::AsyncContext;
        ctx.add_stream(frames);
        session
    });
    handshake.streaming(decouple(output, gauge))
}
