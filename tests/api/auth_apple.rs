//! Sign in with Apple, against a key set the test generates and serves over HTTP.

use std::sync::OnceLock;

use serde_json::{Value, json};
use umuve_actors::clock::Clock;

use crate::on_both_databases;
use crate::support::apple_keys::{AppleKey, identity_claims, key_set};
use crate::support::{APPLE_CLIENT_ID, Backend, Env, TestApp, spawn_app, spawn_app_with};

/// RSA key generation takes a moment; every test shares the same two keys.
fn keys() -> &'static (AppleKey, AppleKey) {
    static KEYS: OnceLock<(AppleKey, AppleKey)> = OnceLock::new();
    KEYS.get_or_init(|| {
        (
            AppleKey::generate("apple-key-1"),
            AppleKey::generate("apple-key-2"),
        )
    })
}

fn claims(app: &TestApp, sub: &str) -> Value {
    identity_claims(sub, APPLE_CLIENT_ID, app.clock.now().timestamp())
}

async fn sign_in(app: &TestApp, token: &str, name: Option<&str>) -> crate::support::Reply {
    let mut body = json!({ "identity_token": token });
    if let Some(name) = name {
        body["name"] = json!(name);
    }
    app.post("/api/auth/apple", None, body).await
}

on_both_databases!(a_token_signed_by_apple_signs_in_and_links_by_apple_id);

async fn a_token_signed_by_apple_signs_in_and_links_by_apple_id(backend: Backend) {
    let app = spawn_app(backend).await;
    let (key, _) = keys();
    app.fakes.publish_apple_keys(key_set(&[key]));

    let token = key.sign(&claims(&app, "001234.apple.user"));
    let reply = sign_in(&app, &token, Some("Ana O'Neil")).await;
    let body = reply.assert_status(200);
    let user = body["user"].clone();
    assert_eq!(user["role"], "customer");
    assert_eq!(user["name"], "Ana O'Neil");
    assert_eq!(user["email"], "apple.user@privaterelay.appleid.com");
    let session = body["token"].as_str().unwrap();
    assert_eq!(
        app.get("/api/me", Some(session)).await.assert_status(200)["id"],
        user["id"]
    );

    // Apple sends the name only the first time; the account is found by its Apple id.
    let again = sign_in(&app, &key.sign(&claims(&app, "001234.apple.user")), None).await;
    assert_eq!(again.assert_status(200)["user"], user);

    let someone_else = sign_in(&app, &key.sign(&claims(&app, "009999.other.user")), None).await;
    assert_ne!(someone_else.assert_status(200)["user"]["id"], user["id"]);
    // The relay email belongs to the first account; the second has none rather than a shared one.
    assert_eq!(someone_else.body["user"]["email"], Value::Null);
}

#[actix_web::test]
async fn sql_metacharacters_in_names_and_apple_ids_are_plain_text() {
    let app = spawn_app(Backend::Sqlite).await;
    let (key, _) = keys();
    app.fakes.publish_apple_keys(key_set(&[key]));
    let sub = "001'; DROP TABLE users; --";
    let name = "Robert'); DELETE FROM users WHERE ('1'='1";
    let first = sign_in(&app, &key.sign(&claims(&app, sub)), Some(name)).await;
    let user = first.assert_status(200)["user"].clone();
    assert_eq!(user["name"], name);
    let again = sign_in(&app, &key.sign(&claims(&app, sub)), None).await;
    assert_eq!(again.assert_status(200)["user"], user);
}

#[actix_web::test]
async fn a_token_for_another_app_is_refused() {
    let app = spawn_app(Backend::Sqlite).await;
    let (key, _) = keys();
    app.fakes.publish_apple_keys(key_set(&[key]));
    let mut claims = claims(&app, "001234.apple.user");
    claims["aud"] = json!("com.someone.else");
    let message = sign_in(&app, &key.sign(&claims), None)
        .await
        .assert_error(401, "unauthorized");
    assert!(message.contains("another app"), "{message}");
}

#[actix_web::test]
async fn a_token_from_another_issuer_is_refused() {
    let app = spawn_app(Backend::Sqlite).await;
    let (key, _) = keys();
    app.fakes.publish_apple_keys(key_set(&[key]));
    let mut claims = claims(&app, "001234.apple.user");
    claims["iss"] = json!("https://evil.example.com");
    let message = sign_in(&app, &key.sign(&claims), None)
        .await
        .assert_error(401, "unauthorized");
    assert!(message.contains("not issued by Apple"), "{message}");
}

#[actix_web::test]
async fn an_expired_token_is_refused() {
    let app = spawn_app(Backend::Sqlite).await;
    let (key, _) = keys();
    app.fakes.publish_apple_keys(key_set(&[key]));
    let token = key.sign(&claims(&app, "001234.apple.user"));
    app.clock.advance(chrono::Duration::minutes(10));
    let message = sign_in(&app, &token, None)
        .await
        .assert_error(401, "unauthorized");
    assert!(message.contains("expired"), "{message}");
}

#[actix_web::test]
async fn a_token_with_an_unknown_key_id_is_refused() {
    let app = spawn_app(Backend::Sqlite).await;
    let (key, other) = keys();
    app.fakes.publish_apple_keys(key_set(&[key]));
    let token = other.sign(&claims(&app, "001234.apple.user"));
    let message = sign_in(&app, &token, None)
        .await
        .assert_error(401, "unauthorized");
    assert!(message.contains("unknown key"), "{message}");
}

#[actix_web::test]
async fn a_tampered_token_is_refused() {
    let app = spawn_app(Backend::Sqlite).await;
    let (key, other) = keys();
    app.fakes.publish_apple_keys(key_set(&[key]));
    let token = key.sign(&claims(&app, "001234.apple.user"));

    // Someone swaps the payload for one naming another Apple user, keeping the signature.
    let forged_payload = {
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        engine.encode(serde_json::to_vec(&claims(&app, "000001.victim")).unwrap())
    };
    let parts: Vec<&str> = token.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    sign_in(&app, &tampered, None)
        .await
        .assert_error(401, "unauthorized");

    // Or signs with their own key while claiming Apple's key id.
    let impostor = other.sign_as(&key.kid, &claims(&app, "000001.victim"));
    sign_in(&app, &impostor, None)
        .await
        .assert_error(401, "unauthorized");

    sign_in(&app, "not.a.jwt", None)
        .await
        .assert_error(401, "unauthorized");
}

#[actix_web::test]
async fn a_rotated_key_is_fetched_once_and_made_up_key_ids_do_not_cause_refetches() {
    let app = spawn_app(Backend::Sqlite).await;
    let (first, second) = keys();
    app.fakes.publish_apple_keys(key_set(&[first]));
    sign_in(&app, &first.sign(&claims(&app, "001234.apple.user")), None)
        .await
        .assert_status(200);
    assert_eq!(app.fakes.apple_key_fetches(), 1);

    // Apple rotates: the new key is unknown to the cache, so the set is fetched again.
    app.fakes.publish_apple_keys(key_set(&[first, second]));
    sign_in(&app, &second.sign(&claims(&app, "001234.apple.user")), None)
        .await
        .assert_status(200);
    assert_eq!(app.fakes.apple_key_fetches(), 2);

    // Made-up key ids within the next minute do not hit Apple again.
    for kid in ["made-up-1", "made-up-2", "made-up-3"] {
        sign_in(&app, &second.sign_as(kid, &claims(&app, "x")), None)
            .await
            .assert_error(401, "unauthorized");
    }
    assert_eq!(app.fakes.apple_key_fetches(), 2);
    // Known keys keep working from the cache.
    sign_in(&app, &first.sign(&claims(&app, "001234.apple.user")), None)
        .await
        .assert_status(200);
    assert_eq!(app.fakes.apple_key_fetches(), 2);
}

#[actix_web::test]
async fn the_driver_app_signs_up_drivers() {
    let app = spawn_app(Backend::Sqlite).await;
    let (key, _) = keys();
    app.fakes.publish_apple_keys(key_set(&[key]));
    let claims = identity_claims(
        "005555.driver",
        "com.goumuve.pro",
        app.clock.now().timestamp(),
    );
    let reply = app
        .post(
            "/api/auth/apple",
            None,
            json!({ "identity_token": key.sign(&claims), "role": "driver" }),
        )
        .await;
    let user = &reply.assert_status(200)["user"];
    assert_eq!(user["role"], "driver");
    assert_eq!(user["approved"], false);
}

#[actix_web::test]
async fn apple_sign_in_without_client_ids_is_unavailable() {
    let app = spawn_app_with(Backend::Sqlite, Env::default().unset("APPLE_CLIENT_IDS")).await;
    let (key, _) = keys();
    app.fakes.publish_apple_keys(key_set(&[key]));
    sign_in(&app, &key.sign(&claims(&app, "001234.apple.user")), None)
        .await
        .assert_error(503, "unavailable");
}
