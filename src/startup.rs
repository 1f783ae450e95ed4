//! Builds the whole server from settings: storage, actors, HTTP. Tests use it to start a real
//! engine on `127.0.0.1:0`; `main` uses it to serve.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use actix_cors::Cors;
use actix_web::dev::{Server, ServerHandle};
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::middleware::{Condition, from_fn};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use anyhow::Context;
use umuve_actors::clock::SharedClock;
use umuve_actors::outbound::PushTransport;
use utoipa::OpenApi;
use utoipa_actix_web::AppExt;

use crate::config::Settings;
use crate::housekeeping::Housekeeper;
use crate::http::ApiError;
use crate::http::edge::edge;
use crate::http::route_table::RouteTable;
use crate::routes::{self, ops::OpenApiJson};
use crate::state::AppState;
use crate::storage::Db;

/// Largest request body accepted anywhere (JSON and raw).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// How long in-flight requests get to finish after SIGTERM/SIGINT.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long notifications being sent get to finish at shutdown: longer than one provider call
/// may take (15 s), so a send the provider accepted is recorded and not repeated.
const NOTIFIER_DRAIN_GRACE: Duration = Duration::from_secs(20);

/// The OpenAPI document of the routes this build serves.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    let (_, mut api) = App::new()
        .into_utoipa_app()
        .openapi(routes::ApiDoc::openapi())
        .configure(routes::configure)
        .split_for_parts();
    routes::document_common_errors(&mut api);
    api
}

fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(MAX_BODY_BYTES)
        .error_handler(|error, _req| {
            match error {
                JsonPayloadError::OverflowKnownLength { .. }
                | JsonPayloadError::Overflow { .. } => ApiError::PayloadTooLarge(format!(
                    "request body is larger than {} KiB",
                    MAX_BODY_BYTES / 1024
                )),
                JsonPayloadError::ContentType => {
                    ApiError::UnsupportedMediaType("expected Content-Type: application/json".into())
                }
                JsonPayloadError::Deserialize(e) if e.is_data() => {
                    ApiError::BadRequest(format!("invalid request: {e}"))
                }
                JsonPayloadError::Deserialize(e) => {
                    ApiError::BadRequest(format!("malformed JSON: {e}"))
                }
                other => ApiError::BadRequest(format!("could not read the request body: {other}")),
            }
            .into()
        })
}

fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|error: PathError, _req| {
        ApiError::BadRequest(format!("invalid path parameter: {error}")).into()
    })
}

fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|error: QueryPayloadError, _req| {
        ApiError::BadRequest(format!("invalid query: {error}")).into()
    })
}

fn cors(origins: &[String]) -> Cors {
    origins
        .iter()
        .fold(Cors::default(), |cors, origin| cors.allowed_origin(origin))
        .allowed_methods(["GET", "POST", "PUT", "PATCH", "DELETE"])
        .allowed_headers(["authorization", "content-type", "x-request-id"])
        .expose_headers(["x-request-id", "retry-after"])
        .max_age(3600)
}

async fn unmatched(
    req: HttpRequest,
    table: web::Data<RouteTable>,
) -> Result<HttpResponse, ApiError> {
    Err(table.unmatched(&req))
}

/// A built engine, bound to its port, not yet serving.
/// How long sent data may stay unacknowledged before the kernel drops a connection.
const UNACKNOWLEDGED_DATA_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

pub struct Application {
    server: Server,
    local_addr: SocketAddr,
    state: web::Data<AppState>,
}

impl Application {
    /// Connects to the database, migrates it, starts the actors and binds `HOST:PORT`.
    /// Must run inside an actix system.
    pub async fn build(settings: Settings, clock: SharedClock) -> anyhow::Result<Self> {
        let db = Db::connect(&settings.database_url)
            .await
            .with_context(|| format!("cannot open the database {:?}", settings.database_url))?;
        db.migrate().await.context("cannot migrate the database")?;
        let listener = TcpListener::bind((settings.host, settings.port))
            .with_context(|| format!("cannot listen on {}:{}", settings.host, settings.port))?;
        Self::build_with(settings, db, clock, listener, None).await
    }

    /// Builds on an open database and a bound listener; `push` replaces the push transport the
    /// settings would choose (APNs cannot be reached from tests).
    pub async fn build_with(
        settings: Settings,
        db: Db,
        clock: SharedClock,
        listener: TcpListener,
        push: Option<Arc<dyn PushTransport>>,
    ) -> anyhow::Result<Self> {
        let local_addr = listener.local_addr()?;
        let workers = settings
            .http_workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        let sentry_enabled = settings.sentry.is_some();
        let send_buffer = settings.realtime.tcp_send_buffer_bytes;
        let cors_origins = settings.cors_origins.clone();

        let state = web::Data::new(AppState::start(settings, db, clock, push)?);
        Housekeeper::new(state.clone().into_inner()).start();
        tokio::spawn(remove_unrecorded_photos(state.clone().into_inner()));
        restore_realtime_state(&state).await?;

        let document = openapi_document();
        let route_table = web::Data::new(RouteTable::from_openapi(&document));
        let document = web::Data::new(OpenApiJson(
            document
                .to_json()
                .context("cannot render the OpenAPI document")?,
        ));

        let app_state = state.clone();
        let server = HttpServer::new(move || {
            let (app, _) = App::new()
                .into_utoipa_app()
                .configure(routes::configure)
                .split_for_parts();
            app.app_data(app_state.clone())
                .app_data(document.clone())
                .app_data(route_table.clone())
                .app_data(json_config())
                .app_data(path_config())
                .app_data(query_config())
                .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
                .default_service(web::to(unmatched))
                .wrap(Condition::new(
                    !cors_origins.is_empty(),
                    cors(&cors_origins),
                ))
                .wrap(Condition::new(sentry_enabled, sentry_actix::Sentry::new()))
                .wrap(from_fn(edge))
        })
        .on_connect(move |connection, _| {
            let Some(stream) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() else {
                return;
            };
            let socket = socket2::SockRef::from(stream);
            if let Some(bytes) = send_buffer
                && let Err(error) = socket.set_send_buffer_size(bytes)
            {
                tracing::debug!(%error, "could not size the socket's send buffer");
            }
            // A peer that stops acknowledging (a closed receive window included) is dropped by
            // the kernel after this long, freeing what its connection holds; without it a
            // socket closed for being too slow could linger as long as the peer keeps it open.
            if let Err(error) = socket.set_tcp_user_timeout(Some(UNACKNOWLEDGED_DATA_LIMIT)) {
                tracing::debug!(%error, "could not set the socket's user timeout");
            }
        })
        .workers(workers)
        .shutdown_timeout(SHUTDOWN_GRACE.as_secs())
        .listen(listener)?
        .run();

        Ok(Self {
            server,
            local_addr,
            state,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops the server (what SIGTERM does, for tests and embedders).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// Serves until stopped (SIGTERM, SIGINT or a handle), then stops the realtime actors and
    /// closes the database pool.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        // Positions not yet checkpointed would be lost with the process.
        match self
            .state
            .hub
            .geo
            .send(umuve_actors::realtime::geo_index::FlushPositions)
            .await
        {
            Ok(Ok(count)) => tracing::info!(count, "driver positions saved"),
            Ok(Err(error)) => tracing::warn!(%error, "could not save driver positions at shutdown"),
            Err(_) => tracing::warn!("the geo index was gone before positions could be saved"),
        }
        // Sends in flight finish (a restart should not repeat them); unsent rows wait in the
        // table for the next engine.
        let drained = tokio::time::timeout(
            NOTIFIER_DRAIN_GRACE,
            self.state
                .notifier
                .send(crate::notifications::notifier::Drain),
        )
        .await;
        if drained.is_err() {
            tracing::warn!("notifications still sending at shutdown; they will be retried");
        }
        self.state.hub.stop();
        self.state.stop_workers();
        self.state.db.close().await;
        result
    }
}

/// Photo files a crash left stored but unrecorded are removed once, in the background.
async fn remove_unrecorded_photos(state: Arc<AppState>) {
    let recorded = match crate::storage::photos::all_names(&state.db).await {
        Ok(names) => names,
        Err(error) => {
            tracing::warn!(%error, "cannot list recorded photos; unrecorded files are kept");
            return;
        }
    };
    let swept = tokio::task::spawn_blocking(move || {
        state
            .photos
            .remove_unrecorded(|name| recorded.contains(name))
    })
    .await;
    match swept {
        Ok(Ok(0)) => {}
        Ok(Ok(removed)) => tracing::info!(removed, "unrecorded photo files removed"),
        Ok(Err(error)) => tracing::warn!(%error, "cannot read UPLOAD_DIR"),
        Err(error) => tracing::warn!(%error, "the photo sweep stopped"),
    }
}

/// The database is the truth after a restart: drivers (approval, active job, last position,
/// which counts as stale until they report again) go back to the geo index, active jobs to the
/// dispatch map.
async fn restore_realtime_state(state: &AppState) -> anyhow::Result<()> {
    use umuve_actors::realtime::dispatch_map::SeedMapJobs;
    use umuve_actors::realtime::geo_index::Restore;
    let drivers = crate::storage::positions::restore(&state.db)
        .await
        .context("cannot read driver positions")?;
    let jobs = crate::storage::jobs::active(&state.db)
        .await
        .context("cannot read active jobs")?;
    tracing::info!(
        drivers = drivers.len(),
        jobs = jobs.len(),
        "realtime state restored"
    );
    state.hub.geo.do_send(Restore(drivers));
    state.hub.map.do_send(SeedMapJobs(jobs));
    Ok(())
}
