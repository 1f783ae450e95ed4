//! Automatic dispatch through real sockets: the matcher offers each job to the nearest free
//! driver, one at a time; declines and expiries move on; exactly one driver wins, whatever
//! races; dispatch survives reconnects and restarts.

use serde_json::{Value, json};
use umuve_actors::clock::Clock;

use crate::on_both_databases;
use crate::support::ws::WsClient;
use crate::support::{Backend, Env, Reply, TestApp, TestDatabase, spawn_app_on};

/// Where the scenarios' jobs are.
pub(crate) const DOWNTOWN_MIAMI: (f64, f64) = (25.7747, -80.1963);
const FORT_LAUDERDALE: (f64, f64) = (26.1224, -80.1373);
const BOCA_RATON: (f64, f64) = (26.3683, -80.1289);
/// In the Atlantic, east of Fort Lauderdale: outside every county.
const OFFSHORE: (f64, f64) = (26.1224, -79.95);
const WEST_PALM_BEACH: (f64, f64) = (26.7153, -80.0534);
/// Degrees of latitude per kilometre.
const KM: f64 = 1.0 / 111.195;

pub(crate) fn north_of((lat, lng): (f64, f64), km: f64) -> (f64, f64) {
    (lat + km * KM, lng)
}

pub(crate) fn env() -> Env {
    Env::default()
        .set("ADMIN_SEED_SECRET", "seed-secret")
        .set("DISPATCH_TICK_MS", "20")
}

pub(crate) struct Office {
    pub(crate) admin: String,
    pub(crate) customer: String,
    /// The dispatcher's socket, on the whole map.
    pub(crate) map: WsClient,
    next_phone: u32,
}

pub(crate) struct Driver {
    pub(crate) id: String,
    pub(crate) token: String,
    pub(crate) ws: WsClient,
}

pub(crate) async fn office(app: &TestApp) -> Office {
    let admin = app
        .seed_admin("ops@goumuve.com", "correct horse battery")
        .await;
    let customer = app
        .create_user(
            &admin,
            json!({ "role": "customer", "phone": "305-555-0100", "name": "Cora" }),
        )
        .await
        .assert_status(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let customer = app.token_for(&customer, "customer");
    Office::on(app, admin, customer, 200).await
}

impl Office {
    /// The office of `admin` on `app`, watching the map; its drivers' phones count from
    /// `first_phone`.
    pub(crate) async fn on(
        app: &TestApp,
        admin: String,
        customer: String,
        first_phone: u32,
    ) -> Office {
        Office {
            map: app.map_watcher(&admin).await,
            admin,
            customer,
            next_phone: first_phone,
        }
    }

    /// A driver account, approved or not, connected.
    pub(crate) async fn driver(&mut self, app: &TestApp, approved: bool) -> Driver {
        self.named_driver(app, approved, None).await
    }

    /// [`Self::driver`] with a name on the account.
    pub(crate) async fn named_driver(
        &mut self,
        app: &TestApp,
        approved: bool,
        name: Option<&str>,
    ) -> Driver {
        self.next_phone += 1;
        let mut account =
            json!({ "role": "driver", "phone": format!("954-555-0{}", self.next_phone) });
        if let Some(name) = name {
            account["name"] = json!(name);
        }
        let user = app.create_user(&self.admin, account).await;
        let id = user.assert_status(201)["id"].as_str().unwrap().to_owned();
        if approved {
            app.post(
                &format!("/api/admin/drivers/{id}/approve"),
                Some(&self.admin),
                json!({}),
            )
            .await
            .assert_status(200);
        }
        let token = app.token_for(&id, "driver");
        let ws = app.ws(&token).await;
        Driver { id, token, ws }
    }

    /// A driver who is approved, available and reporting from `at`, seen on the map.
    pub(crate) async fn free_driver(&mut self, app: &TestApp, at: (f64, f64)) -> Driver {
        self.free_named_driver(app, None, at).await
    }

    /// [`Self::free_driver`] with a name on the account.
    pub(crate) async fn free_named_driver(
        &mut self,
        app: &TestApp,
        name: Option<&str>,
        at: (f64, f64),
    ) -> Driver {
        let mut driver = self.named_driver(app, true, name).await;
        driver.set_available(true).await;
        driver.report(at).await;
        self.await_on_map(&driver.id).await;
        driver
    }

    /// Waits until the map shows the driver's latest report (so the geo index has it).
    pub(crate) async fn await_on_map(&mut self, driver_id: &str) {
        self.map
            .next_matching(|frame| {
                frame["type"] == "map.delta"
                    && frame["drivers"]
                        .as_array()
                        .is_some_and(|d| d.iter().any(|d| d["driver_id"] == driver_id))
            })
            .await;
    }

    pub(crate) async fn book(&self, app: &TestApp, at: (f64, f64)) -> Value {
        book(app, &self.customer, at, None)
            .await
            .assert_status(201)
            .clone()
    }
}

pub(crate) async fn book(
    app: &TestApp,
    customer: &str,
    (lat, lng): (f64, f64),
    scheduled_at: Option<String>,
) -> Reply {
    let mut body = json!({
        "address": "1 Test Way",
        "lat": lat,
        "lng": lng,
        "description": "A sofa",
        "load_size": "single_item",
    });
    if let Some(at) = scheduled_at {
        body["scheduled_at"] = json!(at);
    }
    app.post("/api/jobs", Some(customer), body).await
}

impl Driver {
    pub(crate) async fn set_available(&mut self, available: bool) {
        self.ws
            .send_json(json!({ "type": "availability", "available": available, "id": "avail" }))
            .await;
        let reply = self
            .ws
            .next_matching(|f| f["id"] == "avail" && (f["type"] == "ack" || f["type"] == "error"))
            .await;
        assert_eq!(reply["type"], "ack", "{reply}");
    }

    pub(crate) async fn report(&mut self, (lat, lng): (f64, f64)) {
        self.ws
            .send_json(json!({ "type": "location", "lat": lat, "lng": lng }))
            .await;
    }

    pub(crate) async fn next_offer(&mut self) -> Value {
        self.ws.next_of_type("offer").await
    }

    /// Everything the engine sent this driver until now (an acknowledged no-op marks "now").
    pub(crate) async fn frames_so_far(&mut self) -> Vec<Value> {
        let marker = uuid::Uuid::new_v4().to_string();
        self.ws
            .send_json(
                json!({ "type": "unsubscribe", "job_id": uuid::Uuid::new_v4(), "id": marker }),
            )
            .await;
        let mut frames = Vec::new();
        loop {
            let frame = self.ws.next_json().await;
            if frame["type"] == "ack" && frame["id"] == marker.as_str() {
                return frames;
            }
            frames.push(frame);
        }
    }

    /// Asserts that no frame of `kind` reached this driver since the last frame read.
    pub(crate) async fn assert_none_of(&mut self, kind: &str) {
        let frames = self.frames_so_far().await;
        assert!(
            !frames.iter().any(|f| f["type"] == kind),
            "unexpected {kind}: {frames:?}"
        );
    }

    /// Asserts that no offer reached this driver since the last frame read.
    pub(crate) async fn assert_no_offer(&mut self) {
        self.assert_none_of("offer").await;
    }

    pub(crate) async fn accept(&self, app: &TestApp, offer_id: &str) -> Reply {
        let path = format!("/api/offers/{offer_id}/accept");
        app.post(&path, Some(&self.token), json!({})).await
    }

    pub(crate) async fn decline(&self, app: &TestApp, offer_id: &str) -> Reply {
        let path = format!("/api/offers/{offer_id}/decline");
        app.post(&path, Some(&self.token), json!({})).await
    }
}

pub(crate) fn offer_id(offer: &Value) -> String {
    offer["offer_id"].as_str().unwrap().to_owned()
}

pub(crate) fn job_id(job: &Value) -> String {
    job["id"].as_str().unwrap().to_owned()
}

async fn offer_status(app: &TestApp, offer_id: &str) -> String {
    umuve_dispatch::storage::offers::status(
        &app.db,
        umuve_actors::ids::OfferId::from_uuid(offer_id.parse().unwrap()),
    )
    .await
    .unwrap()
    .expect("the offer is stored")
}

/// The job's events as `from>to` strings, oldest first.
pub(crate) async fn trail(app: &TestApp, job_id: &str) -> Vec<String> {
    umuve_dispatch::storage::jobs::events(&app.db, job_id.parse().unwrap())
        .await
        .unwrap()
        .into_iter()
        .map(|(from, to, _, _)| format!("{}>{to}", from.unwrap_or_default()))
        .collect()
}

async fn job_as_admin(app: &TestApp, office: &Office, job_id: &str) -> Value {
    app.get(&format!("/api/jobs/{job_id}"), Some(&office.admin))
        .await
        .assert_status(200)
        .clone()
}

on_both_databases!(
    the_nearest_driver_gets_the_offer_then_the_next,
    drivers_who_cannot_take_a_job_are_never_offered_one,
    a_job_nobody_can_take_waits_for_a_free_driver,
    accept_races_expiry,
    accept_races_manual_assignment,
    accept_races_cancellation,
    a_scheduled_job_is_dispatched_before_its_time,
    a_driver_who_reconnects_gets_their_offer_and_job_again,
    dispatch_resumes_after_the_engine_is_killed,
);

async fn the_nearest_driver_gets_the_offer_then_the_next(backend: Backend) {
    let app = crate::support::spawn_app_with(backend, env()).await;
    let mut office = office(&app).await;
    let mut unapproved = office.driver(&app, false).await;
    unapproved.report(north_of(DOWNTOWN_MIAMI, 0.5)).await;
    office.await_on_map(&unapproved.id).await;
    let mut at_1 = office
        .free_driver(&app, north_of(DOWNTOWN_MIAMI, 1.0))
        .await;
    let mut at_3 = office
        .free_driver(&app, north_of(DOWNTOWN_MIAMI, 3.0))
        .await;
    let mut at_6 = office
        .free_driver(&app, north_of(DOWNTOWN_MIAMI, 6.0))
        .await;

    let job = office.book(&app, DOWNTOWN_MIAMI).await;
    let job_id = job_id(&job);
    let first = at_1.next_offer().await;
    assert_eq!(first["job"]["id"], job_id.as_str());
    assert_eq!(first["job"]["status"], "dispatching");
    let distance = first["distance_m"].as_f64().unwrap();
    assert!((distance - 1000.0).abs() < 20.0, "{distance}");
    let expected_expiry = app.clock.now() + chrono::Duration::seconds(30);
    assert_eq!(
        first["expires_at"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap(),
        expected_expiry
    );

    // Declined (over the socket) -> the 3 km driver.
    at_1.ws
        .send_json(json!({ "type": "offer.decline", "offer_id": offer_id(&first), "id": "d1" }))
        .await;
    let closed = at_1.ws.next_of_type("offer.closed").await;
    assert_eq!(
        (closed["offer_id"].as_str(), closed["reason"].as_str()),
        (Some(offer_id(&first).as_str()), Some("declined"))
    );
    let second = at_3.next_offer().await;
    assert_eq!(second["job"]["id"], job_id.as_str());

    // Expired -> the 6 km driver.
    app.clock.advance(chrono::Duration::seconds(31));
    let closed = at_3.ws.next_of_type("offer.closed").await;
    assert_eq!(
        (closed["offer_id"].as_str(), closed["reason"].as_str()),
        (Some(offer_id(&second).as_str()), Some("expired"))
    );
    let third = at_6.next_offer().await;
    assert_eq!(third["job"]["id"], job_id.as_str());

    // Accepted -> assigned to the 6 km driver.
    let accepted = at_6.accept(&app, &offer_id(&third)).await;
    let assigned = accepted.assert_status(200);
    assert_eq!(
        (assigned["status"].as_str(), assigned["driver_id"].as_str()),
        (Some("assigned"), Some(at_6.id.as_str()))
    );
    let told = at_6.ws.next_of_type("job.assigned").await;
    assert_eq!(told["job"]["id"], job_id.as_str());

    // The late accept of the expired offer, and the declined one, lose.
    at_3.accept(&app, &offer_id(&second))
        .await
        .assert_error(409, "conflict");
    at_1.accept(&app, &offer_id(&first))
        .await
        .assert_error(409, "conflict");
    // Someone else's offer is not found for this driver.
    at_1.accept(&app, &offer_id(&third))
        .await
        .assert_error(404, "not_found");

    // Nobody hears anything more; the declining driver was never offered the job again.
    for driver in [&mut at_1, &mut at_3, &mut unapproved] {
        driver.assert_no_offer().await;
    }
    assert_eq!(offer_status(&app, &offer_id(&first)).await, "declined");
    assert_eq!(offer_status(&app, &offer_id(&second)).await, "expired");
    assert_eq!(offer_status(&app, &offer_id(&third)).await, "accepted");
    assert_eq!(
        trail(&app, &job_id).await,
        [">dispatching", "dispatching>assigned"]
    );
    let stored = job_as_admin(&app, &office, &job_id).await;
    assert_eq!(stored["driver_id"], at_6.id.as_str());
}

async fn drivers_who_cannot_take_a_job_are_never_offered_one(backend: Backend) {
    let app = crate::support::spawn_app_with(backend, env()).await;
    let mut office = office(&app).await;
    let check = app
        .get(
            &format!(
                "/api/service-area/check?lat={}&lng={}",
                OFFSHORE.0, OFFSHORE.1
            ),
            None,
        )
        .await;
    assert_eq!(check.assert_status(200)["inside"], false);

    // Stale: reported, then silent past DRIVER_STALE_SECS.
    let mut stale = office
        .free_driver(&app, north_of(FORT_LAUDERDALE, 0.5))
        .await;
    app.clock.advance(chrono::Duration::seconds(61));
    // Busy: took another job first.
    let mut busy = office
        .free_driver(&app, north_of(FORT_LAUDERDALE, 0.6))
        .await;
    let first_job = office.book(&app, FORT_LAUDERDALE).await;
    let offer = busy.next_offer().await;
    assert_eq!(offer["job"]["id"], first_job["id"]);
    busy.accept(&app, &offer_id(&offer))
        .await
        .assert_status(200);
    busy.ws.next_of_type("job.assigned").await;
    // Unavailable, unapproved, outside the service area.
    let mut unavailable = office.driver(&app, true).await;
    unavailable.report(north_of(FORT_LAUDERDALE, 0.3)).await;
    office.await_on_map(&unavailable.id).await;
    let mut unapproved = office.driver(&app, false).await;
    unapproved.report(north_of(FORT_LAUDERDALE, 0.2)).await;
    office.await_on_map(&unapproved.id).await;
    let mut offshore = office.free_driver(&app, OFFSHORE).await;
    // The only one who can: 27 km away.
    let mut far = office.free_driver(&app, BOCA_RATON).await;

    let job = office.book(&app, FORT_LAUDERDALE).await;
    let offer = far.next_offer().await;
    assert_eq!(offer["job"]["id"], job["id"]);
    for driver in [&mut stale, &mut unavailable, &mut unapproved, &mut offshore] {
        driver.assert_no_offer().await;
    }
    // The busy driver had only its own job's offer.
    busy.assert_no_offer().await;
}

async fn a_job_nobody_can_take_waits_for_a_free_driver(backend: Backend) {
    let app = crate::support::spawn_app_with(backend, env()).await;
    let mut office = office(&app).await;
    // Available but 100 km away, beyond DISPATCH_RADIUS_M (40 km).
    let mut far = office.free_driver(&app, WEST_PALM_BEACH).await;
    let mut off_duty = office.driver(&app, true).await;
    off_duty.report(north_of(DOWNTOWN_MIAMI, 2.0)).await;
    office.await_on_map(&off_duty.id).await;

    let job = office.book(&app, DOWNTOWN_MIAMI).await;
    let unassigned = office.map.next_of_type("job.unassigned").await;
    assert_eq!(unassigned["job_id"], job["id"]);
    far.assert_no_offer().await;

    // A driver nearby becomes available -> the offer.
    off_duty.set_available(true).await;
    let offer = off_duty.next_offer().await;
    assert_eq!(offer["job"]["id"], job["id"]);
    off_duty
        .decline(&app, &offer_id(&offer))
        .await
        .assert_status(204);
    let again = office.map.next_of_type("job.unassigned").await;
    assert_eq!(again["job_id"], job["id"]);

    // A free driver drives into range -> the offer.
    far.report(north_of(DOWNTOWN_MIAMI, 20.0)).await;
    let offer = far.next_offer().await;
    assert_eq!(offer["job"]["id"], job["id"]);
    let distance = offer["distance_m"].as_f64().unwrap();
    assert!((distance - 20_000.0).abs() < 100.0, "{distance}");
}

/// The drivers of a race: the job was offered to `first`; `second` is next in line.
struct Race {
    app: TestApp,
    office: Office,
    first: Driver,
    second: Driver,
    job_id: String,
    offer_id: String,
}

async fn race(backend: Backend) -> Race {
    let app = crate::support::spawn_app_with(backend, env()).await;
    let mut office = office(&app).await;
    let mut first = office
        .free_driver(&app, north_of(DOWNTOWN_MIAMI, 1.0))
        .await;
    let second = office
        .free_driver(&app, north_of(DOWNTOWN_MIAMI, 2.0))
        .await;
    let job = office.book(&app, DOWNTOWN_MIAMI).await;
    let offer = first.next_offer().await;
    Race {
        job_id: job_id(&job),
        offer_id: offer_id(&offer),
        app,
        office,
        first,
        second,
    }
}

async fn accept_races_expiry(backend: Backend) {
    let Race {
        app,
        office,
        mut first,
        mut second,
        job_id,
        offer_id,
    } = race(backend).await;
    let (accepted, ()) = tokio::join!(first.accept(&app, &offer_id), async {
        app.clock.advance(chrono::Duration::seconds(30));
    });
    let job = job_as_admin(&app, &office, &job_id).await;
    match accepted.status.as_u16() {
        200 => {
            assert_eq!(job["driver_id"], first.id.as_str());
            assert_eq!(offer_status(&app, &offer_id).await, "accepted");
            first.ws.next_of_type("job.assigned").await;
            first.assert_none_of("offer.closed").await;
            second.assert_no_offer().await;
            assert_eq!(
                trail(&app, &job_id).await,
                [">dispatching", "dispatching>assigned"]
            );
        }
        409 => {
            accepted.assert_error(409, "conflict");
            let closed = first.ws.next_of_type("offer.closed").await;
            assert_eq!(closed["reason"], "expired");
            assert_eq!(offer_status(&app, &offer_id).await, "expired");
            let next = second.next_offer().await;
            assert_eq!(next["job"]["id"], job_id.as_str());
            assert_eq!(job["status"], "dispatching");
            assert_eq!(trail(&app, &job_id).await, [">dispatching"]);
        }
        other => panic!("unexpected {other}: {}", accepted.text),
    }
}

async fn accept_races_manual_assignment(backend: Backend) {
    let Race {
        app,
        office,
        mut first,
        mut second,
        job_id,
        offer_id,
    } = race(backend).await;
    let path = format!("/api/jobs/{job_id}/assign");
    let (accepted, assigned) = tokio::join!(
        first.accept(&app, &offer_id),
        app.post(
            &path,
            Some(&office.admin),
            json!({ "driver_id": second.id })
        )
    );
    let winners = [accepted.status.as_u16(), assigned.status.as_u16()];
    assert!(
        winners == [200, 409] || winners == [409, 200],
        "{winners:?}: {} / {}",
        accepted.text,
        assigned.text
    );
    let job = job_as_admin(&app, &office, &job_id).await;
    assert_eq!(job["status"], "assigned");
    assert_eq!(
        trail(&app, &job_id).await,
        [">dispatching", "dispatching>assigned"]
    );
    if winners[0] == 200 {
        assert_eq!(job["driver_id"], first.id.as_str());
        assert_eq!(offer_status(&app, &offer_id).await, "accepted");
        first.ws.next_of_type("job.assigned").await;
        second.assert_none_of("job.assigned").await;
    } else {
        assert_eq!(job["driver_id"], second.id.as_str());
        assert_eq!(offer_status(&app, &offer_id).await, "taken");
        let closed = first.ws.next_of_type("offer.closed").await;
        assert_eq!(closed["reason"], "taken");
        second.ws.next_of_type("job.assigned").await;
        first.assert_none_of("job.assigned").await;
    }
}

async fn accept_races_cancellation(backend: Backend) {
    let Race {
        app,
        office,
        mut first,
        mut second,
        job_id,
        offer_id,
    } = race(backend).await;
    let path = format!("/api/jobs/{job_id}/cancel");
    let (accepted, cancelled) = tokio::join!(
        first.accept(&app, &offer_id),
        app.post(&path, Some(&office.customer), json!({}))
    );
    // Cancelling is legal before and after the assignment: it always wins in the end.
    assert_eq!(cancelled.assert_status(200)["status"], "cancelled");
    let job = job_as_admin(&app, &office, &job_id).await;
    assert_eq!(job["status"], "cancelled");
    match accepted.status.as_u16() {
        200 => {
            assert_eq!(offer_status(&app, &offer_id).await, "accepted");
            assert_eq!(
                trail(&app, &job_id).await,
                [">dispatching", "dispatching>assigned", "assigned>cancelled"]
            );
        }
        409 => {
            accepted.assert_error(409, "conflict");
            assert_eq!(offer_status(&app, &offer_id).await, "cancelled");
            let closed = first.ws.next_of_type("offer.closed").await;
            assert_eq!(closed["reason"], "cancelled");
            assert_eq!(
                trail(&app, &job_id).await,
                [">dispatching", "dispatching>cancelled"]
            );
        }
        other => panic!("unexpected {other}: {}", accepted.text),
    }
    second.assert_no_offer().await;
}

async fn a_scheduled_job_is_dispatched_before_its_time(backend: Backend) {
    let app = crate::support::spawn_app_with(backend, env()).await;
    let mut office = office(&app).await;
    let mut driver = office
        .free_driver(&app, north_of(DOWNTOWN_MIAMI, 1.0))
        .await;
    let pickup = app.clock.now() + chrono::Duration::hours(3);
    let job = book(
        &app,
        &office.customer,
        DOWNTOWN_MIAMI,
        Some(pickup.to_rfc3339()),
    )
    .await
    .assert_status(201)
    .clone();
    assert_eq!(job["status"], "dispatching");
    driver.assert_no_offer().await;

    // One minute before the lead time (60 minutes): still nothing.
    app.clock.advance(chrono::Duration::minutes(119));
    driver.report(north_of(DOWNTOWN_MIAMI, 1.0)).await;
    office.await_on_map(&driver.id).await;
    driver.assert_no_offer().await;
    // At pickup minus DISPATCH_LEAD_MINUTES (the driver reports again: a minute is past
    // DRIVER_STALE_SECS).
    app.clock.advance(chrono::Duration::minutes(1));
    driver.report(north_of(DOWNTOWN_MIAMI, 1.0)).await;
    let offer = driver.next_offer().await;
    assert_eq!(offer["job"]["id"], job["id"]);
}

async fn a_driver_who_reconnects_gets_their_offer_and_job_again(backend: Backend) {
    let app = crate::support::spawn_app_with(backend, env()).await;
    let mut office = office(&app).await;
    let mut worker = office
        .free_driver(&app, north_of(DOWNTOWN_MIAMI, 1.0))
        .await;
    let first = office.book(&app, DOWNTOWN_MIAMI).await;
    let offer = worker.next_offer().await;
    worker
        .accept(&app, &offer_id(&offer))
        .await
        .assert_status(200);
    let mut other = office
        .free_driver(&app, north_of(DOWNTOWN_MIAMI, 2.0))
        .await;
    let second = office.book(&app, DOWNTOWN_MIAMI).await;
    let offer = other.next_offer().await;
    assert_eq!(offer["job"]["id"], second["id"]);

    // Both sockets drop and come back (within DRIVER_STALE_SECS), with no HTTP call.
    drop(worker.ws);
    drop(other.ws);
    let mut worker_ws = app.ws(&worker.token).await;
    let assigned = worker_ws.next_of_type("job.assigned").await;
    assert_eq!(assigned["job"]["id"], first["id"]);
    assert_eq!(assigned["job"]["status"], "assigned");
    other.ws = app.ws(&other.token).await;
    let again = other.next_offer().await;
    assert_eq!(again["offer_id"], offer["offer_id"]);
    assert_eq!(again["expires_at"], offer["expires_at"]);

    // Availability was kept: declining brings no new offer, but a third job finds the driver
    // free as soon as it reports again.
    other.report(north_of(DOWNTOWN_MIAMI, 2.0)).await;
    office.await_on_map(&other.id).await;
    other
        .decline(&app, &offer_id(&again))
        .await
        .assert_status(204);
    let third = office.book(&app, north_of(DOWNTOWN_MIAMI, 3.0)).await;
    let offer = other.next_offer().await;
    assert_eq!(
        offer["job"]["id"], third["id"],
        "declined jobs are not offered again"
    );
}

async fn dispatch_resumes_after_the_engine_is_killed(backend: Backend) {
    let app = crate::support::spawn_app_with(backend, env()).await;
    let mut office = office(&app).await;
    let mut near = office
        .free_driver(&app, north_of(DOWNTOWN_MIAMI, 1.0))
        .await;
    let job = office.book(&app, DOWNTOWN_MIAMI).await;
    let offer = near.next_offer().await;
    let (admin, customer, near_token) = (
        office.admin.clone(),
        office.customer.clone(),
        near.token.clone(),
    );
    drop((near, office));

    // Killed: no graceful shutdown, nothing flushed.
    let database = app.kill();
    let app = spawn_app_on(database, env()).await;
    let mut office = Office::on(&app, admin, customer, 300).await;

    // The open offer comes back to its driver on reconnect, the same offer.
    let mut near_ws = app.ws(&near_token).await;
    let replayed = near_ws.next_of_type("offer").await;
    assert_eq!(replayed["offer_id"], offer["offer_id"]);
    // Its expiry is watched by the new engine: it expires, and the next driver gets the job.
    let mut next = office
        .free_driver(&app, north_of(DOWNTOWN_MIAMI, 2.0))
        .await;
    app.clock.advance(chrono::Duration::seconds(31));
    let closed = near_ws.next_of_type("offer.closed").await;
    assert_eq!(
        (closed["offer_id"].as_str(), closed["reason"].as_str()),
        (offer["offer_id"].as_str(), Some("expired"))
    );
    let second = next.next_offer().await;
    assert_eq!(second["job"]["id"], job["id"]);
    next.accept(&app, &offer_id(&second))
        .await
        .assert_status(200);

    // Nothing lost or doubled: two offers, one event per change.
    assert_eq!(offer_status(&app, &offer_id(&offer)).await, "expired");
    assert_eq!(offer_status(&app, &offer_id(&second)).await, "accepted");
    assert_eq!(
        trail(&app, &job_id(&job)).await,
        [">dispatching", "dispatching>assigned"]
    );
    let offers: i64 = count_offers(&app, &job_id(&job)).await;
    assert_eq!(offers, 2);
    let stored = job_as_admin(&app, &office, &job_id(&job)).await;
    assert_eq!(stored["driver_id"], next.id.as_str());
}

async fn count_offers(app: &TestApp, job_id: &str) -> i64 {
    let id: uuid::Uuid = job_id.parse().unwrap();
    match &app.db {
        umuve_dispatch::storage::Db::Postgres(pool) => {
            sqlx::query_scalar("SELECT COUNT(*) FROM offers WHERE job_id = $1")
                .bind(id)
                .fetch_one(pool)
                .await
                .unwrap()
        }
        umuve_dispatch::storage::Db::Sqlite(pool) => {
            sqlx::query_scalar("SELECT COUNT(*) FROM offers WHERE job_id = $1")
                .bind(id)
                .fetch_one(pool)
                .await
                .unwrap()
        }
    }
}

/// Two engine processes on one PostgreSQL database, each with a driver of its own near the
/// same job, both dispatching it: one open offer at a time, one winner, one event.
#[actix_web::test]
async fn two_engines_on_one_database_dispatch_a_job_once() {
    let Some(backend) = Backend::postgres() else {
        return;
    };
    let database = TestDatabase::create(backend).await;
    let fast = env().set("DISPATCH_RESYNC_SECS", "1");
    let a = spawn_app_on(database.shared(), fast.clone()).await;
    let b = spawn_app_on(database.shared(), fast).await;
    let mut office_a = office(&a).await;
    // The same accounts and tokens work on both engines (one database, one secret).
    let mut office_b = Office::on(&b, office_a.admin.clone(), office_a.customer.clone(), 400).await;
    let mut on_a = office_a
        .free_driver(&a, north_of(DOWNTOWN_MIAMI, 1.0))
        .await;
    let mut on_b = office_b
        .free_driver(&b, north_of(DOWNTOWN_MIAMI, 1.5))
        .await;

    // Booked on A; B finds it in the database on its next read. Whichever engine offers first,
    // the other cannot open a second offer while that one is open: the other driver gets the
    // job only after the first declines.
    let job = office_a.book(&a, DOWNTOWN_MIAMI).await;
    let job_id = job_id(&job);
    let a_was_first = tokio::select! {
        offer = on_a.next_offer() => {
            assert_eq!(offer["job"]["id"], job_id.as_str());
            on_a.decline(&a, &offer_id(&offer)).await.assert_status(204);
            true
        }
        offer = on_b.next_offer() => {
            assert_eq!(offer["job"]["id"], job_id.as_str());
            on_b.decline(&b, &offer_id(&offer)).await.assert_status(204);
            false
        }
    };
    let (offered, declined) = if a_was_first {
        (&mut on_b, &mut on_a)
    } else {
        (&mut on_a, &mut on_b)
    };
    let offer = offered.next_offer().await;
    assert_eq!(offer["job"]["id"], job_id.as_str());

    // The offered driver's accept races on both engines at once, and a dispatcher on A assigns
    // the other driver at the same moment: exactly one of the three wins.
    let assign_path = format!("/api/jobs/{job_id}/assign");
    let the_offer = offer_id(&offer);
    let (via_a, via_b, manual) = tokio::join!(
        offered.accept(&a, &the_offer),
        offered.accept(&b, &the_offer),
        a.post(
            &assign_path,
            Some(&office_a.admin),
            json!({ "driver_id": declined.id })
        )
    );
    let statuses = [
        via_a.status.as_u16(),
        via_b.status.as_u16(),
        manual.status.as_u16(),
    ];
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}: {} / {} / {}",
        via_a.text,
        via_b.text,
        manual.text
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        trail(&a, &job_id).await,
        [">dispatching", "dispatching>assigned"]
    );
    let stored = job_as_admin(&a, &office_a, &job_id).await;
    let winner = if statuses[2] == 200 {
        &declined.id
    } else {
        &offered.id
    };
    assert_eq!(stored["driver_id"], winner.as_str());
    assert_eq!(count_offers(&a, &job_id).await, 2);
    declined.assert_no_offer().await;
}

/// Answers to offers that are malformed, someone else's, or from the wrong role.
#[actix_web::test]
async fn bad_offer_answers_get_clear_errors() {
    let app = crate::support::spawn_app_with(Backend::Sqlite, env()).await;
    let mut office = office(&app).await;
    let mut driver = office
        .free_driver(&app, north_of(DOWNTOWN_MIAMI, 1.0))
        .await;
    let unknown = uuid::Uuid::new_v4().to_string();

    driver
        .accept(&app, "not-a-uuid")
        .await
        .assert_error(400, "bad_request");
    driver
        .accept(&app, &unknown)
        .await
        .assert_error(404, "not_found");
    driver
        .decline(&app, &unknown)
        .await
        .assert_error(404, "not_found");
    let path = format!("/api/offers/{unknown}/accept");
    app.post(&path, Some(&office.customer), json!({}))
        .await
        .assert_error(403, "forbidden");
    app.post(&path, None, json!({}))
        .await
        .assert_error(401, "unauthorized");

    // Over the socket: the id is echoed with the error; the socket lives on.
    driver
        .ws
        .send_json(json!({ "type": "offer.accept", "offer_id": unknown, "id": 7 }))
        .await;
    let error = driver.ws.next_of_type("error").await;
    assert_eq!(
        (error["id"].as_i64(), error["code"].as_str()),
        (Some(7), Some("not_found"))
    );
    driver
        .ws
        .send_json(json!({ "type": "offer.decline", "offer_id": "../../etc", "id": 8 }))
        .await;
    let error = driver.ws.next_of_type("error").await;
    assert_eq!(
        (error["id"].as_i64(), error["code"].as_str()),
        (Some(8), Some("bad_request"))
    );
    let mut customer = app.ws(&office.customer).await;
    customer
        .send_json(json!({ "type": "offer.accept", "offer_id": unknown, "id": 9 }))
        .await;
    let error = customer.next_of_type("error").await;
    assert_eq!(error["code"], "forbidden");

    // A real offer still works after all that, and only once.
    let job = office.book(&app, DOWNTOWN_MIAMI).await;
    let offer = driver.next_offer().await;
    driver
        .ws
        .send_json(json!({ "type": "offer.accept", "offer_id": offer["offer_id"], "id": "go" }))
        .await;
    let ack = driver.ws.next_matching(|f| f["id"] == "go").await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let assigned = driver.ws.next_of_type("job.assigned").await;
    assert_eq!(assigned["job"]["id"], job["id"]);
    driver
        .decline(&app, &offer_id(&offer))
        .await
        .assert_error(409, "conflict");
}
