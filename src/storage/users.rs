//! The `users` table.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Db, in_write_transaction, is_unique_violation, on_pool};
use crate::domain::{EmailAddress, Phone, Role};

/// A user as stored; serialised as API.md's `user` (the hash and Apple id stay private).
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct User {
    #[sqlx(rename = "user_id")]
    pub id: Uuid,
    #[sqlx(try_from = "String")]
    pub role: Role,
    pub phone: Option<String>,
    pub email: Option<String>,
    #[serde(skip)]
    pub password_hash: Option<String>,
    #[serde(skip)]
    pub apple_id: Option<String>,
    pub name: Option<String>,
    pub approved: bool,
    pub created_at: DateTime<Utc>,
    #[serde(skip)]
    pub updated_at: DateTime<Utc>,
}

/// The columns of [`User`], as a literal so queries stay `&'static str` (sqlx refuses SQL built at
/// run time unless it is asserted safe).
macro_rules! columns {
    () => {
        "user_id, role, phone, email, password_hash, apple_id, name, approved, created_at, updated_at"
    };
}

/// A user about to be created.
#[derive(Debug, Default)]
pub struct NewUser<'a> {
    pub role: Option<Role>,
    pub phone: Option<&'a Phone>,
    pub email: Option<&'a EmailAddress>,
    pub password_hash: Option<String>,
    pub apple_id: Option<&'a str>,
    pub name: Option<&'a str>,
    pub approved: bool,
}

/// Drivers wait for a dispatcher's approval; everyone else starts approved.
pub fn approved_on_creation(role: Role) -> bool {
    role != Role::Driver
}

const INSERT: &str = concat!(
    "INSERT INTO users (",
    columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) RETURNING ",
    columns!()
);

/// Creates a user. A phone, email or Apple id that is taken fails with a unique violation.
pub async fn insert(db: &Db, new: NewUser<'_>, now: DateTime<Utc>) -> Result<User, sqlx::Error> {
    let role = new.role.unwrap_or(Role::Customer);
    on_pool!(db, pool => {
        sqlx::query_as::<_, User>(INSERT)
            .bind(Uuid::new_v4())
            .bind(role.as_str())
            .bind(new.phone.map(Phone::as_str))
            .bind(new.email.map(EmailAddress::as_str))
            .bind(new.password_hash)
            .bind(new.apple_id)
            .bind(new.name)
            .bind(new.approved)
            .bind(now)
            .fetch_one(pool)
            .await
    })
}

pub async fn by_id(db: &Db, id: Uuid) -> Result<Option<User>, sqlx::Error> {
    const SQL: &str = concat!("SELECT ", columns!(), " FROM users WHERE user_id = $1");
    on_pool!(db, pool => sqlx::query_as::<_, User>(SQL).bind(id).fetch_optional(pool).await)
}

pub async fn by_email(db: &Db, email: &EmailAddress) -> Result<Option<User>, sqlx::Error> {
    const SQL: &str = concat!("SELECT ", columns!(), " FROM users WHERE email = $1");
    on_pool!(db, pool => sqlx::query_as::<_, User>(SQL).bind(email.as_str()).fetch_optional(pool).await)
}

pub async fn by_apple_id(db: &Db, apple_id: &str) -> Result<Option<User>, sqlx::Error> {
    const SQL: &str = concat!("SELECT ", columns!(), " FROM users WHERE apple_id = $1");
    on_pool!(db, pool => sqlx::query_as::<_, User>(SQL).bind(apple_id).fetch_optional(pool).await)
}

/// The user with this phone, created with `role` on first sight. Two first logins racing for
/// one phone end with one user: the loser's insert does nothing and both read the winner's row.
pub async fn find_or_create_by_phone(
    db: &Db,
    phone: &Phone,
    role: Role,
    now: DateTime<Utc>,
) -> Result<User, sqlx::Error> {
    const INSERT_IF_NEW: &str = concat!(
        "INSERT INTO users (",
        columns!(),
        ") VALUES ($1, $2, $3, NULL, NULL, NULL, NULL, $4, $5, $5) ON CONFLICT (phone) DO NOTHING"
    );
    const SELECT: &str = concat!("SELECT ", columns!(), " FROM users WHERE phone = $1");
    on_pool!(db, pool => {
        sqlx::query(INSERT_IF_NEW)
            .bind(Uuid::new_v4())
            .bind(role.as_str())
            .bind(phone.as_str())
            .bind(approved_on_creation(role))
            .bind(now)
            .execute(pool)
            .await?;
        sqlx::query_as::<_, User>(SELECT).bind(phone.as_str()).fetch_one(pool).await
    })
}

/// The user with this Apple id, created as `role` on first sight (with the token's email when no
/// other account has it).
pub async fn find_or_create_by_apple_id(
    db: &Db,
    apple_id: &str,
    email: Option<&EmailAddress>,
    name: Option<&str>,
    role: Role,
    now: DateTime<Utc>,
) -> Result<User, sqlx::Error> {
    if let Some(user) = by_apple_id(db, apple_id).await? {
        return Ok(user);
    }
    let new = |email| NewUser {
        role: Some(role),
        email,
        apple_id: Some(apple_id),
        name,
        approved: approved_on_creation(role),
        ..NewUser::default()
    };
    match insert(db, new(email), now).await {
        Ok(user) => Ok(user),
        Err(error) if is_unique_violation(&error) => {
            // Either a concurrent first login created this Apple user, or the email belongs to
            // another account (which is not linked by email: only the Apple id links).
            if let Some(user) = by_apple_id(db, apple_id).await? {
                return Ok(user);
            }
            insert(db, new(None), now).await
        }
        Err(error) => Err(error),
    }
}

/// Changes name and/or email; `None` leaves a field as it is.
pub async fn update_profile(
    db: &Db,
    id: Uuid,
    name: Option<&str>,
    email: Option<&EmailAddress>,
    now: DateTime<Utc>,
) -> Result<Option<User>, sqlx::Error> {
    const SQL: &str = concat!(
        "UPDATE users SET name = COALESCE($2, name), email = COALESCE($3, email), updated_at = $4 ",
        "WHERE user_id = $1 RETURNING ",
        columns!()
    );
    on_pool!(db, pool => {
        sqlx::query_as::<_, User>(SQL)
            .bind(id)
            .bind(name)
            .bind(email.map(EmailAddress::as_str))
            .bind(now)
            .fetch_optional(pool)
            .await
    })
}

/// Marks a driver approved; `None` when no driver has this id.
pub async fn approve_driver(
    db: &Db,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<User>, sqlx::Error> {
    const SQL: &str = concat!(
        "UPDATE users SET approved = TRUE, updated_at = $2 WHERE user_id = $1 AND role = 'driver' ",
        "RETURNING ",
        columns!()
    );
    on_pool!(db, pool => sqlx::query_as::<_, User>(SQL).bind(id).bind(now).fetch_optional(pool).await)
}

/// Filters for listing users.
#[derive(Debug, Default, Clone, Copy)]
pub struct UserFilter {
    pub role: Option<Role>,
    pub approved: Option<bool>,
}

/// Users newest first, after the keyset position `after` (created_at, id) when given.
pub async fn list(
    db: &Db,
    filter: UserFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: u32,
) -> Result<Vec<User>, sqlx::Error> {
    const SQL: &str = concat!(
        "SELECT ",
        columns!(),
        " FROM users",
        " WHERE ($1 IS NULL OR role = $1)",
        " AND ($2 IS NULL OR approved = $2)",
        " AND ($3 IS NULL OR created_at < $3 OR (created_at = $3 AND user_id < $4))",
        " ORDER BY created_at DESC, user_id DESC LIMIT $5"
    );
    let (after_time, after_id) = after.unzip();
    on_pool!(db, pool => {
        sqlx::query_as::<_, User>(SQL)
            .bind(filter.role.map(Role::as_str))
            .bind(filter.approved)
            .bind(after_time)
            .bind(after_id)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
    })
}

/// What became of a seed request.
#[derive(Debug)]
pub enum SeedOutcome {
    Seeded(User),
    AdminAlreadyExists,
}

/// Creates the first admin, only while there is none. The `admin_seed` row's primary key
/// serialises concurrent seeds: one wins, the other sees `AdminAlreadyExists`.
pub async fn seed_first_admin(
    db: &Db,
    email: &EmailAddress,
    password_hash: String,
    now: DateTime<Utc>,
) -> Result<SeedOutcome, sqlx::Error> {
    let outcome: Result<SeedOutcome, sqlx::Error> = async {
        Ok(in_write_transaction!(db, tx => {
            let admin_exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE role = 'admin')")
                    .fetch_one(&mut *tx)
                    .await?;
            if admin_exists {
                return Ok(SeedOutcome::AdminAlreadyExists);
            }
            let user = sqlx::query_as::<_, User>(INSERT)
                .bind(Uuid::new_v4())
                .bind(Role::Admin.as_str())
                .bind(None::<String>)
                .bind(email.as_str())
                .bind(&password_hash)
                .bind(None::<String>)
                .bind(None::<String>)
                .bind(true)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
            sqlx::query("INSERT INTO admin_seed (singleton, user_id, seeded_at) VALUES (1, $1, $2)")
                .bind(user.id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            SeedOutcome::Seeded(user)
        }))
    }
    .await;
    match outcome {
        Err(error) if is_unique_violation(&error) && error.to_string().contains("admin_seed") => {
            Ok(SeedOutcome::AdminAlreadyExists)
        }
        other => other,
    }
}
