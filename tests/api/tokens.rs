//! Access tokens and roles: who may call what.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Duration;
use serde_json::{Value, json};
use umuve_actors::clock::Clock;

use crate::support::{Backend, Env, JWT_SECRET, TestApp, spawn_app, spawn_app_with};

fn forge(claims: &Value, secret: &str) -> String {
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn claims_for(user: &Value, role: &str, app: &TestApp) -> Value {
    let now = app.clock.now().timestamp();
    json!({ "sub": user["id"], "role": role, "iat": now, "exp": now + 3600 })
}

#[actix_web::test]
async fn an_unsigned_token_is_refused() {
    let app = spawn_app(Backend::Sqlite).await;
    let (_, user) = app.sms_login("305-555-0120", None).await;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload =
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims_for(&user, "admin", &app)).unwrap());
    for token in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}"),
    ] {
        app.get("/api/me", Some(&token))
            .await
            .assert_error(401, "unauthorized");
    }
}

#[actix_web::test]
async fn a_token_signed_with_another_secret_is_refused() {
    let app = spawn_app(Backend::Sqlite).await;
    let (_, user) = app.sms_login("305-555-0121", None).await;
    let token = forge(
        &claims_for(&user, "customer", &app),
        "not-the-engine-secret-0123456789",
    );
    app.get("/api/me", Some(&token))
        .await
        .assert_error(401, "unauthorized");
}

#[actix_web::test]
async fn a_token_whose_role_was_edited_is_refused() {
    let app = spawn_app(Backend::Sqlite).await;
    let (token, user) = app.sms_login("305-555-0122", None).await;
    let parts: Vec<&str> = token.split('.').collect();
    let promoted =
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims_for(&user, "admin", &app)).unwrap());
    let tampered = format!("{}.{}.{}", parts[0], promoted, parts[2]);
    app.get("/api/admin/users", Some(&tampered))
        .await
        .assert_error(401, "unauthorized");
}

#[actix_web::test]
async fn a_token_expires_after_thirty_days() {
    let app = spawn_app(Backend::Sqlite).await;
    let (token, _) = app.sms_login("305-555-0123", None).await;
    app.clock.advance(Duration::days(30) - Duration::seconds(1));
    app.get("/api/me", Some(&token)).await.assert_status(200);
    app.clock.advance(Duration::seconds(1));
    let message = app
        .get("/api/me", Some(&token))
        .await
        .assert_error(401, "unauthorized");
    assert!(message.contains("expired"), "{message}");
}

#[actix_web::test]
async fn missing_and_malformed_credentials_are_unauthorized() {
    let app = spawn_app(Backend::Sqlite).await;
    let reply = app.get("/api/me", None).await;
    reply.assert_error(401, "unauthorized");
    assert_eq!(reply.headers["www-authenticate"], "Bearer");
    for header in [
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearer not-a-jwt",
        "token abc",
    ] {
        let reply = app
            .send(
                app.client
                    .get(app.url("/api/me"))
                    .header("authorization", header),
            )
            .await;
        reply.assert_error(401, "unauthorized");
    }
}

#[actix_web::test]
async fn a_valid_token_for_a_user_that_does_not_exist_is_unauthorized() {
    let app = spawn_app(Backend::Sqlite).await;
    let ghost = json!({ "id": uuid::Uuid::new_v4() });
    let token = forge(&claims_for(&ghost, "customer", &app), JWT_SECRET);
    app.get("/api/me", Some(&token))
        .await
        .assert_error(401, "unauthorized");
}

#[actix_web::test]
async fn customers_and_drivers_are_forbidden_on_admin_endpoints() {
    let app = spawn_app(Backend::Sqlite).await;
    let (customer, _) = app.sms_login("305-555-0124", None).await;
    let (driver, driver_user) = app.sms_login("305-555-0125", Some("driver")).await;
    let driver_id = driver_user["id"].as_str().unwrap();
    for token in [&customer, &driver] {
        let message = app
            .create_user(token, json!({ "role": "admin", "email": "x@y.com" }))
            .await
            .assert_error(403, "forbidden");
        assert!(message.contains("admins"), "{message}");
        app.get("/api/admin/users", Some(token))
            .await
            .assert_error(403, "forbidden");
        app.post(
            &format!("/api/admin/drivers/{driver_id}/approve"),
            Some(token),
            json!({}),
        )
        .await
        .assert_error(403, "forbidden");
    }
    // Nothing changed.
    assert_eq!(
        app.get("/api/me", Some(&driver)).await.assert_status(200)["approved"],
        false
    );
}

#[actix_web::test]
async fn operators_dispatch_but_do_not_manage_accounts() {
    let app = spawn_app_with(
        Backend::Sqlite,
        Env::default().set("ADMIN_SEED_SECRET", "seed-secret"),
    )
    .await;
    let admin = app
        .seed_admin("admin@goumuve.com", "admin password 1")
        .await;
    app.create_user(
        &admin,
        json!({ "role": "operator", "email": "op@goumuve.com", "password": "operator password" }),
    )
    .await
    .assert_status(201);
    let operator = app
        .login("op@goumuve.com", "operator password")
        .await
        .assert_status(200)["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, driver) = app.sms_login("305-555-0126", Some("driver")).await;

    app.create_user(&operator, json!({ "role": "admin", "email": "x@y.com" }))
        .await
        .assert_error(403, "forbidden");
    let approved = app
        .post(
            &format!(
                "/api/admin/drivers/{}/approve",
                driver["id"].as_str().unwrap()
            ),
            Some(&operator),
            json!({}),
        )
        .await;
    assert_eq!(approved.assert_status(200)["approved"], true);
    app.get("/api/admin/users", Some(&operator))
        .await
        .assert_status(200);
}
