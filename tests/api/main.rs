//! Black-box tests: each starts a real engine on 127.0.0.1:0 and talks HTTP to it. One module per
//! capability; scenarios that touch storage run on SQLite and on PostgreSQL.

mod support;

mod abuse;
mod admin_users;
mod auth_apple;
mod auth_password;
mod auth_sms;
mod authorization;
mod dispatch;
mod http_errors;
mod notifications;
mod openapi;
mod payments;
mod photos;
mod realtime;
mod tokens;
