//! `/api/drivers`: availability, nearby drivers, the live map layer.

use actix_web::{HttpResponse, get, put, web};
use serde::{Deserialize, Serialize};
use serde_json::json;
use umuve_actors::geo::LatLng;
use umuve_actors::ids::DriverId;
use umuve_actors::realtime::geo_index::{
    FindNearest, GetLiveDrivers, SearchFilter, SetAvailability,
};
use umuve_actors::realtime::model::NearbyDriver;
use utoipa::{IntoParams, ToSchema};

use crate::auth::caller::{Authorized, Dispatchers, Drivers};
use crate::http::{ApiError, ErrorBody};
use crate::state::AppState;
use crate::storage::users;

/// Largest search radius and result count.
const MAX_RADIUS_M: f64 = 200_000.0;
const MAX_LIMIT: usize = 200;
const DEFAULT_LIMIT: usize = 20;

#[derive(Debug, Deserialize, ToSchema)]
pub struct AvailabilityRequest {
    pub available: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NearbyQuery {
    pub lat: f64,
    pub lng: f64,
    /// Default `DISPATCH_RADIUS_M`; at most 200 km.
    pub radius_m: Option<f64>,
    /// 1 to 200, default 20.
    pub limit: Option<usize>,
    /// Only available (`true`) or unavailable (`false`) drivers.
    pub available: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NearbyDrivers {
    pub drivers: Vec<NearbyDriver>,
}

fn hub_unavailable<E>(_: E) -> ApiError {
    ApiError::Unavailable("the realtime engine is not answering; try again".into())
}

/// Sets the calling driver's availability (only approved drivers may become available).
#[utoipa::path(
    tag = "drivers",
    security(("bearer" = [])),
    request_body = AvailabilityRequest,
    responses(
        (status = 204, description = "Set"),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Not a driver, or not approved yet", body = ErrorBody),
    )
)]
#[put("/api/drivers/me/availability")]
pub async fn set_availability(
    state: web::Data<AppState>,
    driver: Authorized<Drivers>,
    body: web::Json<AvailabilityRequest>,
) -> Result<HttpResponse, ApiError> {
    let user = users::by_id(&state.db, driver.caller.user_id)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("this account no longer exists".into()))?;
    state
        .hub
        .geo
        .send(SetAvailability {
            driver: DriverId::from_uuid(user.id),
            approved: Some(user.approved),
            available: body.available,
        })
        .await
        .map_err(hub_unavailable)?
        .map_err(|_| ApiError::Forbidden("only approved drivers can become available".into()))?;
    Ok(HttpResponse::NoContent().finish())
}

/// Drivers near a point, nearest first by great-circle distance (dispatchers). Only drivers with
/// a fresh position (`DRIVER_STALE_SECS`) appear.
#[utoipa::path(
    tag = "drivers",
    security(("bearer" = [])),
    params(NearbyQuery),
    responses(
        (status = 200, body = NearbyDrivers),
        (status = 400, description = "Invalid coordinates, radius or limit", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Not a dispatcher", body = ErrorBody),
    )
)]
#[get("/api/drivers/nearby")]
pub async fn nearby(
    state: web::Data<AppState>,
    _dispatcher: Authorized<Dispatchers>,
    query: web::Query<NearbyQuery>,
) -> Result<HttpResponse, ApiError> {
    let at = LatLng::new(query.lat, query.lng).map_err(ApiError::BadRequest)?;
    let radius_m = query.radius_m.unwrap_or(state.settings.dispatch.radius_m);
    if !radius_m.is_finite() || radius_m <= 0.0 || radius_m > MAX_RADIUS_M {
        return Err(ApiError::BadRequest(format!(
            "radius_m must be between 0 and {MAX_RADIUS_M}"
        )));
    }
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    let drivers = state
        .hub
        .geo
        .send(FindNearest {
            at,
            radius_m,
            limit,
            filter: SearchFilter {
                available: query.available,
                ..SearchFilter::default()
            },
        })
        .await
        .map_err(hub_unavailable)?;
    Ok(HttpResponse::Ok().json(NearbyDrivers { drivers }))
}

/// Every live driver as a GeoJSON FeatureCollection of points (dispatchers' map layer).
#[utoipa::path(
    tag = "drivers",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "GeoJSON FeatureCollection; properties as in map.snapshot"),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Not a dispatcher", body = ErrorBody),
    )
)]
#[get("/api/drivers/live")]
pub async fn live(
    state: web::Data<AppState>,
    _dispatcher: Authorized<Dispatchers>,
) -> Result<HttpResponse, ApiError> {
    let drivers = state
        .hub
        .geo
        .send(GetLiveDrivers { bbox: None })
        .await
        .map_err(hub_unavailable)?;
    let features: Vec<_> = drivers
        .iter()
        .map(|driver| {
            json!({
                "type": "Feature",
                "id": driver.driver_id,
                "geometry": { "type": "Point", "coordinates": [driver.lng, driver.lat] },
                "properties": driver,
            })
        })
        .collect();
    Ok(HttpResponse::Ok()
        .content_type("application/geo+json")
        .json(json!({ "type": "FeatureCollection", "features": features })))
}
