//! Email + password: the first admin (seed), login, forgotten passwords.

use chrono::Duration;
use futures_util::future::join_all;
use serde_json::json;

use crate::on_both_databases;
use crate::support::{Backend, Env, TestApp, spawn_app, spawn_app_with};

fn seeding() -> Env {
    Env::default().set("ADMIN_SEED_SECRET", "seed-secret")
}

on_both_databases!(
    the_first_admin_is_seeded_and_signs_in,
    a_second_seed_is_refused,
    concurrent_seeds_make_exactly_one_admin,
    a_wrong_password_and_an_unknown_email_look_the_same,
    a_forgotten_password_is_reset_through_the_emailed_link,
    a_reset_link_expires_after_an_hour,
    passwords_with_sql_metacharacters_work_verbatim,
);

async fn the_first_admin_is_seeded_and_signs_in(backend: Backend) {
    let app = spawn_app_with(backend, seeding()).await;
    let reply = app
        .post(
            "/api/admin/seed",
            None,
            json!({ "secret": "seed-secret", "email": "Ops@GoUmuve.com", "password": "correct horse battery" }),
        )
        .await;
    let admin = reply.assert_status(201).clone();
    assert_eq!(admin["role"], "admin");
    assert_eq!(admin["email"], "ops@goumuve.com");
    assert_eq!(admin["approved"], true);

    let reply = app.login("ops@goumuve.com", "correct horse battery").await;
    let body = reply.assert_status(200);
    assert_eq!(body["user"], admin);
    let token = body["token"].as_str().unwrap();
    assert_eq!(
        app.get("/api/me", Some(token)).await.assert_status(200)["role"],
        "admin"
    );
}

async fn a_second_seed_is_refused(backend: Backend) {
    let app = spawn_app_with(backend, seeding()).await;
    app.seed_admin("first@goumuve.com", "first admin password")
        .await;
    app.post(
        "/api/admin/seed",
        None,
        json!({ "secret": "seed-secret", "email": "second@goumuve.com", "password": "second admin password" }),
    )
    .await
    .assert_error(409, "conflict");
    app.login("second@goumuve.com", "second admin password")
        .await
        .assert_error(401, "unauthorized");
}

async fn concurrent_seeds_make_exactly_one_admin(backend: Backend) {
    let app = spawn_app_with(backend, seeding()).await;
    let replies = join_all((0..5).map(|i| {
        app.post(
            "/api/admin/seed",
            None,
            json!({ "secret": "seed-secret", "email": format!("admin{i}@goumuve.com"), "password": "a long password" }),
        )
    }))
    .await;
    assert_eq!(
        replies.iter().filter(|r| r.status == 201).count(),
        1,
        "{replies:?}"
    );
    for reply in replies.iter().filter(|r| r.status != 201) {
        reply.assert_error(409, "conflict");
    }
}

async fn a_wrong_password_and_an_unknown_email_look_the_same(backend: Backend) {
    let app = spawn_app_with(backend, seeding()).await;
    app.seed_admin("ops@goumuve.com", "correct horse battery")
        .await;
    let wrong_password = app
        .login("ops@goumuve.com", "incorrect horse battery")
        .await
        .assert_error(401, "unauthorized");
    let unknown_email = app
        .login("nobody@goumuve.com", "correct horse battery")
        .await
        .assert_error(401, "unauthorized");
    assert_eq!(wrong_password, unknown_email);
}

/// Creates a customer with an email and a password through the admin API.
async fn customer_with_password(app: &TestApp, email: &str, password: &str) {
    let admin = app
        .seed_admin("ops@goumuve.com", "correct horse battery")
        .await;
    app.create_user(
        &admin,
        json!({ "role": "customer", "email": email, "password": password }),
    )
    .await
    .assert_status(201);
}

async fn a_forgotten_password_is_reset_through_the_emailed_link(backend: Backend) {
    let app = spawn_app_with(backend, seeding()).await;
    customer_with_password(&app, "maria@example.com", "old password 1").await;

    // An unknown address gets the same answer and no email: the first email sent is Maria's.
    app.forgot_password("nobody@example.com")
        .await
        .assert_status(202);
    app.forgot_password("Maria@Example.com")
        .await
        .assert_status(202);
    let email = app.fakes.next_email().await;
    assert_eq!(email.provider, "resend");
    assert_eq!(email.to, "maria@example.com");
    assert_eq!(email.from, "Umuve <no-reply@goumuve.com>");
    assert_eq!(email.subject, "Reset your Umuve password");
    assert!(
        email
            .text
            .contains("https://portal.goumuve.test/reset-password?token="),
        "{}",
        email.text
    );
    assert!(
        email.html.contains("reset-password?token="),
        "{}",
        email.html
    );
    let token = email.reset_token();

    app.reset_password(&token, "new password 2")
        .await
        .assert_status(204);
    app.login("maria@example.com", "new password 2")
        .await
        .assert_status(200);
    app.login("maria@example.com", "old password 1")
        .await
        .assert_error(401, "unauthorized");

    // The link works once.
    app.reset_password(&token, "third password 3")
        .await
        .assert_error(400, "bad_request");
    app.login("maria@example.com", "new password 2")
        .await
        .assert_status(200);
}

async fn a_reset_link_expires_after_an_hour(backend: Backend) {
    let app = spawn_app_with(backend, seeding()).await;
    customer_with_password(&app, "maria@example.com", "old password 1").await;
    app.forgot_password("maria@example.com")
        .await
        .assert_status(202);
    let token = app.fakes.next_email().await.reset_token();
    app.clock.advance(Duration::minutes(60));
    app.reset_password(&token, "new password 2")
        .await
        .assert_error(400, "bad_request");
    app.login("maria@example.com", "old password 1")
        .await
        .assert_status(200);
}

async fn passwords_with_sql_metacharacters_work_verbatim(backend: Backend) {
    let app = spawn_app_with(backend, seeding()).await;
    let password = "' OR '1'='1'; DROP TABLE users; --";
    app.seed_admin("o'brien+ops@goumuve.com", password).await;
    app.login("o'brien+ops@goumuve.com", password)
        .await
        .assert_status(200);
    app.login("o'brien+ops@goumuve.com", "' OR '1'='1")
        .await
        .assert_error(401, "unauthorized");
    app.login("' OR '1'='1' --", password)
        .await
        .assert_error(401, "unauthorized");
}

#[actix_web::test]
async fn email_falls_back_to_sendgrid_when_resend_fails() {
    let app = spawn_app_with(Backend::Sqlite, seeding()).await;
    customer_with_password(&app, "maria@example.com", "old password 1").await;
    app.fakes.fail_resend_times(u32::MAX);
    app.forgot_password("maria@example.com")
        .await
        .assert_status(202);
    let email = app.fakes.next_email().await;
    assert_eq!(email.provider, "sendgrid");
    assert_eq!(email.to, "maria@example.com");
    assert_eq!(email.from, "no-reply@goumuve.com");
    let token = email.reset_token();
    app.reset_password(&token, "new password 2")
        .await
        .assert_status(204);
}

#[actix_web::test]
async fn email_is_retried_when_both_providers_fail() {
    let app = spawn_app_with(Backend::Sqlite, seeding()).await;
    customer_with_password(&app, "maria@example.com", "old password 1").await;
    // First try: both fail. Second try: Resend still fails, SendGrid takes it.
    app.fakes.fail_resend_times(2);
    app.fakes.fail_sendgrid_times(1);
    app.forgot_password("maria@example.com")
        .await
        .assert_status(202);
    assert_eq!(app.fakes.next_email().await.provider, "sendgrid");
}

#[actix_web::test]
async fn email_uses_sendgrid_when_resend_is_not_configured() {
    let app = spawn_app_with(Backend::Sqlite, seeding().unset("RESEND_API_KEY")).await;
    customer_with_password(&app, "maria@example.com", "old password 1").await;
    app.forgot_password("maria@example.com")
        .await
        .assert_status(202);
    assert_eq!(app.fakes.next_email().await.provider, "sendgrid");
}

#[actix_web::test]
async fn reset_emails_to_one_address_are_throttled() {
    let app = spawn_app_with(Backend::Sqlite, seeding()).await;
    customer_with_password(&app, "maria@example.com", "old password 1").await;
    app.forgot_password("maria@example.com")
        .await
        .assert_status(202);
    app.fakes.next_email().await;
    // Asked again at once: the same answer, but no second email.
    app.forgot_password("maria@example.com")
        .await
        .assert_status(202);
    // An hour later the first link is dead, and so would be a second one sent back then; the
    // next email to arrive must carry a link made now, which works.
    app.clock.advance(Duration::minutes(61));
    app.forgot_password("maria@example.com")
        .await
        .assert_status(202);
    let token = app.fakes.next_email().await.reset_token();
    app.reset_password(&token, "new password 2")
        .await
        .assert_status(204);
}

#[actix_web::test]
async fn sql_metacharacters_in_reset_and_seed_fields_are_plain_text() {
    let app = spawn_app_with(Backend::Sqlite, seeding()).await;
    app.post(
        "/api/admin/seed",
        None,
        json!({ "secret": "' OR '1'='1", "email": "ops@goumuve.com", "password": "correct horse battery" }),
    )
    .await
    .assert_error(403, "forbidden");
    app.reset_password("' OR used_at IS NULL; --", "long enough password")
        .await
        .assert_error(400, "bad_request");
    app.forgot_password("o'brien'--@example.com")
        .await
        .assert_status(202);
    app.forgot_password("x'; DROP TABLE users; --")
        .await
        .assert_error(400, "bad_request");
    app.seed_admin("o'hara+ops@goumuve.com", "correct horse battery")
        .await;
}

#[actix_web::test]
async fn a_seed_with_the_wrong_secret_is_forbidden() {
    let app = spawn_app_with(Backend::Sqlite, seeding()).await;
    app.post(
        "/api/admin/seed",
        None,
        json!({ "secret": "guess", "email": "ops@goumuve.com", "password": "correct horse battery" }),
    )
    .await
    .assert_error(403, "forbidden");
    app.login("ops@goumuve.com", "correct horse battery")
        .await
        .assert_error(401, "unauthorized");
}

#[actix_web::test]
async fn seeding_is_not_found_without_a_seed_secret() {
    let app = spawn_app(Backend::Sqlite).await;
    app.post(
        "/api/admin/seed",
        None,
        json!({ "secret": "", "email": "ops@goumuve.com", "password": "correct horse battery" }),
    )
    .await
    .assert_error(404, "not_found");
}

#[actix_web::test]
async fn a_seed_with_a_weak_password_or_bad_email_is_a_bad_request() {
    let app = spawn_app_with(Backend::Sqlite, seeding()).await;
    for (email, password) in [
        ("ops@goumuve.com", "short"),
        ("not an email", "long enough password"),
    ] {
        app.post(
            "/api/admin/seed",
            None,
            json!({ "secret": "seed-secret", "email": email, "password": password }),
        )
        .await
        .assert_error(400, "bad_request");
    }
}

#[actix_web::test]
async fn a_reset_with_a_short_password_or_an_unknown_token_is_refused() {
    let app = spawn_app(Backend::Sqlite).await;
    app.reset_password("made-up-token", "long enough password")
        .await
        .assert_error(400, "bad_request");
    app.reset_password("made-up-token", "short")
        .await
        .assert_error(400, "bad_request");
}

#[actix_web::test]
async fn login_attempts_are_limited_per_ip() {
    let app = spawn_app_with(
        Backend::Sqlite,
        Env::default().set("AUTH_PER_IP_PER_MINUTE", "2"),
    )
    .await;
    for _ in 0..2 {
        app.login("ops@goumuve.com", "guess guess guess")
            .await
            .assert_error(401, "unauthorized");
    }
    let reply = app.login("ops@goumuve.com", "guess guess guess").await;
    reply.assert_error(429, "rate_limited");
    assert_eq!(reply.headers["retry-after"], "30");
}
