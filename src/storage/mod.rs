//! Storage with sqlx: SQLite (embedded default) or PostgreSQL (production).
//!
//! Queries are written once in SQL both databases accept (`$1` placeholders, `RETURNING`,
//! `ON CONFLICT`) and run through [`on_pool!`], which expands the same code for either pool, so
//! the row types are checked against both drivers at compile time. The schemas live in
//! `migrations/sqlite` and `migrations/postgres` and are embedded in the binary.

use std::str::FromStr;
use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

use crate::config::DatabaseUrl;

pub mod auth_codes;
pub mod devices;
pub mod jobs;
pub mod notifications;
pub mod offers;
pub mod outbox;
pub mod payments;
pub mod photos;
pub mod positions;
pub mod users;

/// A connection pool to one of the two supported databases.
#[derive(Clone, Debug)]
pub enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Runs the same code against whichever pool `$db` holds; `$pool` names the pool inside.
macro_rules! on_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::storage::Db::Postgres($pool) => $body,
            $crate::storage::Db::Sqlite($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// Runs `$body` inside a write transaction and commits it; `$tx` names the transaction inside.
/// SQLite transactions start with `BEGIN IMMEDIATE`, taking the write lock up front, so two
/// writers queue on the busy timeout instead of failing when a read turns into a write.
/// An early return (`?`) drops the transaction, which rolls it back.
macro_rules! in_write_transaction {
    ($db:expr, $tx:ident => $body:expr) => {
        match $db {
            $crate::storage::Db::Postgres(pool) => {
                let mut $tx = pool.begin().await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
            $crate::storage::Db::Sqlite(pool) => {
                let mut $tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
        }
    };
}
pub(crate) use in_write_transaction;

/// How long a SQLite writer waits for the lock before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request waits for a pooled connection before failing with 503.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

impl Db {
    /// Connects (creating the SQLite file when absent). Does not migrate.
    pub async fn connect(url: &DatabaseUrl) -> Result<Self, sqlx::Error> {
        match url {
            DatabaseUrl::Sqlite(url) => {
                let options = SqliteConnectOptions::from_str(url)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .foreign_keys(true)
                    .busy_timeout(SQLITE_BUSY_TIMEOUT);
                let pool = SqlitePoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_with(options)
                    .await?;
                Ok(Self::Sqlite(pool))
            }
            DatabaseUrl::Postgres(url) => {
                let options = PgConnectOptions::from_str(url.expose_secret())?;
                let pool = PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_with(options)
                    .await?;
                Ok(Self::Postgres(pool))
            }
        }
    }

    /// Applies the embedded migrations that have not run yet.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        match self {
            Db::Postgres(pool) => sqlx::migrate!("./migrations/postgres").run(pool).await,
            Db::Sqlite(pool) => sqlx::migrate!("./migrations/sqlite").run(pool).await,
        }
    }

    /// One round trip, for readiness checks.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            Db::Postgres(_) => "postgres",
            Db::Sqlite(_) => "sqlite",
        }
    }

    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }
}

/// True when the database refused a write because of a UNIQUE constraint.
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}
