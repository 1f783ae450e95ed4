//! Bad input of every kind gets API.md's error shape, never a crash or a silent change.

use serde_json::json;

use crate::support::{Backend, Env, spawn_app, spawn_app_with};

#[actix_web::test]
async fn malformed_json_is_a_bad_request() {
    let app = spawn_app(Backend::Sqlite).await;
    for body in [
        "{\"phone\":",
        "not json",
        "{\"phone\": \"305-555-0100\",}",
        "",
    ] {
        let message = app
            .post_raw("/api/auth/sms/send", "application/json", body)
            .await
            .assert_error(400, "bad_request");
        assert!(!message.is_empty());
    }
}

#[actix_web::test]
async fn a_missing_field_is_named() {
    let app = spawn_app(Backend::Sqlite).await;
    let message = app
        .post(
            "/api/auth/sms/verify",
            None,
            json!({ "phone": "305-555-0100" }),
        )
        .await
        .assert_error(400, "bad_request");
    assert!(message.contains("code"), "{message}");
}

#[actix_web::test]
async fn a_wrong_type_is_a_bad_request() {
    let app = spawn_app(Backend::Sqlite).await;
    for body in [
        json!({ "phone": 3055550100u64 }),
        json!({ "phone": null }),
        json!({ "phone": ["305-555-0100"] }),
        json!({ "phone": { "number": "305-555-0100" } }),
    ] {
        app.post("/api/auth/sms/send", None, body)
            .await
            .assert_error(400, "bad_request");
    }
    app.post(
        "/api/auth/sms/verify",
        None,
        json!({ "phone": "305-555-0100", "code": 123456 }),
    )
    .await
    .assert_error(400, "bad_request");
}

#[actix_web::test]
async fn a_body_over_one_mebibyte_is_too_large() {
    let app = spawn_app(Backend::Sqlite).await;
    let huge = format!("{{\"phone\": \"{}\"}}", "9".repeat(2 * 1024 * 1024));
    app.post_raw("/api/auth/sms/send", "application/json", huge)
        .await
        .assert_error(413, "payload_too_large");
    // Without a Content-Length (chunked), the limit holds while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..64).map(|_| Ok(vec![b' '; 32 * 1024])).collect();
    let stream = futures_util::stream::iter(chunks);
    app.post_raw(
        "/api/auth/sms/send",
        "application/json",
        reqwest::Body::wrap_stream(stream),
    )
    .await
    .assert_error(413, "payload_too_large");
}

#[actix_web::test]
async fn a_body_that_is_not_json_is_an_unsupported_media_type() {
    let app = spawn_app(Backend::Sqlite).await;
    app.post_raw("/api/auth/sms/send", "text/plain", "phone=3055550100")
        .await
        .assert_error(415, "unsupported_media_type");
}

#[actix_web::test]
async fn unknown_routes_are_not_found_and_wrong_methods_not_allowed() {
    let app = spawn_app(Backend::Sqlite).await;
    app.get("/api/nothing-here", None)
        .await
        .assert_error(404, "not_found");
    app.get("/api/../../etc/passwd", None)
        .await
        .assert_error(404, "not_found");

    let reply = app.get("/api/auth/sms/send", None).await;
    reply.assert_error(405, "method_not_allowed");
    assert_eq!(reply.headers["allow"], "POST");

    let reply = app
        .request(reqwest::Method::DELETE, "/api/me", None, None)
        .await;
    reply.assert_error(405, "method_not_allowed");
    assert_eq!(reply.headers["allow"], "GET, PATCH");
}

#[actix_web::test]
async fn a_path_parameter_that_is_not_a_uuid_is_a_bad_request() {
    let app = spawn_app_with(
        Backend::Sqlite,
        Env::default().set("ADMIN_SEED_SECRET", "seed-secret"),
    )
    .await;
    let admin = app
        .seed_admin("ops@goumuve.com", "correct horse battery")
        .await;
    app.post(
        "/api/admin/drivers/not-a-uuid/approve",
        Some(&admin),
        json!({}),
    )
    .await
    .assert_error(400, "bad_request");
    app.post(
        "/api/admin/drivers/' OR 1=1 --/approve",
        Some(&admin),
        json!({}),
    )
    .await
    .assert_error(400, "bad_request");
}

#[actix_web::test]
async fn every_response_carries_a_request_id() {
    let app = spawn_app(Backend::Sqlite).await;
    let ok = app.get("/healthz", None).await;
    let error = app.get("/nowhere", None).await;
    let a = ok.headers["x-request-id"].to_str().unwrap();
    let b = error.headers["x-request-id"].to_str().unwrap();
    assert!(!a.is_empty() && !b.is_empty() && a != b);

    // A load balancer's id is kept when it is plain; anything else is replaced.
    let kept = app
        .send(
            app.client
                .get(app.url("/healthz"))
                .header("x-request-id", "lb-1234"),
        )
        .await;
    assert_eq!(kept.headers["x-request-id"], "lb-1234");
    let replaced = app
        .send(
            app.client
                .get(app.url("/healthz"))
                .header("x-request-id", "<script>"),
        )
        .await;
    assert_ne!(replaced.headers["x-request-id"], "<script>");
}

#[actix_web::test]
async fn health_and_readiness() {
    let app = spawn_app(Backend::Sqlite).await;
    assert_eq!(
        app.get("/healthz", None).await.assert_status(200),
        &json!({ "status": "ok" })
    );
    assert_eq!(
        app.get("/readyz", None).await.assert_status(200),
        &json!({ "status": "ready", "database": "sqlite" })
    );
    app.db.close().await;
    app.get("/readyz", None)
        .await
        .assert_error(503, "unavailable");
    assert_eq!(app.get("/healthz", None).await.status, 200);
}

#[actix_web::test]
async fn cors_allows_only_the_configured_origins() {
    let app = spawn_app_with(
        Backend::Sqlite,
        Env::default().set(
            "CORS_ORIGINS",
            "https://admin.goumuve.test, https://app.goumuve.test",
        ),
    )
    .await;
    let preflight = |origin: &str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/api/me"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
    };
    let allowed = app.send(preflight("https://admin.goumuve.test")).await;
    assert_eq!(allowed.status, 200);
    assert_eq!(
        allowed.headers["access-control-allow-origin"],
        "https://admin.goumuve.test"
    );

    let refused = app.send(preflight("https://evil.example.com")).await;
    refused.assert_error(400, "bad_request");
    assert!(!refused.headers.contains_key("access-control-allow-origin"));
    // Exact match only: no suffix, prefix, scheme, port or subdomain look-alikes.
    for near_miss in [
        "https://admin.goumuve.test.evil.example",
        "https://evil-admin.goumuve.test",
        "https://sub.admin.goumuve.test",
        "http://admin.goumuve.test",
        "https://admin.goumuve.test:8443",
        "https://admin.goumuve.tes",
        "null",
    ] {
        let refused = app.send(preflight(near_miss)).await;
        assert_eq!(refused.status, 400, "{near_miss} was allowed");
        assert!(
            !refused.headers.contains_key("access-control-allow-origin"),
            "{near_miss}"
        );
    }

    let simple = app
        .send(
            app.client
                .get(app.url("/healthz"))
                .header("origin", "https://evil.example.com"),
        )
        .await;
    assert_eq!(simple.status, 200);
    assert!(!simple.headers.contains_key("access-control-allow-origin"));
}

#[actix_web::test]
async fn without_cors_origins_no_cross_origin_headers_are_sent() {
    let app = spawn_app(Backend::Sqlite).await;
    let reply = app
        .send(
            app.client
                .get(app.url("/healthz"))
                .header("origin", "https://admin.goumuve.test"),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert!(!reply.headers.contains_key("access-control-allow-origin"));
}

#[actix_web::test]
async fn every_endpoint_names_a_missing_field() {
    let app = spawn_app_with(
        Backend::Sqlite,
        Env::default().set("ADMIN_SEED_SECRET", "seed-secret"),
    )
    .await;
    let (token, _) = app.sms_login("305-555-0190", None).await;
    let cases = [
        ("/api/auth/sms/send", json!({}), "phone"),
        ("/api/auth/sms/verify", json!({ "code": "123456" }), "phone"),
        ("/api/auth/login", json!({ "email": "a@b.com" }), "password"),
        (
            "/api/auth/apple",
            json!({ "name": "Ana" }),
            "identity_token",
        ),
        ("/api/auth/password/forgot", json!({}), "email"),
        (
            "/api/auth/password/reset",
            json!({ "password": "long enough" }),
            "token",
        ),
        (
            "/api/admin/seed",
            json!({ "secret": "seed-secret", "email": "a@b.com" }),
            "password",
        ),
        (
            "/api/devices",
            json!({ "token": "ab", "platform": "ios" }),
            "app",
        ),
    ];
    for (path, body, field) in cases {
        let message = app
            .post(path, Some(&token), body)
            .await
            .assert_error(400, "bad_request");
        assert!(message.contains(field), "{path}: {message}");
    }
}
