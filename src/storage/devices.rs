//! The `device_tokens` table: where to push.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Db, on_pool};

/// Registers a token for `user_id`; a token seen before moves to the new user and app (a phone
/// changed hands or accounts).
pub async fn register(
    db: &Db,
    token: &str,
    user_id: Uuid,
    platform: &str,
    app: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    const SQL: &str = "INSERT INTO device_tokens (token, user_id, platform, app, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $5) \
         ON CONFLICT (token) DO UPDATE SET user_id = excluded.user_id, platform = excluded.platform, \
             app = excluded.app, updated_at = excluded.updated_at";
    on_pool!(db, pool => {
        sqlx::query(SQL)
            .bind(token)
            .bind(user_id)
            .bind(platform)
            .bind(app)
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ())
    })
}

/// Removes the caller's token; false when the caller has no such token.
pub async fn remove(db: &Db, token: &str, user_id: Uuid) -> Result<bool, sqlx::Error> {
    on_pool!(db, pool => {
        sqlx::query("DELETE FROM device_tokens WHERE token = $1 AND user_id = $2")
            .bind(token)
            .bind(user_id)
            .execute(pool)
            .await
            .map(|done| done.rows_affected() > 0)
    })
}

/// Forgets a token APNs reported dead (whoever holds it); false when it was not known.
pub async fn forget(db: &Db, token: &str) -> Result<bool, sqlx::Error> {
    on_pool!(db, pool => {
        sqlx::query("DELETE FROM device_tokens WHERE token = $1")
            .bind(token)
            .execute(pool)
            .await
            .map(|done| done.rows_affected() > 0)
    })
}

/// The push sender's view of the table.
pub struct DbDeviceTokens {
    pub db: Db,
}

#[async_trait::async_trait]
impl umuve_actors::outbound::DeviceTokens for DbDeviceTokens {
    async fn forget(&self, token: &str) -> Result<(), String> {
        // A task of its own: the caller is an actor's future, which must not hold a pooled
        // connection when its thread stops (see the notifier).
        let (db, token) = (self.db.clone(), token.to_owned());
        tokio::spawn(async move { forget(&db, &token).await })
            .await
            .map_err(|e| e.to_string())?
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
