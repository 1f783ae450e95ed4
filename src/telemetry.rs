//! Logging (tracing) and error monitoring (Sentry, only when `SENTRY_DSN` is set).

use std::io::IsTerminal;
use std::sync::Arc;

use sentry::integrations::tracing::{BreadcrumbLayer, ErrorLayer, SpanLayer};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, Settings};

/// Installs the global subscriber: `RUST_LOG` filters (default `info`), text or JSON lines on
/// stdout, and Sentry's layers when Sentry is on (errors as events,
/// info as breadcrumbs, spans as traces).
pub fn init_logging(format: LogFormat, sentry: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let output = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stdout().is_terminal())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .boxed(),
    };
    let registry = tracing_subscriber::registry().with(filter).with(output);
    if sentry {
        registry
            .with(ErrorLayer::new().with_filter(LevelFilter::ERROR))
            .with(BreadcrumbLayer::new().with_filter(LevelFilter::INFO))
            .with(SpanLayer::new().with_filter(LevelFilter::INFO))
            .init();
    } else {
        registry.init();
    }
}

/// Starts Sentry when configured; keep the guard alive for the life of the process (dropping
/// it flushes pending events).
pub fn init_sentry(settings: &Settings) -> Option<sentry::ClientInitGuard> {
    let sentry_settings = settings.sentry.as_ref()?;
    let mut options = sentry::ClientOptions::new();
    options.dsn = Some(sentry_settings.dsn.clone());
    options.before_send = Some(Arc::new(|mut event| {
        scrub_request(&mut event.request);
        Some(event)
    }));
    let options = options
        .release(sentry::release_name!().unwrap_or_default())
        .environment(if settings.is_production() {
            "production"
        } else {
            "development"
        })
        .traces_sample_rate(sentry_settings.traces_sample_rate)
        .send_default_pii(false)
        // Request bodies carry passwords, codes and tokens: never sent.
        .max_request_body_size(sentry::MaxRequestBodySize::None);
    Some(sentry::init(options))
}

/// Removes what may carry secrets from the request attached to an event: the query string (a
/// WebSocket token travels there), the body and cookies. Sensitive headers are dropped by
/// sentry-actix already (`send_default_pii = false`).
fn scrub_request(request: &mut Option<sentry::protocol::Request>) {
    if let Some(request) = request {
        if let Some(url) = &mut request.url {
            url.set_query(None);
        }
        request.query_string = None;
        request.data = None;
        request.cookies = None;
    }
}
