//! `/api/service-area`: where Umuve picks up (Miami-Dade, Broward, Palm Beach).

use actix_web::http::header;
use actix_web::{HttpResponse, get, web};
use serde::{Deserialize, Serialize};
use umuve_actors::geo::LatLng;
use umuve_actors::geo::service_area_geojson;
use utoipa::{IntoParams, ToSchema};

use crate::http::{ApiError, ErrorBody};
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CheckQuery {
    pub lat: f64,
    pub lng: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CheckResult {
    pub inside: bool,
    /// `Miami-Dade`, `Broward`, `Palm Beach`, or null outside.
    pub county: Option<String>,
}

/// The three counties as a GeoJSON FeatureCollection (one Feature per county, property `name`).
#[utoipa::path(
    tag = "service area",
    responses((status = 200, description = "GeoJSON FeatureCollection (Census 2018, 1:500,000)"))
)]
#[get("/api/service-area")]
pub async fn service_area() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/geo+json")
        .insert_header((header::CACHE_CONTROL, "public, max-age=86400"))
        .body(service_area_geojson())
}

/// Whether a point is served, and in which county.
#[utoipa::path(
    tag = "service area",
    params(CheckQuery),
    responses(
        (status = 200, body = CheckResult),
        (status = 400, description = "Missing or invalid coordinates", body = ErrorBody),
    )
)]
#[get("/api/service-area/check")]
pub async fn check(
    state: web::Data<AppState>,
    query: web::Query<CheckQuery>,
) -> Result<HttpResponse, ApiError> {
    let at = LatLng::new(query.lat, query.lng).map_err(ApiError::BadRequest)?;
    let county = state.hub.area.county_at(&at);
    Ok(HttpResponse::Ok().json(CheckResult {
        inside: county.is_some(),
        county: county.map(|c| c.name().to_owned()),
    }))
}
