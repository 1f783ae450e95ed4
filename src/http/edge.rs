//! The outermost middleware: gives every request an id, logs it when it finishes (method, route
//! pattern, status, latency, id: never a query string, header or body, which may carry tokens or
//! codes), rewrites any error response that is not already in the API's error shape, and puts
//! the security headers on every response.

use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody, to_bytes_limited};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, HttpResponse};
use tracing::Instrument;
use uuid::Uuid;

use super::error::{ErrorBody, code_for_status};

pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request id a handler or log line can refer to.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Accepts an id from a load balancer when it is short and plain; otherwise makes one.
fn request_id_for(req: &ServiceRequest) -> String {
    req.headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .map(str::to_owned)
        .unwrap_or_else(|| Uuid::new_v4().to_string())
}

pub async fn edge(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let started = Instant::now();
    let request_id = request_id_for(&req);
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let method = req.method().clone();
    let span = tracing::info_span!("request", id = %request_id, %method);

    // Handler and extractor errors arrive as responses. Only a middleware can answer Err (CORS
    // refusing a preflight from an unlisted origin); actix renders that one itself, since the
    // request, needed to build a response here, has been consumed (holding a clone of it would
    // break routing, which needs it unshared).
    let response = match next.call(req).instrument(span.clone()).await {
        Ok(response) => response.map_into_boxed_body(),
        Err(error) => {
            let status = error.as_response_error().status_code().as_u16();
            span.in_scope(|| tracing::info!(status, "request refused by middleware"));
            return Err(error);
        }
    };
    let mut response = into_error_shape(response).await;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID.clone(), value);
    }
    add_security_headers(response.headers_mut());

    let status = response.status().as_u16();
    let route = response
        .request()
        .match_pattern()
        .unwrap_or_else(|| "(unmatched)".to_owned());
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| {
        if status >= 500 {
            tracing::error!(%route, status, latency_ms, "request finished");
        } else {
            tracing::info!(%route, status, latency_ms, "request finished");
        }
    });
    Ok(response)
}

/// Headers every response carries. The engine serves JSON and images, never pages, so the
/// content policy allows nothing to run or load; HSTS is ignored by browsers over plain HTTP and
/// takes effect behind the TLS-terminating proxy.
const SECURITY_HEADERS: [(&str, &str); 7] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
    (
        "strict-transport-security",
        "max-age=63072000; includeSubDomains",
    ),
    ("cross-origin-opener-policy", "same-origin"),
    (
        "permissions-policy",
        "camera=(), microphone=(), geolocation=(), payment=()",
    ),
];

/// Adds [`SECURITY_HEADERS`] a handler did not set itself.
fn add_security_headers(headers: &mut actix_web::http::header::HeaderMap) {
    for (name, value) in SECURITY_HEADERS {
        let name = HeaderName::from_static(name);
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
}

/// Error bodies longer than this are not quoted in the rewritten message.
const QUOTE_LIMIT: usize = 512;

/// Rewrites an error response that is not JSON (actix's own plain-text errors) into the error
/// shape. A 4xx keeps actix's explanation as the message; a 5xx gets a generic one.
async fn into_error_shape(response: ServiceResponse<BoxBody>) -> ServiceResponse<BoxBody> {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (request, original) = response.into_parts();
    let headers = original.headers().clone();
    let text = match to_bytes_limited(original.into_body(), QUOTE_LIMIT).await {
        Ok(Ok(bytes)) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        _ => String::new(),
    };
    let message = if status.is_server_error() || text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let mut rewritten =
        HttpResponse::build(status).json(ErrorBody::new(code_for_status(status), message));
    // Keep headers that tell the client what to do next.
    for name in [header::ALLOW, header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
        if let Some(value) = headers.get(&name) {
            rewritten.headers_mut().insert(name, value.clone());
        }
    }
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!("an internal error reached the edge without the API error shape");
    }
    ServiceResponse::new(request, rewritten)
}
