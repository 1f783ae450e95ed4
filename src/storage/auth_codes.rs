//! SMS login codes and password-reset tokens. Both are stored only as keyed hashes, and both are
//! consumed by a single conditional statement, so a code or token works at most once even when
//! two requests race.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Db, in_write_transaction, on_pool};

/// Replaces the phone's live code (if any) with a new one and a fresh count of tries.
pub async fn store_sms_code(
    db: &Db,
    phone: &str,
    code_hash: &str,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    const SQL: &str = "INSERT INTO sms_codes (phone, code_hash, expires_at, failed_attempts, created_at) \
         VALUES ($1, $2, $3, 0, $4) \
         ON CONFLICT (phone) DO UPDATE SET code_hash = excluded.code_hash, \
             expires_at = excluded.expires_at, failed_attempts = 0, created_at = excluded.created_at";
    on_pool!(db, pool => {
        sqlx::query(SQL)
            .bind(phone)
            .bind(code_hash)
            .bind(expires_at)
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ())
    })
}

/// The outcome of checking a submitted code.
#[derive(Debug, PartialEq, Eq)]
pub enum CodeCheck {
    /// Right, live, and now used up.
    Accepted,
    /// Wrong; `burned` when this was the last allowed try and the code is gone.
    Wrong { burned: bool },
    /// No live code for this phone (never sent, expired, used or burned).
    NoLiveCode,
}

/// Checks `code_hash` against the phone's live code, consuming it when right and counting the
/// try when wrong. After `max_failures` wrong tries the code is deleted.
pub async fn check_sms_code(
    db: &Db,
    phone: &str,
    code_hash: &str,
    now: DateTime<Utc>,
    max_failures: i32,
) -> Result<CodeCheck, sqlx::Error> {
    const CONSUME: &str = "DELETE FROM sms_codes \
         WHERE phone = $1 AND code_hash = $2 AND expires_at > $3 AND failed_attempts < $4 \
         RETURNING phone";
    const COUNT_FAILURE: &str = "UPDATE sms_codes SET failed_attempts = failed_attempts + 1 \
         WHERE phone = $1 AND expires_at > $2 AND failed_attempts < $3 \
         RETURNING failed_attempts";
    const BURN: &str = "DELETE FROM sms_codes WHERE phone = $1 AND failed_attempts >= $2";
    on_pool!(db, pool => {
        let consumed: Option<String> = sqlx::query_scalar(CONSUME)
            .bind(phone)
            .bind(code_hash)
            .bind(now)
            .bind(max_failures)
            .fetch_optional(pool)
            .await?;
        if consumed.is_some() {
            return Ok(CodeCheck::Accepted);
        }
        let failures: Option<i32> = sqlx::query_scalar(COUNT_FAILURE)
            .bind(phone)
            .bind(now)
            .bind(max_failures)
            .fetch_optional(pool)
            .await?;
        match failures {
            None => Ok(CodeCheck::NoLiveCode),
            Some(failures) if failures >= max_failures => {
                sqlx::query(BURN).bind(phone).bind(max_failures).execute(pool).await?;
                Ok(CodeCheck::Wrong { burned: true })
            }
            Some(_) => Ok(CodeCheck::Wrong { burned: false }),
        }
    })
}

/// Stores a new reset token for `user_id`.
pub async fn store_reset_token(
    db: &Db,
    token_hash: &str,
    user_id: Uuid,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    const SQL: &str = "INSERT INTO password_reset_tokens (token_hash, user_id, expires_at, used_at, created_at) \
         VALUES ($1, $2, $3, NULL, $4)";
    on_pool!(db, pool => {
        sqlx::query(SQL)
            .bind(token_hash)
            .bind(user_id)
            .bind(expires_at)
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ())
    })
}

/// True when the token exists, is unused and unexpired (a read only; see [`reset_password`]).
pub async fn reset_token_is_live(
    db: &Db,
    token_hash: &str,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    const SQL: &str = "SELECT EXISTS (SELECT 1 FROM password_reset_tokens \
         WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2)";
    on_pool!(db, pool => sqlx::query_scalar(SQL).bind(token_hash).bind(now).fetch_one(pool).await)
}

/// Uses a live reset token to set a new password hash, in one transaction; every other
/// outstanding token of the user is retired too. `None` when the token is unknown, used or
/// expired.
pub async fn reset_password(
    db: &Db,
    token_hash: &str,
    new_password_hash: &str,
    now: DateTime<Utc>,
) -> Result<Option<Uuid>, sqlx::Error> {
    const USE_TOKEN: &str = "UPDATE password_reset_tokens SET used_at = $2 \
         WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 RETURNING user_id";
    const SET_PASSWORD: &str =
        "UPDATE users SET password_hash = $2, updated_at = $3 WHERE user_id = $1";
    const RETIRE_OTHERS: &str =
        "UPDATE password_reset_tokens SET used_at = $2 WHERE user_id = $1 AND used_at IS NULL";
    Ok(in_write_transaction!(db, tx => {
        let user_id: Option<Uuid> = sqlx::query_scalar(USE_TOKEN)
            .bind(token_hash)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(user_id) = user_id else {
            return Ok(None);
        };
        sqlx::query(SET_PASSWORD)
            .bind(user_id)
            .bind(new_password_hash)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(RETIRE_OTHERS).bind(user_id).bind(now).execute(&mut *tx).await?;
        Some(user_id)
    }))
}

/// Deletes codes and tokens that can no longer be used.
pub async fn purge_expired(db: &Db, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    on_pool!(db, pool => {
        let codes = sqlx::query("DELETE FROM sms_codes WHERE expires_at <= $1")
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected();
        let tokens = sqlx::query("DELETE FROM password_reset_tokens WHERE expires_at <= $1")
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected();
        Ok(codes + tokens)
    })
}
