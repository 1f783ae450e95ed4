//! The binary as an operator runs it: `serve` (the default), `migrate`, `create-admin`, and the
//! refusal to start in production without its secrets.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BINARY: &str = env!("CARGO_BIN_EXE_umuve-dispatch");

/// The binary with a clean environment (no inherited settings, no .env: it runs in `dir`).
fn engine(dir: &Path) -> Command {
    let mut command = Command::new(BINARY);
    command
        .current_dir(dir)
        .env_clear()
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Reads the engine's log until it says where it listens; returns `http://host:port` and the
/// whole output (log from the start, then stderr), collected until the engine exits.
async fn listening_address(child: &mut Child) -> (String, tokio::task::JoinHandle<String>) {
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(stdout).lines();
    let mut log = String::new();
    let find = async {
        while let Some(line) = lines.next_line().await.expect("readable log") {
            log.push_str(&line);
            log.push('\n');
            if let Some(rest) = line.split("listening on ").nth(1) {
                return rest.split_whitespace().next().unwrap().to_owned();
            }
        }
        panic!("the engine exited without listening");
    };
    let address = tokio::time::timeout(Duration::from_secs(60), find)
        .await
        .expect("the engine listens");
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    let whole = tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            log.push_str(&line);
            log.push('\n');
        }
        log.push_str(&errors.await.unwrap_or_default());
        log
    });
    (address, whole)
}

fn terminate(child: &Child) {
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn serve_is_the_default_creates_the_database_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = engine(dir.path()).env("PORT", "0").spawn().unwrap();
    let (address, _) = listening_address(&mut child).await;

    let health = reqwest::get(format!("{address}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(
        dir.path().join("umuve.db").exists(),
        "the embedded database is created"
    );
    let ready: serde_json::Value = reqwest::get(format!("{address}/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["database"], "sqlite");

    terminate(&child);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the engine stops")
        .unwrap();
    assert!(status.success(), "graceful shutdown exits 0: {status}");
}

#[tokio::test]
async fn production_without_its_secrets_refuses_to_start_naming_each() {
    let dir = tempfile::tempdir().unwrap();
    let output = engine(dir.path())
        .env("APP_ENV", "production")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for name in ["JWT_SECRET", "SECRET_KEY", "DATABASE_URL"] {
        assert!(stderr.contains(name), "{name} not named in: {stderr}");
    }
    assert!(!dir.path().join("umuve.db").exists(), "nothing is created");

    let output = engine(dir.path())
        .env("APP_ENV", "production")
        .env("SECRET_KEY", "0123456789abcdef0123456789abcdef")
        .env("DATABASE_URL", "sqlite://prod.db")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("JWT_SECRET"), "{stderr}");
    assert!(!stderr.contains("SECRET_KEY is required"), "{stderr}");
}

#[tokio::test]
async fn an_invalid_sentry_dsn_is_a_clear_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = engine(dir.path())
        .env("SENTRY_DSN", "not-a-dsn")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("SENTRY_DSN"), "{stderr}");
    assert!(
        !stderr.contains("not-a-dsn"),
        "the value is not echoed: {stderr}"
    );
}

#[tokio::test]
async fn create_admin_then_sign_in_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let jwt = ("JWT_SECRET", "cli-test-secret-0123456789");
    let created = engine(dir.path())
        .env(jwt.0, jwt.1)
        .args(["create-admin", "--email", "Chief@GoUmuve.com"])
        .env("UMUVE_ADMIN_PASSWORD", "correct horse battery")
        .output()
        .await
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let operator = engine(dir.path())
        .args([
            "create-admin",
            "--email",
            "desk@goumuve.com",
            "--password",
            "operator password",
            "--role",
            "operator",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        operator.status.success(),
        "{}",
        String::from_utf8_lossy(&operator.stderr)
    );
    let duplicate = engine(dir.path())
        .args([
            "create-admin",
            "--email",
            "chief@goumuve.com",
            "--password",
            "another password",
        ])
        .output()
        .await
        .unwrap();
    assert!(!duplicate.status.success());
    assert!(String::from_utf8_lossy(&duplicate.stderr).contains("exists already"));
    let weak = engine(dir.path())
        .args([
            "create-admin",
            "--email",
            "weak@goumuve.com",
            "--password",
            "short",
        ])
        .output()
        .await
        .unwrap();
    assert!(!weak.status.success());

    let mut child = engine(dir.path())
        .env(jwt.0, jwt.1)
        .env("PORT", "0")
        .spawn()
        .unwrap();
    let (address, _) = listening_address(&mut child).await;
    let client = reqwest::Client::new();
    for (email, password, role) in [
        ("chief@goumuve.com", "correct horse battery", "admin"),
        ("desk@goumuve.com", "operator password", "operator"),
    ] {
        let reply: serde_json::Value = client
            .post(format!("{address}/api/auth/login"))
            .json(&serde_json::json!({ "email": email, "password": password }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(reply["user"]["role"], role, "{reply}");
    }
    terminate(&child);
    child.wait().await.unwrap();
}

#[tokio::test]
async fn migrate_creates_the_schema_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let output = engine(dir.path())
        .arg("migrate")
        .env("DATABASE_URL", "sqlite://data.db")
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(dir.path().join("data.db").exists());
}

/// A database of its own on the PostgreSQL server at `TEST_DATABASE_URL`; `None` (the test is
/// skipped) without one, unless `REQUIRE_POSTGRES=1`.
async fn throwaway_postgres_database() -> Option<(sqlx::PgConnection, url::Url)> {
    use sqlx::ConnectOptions;
    use std::str::FromStr;
    let Ok(server) = std::env::var("TEST_DATABASE_URL") else {
        assert_ne!(
            std::env::var("REQUIRE_POSTGRES").as_deref(),
            Ok("1"),
            "REQUIRE_POSTGRES=1 but TEST_DATABASE_URL is not set"
        );
        eprintln!("skipped: TEST_DATABASE_URL is not set");
        return None;
    };
    let name = format!("umuve_cli_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::postgres::PgConnectOptions::from_str(&server)
        .unwrap()
        .connect()
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let mut url = url::Url::parse(&server).unwrap();
    url.set_path(&name);
    Some((admin, url))
}

async fn drop_postgres_database(mut admin: sqlx::PgConnection, url: &url::Url) {
    use sqlx::Connection;
    let name = url.path().trim_start_matches('/');
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    admin.close().await.unwrap();
}

/// `postgresql://` works as well as `postgres://` (against a throwaway database).
#[tokio::test]
async fn migrate_accepts_both_postgres_schemes() {
    use sqlx::{ConnectOptions, Connection};
    use std::str::FromStr;
    let Some((admin, url)) = throwaway_postgres_database().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for scheme in ["postgresql", "postgres"] {
        let database_url = format!("{scheme}{}", &url.as_str()[url.scheme().len()..]);
        let output = engine(dir.path())
            .arg("migrate")
            .env("DATABASE_URL", &database_url)
            .output()
            .await
            .unwrap();
        assert!(
            output.status.success(),
            "{scheme}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut migrated = sqlx::postgres::PgConnectOptions::from_str(url.as_str())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&mut migrated)
        .await
        .unwrap();
    assert_eq!(users, 0, "the schema exists");
    migrated.close().await.unwrap();
    drop_postgres_database(admin, &url).await;
}

/// With `SENTRY_DSN` set, a server error reaches Sentry (a fake one on 127.0.0.1), without the
/// request's secrets. The error is provoked by dropping the engine's database under it.
#[actix_web::test]
async fn server_errors_reach_sentry_when_configured() {
    let Some((admin, url)) = throwaway_postgres_database().await else {
        return;
    };
    let (envelopes_tx, mut envelopes) = tokio::sync::mpsc::unbounded_channel::<String>();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sentry_address = listener.local_addr().unwrap();
    let fake_sentry = actix_web::HttpServer::new(move || {
        let envelopes_tx = envelopes_tx.clone();
        actix_web::App::new().route(
            "/api/{project}/envelope/",
            actix_web::web::post().to(move |body: actix_web::web::Bytes| {
                let _ = envelopes_tx.send(String::from_utf8_lossy(&body).into_owned());
                async { actix_web::HttpResponse::Ok().json(serde_json::json!({})) }
            }),
        )
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    let fake_sentry_handle = fake_sentry.handle();
    actix_web::rt::spawn(fake_sentry);

    let dir = tempfile::tempdir().unwrap();
    let mut child = engine(dir.path())
        .env("DATABASE_URL", url.as_str())
        .env(
            "SENTRY_DSN",
            format!("http://publickey@{sentry_address}/42"),
        )
        .env("SENTRY_TRACES_SAMPLE_RATE", "0")
        .env("PORT", "0")
        .spawn()
        .unwrap();
    let (address, _log) = listening_address(&mut child).await;
    assert_eq!(
        reqwest::get(format!("{address}/readyz"))
            .await
            .unwrap()
            .status(),
        200
    );

    drop_postgres_database(admin, &url).await;
    let failed = reqwest::Client::new()
        .post(format!("{address}/api/auth/login?token=query-secret-123"))
        .bearer_auth("bearer-secret-456")
        .json(
            &serde_json::json!({ "email": "chief@goumuve.com", "password": "password-secret-789" }),
        )
        .send()
        .await
        .unwrap();
    assert!(failed.status().is_server_error(), "{}", failed.status());
    let envelope = tokio::time::timeout(Duration::from_secs(20), envelopes.recv())
        .await
        .expect("an event reached the fake Sentry")
        .unwrap();
    assert!(envelope.contains("\"event_id\""), "{envelope}");
    assert!(envelope.contains("/api/auth/login"), "{envelope}");
    for secret in [
        "query-secret-123",
        "bearer-secret-456",
        "password-secret-789",
    ] {
        assert!(
            !envelope.contains(secret),
            "{secret} reached Sentry: {envelope}"
        );
    }

    terminate(&child);
    child.wait().await.unwrap();
    drop(fake_sentry_handle.stop(false));
}

#[tokio::test]
async fn logs_never_contain_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let jwt_secret = "jwt-secret-that-must-not-leak-0123";
    let secret_key = "secret-key-that-must-not-leak-0123";
    let password = "password-that-must-not-leak";
    let created = engine(dir.path())
        .env("JWT_SECRET", jwt_secret)
        .args([
            "create-admin",
            "--email",
            "chief@goumuve.com",
            "--password",
            password,
        ])
        .output()
        .await
        .unwrap();
    assert!(created.status.success());
    let created_output = format!(
        "{}{}",
        String::from_utf8_lossy(&created.stdout),
        String::from_utf8_lossy(&created.stderr)
    );
    let mut child = engine(dir.path())
        .env("APP_ENV", "production")
        .env("RUST_LOG", "debug")
        .env("JWT_SECRET", jwt_secret)
        .env("SECRET_KEY", secret_key)
        .env("DATABASE_URL", "sqlite://umuve.db")
        .env("PORT", "0")
        .spawn()
        .unwrap();
    let (address, log) = listening_address(&mut child).await;
    let client = reqwest::Client::new();
    let session: serde_json::Value = client
        .post(format!("{address}/api/auth/login"))
        .json(&serde_json::json!({ "email": "chief@goumuve.com", "password": password }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = session["token"].as_str().expect("signed in").to_owned();
    let me = client
        .get(format!("{address}/api/me?token={token}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    // Browsers put the token in the WebSocket URL.
    let socket = client
        .get(format!("{address}/ws?token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        socket.status(),
        400,
        "not a handshake, but the token was read"
    );
    let forged = format!("{token}x");
    let refused = client
        .get(format!("{address}/api/me"))
        .bearer_auth(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let wrong = client
        .post(format!("{address}/api/auth/login"))
        .json(&serde_json::json!({ "email": "chief@goumuve.com", "password": "wrong-password-also-secret" }))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    terminate(&child);
    child.wait().await.unwrap();
    let log = log.await.unwrap();
    assert!(
        log.contains("request finished"),
        "requests are logged: {log}"
    );
    for secret in [
        jwt_secret,
        secret_key,
        password,
        "wrong-password-also-secret",
        token.as_str(),
        // The signature part alone, in case a token were logged in pieces.
        token.rsplit('.').next().unwrap(),
        forged.as_str(),
    ] {
        assert!(
            !log.contains(secret),
            "{secret} leaked into the log:\n{log}"
        );
        assert!(
            !created_output.contains(secret),
            "{secret} leaked from create-admin:\n{created_output}"
        );
    }
    assert!(
        log.contains("listening on"),
        "the start-up lines are checked too"
    );
}
