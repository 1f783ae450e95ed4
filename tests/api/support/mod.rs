//! The test harness: a real engine on 127.0.0.1:0 with a fresh database (a SQLite file, or a new
//! PostgreSQL database dropped afterwards), fake Twilio/Resend/SendGrid/Apple servers on
//! 127.0.0.1, and a clock the test moves.

pub mod apple_keys;
pub mod database;
pub mod fake_push;
pub mod fake_stripe;
pub mod fakes;
pub mod multipart;
pub mod ws;

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use chrono::{TimeZone, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use umuve_actors::clock::ManualClock;
use umuve_dispatch::config::Settings;
use umuve_dispatch::startup::Application;
use umuve_dispatch::storage::Db;

pub use database::{Backend, TestDatabase};
use fakes::FakeServices;

/// The JWT secret every test engine signs with, so tests can forge tokens.
pub const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdef";
/// Every test engine accepts Apple tokens for this audience.
pub const APPLE_CLIENT_ID: &str = "com.goumuve.app";
/// A fixed starting point for the test clock.
pub fn start_time() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 19, 0, 0).unwrap()
}

/// Generates the pairs of tests that run one scenario on both databases:
/// `mod sqlite { fn scenario() }` and `mod postgres { fn scenario() }`.
#[macro_export]
macro_rules! on_both_databases {
    ($($scenario:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[actix_web::test]
                async fn $scenario() {
                    super::$scenario($crate::support::Backend::Sqlite).await
                }
            )+
        }
        mod postgres {
            $(
                #[actix_web::test]
                async fn $scenario() {
                    if let Some(backend) = $crate::support::Backend::postgres() {
                        super::$scenario(backend).await
                    }
                }
            )+
        }
    };
}

/// Polls `read` until `holds` (for progress only visible in storage, such as the background
/// workers'); fails after 10 s.
pub async fn eventually<F, Fut>(what: &str, read: F, holds: impl Fn(&Value) -> bool) -> Value
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Value>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let value = read().await;
        if holds(&value) {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen in time; last seen: {value}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A running engine and its surroundings.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub clock: ManualClock,
    pub fakes: Arc<FakeServices>,
    pub db: Db,
    pub hub: umuve_actors::realtime::hub::Hub,
    /// `UPLOAD_DIR`: a directory of this engine's own.
    pub uploads: Arc<tempfile::TempDir>,
    state: actix_web::web::Data<umuve_dispatch::state::AppState>,
    handle: ServerHandle,
    running: Option<actix_web::rt::task::JoinHandle<std::io::Result<()>>>,
    _database: TestDatabase,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    /// Asserts the API error shape with this status and code; returns the message.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) -> String {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text
        );
        assert_eq!(
            self.body["error"]["code"], code,
            "unexpected code; body: {}",
            self.text
        );
        let message = self.body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            !message.is_empty(),
            "error without a message: {}",
            self.text
        );
        assert_eq!(
            self.body.as_object().map(|o| o.len()),
            Some(1),
            "error body has more than `error`: {}",
            self.text
        );
        message.to_owned()
    }

    /// The `Retry-After` header, in seconds.
    #[track_caller]
    pub fn retry_after(&self) -> u64 {
        self.headers["retry-after"]
            .to_str()
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no Retry-After in seconds: {:?}", self.headers))
    }

    #[track_caller]
    pub fn assert_status(&self, status: u16) -> &Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text
        );
        &self.body
    }
}

/// Extra environment for one test engine.
#[derive(Default, Clone)]
pub struct Env(HashMap<String, String>);

impl Env {
    pub fn set(mut self, name: &str, value: &str) -> Self {
        self.0.insert(name.to_owned(), value.to_owned());
        self
    }

    pub fn unset(mut self, name: &str) -> Self {
        self.0.insert(name.to_owned(), String::new());
        self
    }
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, Env::default()).await
}

pub async fn spawn_app_with(backend: Backend, env: Env) -> TestApp {
    spawn_app_on(TestDatabase::create(backend).await, env).await
}

/// An engine on an existing database (a restart).
pub async fn spawn_app_on(database: TestDatabase, env: Env) -> TestApp {
    spawn_app_with_fakes(database, env, Arc::new(FakeServices::start().await)).await
}

/// An engine on an existing database talking to existing fake services (a restart that the
/// outside world sees as the same engine coming back).
pub async fn spawn_app_with_fakes(
    database: TestDatabase,
    env: Env,
    fakes: Arc<FakeServices>,
) -> TestApp {
    init_test_logging();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();

    let mut vars: HashMap<String, String> = [
        ("APP_ENV", "development".to_owned()),
        ("DATABASE_URL", database.url().to_owned()),
        ("JWT_SECRET", JWT_SECRET.to_owned()),
        ("SECRET_KEY", "test-secret-key-0123456789abcdef".to_owned()),
        ("TWILIO_ACCOUNT_SID", fakes::TWILIO_SID.to_owned()),
        ("TWILIO_AUTH_TOKEN", fakes::TWILIO_TOKEN.to_owned()),
        ("TWILIO_FROM_NUMBER", fakes::TWILIO_FROM.to_owned()),
        ("TWILIO_API_BASE", fakes.base_url.clone()),
        ("RESEND_API_KEY", fakes::RESEND_KEY.to_owned()),
        ("RESEND_API_BASE", fakes.base_url.clone()),
        ("SENDGRID_API_KEY", fakes::SENDGRID_KEY.to_owned()),
        ("SENDGRID_API_BASE", fakes.base_url.clone()),
        ("EMAIL_FROM", "Umuve <no-reply@goumuve.com>".to_owned()),
        (
            "APPLE_CLIENT_IDS",
            format!("{APPLE_CLIENT_ID},com.goumuve.pro"),
        ),
        ("APPLE_JWKS_URL", format!("{}/auth/keys", fakes.base_url)),
        ("PUBLIC_URL", "https://portal.goumuve.test/".to_owned()),
        ("OUTBOUND_RETRY_BASE_MS", "5".to_owned()),
        ("NOTIFY_POLL_MS", "25".to_owned()),
        ("HTTP_WORKERS", "2".to_owned()),
        ("PORT", "0".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let uploads = Arc::new(tempfile::tempdir().expect("an upload directory"));
    vars.insert(
        "UPLOAD_DIR".into(),
        uploads.path().to_string_lossy().into_owned(),
    );
    // Scenarios book many jobs as one customer; the limit has its own test.
    vars.insert("JOBS_PER_USER_PER_HOUR".into(), "10000".into());
    vars.extend(env.0);
    if vars.contains_key("STRIPE_SECRET_KEY") {
        // Payments on: Stripe is the fake on this test's server.
        vars.entry("STRIPE_API_BASE".into())
            .or_insert_with(|| fakes.base_url.clone());
    }
    let settings = Settings::from_lookup(|name| vars.get(name).cloned())
        .expect("test settings are valid")
        .settings;

    let db = Db::connect(&settings.database_url)
        .await
        .expect("test database opens");
    db.migrate().await.expect("test database migrates");
    let clock = ManualClock::new(start_time());
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let push: Arc<dyn umuve_actors::outbound::PushTransport> =
        Arc::new(fake_push::FakePushTransport(fakes.push.clone()));
    let app = Application::build_with(
        settings,
        db.clone(),
        Arc::new(clock.clone()),
        listener,
        Some(push),
    )
    .await
    .expect("the engine builds");
    let state = app.state();
    let hub = state.hub.clone();
    let address = format!("http://{}", app.local_addr());
    let handle = app.handle();
    let running = actix_web::rt::spawn(app.run_until_stopped());

    TestApp {
        address,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        clock,
        fakes,
        db,
        hub,
        uploads,
        state,
        handle,
        running: Some(running),
        _database: database,
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Sends the stop command now; the returned future only waits for completion.
        drop(self.handle.stop(false));
        self.hub.stop();
        self.state.stop_workers();
    }
}

impl TestApp {
    /// Stops the engine as SIGTERM would and waits until it has finished shutting down
    /// (positions saved); the database stays for a restart.
    pub async fn shut_down(mut self) -> TestDatabase {
        self.handle.stop(true).await;
        if let Some(running) = self.running.take() {
            running
                .await
                .expect("the engine task")
                .expect("a clean shutdown");
        }
        std::mem::replace(&mut self._database, TestDatabase::None)
    }

    /// Stops the engine as a crash would: nothing is flushed or shut down in order. The database
    /// stays for a restart.
    pub fn kill(mut self) -> TestDatabase {
        if let Some(running) = self.running.take() {
            running.abort();
        }
        std::mem::replace(&mut self._database, TestDatabase::None)
        // Drop stops the server without waiting and the realtime thread at once.
    }

    /// Mints a token for a user the test created (the test engine's secret is known), valid for
    /// 30 days of the test clock, so tests that move the clock by hours keep their sockets.
    pub fn token_for(&self, user_id: &str, role: &str) -> String {
        use umuve_actors::clock::Clock;
        let now = self.clock.now().timestamp();
        let claims = json!({ "sub": user_id, "role": role, "iat": now, "exp": now + 30 * 86_400 });
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
        )
        .unwrap()
    }

    /// A dispatcher's socket on the whole map, past its snapshot.
    pub async fn map_watcher(&self, token: &str) -> ws::WsClient {
        let mut socket = self.ws(token).await;
        socket.send_json(json!({ "type": "map.subscribe" })).await;
        socket.next_of_type("map.snapshot").await;
        socket
    }

    /// A WebSocket connection as the holder of `token`.
    pub async fn ws(&self, token: &str) -> ws::WsClient {
        ws::WsClient::connect(&self.address, token).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("the engine answers");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("a readable body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(request).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.request(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.request(Method::POST, path, token, Some(body)).await
    }

    /// Posts raw bytes with a content type, for malformed-input tests.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Reply {
        self.send(
            self.client
                .post(self.url(path))
                .header("content-type", content_type)
                .body(body),
        )
        .await
    }

    pub async fn send_sms_code(&self, phone: &str) -> Reply {
        self.post("/api/auth/sms/send", None, json!({ "phone": phone }))
            .await
    }

    pub async fn verify_sms_code(&self, phone: &str, code: &str, role: Option<&str>) -> Reply {
        let mut body = json!({ "phone": phone, "code": code });
        if let Some(role) = role {
            body["role"] = json!(role);
        }
        self.post("/api/auth/sms/verify", None, body).await
    }

    /// Signs in by SMS end to end (code through the fake Twilio); returns (token, user).
    pub async fn sms_login(&self, phone: &str, role: Option<&str>) -> (String, Value) {
        self.send_sms_code(phone).await.assert_status(202);
        let code = self.fakes.next_sms().await.code();
        let reply = self.verify_sms_code(phone, &code, role).await;
        let body = reply.assert_status(200);
        (
            body["token"].as_str().unwrap().to_owned(),
            body["user"].clone(),
        )
    }

    pub async fn forgot_password(&self, email: &str) -> Reply {
        self.post("/api/auth/password/forgot", None, json!({ "email": email }))
            .await
    }

    pub async fn reset_password(&self, token: &str, password: &str) -> Reply {
        self.post(
            "/api/auth/password/reset",
            None,
            json!({ "token": token, "password": password }),
        )
        .await
    }

    /// `POST /api/admin/users` with the given token.
    pub async fn create_user(&self, token: &str, body: Value) -> Reply {
        self.post("/api/admin/users", Some(token), body).await
    }

    pub async fn login(&self, email: &str, password: &str) -> Reply {
        self.post(
            "/api/auth/login",
            None,
            json!({ "email": email, "password": password }),
        )
        .await
    }

    /// Seeds the first admin (the engine must run with `ADMIN_SEED_SECRET=seed-secret`) and
    /// signs in; returns the token.
    pub async fn seed_admin(&self, email: &str, password: &str) -> String {
        self.post(
            "/api/admin/seed",
            None,
            json!({ "secret": "seed-secret", "email": email, "password": password }),
        )
        .await
        .assert_status(201);
        let reply = self.login(email, password).await;
        reply.assert_status(200)["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

fn init_test_logging() {
    use std::sync::Once;
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(
                    "debug,sqlx=warn,hyper=info,reqwest=info",
                ))
                .with_test_writer()
                .init();
        }
    });
}
