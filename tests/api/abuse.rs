//! Rate limits shared through Redis, booking limits, and the headers every response carries.

use serde_json::json;

use crate::dispatch::{DOWNTOWN_MIAMI, book, env, office};
use crate::support::database::redis_url;
use crate::support::{Backend, Env, TestApp, spawn_app_with};

/// Two engines sharing one Redis under a key prefix of this test's own.
async fn engines_sharing_redis(redis: &str, extra: Env) -> (TestApp, TestApp, String) {
    let prefix = format!("umuve-test:{}:", uuid::Uuid::new_v4().simple());
    let settings = |env: Env| {
        env.set("RATELIMIT_STORAGE_URI", redis)
            .set("RATELIMIT_KEY_PREFIX", &prefix)
    };
    let first = spawn_app_with(Backend::Sqlite, settings(extra.clone())).await;
    let second = spawn_app_with(Backend::Sqlite, settings(extra)).await;
    (first, second, prefix)
}

async fn keys_under(redis: &str, prefix: &str) -> Vec<String> {
    let client = redis::Client::open(redis).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut connection)
        .await
        .unwrap()
}

#[actix_web::test]
async fn with_redis_two_engines_share_the_sms_limits() {
    let Some(redis) = redis_url() else { return };
    let (first, second, prefix) =
        engines_sharing_redis(&redis, Env::default().set("SMS_PER_IP_PER_HOUR", "4")).await;

    first.send_sms_code("305-555-0140").await.assert_status(202);
    // The same phone through the other engine, within the minute.
    let refused = second.send_sms_code("305-555-0140").await;
    refused.assert_error(429, "rate_limited");
    let wait = refused.retry_after();
    assert!((1..=60).contains(&wait), "{wait}");

    // The per-IP budget (4 per hour, the refused request counted) is one budget across both
    // engines.
    second
        .send_sms_code("305-555-0141")
        .await
        .assert_status(202);
    first.send_sms_code("305-555-0142").await.assert_status(202);
    second
        .send_sms_code("305-555-0143")
        .await
        .assert_error(429, "rate_limited");
    first
        .send_sms_code("305-555-0144")
        .await
        .assert_error(429, "rate_limited");

    let keys = keys_under(&redis, &prefix).await;
    for limit in ["sms-ip", "recipient-minute", "recipient-hour", "sms-global"] {
        assert!(
            keys.iter()
                .any(|k| k.starts_with(&format!("{prefix}{limit}:"))),
            "the counts live in Redis: {keys:?}"
        );
    }
    assert!(
        !keys
            .iter()
            .any(|k| k.contains("305555") || k.contains("127.0.0.1")),
        "no phone number or address in Redis: {keys:?}"
    );
    // The codes that were allowed went out, each through the engine that took the request.
    for to in ["+13055550140", "+13055550142"] {
        assert_eq!(first.fakes.next_sms().await.to, to);
    }
    assert_eq!(second.fakes.next_sms().await.to, "+13055550141");
}

#[actix_web::test]
async fn with_redis_two_engines_share_the_login_attempt_limit() {
    let Some(redis) = redis_url() else { return };
    let (first, second, _) =
        engines_sharing_redis(&redis, Env::default().set("AUTH_PER_IP_PER_MINUTE", "2")).await;
    first
        .login("nobody@example.com", "wrong password 1")
        .await
        .assert_error(401, "unauthorized");
    second
        .login("nobody@example.com", "wrong password 2")
        .await
        .assert_error(401, "unauthorized");
    first
        .login("nobody@example.com", "wrong password 3")
        .await
        .assert_error(429, "rate_limited");
}

#[actix_web::test]
async fn an_unreachable_redis_falls_back_to_limits_in_memory() {
    // Nothing listens on port 1: every check falls back to this process's own limits.
    let app = spawn_app_with(
        Backend::Sqlite,
        Env::default().set("RATELIMIT_STORAGE_URI", "redis://127.0.0.1:1/"),
    )
    .await;
    app.send_sms_code("305-555-0150").await.assert_status(202);
    let refused = app.send_sms_code("305-555-0150").await;
    refused.assert_error(429, "rate_limited");
    assert!(refused.headers.contains_key("retry-after"));
}

#[actix_web::test]
async fn the_global_sms_ceiling_stops_pumping_from_many_addresses() {
    let app = spawn_app_with(
        Backend::Sqlite,
        Env::default()
            .set("SMS_GLOBAL_PER_HOUR", "3")
            .set("TRUSTED_PROXY_HOPS", "1"),
    )
    .await;
    let from = |n: u32, phone: &str| {
        app.client
            .post(app.url("/api/auth/sms/send"))
            .header("x-forwarded-for", format!("203.0.113.{n}"))
            .json(&json!({ "phone": phone }))
    };
    for n in 0..3 {
        app.send(from(n, &format!("305-555-016{n}")))
            .await
            .assert_status(202);
    }
    let refused = app.send(from(9, "305-555-0169")).await;
    refused.assert_error(429, "rate_limited");
    assert_eq!(
        refused.headers["retry-after"], "1200",
        "3 per hour: one per 20 min"
    );
    for _ in 0..3 {
        app.fakes.next_sms().await;
    }
}

#[actix_web::test]
async fn bookings_are_limited_per_customer() {
    let app = spawn_app_with(Backend::Sqlite, env().set("JOBS_PER_USER_PER_HOUR", "2")).await;
    let office = office(&app).await;
    // Refused bookings (outside the service area) do not use the budget up.
    for _ in 0..3 {
        book(&app, &office.customer, (0.0, 0.0), None)
            .await
            .assert_error(422, "outside_service_area");
    }
    office.book(&app, DOWNTOWN_MIAMI).await;
    office.book(&app, DOWNTOWN_MIAMI).await;
    let refused = book(&app, &office.customer, DOWNTOWN_MIAMI, None).await;
    refused.assert_error(429, "rate_limited");
    assert_eq!(refused.headers["retry-after"], "1800");
    // A refused booking stored nothing.
    let jobs = app.get("/api/jobs", Some(&office.customer)).await;
    assert_eq!(jobs.assert_status(200)["jobs"].as_array().unwrap().len(), 2);
    // Another customer's budget is their own.
    let other = app
        .create_user(
            &office.admin,
            json!({ "role": "customer", "phone": "305-555-0177" }),
        )
        .await;
    let other = app.token_for(other.assert_status(201)["id"].as_str().unwrap(), "customer");
    book(&app, &other, DOWNTOWN_MIAMI, None)
        .await
        .assert_status(201);
}

#[actix_web::test]
async fn every_response_carries_the_security_headers() {
    let app = spawn_app_with(Backend::Sqlite, Env::default()).await;
    let token = app.token_for(&uuid::Uuid::new_v4().to_string(), "customer");
    let replies = [
        app.get("/healthz", None).await,
        app.get("/api/openapi.json", None).await,
        app.get("/api/me", None).await,
        app.get("/api/jobs/not-a-uuid", Some(&token)).await,
        app.get("/no/such/route", None).await,
        app.post_raw("/api/auth/login", "application/json", "{")
            .await,
        app.get("/uploads/nothing.png", None).await,
    ];
    for reply in &replies {
        for (name, value) in [
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "DENY"),
            ("referrer-policy", "no-referrer"),
        ] {
            assert_eq!(reply.headers[name], value, "{name} on {}", reply.status);
        }
        let policy = reply.headers["content-security-policy"].to_str().unwrap();
        assert!(policy.contains("default-src 'none'"), "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
        assert!(reply.headers.contains_key("strict-transport-security"));
        assert!(!reply.headers.contains_key("server"), "no server banner");
    }
}
