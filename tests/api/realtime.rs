//! The realtime core through real WebSocket clients: drivers stream, dispatchers watch the map,
//! customers follow their job, dispatchers assign by hand.

use std::time::Duration;

use serde_json::{Value, json};
use umuve_actors::clock::Clock;

use crate::on_both_databases;
use crate::support::ws::{Ending, WsClient};
use crate::support::{Backend, Env, TestApp, spawn_app_on, spawn_app_with};

const DOWNTOWN_MIAMI: (f64, f64) = (25.7747, -80.1963);
const BRICKELL: (f64, f64) = (25.7617, -80.1918);
const FORT_LAUDERDALE: (f64, f64) = (26.1224, -80.1373);
const ORLANDO: (f64, f64) = (28.5383, -81.3792);

fn seeding() -> Env {
    Env::default().set("ADMIN_SEED_SECRET", "seed-secret")
}

/// The people of a scenario.
struct Cast {
    admin: String,
    driver: String,
    driver_id: String,
    customer: String,
    customer_id: String,
}

async fn cast(app: &TestApp) -> Cast {
    let admin = app
        .seed_admin("ops@goumuve.com", "correct horse battery")
        .await;
    let (driver, driver_user) = app.sms_login("954-555-0200", Some("driver")).await;
    let driver_id = driver_user["id"].as_str().unwrap().to_owned();
    app.post(
        &format!("/api/admin/drivers/{driver_id}/approve"),
        Some(&admin),
        json!({}),
    )
    .await
    .assert_status(200);
    let (customer, customer_user) = app.sms_login("305-555-0201", None).await;
    Cast {
        admin,
        driver,
        driver_id,
        customer_id: customer_user["id"].as_str().unwrap().to_owned(),
        customer,
    }
}

fn location((lat, lng): (f64, f64)) -> Value {
    json!({ "type": "location", "lat": lat, "lng": lng, "heading_deg": 90, "ts": chrono::Utc::now().timestamp_millis() })
}

async fn book(app: &TestApp, customer: &str, (lat, lng): (f64, f64)) -> crate::support::Reply {
    app.post(
        "/api/jobs",
        Some(customer),
        json!({
            "address": "100 Biscayne Blvd, Miami, FL",
            "lat": lat,
            "lng": lng,
            "description": "Old sofa and two chairs",
            "load_size": "quarter",
        }),
    )
    .await
}

fn delta_has_driver(frame: &Value, driver_id: &str) -> bool {
    frame["type"] == "map.delta"
        && frame["drivers"]
            .as_array()
            .is_some_and(|drivers| drivers.iter().any(|d| d["driver_id"] == driver_id))
}

on_both_databases!(
    a_job_goes_from_booking_to_completion_live,
    nobody_watches_someone_elses_job,
    positions_and_jobs_survive_a_restart,
);

async fn a_job_goes_from_booking_to_completion_live(backend: Backend) {
    let app = spawn_app_with(backend, seeding()).await;
    let cast = cast(&app).await;

    // The dispatcher watches the map; the driver comes online and streams.
    let mut dispatcher = app.ws(&cast.admin).await;
    assert_eq!(dispatcher.hello["role"], "admin");
    dispatcher
        .send_json(json!({ "type": "map.subscribe", "id": 1 }))
        .await;
    let snapshot = dispatcher.next_of_type("map.snapshot").await;
    assert_eq!(snapshot["id"], 1);

    let mut driver = app.ws(&cast.driver).await;
    assert_eq!(driver.hello["user_id"], cast.driver_id.as_str());
    driver
        .send_json(json!({ "type": "availability", "available": true, "id": "a1" }))
        .await;
    assert_eq!(driver.next_of_type("ack").await["id"], "a1");
    driver.send_json(location(BRICKELL)).await;
    let seen = dispatcher
        .next_matching(|f| delta_has_driver(f, &cast.driver_id))
        .await;
    let on_map = seen["drivers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["driver_id"] == cast.driver_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        (on_map["lat"].as_f64(), on_map["available"].as_bool()),
        (Some(BRICKELL.0), Some(true))
    );
    assert_eq!(on_map["county"], "Miami-Dade");
    assert_eq!(on_map["in_service_area"], true);

    // The customer books: outside the area is refused; inside, the map hears at once.
    book(&app, &cast.customer, ORLANDO)
        .await
        .assert_error(422, "outside_service_area");
    let reply = book(&app, &cast.customer, DOWNTOWN_MIAMI).await;
    let job = reply.assert_status(201).clone();
    let job_id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(job["status"], "dispatching");
    assert_eq!(job["county"], "Miami-Dade");
    assert_eq!(job["customer_id"], cast.customer_id.as_str());
    assert_eq!(
        (
            job["price_cents"].as_i64(),
            job["service_fee_cents"].as_i64()
        ),
        (Some(17_900), Some(1_500))
    );
    assert_eq!(
        (
            job["total_cents"].as_i64(),
            job["driver_payout_cents"].as_i64()
        ),
        (Some(19_400), Some(14_320))
    );
    let announced = dispatcher.next_of_type("job.new").await;
    assert_eq!(announced["job"]["id"], job_id.as_str());

    // The customer and the dispatcher follow the job.
    let mut customer = app.ws(&cast.customer).await;
    customer
        .send_json(json!({ "type": "subscribe", "job_id": job_id, "id": "s1" }))
        .await;
    let snapshot = customer.next_of_type("job.snapshot").await;
    assert_eq!(
        (snapshot["id"].as_str(), snapshot["job"]["status"].as_str()),
        (Some("s1"), Some("dispatching"))
    );
    assert_eq!(snapshot["driver"], Value::Null);
    dispatcher
        .send_json(json!({ "type": "subscribe", "job_id": job_id }))
        .await;
    dispatcher.next_of_type("job.snapshot").await;

    // The dispatcher assigns by hand.
    let assigned = assign(&app, &cast.admin, &job_id, &cast.driver_id).await;
    assert_eq!(assigned.assert_status(200)["status"], "assigned");
    let offer = driver.next_of_type("job.assigned").await;
    assert_eq!(offer["job"]["id"], job_id.as_str());
    assert_eq!(
        driver.next_of_type("job.status").await["status"],
        "assigned"
    );
    let status = customer.next_of_type("job.status").await;
    assert_eq!(
        (status["job_id"].as_str(), status["status"].as_str()),
        (Some(job_id.as_str()), Some("assigned"))
    );
    assert_eq!(
        dispatcher.next_of_type("job.status").await["status"],
        "assigned"
    );

    // The customer follows the driver.
    driver.send_json(location(DOWNTOWN_MIAMI)).await;
    let moved = customer.next_of_type("driver.location").await;
    assert_eq!(moved["job_id"], job_id.as_str());
    assert_eq!(moved["driver_id"], cast.driver_id.as_str());
    assert_eq!(
        (moved["lat"].as_f64(), moved["lng"].as_f64()),
        (Some(DOWNTOWN_MIAMI.0), Some(DOWNTOWN_MIAMI.1))
    );
    assert_eq!(moved["heading_deg"], 90.0);

    // The driver works the job; everyone watching sees each step.
    for step in ["en_route", "arrived", "in_progress", "completed"] {
        let reply = move_job(&app, &cast.driver, &job_id, step).await;
        assert_eq!(reply.assert_status(200)["status"], step);
        assert_eq!(customer.next_of_type("job.status").await["status"], step);
        assert_eq!(dispatcher.next_of_type("job.status").await["status"], step);
        assert_eq!(driver.next_of_type("job.status").await["status"], step);
    }
    // A finished job does not move again.
    move_job(&app, &cast.driver, &job_id, "en_route")
        .await
        .assert_error(409, "conflict");
    cancel_job(&app, &cast.customer, &job_id)
        .await
        .assert_error(409, "conflict");

    // Every change was stored as an event, in order.
    let events = umuve_dispatch::storage::jobs::events(&app.db, job_id.parse().unwrap())
        .await
        .unwrap();
    let trail: Vec<&str> = events.iter().map(|(_, to, _, _)| to.as_str()).collect();
    assert_eq!(
        trail,
        [
            "dispatching",
            "assigned",
            "en_route",
            "arrived",
            "in_progress",
            "completed"
        ]
    );
    let fetched = app
        .get(&format!("/api/jobs/{job_id}"), Some(&cast.customer))
        .await;
    assert_eq!(fetched.assert_status(200)["status"], "completed");
}

async fn nobody_watches_someone_elses_job(backend: Backend) {
    let app = spawn_app_with(backend, seeding()).await;
    let cast = cast(&app).await;
    let job = book(&app, &cast.customer, DOWNTOWN_MIAMI)
        .await
        .assert_status(201)
        .clone();
    let job_id = job["id"].as_str().unwrap();
    let (stranger, _) = app.sms_login("305-555-0202", None).await;
    let (other_driver, _) = app.sms_login("954-555-0203", Some("driver")).await;

    app.get(&format!("/api/jobs/{job_id}"), Some(&stranger))
        .await
        .assert_error(404, "not_found");
    app.get(&format!("/api/jobs/{job_id}"), Some(&other_driver))
        .await
        .assert_error(404, "not_found");
    cancel_job(&app, &stranger, job_id)
        .await
        .assert_error(404, "not_found");

    for token in [&stranger, &other_driver] {
        let mut socket = app.ws(token).await;
        socket
            .send_json(json!({ "type": "subscribe", "job_id": job_id, "id": 9 }))
            .await;
        let refused = socket.next_of_type("error").await;
        assert_eq!(
            (refused["code"].as_str(), refused["id"].as_i64()),
            (Some("not_found"), Some(9))
        );
    }
    // The assigned driver may watch it.
    assign(&app, &cast.admin, job_id, &cast.driver_id)
        .await
        .assert_status(200);
    let mut driver = app.ws(&cast.driver).await;
    driver
        .send_json(json!({ "type": "subscribe", "job_id": job_id }))
        .await;
    assert_eq!(
        driver.next_of_type("job.snapshot").await["job"]["status"],
        "assigned"
    );

    // Customers and drivers are not dispatchers.
    let mut customer = app.ws(&cast.customer).await;
    customer.send_json(json!({ "type": "map.subscribe" })).await;
    assert_eq!(customer.next_of_type("error").await["code"], "forbidden");
    driver.send_json(json!({ "type": "map.subscribe" })).await;
    assert_eq!(driver.next_of_type("error").await["code"], "forbidden");
    customer.send_json(location(DOWNTOWN_MIAMI)).await;
    assert_eq!(customer.next_of_type("error").await["code"], "forbidden");

    // Customers cannot move jobs; drivers cannot cancel or assign.
    move_job(&app, &cast.customer, job_id, "en_route")
        .await
        .assert_error(403, "forbidden");
    cancel_job(&app, &cast.driver, job_id)
        .await
        .assert_error(403, "forbidden");
    assign(&app, &cast.driver, job_id, &cast.driver_id)
        .await
        .assert_error(403, "forbidden");
    // Drivers move only their own job, one step at a time.
    move_job(&app, &cast.driver, job_id, "arrived")
        .await
        .assert_error(409, "conflict");
    move_job(&app, &other_driver, job_id, "en_route")
        .await
        .assert_error(404, "not_found");
}

async fn positions_and_jobs_survive_a_restart(backend: Backend) {
    let app = spawn_app_with(backend, seeding()).await;
    let cast = cast(&app).await;
    let job = book(&app, &cast.customer, DOWNTOWN_MIAMI)
        .await
        .assert_status(201)
        .clone();
    let mut dispatcher = app.map_watcher(&cast.admin).await;
    let mut driver = app.ws(&cast.driver).await;
    driver.send_json(location(FORT_LAUDERDALE)).await;
    dispatcher
        .next_matching(|f| delta_has_driver(f, &cast.driver_id))
        .await;
    drop((driver, dispatcher));

    // A graceful stop saves positions not yet checkpointed.
    let database = app.shut_down().await;
    let app = spawn_app_on(database, seeding()).await;
    let stored: (f64, f64) = sqlx_query_position(&app, &cast.driver_id).await;
    assert_eq!(stored, FORT_LAUDERDALE);

    // After the restart the job is on the map again; the old position counts as stale.
    let mut dispatcher = app.ws(&cast.admin).await;
    dispatcher
        .send_json(json!({ "type": "map.subscribe" }))
        .await;
    let snapshot = dispatcher.next_of_type("map.snapshot").await;
    assert_eq!(snapshot["jobs"][0]["id"], job["id"]);
    assert_eq!(snapshot["drivers"], json!([]));
    let live = app.get("/api/drivers/live", Some(&cast.admin)).await;
    assert_eq!(live.assert_status(200)["features"], json!([]));
    // Until the driver reports again.
    let mut driver = app.ws(&cast.driver).await;
    driver.send_json(location(BRICKELL)).await;
    dispatcher
        .next_matching(|f| delta_has_driver(f, &cast.driver_id))
        .await;
}

async fn sqlx_query_position(app: &TestApp, driver_id: &str) -> (f64, f64) {
    let restored = umuve_dispatch::storage::positions::restore(&app.db)
        .await
        .unwrap();
    let mine = restored
        .into_iter()
        .find(|r| r.driver.to_string() == driver_id)
        .and_then(|r| r.position)
        .expect("a stored position");
    (mine.at.lat(), mine.at.lng())
}

// Frame handling and the map's mechanics do not depend on the database; SQLite suffices.

#[actix_web::test]
async fn the_socket_needs_a_valid_token_before_the_upgrade() {
    let app = spawn_app_with(Backend::Sqlite, seeding()).await;
    let (token, _) = app.sms_login("305-555-0210", None).await;
    let upgrade = |request: reqwest::RequestBuilder| {
        request
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
    };
    app.send(upgrade(app.client.get(app.url("/ws"))))
        .await
        .assert_error(401, "unauthorized");
    app.send(upgrade(app.client.get(app.url("/ws?token=not-a-token"))))
        .await
        .assert_error(401, "unauthorized");
    // A browser passes the token in the query string.
    let url = format!(
        "{}/ws?token={token}",
        app.address.replace("http://", "ws://")
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    use futures_util::StreamExt;
    let hello = socket.next().await.unwrap().unwrap();
    assert!(hello.to_text().unwrap().contains("\"hello\""));
    // A plain GET without the handshake is a bad request.
    app.get(&format!("/ws?token={token}"), None)
        .await
        .assert_error(400, "bad_request");
}

#[actix_web::test]
async fn bad_frames_get_errors_and_the_socket_lives_on() {
    let app = spawn_app_with(Backend::Sqlite, seeding()).await;
    let cast = cast(&app).await;
    let mut driver = app.ws(&cast.driver).await;
    let mut bystander = app.ws(&cast.customer).await;

    driver.send_text("{\"type\": \"location\", \"lat\": ").await;
    let error = driver.next_of_type("error").await;
    assert_eq!(error["code"], "bad_request");
    assert!(error.get("id").is_none());

    driver
        .send_json(json!({ "type": "location", "id": "L1", "lat": 91, "lng": -80.19 }))
        .await;
    let error = driver.next_of_type("error").await;
    assert_eq!(
        (error["code"].as_str(), error["id"].as_str()),
        (Some("bad_request"), Some("L1"))
    );
    assert!(error["message"].as_str().unwrap().contains("lat"));

    driver
        .send_json(json!({ "type": "location", "id": "L2", "lat": "25.77", "lng": -80.19 }))
        .await;
    let error = driver.next_of_type("error").await;
    assert_eq!(
        (error["code"].as_str(), error["id"].as_str()),
        (Some("bad_request"), Some("L2"))
    );

    driver
        .send_json(json!({ "type": "teleport", "id": 3 }))
        .await;
    let error = driver.next_of_type("error").await;
    assert_eq!(
        (error["code"].as_str(), error["id"].as_i64()),
        (Some("unknown_type"), Some(3))
    );

    driver.send_text("[1, 2, 3]").await;
    assert_eq!(driver.next_of_type("error").await["code"], "bad_request");

    // Still open and working.
    driver
        .send_json(json!({ "type": "availability", "available": true, "id": "ok" }))
        .await;
    assert_eq!(driver.next_of_type("ack").await["id"], "ok");

    // A frame over 64 KiB closes that socket with 1009, and only that one.
    let huge = format!(
        "{{\"type\":\"location\",\"pad\":\"{}\"}}",
        "x".repeat(100 * 1024)
    );
    driver.send_text(&huge).await;
    match driver.ending(Duration::from_secs(10)).await {
        Ending::Closed(Some(frame)) => assert_eq!(u16::from(frame.code), 1009),
        other => panic!("expected a 1009 close, got {other:?}"),
    }
    bystander
        .send_json(json!({ "type": "unsubscribe", "job_id": uuid::Uuid::new_v4(), "id": "still" }))
        .await;
    assert_eq!(bystander.next_of_type("ack").await["id"], "still");
}

#[actix_web::test]
async fn only_approved_drivers_become_available() {
    let app = spawn_app_with(Backend::Sqlite, seeding()).await;
    let (pending, pending_user) = app.sms_login("954-555-0220", Some("driver")).await;
    let mut socket = app.ws(&pending).await;
    socket
        .send_json(json!({ "type": "availability", "available": true, "id": 1 }))
        .await;
    let refused = socket.next_of_type("error").await;
    assert_eq!(
        (refused["code"].as_str(), refused["id"].as_i64()),
        (Some("forbidden"), Some(1))
    );
    app.request(
        reqwest::Method::PUT,
        "/api/drivers/me/availability",
        Some(&pending),
        Some(json!({ "available": true })),
    )
    .await
    .assert_error(403, "forbidden");
    // Going unavailable is always allowed.
    app.request(
        reqwest::Method::PUT,
        "/api/drivers/me/availability",
        Some(&pending),
        Some(json!({ "available": false })),
    )
    .await
    .assert_status(204);
    let cast = cast(&app).await;
    app.request(
        reqwest::Method::PUT,
        "/api/drivers/me/availability",
        Some(&cast.driver),
        Some(json!({ "available": true })),
    )
    .await
    .assert_status(204);
    // Approved while connected: the same socket may go available at once.
    app.request(
        reqwest::Method::POST,
        &format!(
            "/api/admin/drivers/{}/approve",
            pending_user["id"].as_str().unwrap()
        ),
        Some(&cast.admin),
        None,
    )
    .await
    .assert_status(200);
    socket
        .send_json(json!({ "type": "availability", "available": true, "id": 2 }))
        .await;
    assert_eq!(socket.next_of_type("ack").await["id"], 2);
    app.request(
        reqwest::Method::PUT,
        "/api/drivers/me/availability",
        Some(&cast.customer),
        Some(json!({ "available": true })),
    )
    .await
    .assert_error(403, "forbidden");
}

#[actix_web::test]
async fn dispatchers_find_the_nearest_live_drivers() {
    let app = spawn_app_with(Backend::Sqlite, seeding()).await;
    let cast = cast(&app).await;
    let (far_token, far) = app.sms_login("954-555-0230", Some("driver")).await;
    let far_id = far["id"].as_str().unwrap().to_owned();
    let mut dispatcher = app.map_watcher(&cast.admin).await;

    let mut near = app.ws(&cast.driver).await;
    near.send_json(json!({ "type": "availability", "available": true, "id": 1 }))
        .await;
    near.next_of_type("ack").await;
    near.send_json(location(BRICKELL)).await;
    let mut far_socket = app.ws(&far_token).await;
    // A backlog: the newest point wins, whatever its place in the list.
    far_socket
        .send_json(json!({ "type": "locations", "points": [
            { "lat": FORT_LAUDERDALE.0, "lng": FORT_LAUDERDALE.1, "ts": 2_000_000_000_000i64 },
            { "lat": 26.5, "lng": -80.1, "ts": 1_900_000_000_000i64 },
        ]}))
        .await;
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 2 {
        let delta = dispatcher.next_of_type("map.delta").await;
        for d in delta["drivers"].as_array().unwrap() {
            seen.insert(d["driver_id"].as_str().unwrap().to_owned());
        }
    }

    let (lat, lng) = DOWNTOWN_MIAMI;
    let nearby = app
        .get(
            &format!("/api/drivers/nearby?lat={lat}&lng={lng}&radius_m=100000"),
            Some(&cast.admin),
        )
        .await;
    let drivers = nearby.assert_status(200)["drivers"]
        .as_array()
        .unwrap()
        .clone();
    let order: Vec<&str> = drivers
        .iter()
        .map(|d| d["driver_id"].as_str().unwrap())
        .collect();
    assert_eq!(order, [cast.driver_id.as_str(), far_id.as_str()]);
    let (d0, d1) = (
        drivers[0]["distance_m"].as_f64().unwrap(),
        drivers[1]["distance_m"].as_f64().unwrap(),
    );
    assert!((1_000.0..2_000.0).contains(&d0), "{d0}");
    assert!((38_000.0..42_000.0).contains(&d1), "{d1}");
    assert_eq!(drivers[1]["lat"], FORT_LAUDERDALE.0);

    let available = app
        .get(
            &format!("/api/drivers/nearby?lat={lat}&lng={lng}&radius_m=100000&available=true"),
            Some(&cast.admin),
        )
        .await;
    assert_eq!(
        available.assert_status(200)["drivers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let close = app
        .get(
            &format!("/api/drivers/nearby?lat={lat}&lng={lng}&radius_m=5000"),
            Some(&cast.admin),
        )
        .await;
    assert_eq!(
        close.assert_status(200)["drivers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let live = app.get("/api/drivers/live", Some(&cast.admin)).await;
    let live = live.assert_status(200);
    assert_eq!(live["type"], "FeatureCollection");
    assert_eq!(live["features"].as_array().unwrap().len(), 2);
    assert_eq!(live["features"][0]["geometry"]["type"], "Point");

    for bad in [
        "lat=91&lng=0",
        "lat=25&lng=-80&radius_m=0",
        "lat=25&lng=-80&limit=0",
        "lat=25&lng=-80&limit=201",
        "lat=25&lng=181",
        "lat=25&lng=-80&radius_m=200001",
        "lat=25&lng=-80&radius_m=NaN",
        "lat=25&lng=-80&radius_m=inf",
        "lat=NaN&lng=-80",
        "lat=x&lng=1",
        "lng=1",
    ] {
        app.get(&format!("/api/drivers/nearby?{bad}"), Some(&cast.admin))
            .await
            .assert_error(400, "bad_request");
    }
    app.get("/api/drivers/nearby?lat=25&lng=-80", Some(&cast.customer))
        .await
        .assert_error(403, "forbidden");
    app.get("/api/drivers/live", Some(&cast.driver))
        .await
        .assert_error(403, "forbidden");

    // A minute without news: out of searches, offline on the map.
    app.clock.advance(chrono::Duration::seconds(61));
    let stale = app
        .get(
            &format!("/api/drivers/nearby?lat={lat}&lng={lng}&radius_m=100000"),
            Some(&cast.admin),
        )
        .await;
    assert_eq!(stale.assert_status(200)["drivers"], json!([]));
    let mut gone = std::collections::HashSet::new();
    while gone.len() < 2 {
        let delta = dispatcher.next_of_type("map.delta").await;
        for id in delta["offline"].as_array().unwrap() {
            gone.insert(id.as_str().unwrap().to_owned());
        }
    }
    assert!(gone.contains(&far_id));
}

#[actix_web::test]
async fn a_driver_outside_the_area_is_flagged_on_the_map() {
    let app = spawn_app_with(Backend::Sqlite, seeding()).await;
    let cast = cast(&app).await;
    let mut dispatcher = app.map_watcher(&cast.admin).await;
    let mut driver = app.ws(&cast.driver).await;
    driver.send_json(location(ORLANDO)).await;
    let delta = dispatcher
        .next_matching(|f| delta_has_driver(f, &cast.driver_id))
        .await;
    let entry = &delta["drivers"][0];
    assert_eq!(
        (entry["in_service_area"].as_bool(), entry["county"].as_str()),
        (Some(false), None)
    );
}

#[actix_web::test]
async fn a_map_box_limits_what_a_dispatcher_sees() {
    let app = spawn_app_with(Backend::Sqlite, seeding()).await;
    let cast = cast(&app).await;
    let (other, other_user) = app.sms_login("954-555-0240", Some("driver")).await;
    let other_id = other_user["id"].as_str().unwrap().to_owned();
    // Broward only.
    let mut watching_broward = app.ws(&cast.admin).await;
    watching_broward
        .send_json(json!({ "type": "map.subscribe", "bbox": [-80.5, 26.0, -80.0, 26.4] }))
        .await;
    watching_broward.next_of_type("map.snapshot").await;
    let mut watching_all = app.map_watcher(&cast.admin).await;
    let mut miami = app.ws(&cast.driver).await;
    miami.send_json(location(BRICKELL)).await;
    // The map has the Miami driver before the Lauderdale one moves, so a box that let Miami
    // through would show it in a frame no later than Lauderdale's.
    watching_all
        .next_matching(|f| delta_has_driver(f, &cast.driver_id))
        .await;
    let mut lauderdale = app.ws(&other).await;
    lauderdale.send_json(location(FORT_LAUDERDALE)).await;
    loop {
        let frame = watching_broward.next_json().await;
        assert!(!delta_has_driver(&frame, &cast.driver_id), "{frame}");
        if delta_has_driver(&frame, &other_id) {
            break;
        }
    }
    let error_socket = &mut watching_broward;
    error_socket
        .send_json(json!({ "type": "map.subscribe", "bbox": [-80.0, 26.0, -80.5, 26.4], "id": 5 }))
        .await;
    let refused = error_socket.next_of_type("error").await;
    assert_eq!(
        (refused["code"].as_str(), refused["id"].as_i64()),
        (Some("bad_request"), Some(5))
    );
}

#[actix_web::test]
async fn a_driver_with_two_phones_hears_on_both() {
    let app = spawn_app_with(Backend::Sqlite, seeding()).await;
    let cast = cast(&app).await;
    let mut phone = app.ws(&cast.driver).await;
    let mut tablet = app.ws(&cast.driver).await;
    let job = book(&app, &cast.customer, DOWNTOWN_MIAMI)
        .await
        .assert_status(201)
        .clone();
    let job_id = job["id"].as_str().unwrap();
    assign(&app, &cast.admin, job_id, &cast.driver_id)
        .await
        .assert_status(200);
    assert_eq!(
        phone.next_of_type("job.assigned").await["job"]["id"],
        job_id
    );
    assert_eq!(
        tablet.next_of_type("job.assigned").await["job"]["id"],
        job_id
    );
}

async fn move_job(app: &TestApp, token: &str, job_id: &str, status: &str) -> crate::support::Reply {
    let path = format!("/api/jobs/{job_id}/status");
    app.post(&path, Some(token), json!({ "status": status }))
        .await
}

async fn cancel_job(app: &TestApp, token: &str, job_id: &str) -> crate::support::Reply {
    app.post(
        &format!("/api/jobs/{job_id}/cancel"),
        Some(token),
        json!({}),
    )
    .await
}

async fn assign(app: &TestApp, token: &str, job_id: &str, driver: &str) -> crate::support::Reply {
    let path = format!("/api/jobs/{job_id}/assign");
    app.post(&path, Some(token), json!({ "driver_id": driver }))
        .await
}

/// A job's id, from the job as the API returned it.
fn id_of(job: &Value) -> &str {
    job["id"].as_str().unwrap()
}

#[actix_web::test]
async fn manual_assignment_checks_the_driver_and_the_job() {
    let app = spawn_app_with(Backend::Sqlite, seeding()).await;
    let cast = cast(&app).await;
    let (_pending, pending_user) = app.sms_login("954-555-0250", Some("driver")).await;
    let first = book(&app, &cast.customer, DOWNTOWN_MIAMI)
        .await
        .assert_status(201)
        .clone();
    let second = book(&app, &cast.customer, BRICKELL)
        .await
        .assert_status(201)
        .clone();
    assign(
        &app,
        &cast.admin,
        id_of(&first),
        pending_user["id"].as_str().unwrap(),
    )
    .await
    .assert_error(409, "conflict");
    assign(
        &app,
        &cast.admin,
        id_of(&first),
        &uuid::Uuid::new_v4().to_string(),
    )
    .await
    .assert_error(404, "not_found");
    assign(&app, &cast.admin, id_of(&first), &cast.customer_id)
        .await
        .assert_error(404, "not_found");
    assign(&app, &cast.admin, id_of(&first), &cast.driver_id)
        .await
        .assert_status(200);
    // One active job per driver, and a job is assigned once.
    assign(&app, &cast.admin, id_of(&second), &cast.driver_id)
        .await
        .assert_error(409, "conflict");
    assign(&app, &cast.admin, id_of(&first), &cast.driver_id)
        .await
        .assert_error(409, "conflict");
    // A dispatcher can release the driver (back to dispatching), then assign again.
    let first_id = first["id"].as_str().unwrap();
    let released = move_job(&app, &cast.admin, first_id, "dispatching").await;
    assert_eq!(released.assert_status(200)["driver_id"], Value::Null);
    assign(&app, &cast.admin, id_of(&second), &cast.driver_id)
        .await
        .assert_status(200);
    move_job(&app, &cast.admin, first_id, "assigned")
        .await
        .assert_error(400, "bad_request");
    app.post(
        "/api/jobs/not-a-uuid/assign",
        Some(&cast.admin),
        json!({ "driver_id": cast.driver_id }),
    )
    .await
    .assert_error(400, "bad_request");
}

#[actix_web::test]
async fn bookings_are_checked() {
    let app = spawn_app_with(Backend::Sqlite, seeding()).await;
    let cast = cast(&app).await;
    let base = json!({ "address": "1 Ocean Dr", "lat": 25.7907, "lng": -80.1340, "description": "boxes", "load_size": "half" });
    let with = |field: &str, value: Value| {
        let mut body = base.clone();
        body[field] = value;
        body
    };
    let later = app.clock.now() + chrono::Duration::days(100);
    let earlier = app.clock.now() - chrono::Duration::hours(1);
    for bad in [
        with("lat", json!(91)),
        with("lng", json!("west")),
        with("load_size", json!("truckload")),
        with("address", json!("   ")),
        with("lng", json!(-181)),
        with("address", json!("x".repeat(501))),
        with("address", json!("1 Ocean Dr\u{0}")),
        with("description", json!("boxes\u{7}")),
        with("description", json!("x".repeat(2001))),
        with("scheduled_at", json!(later)),
        with("scheduled_at", json!(earlier)),
        with("scheduled_at", json!("tomorrow")),
    ] {
        app.post("/api/jobs", Some(&cast.customer), bad)
            .await
            .assert_error(400, "bad_request");
    }
    // Just off Miami Beach, in the ocean: outside the county shoreline.
    app.post(
        "/api/jobs",
        Some(&cast.customer),
        with("lng", json!(-80.10)),
    )
    .await
    .assert_error(422, "outside_service_area");
    app.post("/api/jobs", Some(&cast.driver), base.clone())
        .await
        .assert_error(403, "forbidden");
    let soon = app.clock.now() + chrono::Duration::days(2);
    let tricky = with(
        "description",
        json!("Robert'); DROP TABLE jobs;-- \"couch\""),
    );
    let booked = app
        .post(
            "/api/jobs",
            Some(&cast.customer),
            with("scheduled_at", json!(soon)),
        )
        .await;
    assert_eq!(booked.assert_status(201)["scheduled_at"], json!(soon));
    let booked = app.post("/api/jobs", Some(&cast.customer), tricky).await;
    assert_eq!(
        booked.assert_status(201)["description"],
        "Robert'); DROP TABLE jobs;-- \"couch\""
    );
}

#[actix_web::test]
async fn jobs_are_listed_per_role_in_pages() {
    let app = spawn_app_with(Backend::Sqlite, seeding()).await;
    let cast = cast(&app).await;
    let (other_customer, _) = app.sms_login("305-555-0260", None).await;
    let mut mine = Vec::new();
    for _ in 0..3 {
        app.clock.advance(chrono::Duration::seconds(1));
        let job = book(&app, &cast.customer, DOWNTOWN_MIAMI)
            .await
            .assert_status(201)
            .clone();
        mine.push(job["id"].as_str().unwrap().to_owned());
    }
    let theirs = book(&app, &other_customer, BRICKELL)
        .await
        .assert_status(201)
        .clone();
    mine.reverse();
    let ids = |reply: &crate::support::Reply| -> Vec<String> {
        reply.body["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let page = app.get("/api/jobs?limit=2", Some(&cast.customer)).await;
    assert_eq!(ids(&page), mine[..2]);
    let cursor = page.body["next_cursor"].as_str().unwrap().to_owned();
    let rest = app
        .get(
            &format!("/api/jobs?limit=2&cursor={cursor}"),
            Some(&cast.customer),
        )
        .await;
    assert_eq!(ids(&rest), mine[2..]);
    assert_eq!(rest.body["next_cursor"], Value::Null);
    assert_eq!(ids(&app.get("/api/jobs", Some(&cast.admin)).await).len(), 4);
    assert_eq!(
        ids(&app.get("/api/jobs", Some(&cast.driver)).await).len(),
        0
    );
    assign(&app, &cast.admin, id_of(&theirs), &cast.driver_id)
        .await
        .assert_status(200);
    assert_eq!(
        ids(&app.get("/api/jobs", Some(&cast.driver)).await),
        [theirs["id"].as_str().unwrap()]
    );
    let assigned = app
        .get("/api/jobs?status=assigned", Some(&cast.admin))
        .await;
    assert_eq!(ids(&assigned).len(), 1);
    app.get("/api/jobs?status=lost", Some(&cast.admin))
        .await
        .assert_error(400, "bad_request");
    // Cursors this API did not give out: not base64, not UTF-8, a bad time, a bad id.
    for bad in [
        "cursor=zzz",
        "cursor=_w",
        "cursor=eWVzdGVyZGF5fDEyMw",
        "cursor=MjAyNi0xMS0yNlQwMDowMDowMFp8bm90LWEtdXVpZA",
        "limit=0",
        "limit=101",
        "limit=-1",
    ] {
        app.get(&format!("/api/jobs?{bad}"), Some(&cast.admin))
            .await
            .assert_error(400, "bad_request");
    }
}

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[actix_web::test]
async fn metrics_count_sockets_and_messages() {
    let app = spawn_app_with(Backend::Sqlite, seeding()).await;
    let cast = cast(&app).await;
    let mut driver = app.ws(&cast.driver).await;
    driver
        .send_json(json!({ "type": "availability", "available": true, "id": 1 }))
        .await;
    driver.next_of_type("ack").await;
    let text = app.send(app.client.get(app.url("/metrics"))).await.text;
    assert!(
        metric(&text, "umuve_ws_connections{role=\"driver\"}") >= 1.0,
        "{text}"
    );
    assert!(
        metric(&text, "umuve_ws_messages_in_total{type=\"availability\"}") >= 1.0,
        "{text}"
    );
    assert!(
        metric(&text, "umuve_ws_messages_out_total{type=\"hello\"}") >= 1.0,
        "{text}"
    );
    assert!(
        text.contains("umuve_location_fanout_seconds_bucket"),
        "{text}"
    );
    assert!(
        metric(&text, "process_resident_memory_bytes") > 1e6,
        "{text}"
    );
}

#[actix_web::test]
async fn a_stalled_dispatcher_is_closed_and_slows_nobody() {
    let app = spawn_app_with(
        Backend::Sqlite,
        seeding()
            .set("MAP_TICK_MS", "100")
            .set("WS_OUTBOUND_SOFT_KIB", "16")
            .set("WS_SLOW_READER_SECS", "2")
            .set("TCP_SEND_BUFFER_BYTES", "8192"),
    )
    .await;
    let admin = app
        .seed_admin("ops@goumuve.com", "correct horse battery")
        .await;

    // 200 drivers stream, each at 5 Hz, each position a little further north.
    let mut streams = Vec::new();
    for i in 0..200 {
        let user = app
            .create_user(
                &admin,
                json!({ "role": "driver", "email": format!("d{i}@fleet.test") }),
            )
            .await;
        let token = app.token_for(user.assert_status(201)["id"].as_str().unwrap(), "driver");
        let mut socket = app.ws(&token).await;
        streams.push(actix_web::rt::spawn(async move {
            for step in 0..10_000u32 {
                let lat = 25.70 + f64::from(i) * 0.001 + f64::from(step) * 0.000_01;
                socket
                    .send_json(json!({ "type": "location", "lat": lat, "lng": -80.30 + f64::from(i) * 0.001 }))
                    .await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }

    // Two dispatchers watch the map; one of them stops reading after its snapshot.
    let mut stalled = WsClient::connect_with_small_buffer(&app.address, &admin).await;
    stalled.send_json(json!({ "type": "map.subscribe" })).await;
    stalled.next_of_type("map.snapshot").await;
    let mut watcher = app.ws(&admin).await;
    watcher.send_json(json!({ "type": "map.subscribe" })).await;
    watcher.next_of_type("map.snapshot").await;

    // The watcher keeps getting deltas while the stalled reader falls behind and is closed.
    let metrics = || async { app.send(app.client.get(app.url("/metrics"))).await.text };
    let slow_closed = "umuve_ws_closed_by_server_total{reason=\"slow_reader\"}";
    let closed_before = metric(&metrics().await, slow_closed);
    let mut deltas = 0;
    loop {
        let delta = watcher.next_of_type("map.delta").await;
        assert!(
            !delta["drivers"].as_array().unwrap().is_empty()
                || !delta["offline"].as_array().unwrap().is_empty()
        );
        deltas += 1;
        let text = metrics().await;
        if metric(&text, slow_closed) > closed_before {
            break;
        }
        assert!(deltas < 2_000, "the stalled reader was never closed");
    }
    // The stalled socket, read at last, ends with a policy close (or a dropped connection).
    match stalled.ending(Duration::from_secs(30)).await {
        Ending::Closed(Some(frame)) => assert_eq!(u16::from(frame.code), 1008),
        Ending::Closed(None) | Ending::Dropped => {}
    }
    // The watcher still gets deltas afterwards.
    watcher.next_of_type("map.delta").await;
    for stream in streams {
        stream.abort();
    }
}

#[actix_web::test]
async fn every_labelled_point_gets_its_county() {
    let app = spawn_app_with(Backend::Sqlite, seeding()).await;
    let csv = include_str!("../data/geofence-points.csv");
    let mut checked = 0;
    for line in csv.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split(',').collect();
        let (name, lat, lng, expected) = (fields[0], fields[1], fields[2], fields[3].trim());
        let reply = app
            .get(
                &format!("/api/service-area/check?lat={lat}&lng={lng}"),
                None,
            )
            .await;
        let body = reply.assert_status(200);
        let expected_county = if expected.is_empty() {
            Value::Null
        } else {
            json!(expected)
        };
        assert_eq!(body["county"], expected_county, "{name}");
        assert_eq!(body["inside"], !expected.is_empty(), "{name}");
        checked += 1;
    }
    assert_eq!(checked, 37);
    for bad in [
        "lat=95&lng=0",
        "lat=25&lng=-181",
        "lat=NaN&lng=-80",
        "lat=25&lng=west",
    ] {
        app.get(&format!("/api/service-area/check?{bad}"), None)
            .await
            .assert_error(400, "bad_request");
    }
    app.get("/api/service-area/check?lat=25", None)
        .await
        .assert_error(400, "bad_request");
    let area = app.get("/api/service-area", None).await;
    let names: Vec<&str> = area.body["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["properties"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Miami-Dade", "Broward", "Palm Beach"]);
}

#[actix_web::test]
async fn a_flooding_socket_is_throttled_then_closed() {
    let app = spawn_app_with(Backend::Sqlite, seeding()).await;
    let cast = cast(&app).await;
    let mut flooder = app.ws(&cast.driver).await;
    let mut neighbour = app.ws(&cast.customer).await;
    // Far more than 10 messages a second: the burst passes, the excess is dropped and reported,
    // and persistent abuse ends the connection with 1008.
    for _ in 0..400 {
        flooder.send_json(location(BRICKELL)).await;
    }
    let throttled = flooder.next_of_type("error").await;
    assert_eq!(throttled["code"], "rate_limited");
    match flooder.ending(Duration::from_secs(10)).await {
        Ending::Closed(Some(frame)) => assert_eq!(u16::from(frame.code), 1008),
        other => panic!("expected a 1008 close, got {other:?}"),
    }
    neighbour
        .send_json(json!({ "type": "unsubscribe", "job_id": uuid::Uuid::new_v4(), "id": 1 }))
        .await;
    assert_eq!(neighbour.next_of_type("ack").await["id"], 1);

    // Reconnecting at once would only repeat it: the flooder's user is refused for a while.
    let url = format!(
        "{}/ws?token={}",
        app.address.replace("http://", "ws://"),
        cast.driver
    );
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
            let retry_after: u64 = response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((50..=60).contains(&retry_after), "{retry_after}");
        }
        other => panic!("expected 429, got {:?}", other.map(|_| ())),
    }
    app.clock.advance(chrono::Duration::seconds(61));
    app.ws(&cast.driver).await;
}

#[actix_web::test]
async fn pings_and_binary_frames_count_against_the_rate_limit() {
    use tokio_tungstenite::tungstenite::Message;
    let app = spawn_app_with(Backend::Sqlite, seeding()).await;
    let cast = cast(&app).await;
    // Neither kind may be a way around the budget (each would otherwise make the engine write a
    // pong or an error, piling up for a client that does not read).
    let mut flooder = app.ws(&cast.customer).await;
    for i in 0..400 {
        let frame = if i % 2 == 0 {
            Message::Ping(vec![7; 125].into())
        } else {
            Message::Binary(vec![1, 2, 3].into())
        };
        flooder.send_frame(frame).await;
    }
    match flooder.ending(Duration::from_secs(10)).await {
        Ending::Closed(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 1008);
            assert_eq!(frame.reason.as_str(), "rate limit exceeded");
        }
        other => panic!("expected a 1008 close, got {other:?}"),
    }
}

#[actix_web::test]
async fn websocket_connections_are_limited_per_user() {
    let app = spawn_app_with(
        Backend::Sqlite,
        seeding().set("WS_CONNECTS_PER_USER_PER_MINUTE", "3"),
    )
    .await;
    let cast = cast(&app).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(app.ws(&cast.customer).await);
    }
    let refused = app
        .send(
            app.client
                .get(app.url("/ws"))
                .bearer_auth(&cast.customer)
                .header("connection", "Upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-version", "13")
                .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        )
        .await;
    refused.assert_error(429, "rate_limited");
    // Other users are not affected.
    app.ws(&cast.driver).await;
}

#[actix_web::test]
async fn a_change_by_a_token_whose_account_is_gone_is_still_recorded() {
    let app = spawn_app_with(Backend::Sqlite, seeding()).await;
    let cast = cast(&app).await;
    let job = book(&app, &cast.customer, DOWNTOWN_MIAMI)
        .await
        .assert_status(201)
        .clone();
    // A dispatcher token for an account that is not stored (deleted since, say).
    let ghost_id = uuid::Uuid::new_v4().to_string();
    let ghost = app.token_for(&ghost_id, "operator");
    let assigned = assign(&app, &ghost, id_of(&job), &cast.driver_id).await;
    assert_eq!(assigned.assert_status(200)["status"], "assigned");
    let events = umuve_dispatch::storage::jobs::events(
        &app.db,
        job["id"].as_str().unwrap().parse().unwrap(),
    )
    .await
    .unwrap();
    let last = events.last().expect("the assignment's event");
    assert_eq!(
        (last.0.as_deref(), last.1.as_str()),
        (Some("dispatching"), "assigned")
    );
    assert_eq!(
        last.2.map(|actor| actor.to_string()),
        Some(ghost_id),
        "the actor kept although no account holds it"
    );
}
