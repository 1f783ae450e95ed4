//! A fresh database per test.

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use tempfile::TempDir;
use uuid::Uuid;

/// Which database a test runs on.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    /// The URL of a PostgreSQL server whose user may create databases.
    Postgres(String),
}

impl Backend {
    /// PostgreSQL from `TEST_DATABASE_URL`. Without it the test is skipped, unless
    /// `REQUIRE_POSTGRES=1`, which makes the missing server a failure (CI sets it).
    pub fn postgres() -> Option<Backend> {
        match std::env::var("TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => Some(Backend::Postgres(url)),
            _ if std::env::var("REQUIRE_POSTGRES").as_deref() == Ok("1") => {
                panic!("REQUIRE_POSTGRES=1 but TEST_DATABASE_URL is not set")
            }
            _ => {
                eprintln!("skipped: TEST_DATABASE_URL is not set");
                None
            }
        }
    }
}

/// Redis from `REDIS_TEST_URL`. Without it the test is skipped, unless `REQUIRE_REDIS=1`,
/// which makes the missing server a failure (CI sets it).
pub fn redis_url() -> Option<String> {
    match std::env::var("REDIS_TEST_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("REQUIRE_REDIS").as_deref() == Ok("1") => {
            panic!("REQUIRE_REDIS=1 but REDIS_TEST_URL is not set")
        }
        _ => {
            eprintln!("skipped: REDIS_TEST_URL is not set");
            None
        }
    }
}

/// Deleted when dropped.
pub enum TestDatabase {
    /// Handed over to a restarted engine.
    None,
    /// Another handle on a database someone else owns (a second engine on it).
    Shared {
        url: String,
    },
    Sqlite {
        url: String,
        _dir: TempDir,
    },
    Postgres {
        url: String,
        server_url: String,
        name: String,
    },
}

impl TestDatabase {
    pub async fn create(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("a temporary directory");
                let url = format!("sqlite://{}", dir.path().join("test.db").display());
                TestDatabase::Sqlite { url, _dir: dir }
            }
            Backend::Postgres(server_url) => {
                let name = format!("umuve_test_{}", Uuid::new_v4().simple());
                let mut admin = PgConnectOptions::from_str(&server_url)
                    .expect("TEST_DATABASE_URL is a PostgreSQL URL")
                    .connect()
                    .await
                    .unwrap_or_else(|e| {
                        panic!("cannot reach PostgreSQL at TEST_DATABASE_URL: {e}")
                    });
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut admin)
                    .await
                    .expect("CREATE DATABASE");
                admin.close().await.ok();
                let mut url = url::Url::parse(&server_url).expect("TEST_DATABASE_URL is a URL");
                url.set_path(&name);
                TestDatabase::Postgres {
                    url: url.to_string(),
                    server_url,
                    name,
                }
            }
        }
    }

    pub fn url(&self) -> &str {
        match self {
            TestDatabase::Sqlite { url, .. }
            | TestDatabase::Postgres { url, .. }
            | TestDatabase::Shared { url } => url,
            TestDatabase::None => "",
        }
    }
}

impl TestDatabase {
    /// A handle for a second engine on this database; the database goes with this one.
    pub fn shared(&self) -> TestDatabase {
        TestDatabase::Shared {
            url: self.url().to_owned(),
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let TestDatabase::Postgres {
            server_url, name, ..
        } = self
        {
            let (server_url, name) = (server_url.clone(), name.clone());
            // Drop runs inside the test's runtime; the clean-up gets a runtime of its own.
            let cleanup = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let mut admin = PgConnectOptions::from_str(&server_url)
                        .unwrap()
                        .connect()
                        .await?;
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut admin)
                    .await?;
                    admin.close().await
                })
            });
            if let Ok(Err(error)) = cleanup.join() {
                eprintln!("could not drop test database {}: {error}", self.url());
            }
        }
    }
}
