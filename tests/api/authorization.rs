//! The authorization matrix: every route the engine serves, called by every kind of caller, with
//! the status each must get. One table; the test fails if a route is served but not in it.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{Value, json};

use crate::dispatch::{DOWNTOWN_MIAMI, env};
use crate::support::{Backend, TestApp, multipart, spawn_app_with};

const PNG: &[u8] = include_bytes!("../data/photos/junk.png");

/// The callers, in the order of the table's columns.
const CALLERS: [&str; 7] = [
    "owner",
    "other customer",
    "its driver",
    "other driver",
    "operator",
    "admin",
    "no token",
];

/// A job of the owner's, assigned to "its driver", with one photo.
struct Fixture {
    job: String,
    photo: String,
}

struct People {
    tokens: [Option<String>; 7],
    driver_id: String,
    other_driver_id: String,
    admin: String,
}

/// One row: the request and the expected status for each caller in [`CALLERS`] order. `fresh`
/// rows change the job, so each caller gets a job of its own.
struct Row {
    method: Method,
    path: &'static str,
    body: Body,
    fresh: bool,
    expected: [u16; 7],
}

enum Body {
    None,
    Json(fn(&Context) -> Value),
    Photo,
}

/// What a request's placeholders are filled from: `{job}`, `{photo}`, `{driver}`,
/// `{other_driver}`, `{n}` (unique per call), `{random}` (a UUID nothing has),
/// `{unknown_device}` (a device token nobody registered).
struct Context<'a> {
    fixture: &'a Fixture,
    people: &'a People,
    n: usize,
}

impl Context<'_> {
    fn fill(&self, template: &str) -> String {
        template
            .replace("{job}", &self.fixture.job)
            .replace("{photo}", &self.fixture.photo)
            .replace("{driver}", &self.people.driver_id)
            .replace("{other_driver}", &self.people.other_driver_id)
            .replace("{n}", &self.n.to_string())
            .replace("{random}", &uuid::Uuid::new_v4().to_string())
            .replace(
                "{unknown_device}",
                &format!("{:064x}", u128::MAX - self.n as u128),
            )
    }
}

fn row(method: Method, path: &'static str, expected: [u16; 7]) -> Row {
    Row {
        method,
        path,
        body: Body::None,
        fresh: false,
        expected,
    }
}

fn with_json(mut row: Row, body: fn(&Context) -> Value) -> Row {
    row.body = Body::Json(body);
    row
}

fn fresh(mut row: Row) -> Row {
    row.fresh = true;
    row
}

#[rustfmt::skip]
fn table() -> Vec<Row> {
    use Method as M;
    // Columns: owner, other customer, its driver, other driver, operator, admin, no token.
    const ALL_200: [u16; 7] = [200, 200, 200, 200, 200, 200, 200];
    const SIGNED_IN_200: [u16; 7] = [200, 200, 200, 200, 200, 200, 401];
    const DISPATCHERS_200: [u16; 7] = [403, 403, 403, 403, 200, 200, 401];
    const DISPATCHERS_404: [u16; 7] = [403, 403, 403, 403, 404, 404, 401];
    vec![
        row(M::GET, "/healthz", ALL_200),
        row(M::GET, "/readyz", ALL_200),
        row(M::GET, "/metrics", ALL_200),
        row(M::GET, "/api/openapi.json", ALL_200),
        // Signed in, but not a WebSocket handshake.
        row(M::GET, "/ws", [400, 400, 400, 400, 400, 400, 401]),
        row(M::GET, "/api/service-area", ALL_200),
        row(M::GET, "/api/service-area/check?lat=25.77&lng=-80.19", ALL_200),
        with_json(row(M::POST, "/api/jobs", [201, 201, 403, 403, 403, 403, 401]),
            |_| json!({ "address": "1 Test Way", "lat": 25.7747, "lng": -80.1963, "description": "", "load_size": "quarter" })),
        row(M::GET, "/api/jobs", SIGNED_IN_200),
        row(M::GET, "/api/jobs/{job}", [200, 404, 200, 404, 200, 200, 401]),
        // The job is assigned already: dispatchers get as far as the conflict.
        with_json(row(M::POST, "/api/jobs/{job}/assign", [403, 403, 403, 403, 409, 409, 401]),
            |c| json!({ "driver_id": c.people.other_driver_id })),
        Row { body: Body::Photo, ..row(M::POST, "/api/jobs/{job}/photos", [201, 404, 201, 404, 201, 201, 401]) },
        // The photo's URL is its key.
        row(M::GET, "/uploads/{photo}", ALL_200),
        // Payments are off in this engine.
        row(M::POST, "/api/jobs/{job}/payment-intent", [503, 503, 403, 403, 403, 403, 401]),
        with_json(row(M::POST, "/api/webhooks/stripe", [503, 503, 503, 503, 503, 503, 503]), |_| json!({})),
        row(M::POST, "/api/drivers/me/connect-account", [403, 403, 503, 503, 403, 403, 401]),
        row(M::GET, "/api/admin/outbox", DISPATCHERS_200),
        row(M::POST, "/api/admin/outbox/{random}/retry", DISPATCHERS_404),
        row(M::GET, "/api/admin/notifications", DISPATCHERS_200),
        row(M::POST, "/api/admin/notifications/{random}/retry", DISPATCHERS_404),
        row(M::POST, "/api/offers/{random}/accept", [403, 403, 404, 404, 403, 403, 401]),
        row(M::POST, "/api/offers/{random}/decline", [403, 403, 404, 404, 403, 403, 401]),
        with_json(row(M::PUT, "/api/drivers/me/availability", [403, 403, 204, 204, 403, 403, 401]),
            |_| json!({ "available": false })),
        row(M::GET, "/api/drivers/nearby?lat=25.77&lng=-80.19", DISPATCHERS_200),
        row(M::GET, "/api/drivers/live", DISPATCHERS_200),
        // Public sign-in endpoints: the same for everyone, token or not.
        with_json(row(M::POST, "/api/auth/sms/send", [202; 7]),
            |c| json!({ "phone": format!("+1305555{:04}", 2000 + c.n) })),
        with_json(row(M::POST, "/api/auth/sms/verify", [401; 7]),
            |c| json!({ "phone": format!("+1305555{:04}", 3000 + c.n), "code": "000000" })),
        with_json(row(M::POST, "/api/auth/login", [401; 7]),
            |_| json!({ "email": "ops@goumuve.com", "password": "not the password" })),
        with_json(row(M::POST, "/api/auth/apple", [401; 7]), |_| json!({ "identity_token": "not.a.token" })),
        with_json(row(M::POST, "/api/auth/password/forgot", [202; 7]),
            |c| json!({ "email": format!("someone{}@example.com", c.n) })),
        with_json(row(M::POST, "/api/auth/password/reset", [400; 7]),
            |_| json!({ "token": "forged-token", "password": "a long new password" })),
        row(M::GET, "/api/me", SIGNED_IN_200),
        with_json(row(M::PATCH, "/api/me", SIGNED_IN_200), |_| json!({ "name": "Renamed" })),
        with_json(row(M::POST, "/api/devices", [204, 204, 204, 204, 204, 204, 401]),
            |c| json!({ "token": format!("{:064x}", c.n), "platform": "ios", "app": "customer" })),
        // Someone else's device, or none: not found for everyone.
        row(M::DELETE, "/api/devices/{unknown_device}", [404, 404, 404, 404, 404, 404, 401]),
        with_json(row(M::POST, "/api/admin/seed", [403; 7]),
            |_| json!({ "secret": "wrong secret", "email": "x@example.com", "password": "a long password" })),
        with_json(row(M::POST, "/api/admin/users", [403, 403, 403, 403, 403, 201, 401]),
            |c| json!({ "role": "operator", "email": format!("op{}@goumuve.com", c.n), "password": "a long password" })),
        row(M::POST, "/api/admin/drivers/{other_driver}/approve", DISPATCHERS_200),
        row(M::GET, "/api/admin/users", DISPATCHERS_200),
        // Last: each caller gets a job of its own (the driver's previous one is cancelled).
        fresh(with_json(row(M::POST, "/api/jobs/{job}/cancel", [200, 404, 403, 404, 200, 200, 401]), |_| json!({}))),
        fresh(with_json(row(M::POST, "/api/jobs/{job}/status", [403, 404, 200, 404, 200, 200, 401]),
            |_| json!({ "status": "en_route" }))),
    ]
}

async fn new_user(app: &TestApp, admin: &str, body: Value) -> String {
    app.create_user(admin, body).await.assert_status(201)["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn people(app: &TestApp) -> People {
    let admin = app
        .seed_admin("ops@goumuve.com", "correct horse battery")
        .await;
    let user = |body: Value| new_user(app, &admin, body);
    let owner = user(json!({ "role": "customer", "phone": "305-555-0100" })).await;
    let other = user(json!({ "role": "customer", "phone": "305-555-0101" })).await;
    let driver = user(json!({ "role": "driver", "phone": "305-555-0102", "approved": true })).await;
    let other_driver =
        user(json!({ "role": "driver", "phone": "305-555-0103", "approved": true })).await;
    let operator = user(
        json!({ "role": "operator", "email": "operator@goumuve.com", "password": "a long password" }),
    )
    .await;
    People {
        tokens: [
            Some(app.token_for(&owner, "customer")),
            Some(app.token_for(&other, "customer")),
            Some(app.token_for(&driver, "driver")),
            Some(app.token_for(&other_driver, "driver")),
            Some(app.token_for(&operator, "operator")),
            Some(admin.clone()),
            None,
        ],
        driver_id: driver,
        other_driver_id: other_driver,
        admin,
    }
}

/// A new job of the owner's, assigned by hand to "its driver", with one photo.
async fn fixture(app: &TestApp, people: &People) -> Fixture {
    let owner = people.tokens[0].as_deref().unwrap();
    let (lat, lng) = DOWNTOWN_MIAMI;
    let job = app
        .post(
            "/api/jobs",
            Some(owner),
            json!({ "address": "1 Test Way", "lat": lat, "lng": lng, "description": "", "load_size": "half" }),
        )
        .await;
    let job = job.assert_status(201)["id"].as_str().unwrap().to_owned();
    app.post(
        &format!("/api/jobs/{job}/assign"),
        Some(&people.admin),
        json!({ "driver_id": people.driver_id }),
    )
    .await
    .assert_status(200);
    let photo = send(
        app,
        Method::POST,
        &format!("/api/jobs/{job}/photos"),
        Some(owner),
        &Body::Photo,
        None,
    )
    .await;
    assert_eq!(photo.0, 201, "{}", photo.1);
    let photo: Value = serde_json::from_str(&photo.1).unwrap();
    let photo = photo["added"][0]
        .as_str()
        .unwrap()
        .trim_start_matches("/uploads/")
        .to_owned();
    Fixture { job, photo }
}

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: &Body,
    context: Option<&Context<'_>>,
) -> (u16, String) {
    let mut request = app.client.request(method, app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request = match body {
        Body::None => request,
        Body::Json(make) => request.json(&make(context.expect("a context for a JSON body"))),
        Body::Photo => request
            .header("content-type", multipart::content_type())
            .body(multipart::body(&[("photos", "a.png", "image/png", PNG)])),
    };
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[actix_web::test]
async fn every_route_answers_every_caller_as_the_table_says() {
    let app = spawn_app_with(
        Backend::Sqlite,
        env()
            .set("AUTH_PER_IP_PER_MINUTE", "1000")
            .set("SMS_PER_IP_PER_HOUR", "1000")
            .set("WS_CONNECTS_PER_USER_PER_MINUTE", "1000")
            .set("UPLOADS_PER_USER_PER_HOUR", "1000"),
    )
    .await;
    let people = people(&app).await;
    let shared = fixture(&app, &people).await;
    let table = table();

    // Every route in the OpenAPI document is in the table, and nothing else.
    let document = app.get("/api/openapi.json", None).await;
    let mut served = BTreeSet::new();
    for (path, item) in document.body["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            served.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    let tabled: BTreeSet<String> = table
        .iter()
        .map(|row| {
            let path = row.path.split('?').next().unwrap();
            let path = path
                .replace("{job}", "{id}")
                .replace("{random}", "{id}")
                .replace("{other_driver}", "{id}")
                .replace("{photo}", "{filename}");
            let path = path.replace("{unknown_device}", "{token}");
            format!("{} {path}", row.method)
        })
        .collect();
    assert_eq!(
        served.difference(&tabled).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "routes served but missing from the table"
    );
    assert_eq!(
        tabled.difference(&served).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "rows for routes that are not served"
    );

    let mut n = 0;
    let mut wrong = Vec::new();
    let mut current_job = shared.job.clone();
    for row in &table {
        for (caller, (token, expected)) in
            CALLERS.iter().zip(people.tokens.iter().zip(row.expected))
        {
            let own;
            let fixture = if row.fresh {
                // One active job per driver: the previous one makes way.
                app.post(
                    &format!("/api/jobs/{}/cancel", current_job),
                    Some(&people.admin),
                    json!({}),
                )
                .await;
                own = fixture(&app, &people).await;
                current_job = own.job.clone();
                &own
            } else {
                &shared
            };
            n += 1;
            let context = Context {
                fixture,
                people: &people,
                n,
            };
            let path = context.fill(row.path);
            let (status, body) = send(
                &app,
                row.method.clone(),
                &path,
                token.as_deref(),
                &row.body,
                Some(&context),
            )
            .await;
            if status != expected {
                wrong.push(format!(
                    "{} {} as {caller}: expected {expected}, got {status}: {body}",
                    row.method, row.path
                ));
            }
            if status >= 400 && row.path != "/uploads/{photo}" {
                let parsed: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                assert!(
                    parsed["error"]["code"].is_string(),
                    "{} {} as {caller}: {status} without the error shape: {body}",
                    row.method,
                    row.path
                );
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} cells differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
