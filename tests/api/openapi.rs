//! The OpenAPI document is valid OpenAPI 3 and describes exactly the routes served.

use reqwest::Method;

use crate::support::{Backend, Env, spawn_app_with};

/// Every route of the contract that exists so far.
const EXPECTED: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/api/openapi.json"),
    ("POST", "/api/auth/sms/send"),
    ("POST", "/api/auth/sms/verify"),
    ("POST", "/api/auth/login"),
    ("POST", "/api/auth/apple"),
    ("POST", "/api/auth/password/forgot"),
    ("POST", "/api/auth/password/reset"),
    ("GET", "/api/me"),
    ("PATCH", "/api/me"),
    ("POST", "/api/devices"),
    ("DELETE", "/api/devices/{token}"),
    ("POST", "/api/admin/seed"),
    ("POST", "/api/admin/users"),
    ("GET", "/api/admin/users"),
    ("POST", "/api/admin/drivers/{id}/approve"),
    ("GET", "/metrics"),
    ("GET", "/ws"),
    ("GET", "/api/service-area"),
    ("GET", "/api/service-area/check"),
    ("POST", "/api/jobs"),
    ("GET", "/api/jobs"),
    ("GET", "/api/jobs/{id}"),
    ("POST", "/api/jobs/{id}/cancel"),
    ("POST", "/api/jobs/{id}/status"),
    ("POST", "/api/jobs/{id}/assign"),
    ("POST", "/api/offers/{id}/accept"),
    ("POST", "/api/offers/{id}/decline"),
    ("PUT", "/api/drivers/me/availability"),
    ("GET", "/api/drivers/nearby"),
    ("GET", "/api/drivers/live"),
    ("POST", "/api/jobs/{id}/payment-intent"),
    ("POST", "/api/webhooks/stripe"),
    ("POST", "/api/drivers/me/connect-account"),
    ("GET", "/api/admin/outbox"),
    ("POST", "/api/admin/outbox/{id}/retry"),
    ("GET", "/api/admin/notifications"),
    ("POST", "/api/admin/notifications/{id}/retry"),
    ("POST", "/api/jobs/{id}/photos"),
    ("GET", "/uploads/{filename}"),
];

#[actix_web::test]
async fn the_document_is_openapi_3_and_lists_every_route() {
    let app = spawn_app_with(
        Backend::Sqlite,
        Env::default().set("ADMIN_SEED_SECRET", "seed-secret"),
    )
    .await;
    let reply = app.get("/api/openapi.json", None).await;
    assert_eq!(reply.status, 200);
    let spec = oas3::from_json(&reply.text).expect("a valid OpenAPI 3 document");
    assert!(spec.openapi.starts_with("3."), "{}", spec.openapi);

    let documented: Vec<(String, String)> = reply.body["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| ["get", "post", "put", "patch", "delete"].contains(&k.as_str()))
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect();
    for (method, path) in EXPECTED {
        assert!(
            documented.iter().any(|(m, p)| m == method && p == path),
            "{method} {path} is not documented"
        );
    }
    assert_eq!(
        documented.len(),
        EXPECTED.len(),
        "undocumented extras: {documented:?}"
    );

    // And every documented operation is served (no 404/405 from the router).
    for (method, path) in &documented {
        let concrete = path
            .replace("{id}", &uuid::Uuid::new_v4().to_string())
            .replace("{token}", &"ab".repeat(32))
            .replace("{filename}", &format!("{}.jpg", "ab".repeat(16)));
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let reply = app.request(method.clone(), &concrete, None, None).await;
        let unrouted = reply.status == 405
            || (reply.status == 404
                && reply.body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("no route")));
        assert!(
            !unrouted,
            "{method} {concrete} answered {}: {}",
            reply.status, reply.text
        );
    }
}
