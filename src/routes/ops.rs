//! Operations: liveness, readiness, the OpenAPI document.

use std::time::Duration;

use actix_web::{HttpResponse, get, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::{ApiError, ErrorBody};
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    pub status: &'static str,
    /// `sqlite` or `postgres`.
    pub database: &'static str,
}

/// The process is up.
#[utoipa::path(tag = "operations", responses((status = 200, body = Health)))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

/// The database answers.
#[utoipa::path(
    tag = "operations",
    responses(
        (status = 200, body = Readiness),
        (status = 503, description = "The database does not answer", body = ErrorBody),
    )
)]
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    match tokio::time::timeout(Duration::from_secs(2), state.db.ping()).await {
        Ok(Ok(())) => Ok(HttpResponse::Ok().json(Readiness {
            status: "ready",
            database: state.db.backend_name(),
        })),
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness: database ping failed");
            Err(ApiError::Unavailable(
                "the database is not reachable".into(),
            ))
        }
        Err(_) => Err(ApiError::Unavailable(
            "the database did not answer in time".into(),
        )),
    }
}

/// The served OpenAPI document, built once at start-up from the handlers.
pub struct OpenApiJson(pub String);

/// This document.
#[utoipa::path(tag = "operations", responses((status = 200, description = "OpenAPI 3 document")))]
#[get("/api/openapi.json")]
pub async fn openapi_json(doc: web::Data<OpenApiJson>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(doc.0.clone())
}

/// Prometheus metrics: sockets, messages, drops, mailbox depths, fan-out latency, process memory.
#[utoipa::path(tag = "operations", responses((status = 200, description = "Prometheus text format")))]
#[get("/metrics")]
pub async fn metrics() -> HttpResponse {
    use prometheus::Encoder;
    let registry = &umuve_actors::realtime::metrics::METRICS.registry;
    let mut families = registry.gather();
    families.extend(process_metrics());
    let mut text = Vec::new();
    if let Err(error) = prometheus::TextEncoder::new().encode(&families, &mut text) {
        tracing::error!(%error, "could not encode metrics");
    }
    HttpResponse::Ok()
        .content_type(prometheus::TEXT_FORMAT)
        .body(text)
}

/// Resident memory of this process, read from /proc (Linux); nothing elsewhere.
fn process_metrics() -> Vec<prometheus::proto::MetricFamily> {
    let Some(rss_bytes) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<i64>()
                        .ok()
                })
                .map(|kib| kib * 1024)
        })
    else {
        return Vec::new();
    };
    let gauge = prometheus::IntGauge::new(
        "process_resident_memory_bytes",
        "Resident memory size in bytes",
    )
    .expect("valid metric");
    gauge.set(rss_bytes);
    prometheus::core::Collector::collect(&gauge)
}
