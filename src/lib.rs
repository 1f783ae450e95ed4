//! umuve-dispatch: the realtime dispatch engine of Umuve.
//!
//! Module map:
//! - [`config`]: settings from the environment, parsed once.
//! - [`startup`]: builds storage, actors and the HTTP server from settings.
//! - [`state`]: what handlers share.
//! - [`routes`]: one module per resource; each handler documents itself for OpenAPI.
//! - [`ws`]: the WebSocket endpoint and the session actors.
//! - [`jobs`]: pricing and the one function that changes a job's status.
//! - [`http`]: the error model, the edge middleware, client addresses, 404/405.
//! - [`auth`]: tokens, role extractors, passwords, SMS codes, Apple.
//! - [`rate_limit`]: limits per phone, IP and user, in memory or Redis.
//! - [`uploads`]: job photos: streamed, typed by content, cleaned of metadata.
//! - [`domain`]: values parsed at the boundary (`Phone`, `EmailAddress`, `Role`, ...).
//! - [`storage`]: sqlx queries for SQLite and PostgreSQL.
//! - [`integrations`]: HTTP clients of Twilio, Resend, SendGrid.
//! - [`templates`]: the words of SMS and emails.
//! - [`housekeeping`]: periodic clean-up.
//! - [`telemetry`], [`cli`].
//!
//! The actors and the messages between them live in the `umuve-actors` crate (`actors/`).

pub mod auth;
pub mod cli;
pub mod config;
pub mod domain;
pub mod housekeeping;
pub mod http;
pub mod integrations;
pub mod jobs;
pub mod notifications;
pub mod payments;
pub mod rate_limit;
pub mod routes;
pub mod startup;
pub mod state;
pub mod storage;
pub mod telemetry;
pub mod templates;
pub mod uploads;
pub mod ws;
