//! Signing in with a code sent by SMS.

use chrono::Duration;
use futures_util::future::join_all;
use serde_json::json;

use crate::on_both_databases;
use crate::support::{Backend, Env, fakes, spawn_app, spawn_app_with};

on_both_databases!(
    a_customer_signs_in_end_to_end_through_twilio,
    a_driver_signs_up_unapproved,
    staff_roles_cannot_sign_up_by_sms,
    a_wrong_code_is_refused_but_the_right_one_still_works,
    an_expired_code_is_refused,
    the_fifth_wrong_try_burns_the_code,
    a_code_works_only_once,
    concurrent_verifications_let_exactly_one_in,
    a_staff_phone_does_not_open_a_staff_account,
);

async fn a_customer_signs_in_end_to_end_through_twilio(backend: Backend) {
    let app = spawn_app(backend).await;

    let reply = app.send_sms_code("(305) 555-0100").await;
    assert_eq!(reply.assert_status(202), &json!({ "expires_in": 600 }));

    let sms = app.fakes.next_sms().await;
    assert_eq!(sms.to, "+13055550100");
    assert_eq!(sms.from, fakes::TWILIO_FROM);
    let code = sms.code();

    let reply = app.verify_sms_code("305-555-0100", &code, None).await;
    let body = reply.assert_status(200);
    let token = body["token"].as_str().unwrap().to_owned();
    let user = &body["user"];
    assert_eq!(user["role"], "customer");
    assert_eq!(user["phone"], "+13055550100");
    assert_eq!(user["approved"], true);
    assert!(user["id"].as_str().unwrap().parse::<uuid::Uuid>().is_ok());
    assert!(user.get("password_hash").is_none());

    let me = app.get("/api/me", Some(&token)).await;
    assert_eq!(me.assert_status(200), user);

    // A minute later the same number signs in again, as a driver this time: it is the same
    // account, and it keeps its role.
    app.clock.advance(Duration::seconds(61));
    let (_, again) = app.sms_login("+1 305 555 0100", Some("driver")).await;
    assert_eq!(again["id"], user["id"]);
    assert_eq!(again["role"], "customer");
}

async fn a_driver_signs_up_unapproved(backend: Backend) {
    let app = spawn_app(backend).await;
    let (token, user) = app.sms_login("+1 954 555 0101", Some("driver")).await;
    assert_eq!(user["role"], "driver");
    assert_eq!(user["approved"], false);
    assert_eq!(
        app.get("/api/me", Some(&token)).await.assert_status(200)["role"],
        "driver"
    );
}

async fn staff_roles_cannot_sign_up_by_sms(backend: Backend) {
    let app = spawn_app(backend).await;
    app.send_sms_code("305-555-0102").await.assert_status(202);
    let code = app.fakes.next_sms().await.code();
    for role in ["admin", "operator"] {
        app.verify_sms_code("305-555-0102", &code, Some(role))
            .await
            .assert_error(400, "bad_request");
    }
    app.verify_sms_code("305-555-0102", &code, Some("superuser"))
        .await
        .assert_error(400, "bad_request");
    // None of those used the code up.
    app.verify_sms_code("305-555-0102", &code, None)
        .await
        .assert_status(200);
}

fn another_code(code: &str) -> String {
    format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000)
}

async fn a_wrong_code_is_refused_but_the_right_one_still_works(backend: Backend) {
    let app = spawn_app(backend).await;
    app.send_sms_code("305-555-0103").await.assert_status(202);
    let code = app.fakes.next_sms().await.code();
    app.verify_sms_code("305-555-0103", &another_code(&code), None)
        .await
        .assert_error(401, "unauthorized");
    app.verify_sms_code("305-555-0103", &code, None)
        .await
        .assert_status(200);
}

async fn an_expired_code_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    app.send_sms_code("305-555-0104").await.assert_status(202);
    let old_code = app.fakes.next_sms().await.code();
    app.send_sms_code("305-555-0105").await.assert_status(202);
    let fresh_code = app.fakes.next_sms().await.code();

    app.clock
        .advance(Duration::minutes(9) + Duration::seconds(59));
    app.verify_sms_code("305-555-0105", &fresh_code, None)
        .await
        .assert_status(200);

    app.clock.advance(Duration::seconds(1));
    let message = app
        .verify_sms_code("305-555-0104", &old_code, None)
        .await
        .assert_error(401, "unauthorized");
    assert!(message.contains("request a new one"), "{message}");
}

async fn the_fifth_wrong_try_burns_the_code(backend: Backend) {
    let app = spawn_app(backend).await;
    app.send_sms_code("305-555-0106").await.assert_status(202);
    let code = app.fakes.next_sms().await.code();
    app.send_sms_code("305-555-0107").await.assert_status(202);
    let other_code = app.fakes.next_sms().await.code();

    for _ in 0..5 {
        app.verify_sms_code("305-555-0106", &another_code(&code), None)
            .await
            .assert_error(401, "unauthorized");
    }
    app.verify_sms_code("305-555-0106", &code, None)
        .await
        .assert_error(401, "unauthorized");

    // Four wrong tries leave the code usable.
    for _ in 0..4 {
        app.verify_sms_code("305-555-0107", &another_code(&other_code), None)
            .await
            .assert_error(401, "unauthorized");
    }
    app.verify_sms_code("305-555-0107", &other_code, None)
        .await
        .assert_status(200);
}

async fn a_code_works_only_once(backend: Backend) {
    let app = spawn_app(backend).await;
    app.send_sms_code("305-555-0108").await.assert_status(202);
    let code = app.fakes.next_sms().await.code();
    app.verify_sms_code("305-555-0108", &code, None)
        .await
        .assert_status(200);
    app.verify_sms_code("305-555-0108", &code, None)
        .await
        .assert_error(401, "unauthorized");
}

async fn concurrent_verifications_let_exactly_one_in(backend: Backend) {
    let app = spawn_app(backend).await;
    app.send_sms_code("305-555-0109").await.assert_status(202);
    let code = app.fakes.next_sms().await.code();
    let replies = join_all((0..6).map(|_| app.verify_sms_code("305-555-0109", &code, None))).await;
    let winners = replies.iter().filter(|r| r.status == 200).count();
    assert_eq!(winners, 1, "{replies:?}");
    for loser in replies.iter().filter(|r| r.status != 200) {
        loser.assert_error(401, "unauthorized");
    }
}

async fn a_staff_phone_does_not_open_a_staff_account(backend: Backend) {
    let app = spawn_app_with(
        backend,
        Env::default().set("ADMIN_SEED_SECRET", "seed-secret"),
    )
    .await;
    let admin = app
        .seed_admin("ops@goumuve.com", "correct horse battery")
        .await;
    for (role, phone) in [("operator", "305-555-0180"), ("admin", "305-555-0181")] {
        app.create_user(
            &admin,
            json!({ "role": role, "email": format!("{role}2@goumuve.com"), "phone": phone }),
        )
        .await
        .assert_status(201);
        app.send_sms_code(phone).await.assert_status(202);
        let code = app.fakes.next_sms().await.code();
        let message = app
            .verify_sms_code(phone, &code, None)
            .await
            .assert_error(403, "forbidden");
        assert!(message.contains("email and password"), "{message}");
    }
}

// Input checks and limits happen before storage; SQLite suffices.

#[actix_web::test]
async fn things_that_are_not_phones_are_refused() {
    let app = spawn_app(Backend::Sqlite).await;
    for phone in [
        "hello",
        "555-0100",
        "+1 (305) 555-010",
        "305'; DROP TABLE users;--",
    ] {
        app.send_sms_code(phone)
            .await
            .assert_error(400, "bad_request");
        app.verify_sms_code(phone, "123456", None)
            .await
            .assert_error(400, "bad_request");
    }
}

#[actix_web::test]
async fn a_code_that_is_not_six_digits_is_a_bad_request() {
    let app = spawn_app(Backend::Sqlite).await;
    for code in ["12345", "1234567", "12345a", ""] {
        app.verify_sms_code("305-555-0110", code, None)
            .await
            .assert_error(400, "bad_request");
    }
}

#[actix_web::test]
async fn one_code_per_phone_per_minute() {
    let app = spawn_app(Backend::Sqlite).await;
    app.send_sms_code("305-555-0111").await.assert_status(202);
    app.clock.advance(Duration::seconds(20));
    let reply = app.send_sms_code("+13055550111").await;
    reply.assert_error(429, "rate_limited");
    assert_eq!(reply.headers["retry-after"], "40");
    app.clock.advance(Duration::seconds(40));
    app.send_sms_code("+13055550111").await.assert_status(202);
}

#[actix_web::test]
async fn codes_are_limited_per_ip() {
    let app = spawn_app_with(
        Backend::Sqlite,
        Env::default().set("SMS_PER_IP_PER_HOUR", "2"),
    )
    .await;
    app.send_sms_code("305-555-0112").await.assert_status(202);
    app.send_sms_code("305-555-0113").await.assert_status(202);
    let reply = app.send_sms_code("305-555-0114").await;
    reply.assert_error(429, "rate_limited");
    assert!(reply.headers.contains_key("retry-after"));
}

#[actix_web::test]
async fn codes_are_limited_per_phone_per_hour() {
    // With one code per hour, the second send for the phone is refused even past the minute.
    let app = spawn_app_with(
        Backend::Sqlite,
        Env::default().set("SMS_PER_PHONE_PER_HOUR", "1"),
    )
    .await;
    app.send_sms_code("305-555-0115").await.assert_status(202);
    app.clock.advance(Duration::minutes(2));
    let reply = app.send_sms_code("305-555-0115").await;
    reply.assert_error(429, "rate_limited");
    assert_eq!(reply.headers["retry-after"], "3480");
}

#[actix_web::test]
async fn verification_attempts_are_limited_per_ip() {
    let app = spawn_app_with(
        Backend::Sqlite,
        Env::default().set("AUTH_PER_IP_PER_MINUTE", "3"),
    )
    .await;
    for _ in 0..3 {
        app.verify_sms_code("305-555-0116", "000000", None)
            .await
            .assert_error(401, "unauthorized");
    }
    app.verify_sms_code("305-555-0116", "000000", None)
        .await
        .assert_error(429, "rate_limited");
}

#[actix_web::test]
async fn a_failing_twilio_is_retried_until_the_code_arrives() {
    let app = spawn_app(Backend::Sqlite).await;
    app.fakes.fail_twilio_times(2);
    app.send_sms_code("305-555-0117").await.assert_status(202);
    let sms = app.fakes.next_sms().await;
    assert_eq!(sms.to, "+13055550117");
    assert_eq!(app.fakes.twilio_requests(), 3);
    app.verify_sms_code("305-555-0117", &sms.code(), None)
        .await
        .assert_status(200);
}

#[actix_web::test]
async fn production_without_twilio_refuses_to_send_codes() {
    let app = spawn_app_with(
        Backend::Sqlite,
        Env::default()
            .set("APP_ENV", "production")
            .unset("TWILIO_ACCOUNT_SID")
            .unset("TWILIO_AUTH_TOKEN")
            .unset("TWILIO_FROM_NUMBER"),
    )
    .await;
    app.send_sms_code("305-555-0118")
        .await
        .assert_error(503, "unavailable");
}

#[actix_web::test]
async fn behind_a_proxy_the_limit_keys_on_the_address_the_proxy_saw() {
    let app = spawn_app_with(
        Backend::Sqlite,
        Env::default()
            .set("TRUSTED_PROXY_HOPS", "1")
            .set("AUTH_PER_IP_PER_MINUTE", "2"),
    )
    .await;
    let verify_from = |forwarded: &str| {
        app.send(
            app.client
                .post(app.url("/api/auth/sms/verify"))
                .header("x-forwarded-for", forwarded)
                .json(&json!({ "phone": "305-555-0191", "code": "000000" })),
        )
    };
    // The client writes whatever it likes on the left; the proxy appends the real address.
    verify_from("10.0.0.1, 203.0.113.9")
        .await
        .assert_error(401, "unauthorized");
    verify_from("10.0.0.2, 203.0.113.9")
        .await
        .assert_error(401, "unauthorized");
    verify_from("10.0.0.3, 203.0.113.9")
        .await
        .assert_error(429, "rate_limited");
    verify_from("203.0.113.10")
        .await
        .assert_error(401, "unauthorized");
}

#[actix_web::test]
async fn without_a_proxy_forwarded_headers_are_ignored() {
    let app = spawn_app_with(
        Backend::Sqlite,
        Env::default().set("AUTH_PER_IP_PER_MINUTE", "2"),
    )
    .await;
    for (i, expected) in [(1, 401), (2, 401), (3, 429)] {
        let reply = app
            .send(
                app.client
                    .post(app.url("/api/auth/sms/verify"))
                    .header("x-forwarded-for", format!("198.51.100.{i}"))
                    .json(&json!({ "phone": "305-555-0192", "code": "000000" })),
            )
            .await;
        assert_eq!(reply.status, expected, "{}", reply.text);
    }
}
