//! Notifications through the real interfaces: fake Twilio, Resend and SendGrid as HTTP servers on
//! 127.0.0.1, the fake push transport (payloads built by a2), real sockets. Each scenario checks
//! who heard what on which channel, and what the engine recorded for it.

use std::time::Duration;

use a2::{ErrorBody, ErrorReason, Response};
use serde_json::{Value, json};
use umuve_actors::clock::Clock;
use uuid::Uuid;

use crate::dispatch::{DOWNTOWN_MIAMI, Driver, Office, book as book_at, env, north_of, office};
use crate::on_both_databases;
use crate::payments::{paid_job, payments_env};
use crate::support::fake_push::{CUSTOMER_TOPIC, DRIVER_TOPIC};
use crate::support::fakes::{ReceivedEmail, ReceivedSms};
use crate::support::{
    Backend, TestApp, eventually, spawn_app_with, spawn_app_with_fakes, start_time,
};

const CUSTOMER_PHONE: &str = "+13055550100";
const CUSTOMER_EMAIL: &str = "cora@example.com";

/// A device token as APNs issues them (64 hex digits).
fn device(n: u32) -> String {
    format!("{n:064x}")
}

fn dollars(cents: i64) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}

fn id_of(value: &Value) -> String {
    value["id"].as_str().unwrap().to_owned()
}

/// The customer's id, with an email address and a full name on the account.
async fn customer_profile(app: &TestApp, office: &Office) -> String {
    let me = app
        .request(
            reqwest::Method::PATCH,
            "/api/me",
            Some(&office.customer),
            Some(json!({ "email": CUSTOMER_EMAIL, "name": "Cora Smith" })),
        )
        .await;
    id_of(me.assert_status(200))
}

async fn register_device(app: &TestApp, token: &str, device: &str, kind: &str) {
    app.post(
        "/api/devices",
        Some(token),
        json!({ "token": device, "platform": "ios", "app": kind }),
    )
    .await
    .assert_status(204);
}

/// An approved driver called `name`, connected, available and reporting near the jobs.
async fn named_driver(app: &TestApp, office: &mut Office, name: &str) -> Driver {
    office
        .free_named_driver(app, Some(name), north_of(DOWNTOWN_MIAMI, 2.0))
        .await
}

async fn accept(app: &TestApp, driver_token: &str, offer_id: &str) -> Value {
    app.post(
        &format!("/api/offers/{offer_id}/accept"),
        Some(driver_token),
        json!({}),
    )
    .await
    .assert_status(200)
    .clone()
}

async fn move_job(app: &TestApp, token: &str, job_id: &str, status: &str) {
    app.post(
        &format!("/api/jobs/{job_id}/status"),
        Some(token),
        json!({ "status": status }),
    )
    .await
    .assert_status(200);
}

/// The job's notifications as dispatchers see them.
async fn rows_of(app: &TestApp, admin: &str, job_id: &str) -> Vec<Value> {
    app.get(
        &format!("/api/admin/notifications?job_id={job_id}&limit=100"),
        Some(admin),
    )
    .await
    .assert_status(200)["notifications"]
        .as_array()
        .unwrap()
        .clone()
}

/// Waits until the job's notifications satisfy `holds`; returns them.
async fn rows_when(
    app: &TestApp,
    admin: &str,
    job_id: &str,
    what: &str,
    holds: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let read = || async { Value::Array(rows_of(app, admin, job_id).await) };
    let rows = eventually(what, read, |rows| holds(rows.as_array().unwrap())).await;
    rows.as_array().unwrap().clone()
}

/// Waits until none of the job's notifications is pending any more; returns them all.
async fn settled(app: &TestApp, admin: &str, job_id: &str) -> Vec<Value> {
    rows_when(
        app,
        admin,
        job_id,
        "every notification sent or decided",
        |rows| !rows.is_empty() && rows.iter().all(|r| r["state"] != "pending"),
    )
    .await
}

/// `(event, channel, recipient, state)` of each row, sorted; the recipient as `customer` or
/// `driver`.
fn summary(rows: &[Value], customer_id: &str) -> Vec<(String, String, String, String)> {
    let mut summary: Vec<_> = rows
        .iter()
        .map(|r| {
            let who = if r["user_id"] == customer_id {
                "customer"
            } else {
                "driver"
            };
            (
                r["event"].as_str().unwrap().to_owned(),
                r["channel"].as_str().unwrap().to_owned(),
                who.to_owned(),
                r["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    summary.sort();
    summary
}

fn row<'a>(rows: &'a [Value], event: &str, channel: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["event"] == event && r["channel"] == channel)
        .unwrap_or_else(|| panic!("no {event} {channel} row in {rows:#?}"))
}

fn sms_saying<'a>(sms: &'a [ReceivedSms], words: &str) -> &'a ReceivedSms {
    let found: Vec<_> = sms.iter().filter(|s| s.body.contains(words)).collect();
    assert_eq!(found.len(), 1, "one SMS saying {words:?} in {sms:#?}");
    found[0]
}

fn email_titled<'a>(emails: &'a [ReceivedEmail], subject: &str) -> &'a ReceivedEmail {
    let found: Vec<_> = emails.iter().filter(|e| e.subject == subject).collect();
    assert_eq!(
        found.len(),
        1,
        "one email titled {subject:?} in {emails:#?}"
    );
    found[0]
}

/// The `job.status` frame of `status` on a socket following the job.
async fn sees_status(follower: &mut crate::support::ws::WsClient, status: &str) {
    follower
        .next_matching(|f| f["type"] == "job.status" && f["status"] == status)
        .await;
}

async fn follow(app: &TestApp, token: &str, job_id: &str) -> crate::support::ws::WsClient {
    let mut follower = app.ws(token).await;
    follower
        .send_json(json!({ "type": "subscribe", "job_id": job_id }))
        .await;
    follower.next_of_type("job.snapshot").await;
    follower
}

on_both_databases!(
    the_whole_job_flow_tells_each_person_on_the_right_channels,
    an_offer_reaches_a_driver_without_a_socket_by_push,
    email_falls_back_to_sendgrid_then_becomes_a_dead_letter,
    a_dead_device_token_is_forgotten,
    a_device_token_follows_the_newest_user_who_registers_it,
    a_slow_provider_delays_no_broadcast_and_no_other_channel,
    a_new_driver_is_announced_and_a_late_retry_says_nothing_stale,
    notifications_left_unsent_go_out_once_after_a_restart,
    pickup_reminders_go_out_once_each_across_a_restart,
);

async fn the_whole_job_flow_tells_each_person_on_the_right_channels(backend: Backend) {
    let app = spawn_app_with(backend, payments_env()).await;
    let mut office = office(&app).await;
    let customer_id = customer_profile(&app, &office).await;
    register_device(&app, &office.customer, &device(1), "customer").await;
    let mut driver = named_driver(&app, &mut office, "Dario Reyes").await;
    register_device(&app, &driver.token, &device(2), "driver").await;

    // Book and pay; the driver is offered the job on the socket and takes it.
    let (job, _) = paid_job(&app, &office, "evt_notify_paid").await;
    let job_id = id_of(&job);
    let total = job["total_cents"].as_i64().unwrap();
    let mut follower = follow(&app, &office.customer, &job_id).await;
    let offer = driver.next_offer().await;
    accept(&app, &driver.token, offer["offer_id"].as_str().unwrap()).await;
    sees_status(&mut follower, "assigned").await;
    for status in ["en_route", "arrived", "in_progress", "completed"] {
        move_job(&app, &driver.token, &job_id, status).await;
        sees_status(&mut follower, status).await;
    }

    // Per channel and recipient, exactly these, and nothing else.
    let rows = settled(&app, &office.admin, &job_id).await;
    let expected: Vec<(String, String, String, String)> = [
        ("booking_confirmed", "email", "customer", "sent"),
        ("booking_confirmed", "sms", "customer", "sent"),
        ("driver_arrived", "push", "customer", "sent"),
        ("driver_en_route", "push", "customer", "sent"),
        ("driver_en_route", "sms", "customer", "sent"),
        ("job_assigned", "email", "customer", "sent"),
        ("job_assigned", "push", "customer", "sent"),
        ("job_assigned", "sms", "customer", "sent"),
        ("job_completed", "push", "customer", "sent"),
        ("payment_receipt", "email", "customer", "sent"),
    ]
    .into_iter()
    .map(|(a, b, c, d)| (a.into(), b.into(), c.into(), d.into()))
    .collect();
    // The driver's socket was open: it carried the offer (nothing to push, so nothing written),
    // and the driver accepted it (nobody needs to tell them).
    assert_eq!(summary(&rows, &customer_id), expected);

    let sms = app.fakes.drain_notification_sms().await;
    assert_eq!(sms.len(), 3, "{sms:#?}");
    assert!(sms.iter().all(|s| s.to == CUSTOMER_PHONE));
    let booked = sms_saying(&sms, "is booked");
    assert!(booked.body.contains("1 Test Way"), "{booked:?}");
    assert!(booked.body.contains(&dollars(total)), "{booked:?}");
    let assigned = sms_saying(&sms, "Dario is your driver");
    assert!(
        !assigned.body.contains("Reyes"),
        "first name only: {assigned:?}"
    );
    sms_saying(&sms, "Dario is on the way to 1 Test Way");

    let emails = app.fakes.drain_emails().await;
    assert_eq!(emails.len(), 3, "{emails:#?}");
    assert!(
        emails
            .iter()
            .all(|e| e.to == CUSTOMER_EMAIL && e.provider == "resend")
    );
    let confirmation = email_titled(&emails, "Your Umuve pickup is booked");
    for words in [
        "Hi Cora,",
        "1 Test Way",
        "Single item",
        &dollars(total),
        &job_id,
    ] {
        assert!(
            confirmation.text.contains(words),
            "{words}: {confirmation:?}"
        );
        assert!(
            confirmation.html.contains(words),
            "{words}: {confirmation:?}"
        );
    }
    let receipt = email_titled(&emails, &format!("Your Umuve receipt: {}", dollars(total)));
    assert!(receipt.text.contains("Service fee"), "{receipt:?}");
    let assignment = email_titled(&emails, "Dario is your Umuve driver");
    assert!(assignment.text.contains("1 Test Way"), "{assignment:?}");

    let pushes = app.fakes.push.drain().await;
    let mut titles: Vec<&str> = pushes.iter().map(|p| p.title()).collect();
    titles.sort();
    assert_eq!(
        titles,
        [
            "Dario has arrived",
            "Dario is on the way",
            "Dario is your driver",
            "Pickup complete"
        ]
    );
    for push in &pushes {
        assert_eq!(push.token, device(1));
        assert_eq!(push.topic, CUSTOMER_TOPIC);
        assert_eq!(push.payload["job_id"], job_id.as_str());
        assert_eq!(push.payload["aps"]["sound"], "default");
        assert!(push.payload.get("offer_id").is_none(), "{:?}", push.payload);
    }
    assert_eq!(app.fakes.push.attempts_to(&device(2)), 0);
}

async fn an_offer_reaches_a_driver_without_a_socket_by_push(backend: Backend) {
    // The default with APNs credentials (the test engine's push transport is the fake).
    let app = spawn_app_with(backend, env().set("DRIVER_OFFLINE_GRACE_SECS", "60")).await;
    let mut office = office(&app).await;

    // With a socket: the offer comes by socket only.
    let mut online = named_driver(&app, &mut office, "Olga Online").await;
    register_device(&app, &online.token, &device(10), "driver").await;
    let first = office.book(&app, DOWNTOWN_MIAMI).await;
    let offer = online.next_offer().await;
    accept(&app, &online.token, offer["offer_id"].as_str().unwrap()).await;
    let rows = settled(&app, &office.admin, &id_of(&first)).await;
    assert!(!rows.iter().any(|r| r["event"] == "offer"), "{rows:#?}");
    assert_eq!(app.fakes.push.attempts_to(&device(10)), 0);

    // Without one (the app went to the background): the offer comes by push.
    let away = named_driver(&app, &mut office, "Bruno Background").await;
    register_device(&app, &away.token, &device(11), "driver").await;
    let (away_id, away_token) = (away.id.clone(), away.token.clone());
    drop(away);
    let (lat, lng) = DOWNTOWN_MIAMI;
    let nearby = format!("/api/drivers/nearby?lat={lat}&lng={lng}&radius_m=50000");
    eventually(
        "the driver shown without a socket",
        || async {
            let drivers = app.get(&nearby, Some(&office.admin)).await;
            drivers.assert_status(200)["drivers"].clone()
        },
        |listed| {
            listed
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["driver_id"] == away_id.as_str() && d["connected"] == false)
        },
    )
    .await;
    let second = office.book(&app, DOWNTOWN_MIAMI).await;
    let push = app.fakes.push.next_push().await;
    assert_eq!(push.token, device(11));
    assert_eq!(push.topic, DRIVER_TOPIC);
    assert_eq!(push.title(), "New pickup offer");
    assert!(push.body().contains("1 Test Way"), "{:?}", push.payload);
    assert_eq!(push.payload["job_id"], id_of(&second).as_str());
    assert_eq!(push.payload["aps"]["badge"], 1);
    // The push opens the offer, which the driver takes over HTTP.
    let offer_id = push.payload["offer_id"].as_str().unwrap();
    let taken = accept(&app, &away_token, offer_id).await;
    assert_eq!(taken["driver_id"], away_id.as_str());
    assert_eq!(app.fakes.push.attempts_to(&device(10)), 0);
}

async fn email_falls_back_to_sendgrid_then_becomes_a_dead_letter(backend: Backend) {
    let app = spawn_app_with(backend, env()).await;
    let office = office(&app).await;
    customer_profile(&app, &office).await;

    // Resend answers 500: the confirmation goes out through SendGrid.
    app.fakes.fail_resend_times(1);
    let first = office.book(&app, DOWNTOWN_MIAMI).await;
    let email = app.fakes.next_email().await;
    assert_eq!(
        (email.provider, email.subject.as_str()),
        ("sendgrid", "Your Umuve pickup is booked")
    );
    let rows = settled(&app, &office.admin, &id_of(&first)).await;
    assert_eq!(
        row(&rows, "booking_confirmed", "email")["provider"],
        "sendgrid"
    );

    // Both down: tried on each retry, then a dead letter after the fifth try.
    app.fakes.fail_resend_times(1_000);
    app.fakes.fail_sendgrid_times(1_000);
    let (resend_before, sendgrid_before) =
        (app.fakes.resend_requests(), app.fakes.sendgrid_requests());
    let second = id_of(&office.book(&app, DOWNTOWN_MIAMI).await);
    let mut wait = Duration::from_secs(30);
    for attempt in 1..=5 {
        if attempt > 1 {
            app.clock.advance(chrono::Duration::from_std(wait).unwrap());
            wait *= 2;
        }
        // The attempt's outcome is recorded: due again later, or dead.
        rows_when(
            &app,
            &office.admin,
            &second,
            "the attempt recorded",
            |rows| {
                let email = row(rows, "booking_confirmed", "email");
                let next: chrono::DateTime<chrono::Utc> =
                    email["next_attempt_at"].as_str().unwrap().parse().unwrap();
                let recorded = if attempt < 5 {
                    email["state"] == "pending" && next > app.clock.now()
                } else {
                    email["state"] == "dead"
                };
                email["attempts"] == attempt && recorded
            },
        )
        .await;
        assert_eq!(app.fakes.resend_requests() - resend_before, attempt);
        assert_eq!(app.fakes.sendgrid_requests() - sendgrid_before, attempt);
    }
    let rows = rows_of(&app, &office.admin, &second).await;
    let dead = row(&rows, "booking_confirmed", "email");
    assert!(
        dead["last_error"]
            .as_str()
            .unwrap()
            .contains("after 5 attempts"),
        "{dead:#}"
    );
    // The SMS of the same booking was not held up by the email outage.
    assert_eq!(row(&rows, "booking_confirmed", "sms")["state"], "sent");
    let listed = app
        .get("/api/admin/notifications?state=dead", Some(&office.admin))
        .await;
    assert_eq!(
        listed.assert_status(200)["notifications"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // A dispatcher sends the dead letter again once a provider is back.
    app.fakes.fail_resend_times(0);
    app.fakes.fail_sendgrid_times(0);
    let retry = format!(
        "/api/admin/notifications/{}/retry",
        dead["id"].as_str().unwrap()
    );
    app.post(&retry, Some(&office.customer), json!({}))
        .await
        .assert_error(403, "forbidden");
    app.post(&retry, Some(&office.admin), json!({}))
        .await
        .assert_status(200);
    let email = app.fakes.next_email().await;
    assert_eq!(
        (email.provider, email.subject.as_str()),
        ("resend", "Your Umuve pickup is booked")
    );
    app.post(&retry, Some(&office.admin), json!({}))
        .await
        .assert_error(404, "not_found");
    app.get("/api/admin/notifications?state=lost", Some(&office.admin))
        .await
        .assert_error(400, "bad_request");
    app.get(
        "/api/admin/notifications?job_id=not-a-uuid",
        Some(&office.admin),
    )
    .await
    .assert_error(400, "bad_request");
    app.post(
        "/api/admin/notifications/not-a-uuid/retry",
        Some(&office.admin),
        json!({}),
    )
    .await
    .assert_error(400, "bad_request");
}

async fn a_dead_device_token_is_forgotten(backend: Backend) {
    let app = spawn_app_with(backend, env()).await;
    let mut office = office(&app).await;
    let customer_id = customer_profile(&app, &office).await;
    let (dead, alive) = (device(20), device(21));
    register_device(&app, &office.customer, &dead, "customer").await;
    register_device(&app, &office.customer, &alive, "customer").await;
    app.fakes.push.refuse_next(
        &dead,
        a2::Error::ResponseError(Response {
            error: Some(ErrorBody {
                reason: ErrorReason::Unregistered,
                timestamp: None,
            }),
            apns_id: None,
            code: 410,
        }),
    );
    let mut driver = named_driver(&app, &mut office, "Dario Reyes").await;
    let job_id = id_of(&office.book(&app, DOWNTOWN_MIAMI).await);
    let offer = driver.next_offer().await;
    accept(&app, &driver.token, offer["offer_id"].as_str().unwrap()).await;

    // The assignment reaches the live device; APNs says the other is gone, and it is forgotten.
    let push = app.fakes.push.next_push().await;
    assert_eq!(
        (push.token.as_str(), push.title()),
        (alive.as_str(), "Dario is your driver")
    );
    let rows = settled(&app, &office.admin, &job_id).await;
    let to_customer: Vec<Value> = rows
        .into_iter()
        .filter(|r| r["user_id"] == customer_id.as_str())
        .collect();
    assert_eq!(row(&to_customer, "job_assigned", "push")["state"], "sent");
    let customer = Uuid::parse_str(&customer_id).unwrap();
    let tokens =
        umuve_dispatch::storage::notifications::device_tokens(&app.db, customer, "customer")
            .await
            .unwrap();
    assert_eq!(tokens, std::slice::from_ref(&alive));

    // No more pushes to it.
    move_job(&app, &driver.token, &job_id, "en_route").await;
    let push = app.fakes.push.next_push().await;
    assert_eq!(
        (push.token.as_str(), push.title()),
        (alive.as_str(), "Dario is on the way")
    );
    settled(&app, &office.admin, &job_id).await;
    assert_eq!(app.fakes.push.attempts_to(&dead), 1);
    assert_eq!(app.fakes.push.attempts_to(&alive), 2);
}

async fn a_slow_provider_delays_no_broadcast_and_no_other_channel(backend: Backend) {
    let app = spawn_app_with(backend, env()).await;
    let mut office = office(&app).await;
    customer_profile(&app, &office).await;
    register_device(&app, &office.customer, &device(30), "customer").await;
    let mut driver = named_driver(&app, &mut office, "Dario Reyes").await;

    // Twilio takes its time (it answers only when the test lets it).
    app.fakes.hold_twilio();
    let job_id = id_of(&office.book(&app, DOWNTOWN_MIAMI).await);
    app.fakes.twilio_request_started().await;
    let mut follower = follow(&app, &office.customer, &job_id).await;

    // Meanwhile: the booking's email, the offer, the assignment's broadcast, push and email.
    assert_eq!(
        app.fakes.next_email().await.subject,
        "Your Umuve pickup is booked"
    );
    let offer = driver.next_offer().await;
    accept(&app, &driver.token, offer["offer_id"].as_str().unwrap()).await;
    sees_status(&mut follower, "assigned").await;
    assert_eq!(
        app.fakes.push.next_push().await.title(),
        "Dario is your driver"
    );
    assert_eq!(
        app.fakes.next_email().await.subject,
        "Dario is your Umuve driver"
    );
    move_job(&app, &driver.token, &job_id, "en_route").await;
    sees_status(&mut follower, "en_route").await;
    assert_eq!(
        app.fakes.push.next_push().await.title(),
        "Dario is on the way"
    );
    // ...all while no SMS has been answered.
    assert!(app.fakes.drain_notification_sms().await.is_empty());

    app.fakes.release_twilio();
    let mut bodies = Vec::new();
    for _ in 0..3 {
        bodies.push(app.fakes.next_notification_sms().await.body);
    }
    bodies.sort();
    assert!(bodies[0].contains("Dario is on the way"), "{bodies:?}");
    assert!(bodies[1].contains("Dario is your driver"), "{bodies:?}");
    assert!(bodies[2].contains("is booked"), "{bodies:?}");
}

async fn notifications_left_unsent_go_out_once_after_a_restart(backend: Backend) {
    let app = spawn_app_with(backend, env()).await;
    let office = office(&app).await;
    customer_profile(&app, &office).await;
    // A booking whose messages went out before the restart.
    let sent_before = id_of(&office.book(&app, DOWNTOWN_MIAMI).await);
    settled(&app, &office.admin, &sent_before).await;
    assert_eq!(app.fakes.drain_notification_sms().await.len(), 1);
    assert_eq!(app.fakes.drain_emails().await.len(), 1);

    // A booking whose messages fail once and wait for their retry when the engine stops.
    app.fakes.fail_twilio_times(1);
    app.fakes.fail_resend_times(1);
    app.fakes.fail_sendgrid_times(1);
    let waiting = id_of(&office.book(&app, DOWNTOWN_MIAMI).await);
    rows_when(&app, &office.admin, &waiting, "both failed once", |rows| {
        let retrying = |r: &Value| r["attempts"] == 1 && r["last_error"].is_string();
        rows.len() == 2 && rows.iter().all(retrying)
    })
    .await;
    let twilio_before = app.fakes.twilio_requests();
    let fakes = app.fakes.clone();
    let admin = office.admin.clone();
    let database = app.shut_down().await;

    // The next engine sends each once, when due, and nothing that went out before.
    let app = spawn_app_with_fakes(database, env(), fakes).await;
    app.clock.advance(chrono::Duration::seconds(31));
    let rows = settled(&app, &admin, &waiting).await;
    assert!(rows.iter().all(|r| r["state"] == "sent"), "{rows:#?}");
    let sms = app.fakes.drain_notification_sms().await;
    assert_eq!(sms.len(), 1, "{sms:#?}");
    assert!(sms[0].body.contains("is booked"));
    let emails = app.fakes.drain_emails().await;
    assert_eq!(emails.len(), 1, "{emails:#?}");
    assert_eq!(app.fakes.twilio_requests(), twilio_before + 1);
    assert!(
        settled(&app, &admin, &sent_before)
            .await
            .iter()
            .all(|r| r["attempts"] == 1)
    );
}

async fn pickup_reminders_go_out_once_each_across_a_restart(backend: Backend) {
    let app = spawn_app_with(backend, env()).await;
    let office = office(&app).await;
    customer_profile(&app, &office).await;
    register_device(&app, &office.customer, &device(40), "customer").await;
    let pickup = start_time() + chrono::Duration::hours(48);
    let job = book_at(
        &app,
        &office.customer,
        DOWNTOWN_MIAMI,
        Some(pickup.to_rfc3339()),
    )
    .await
    .assert_status(201)
    .clone();
    let job_id = id_of(&job);
    settled(&app, &office.admin, &job_id).await;
    app.fakes.drain_emails().await;

    // 24 hours before the pickup.
    let day_before = chrono::Duration::hours(24) + chrono::Duration::seconds(1);
    app.clock.advance(day_before);
    let push = app.fakes.push.next_push().await;
    assert_eq!(
        (push.title(), push.token.as_str()),
        ("Pickup tomorrow", device(40).as_str())
    );
    assert!(
        push.body().contains("Pickup: Fri, Nov 27 at 2:00 PM"),
        "{:?}",
        push.payload
    );
    let email = app.fakes.next_email().await;
    assert_eq!(email.subject, "Reminder: your Umuve pickup is tomorrow");
    settled(&app, &office.admin, &job_id).await;

    // A restart at the same moment does not repeat it. (A job booked then, less than a day
    // ahead, shows that the new engine looked for due reminders at this moment: its own
    // "tomorrow" reminder is decided, as skipped.)
    let fakes = app.fakes.clone();
    let admin = office.admin.clone();
    let database = app.shut_down().await;
    let app = spawn_app_with_fakes(database, env(), fakes).await;
    app.clock.advance(day_before);
    // (Its pickup is over before the next step's moment: it gets no reminder of its own.)
    let soon = app.clock.now() + chrono::Duration::hours(22);
    let later_job = book_at(
        &app,
        &office.customer,
        DOWNTOWN_MIAMI,
        Some(soon.to_rfc3339()),
    )
    .await
    .assert_status(201)
    .clone();
    rows_when(
        &app,
        &admin,
        &id_of(&later_job),
        "its reminder decided",
        |rows| {
            let decided = rows
                .iter()
                .filter(|r| r["event"] == "reminder_24h" && r["state"] == "skipped")
                .count();
            decided == 2
        },
    )
    .await;
    settled(&app, &admin, &id_of(&later_job)).await;
    assert!(
        app.fakes.push.drain().await.is_empty(),
        "no second reminder"
    );
    assert_eq!(
        app.fakes.drain_emails().await.len(),
        1,
        "only the new booking's"
    );

    // 1 hour before the pickup.
    app.clock
        .advance(chrono::Duration::hours(23) - chrono::Duration::seconds(1));
    let push = app.fakes.push.next_push().await;
    assert_eq!(push.title(), "Pickup in one hour");
    let email = app.fakes.next_email().await;
    assert_eq!(email.subject, "Reminder: your Umuve pickup is in one hour");
    let rows = settled(&app, &admin, &job_id).await;
    let mut reminders: Vec<(String, String, String)> = rows
        .iter()
        .filter(|r| r["event"].as_str().unwrap().starts_with("reminder"))
        .map(|r| {
            (
                r["event"].as_str().unwrap().to_owned(),
                r["channel"].as_str().unwrap().to_owned(),
                r["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    reminders.sort();
    assert_eq!(
        reminders,
        [
            ("reminder_1h".into(), "email".into(), "sent".into()),
            ("reminder_1h".into(), "push".into(), "sent".into()),
            ("reminder_24h".into(), "email".into(), "sent".into()),
            ("reminder_24h".into(), "push".into(), "sent".into()),
        ]
    );
    assert!(app.fakes.push.drain().await.is_empty());
    assert!(app.fakes.drain_emails().await.is_empty());
}

async fn a_device_token_follows_the_newest_user_who_registers_it(backend: Backend) {
    let app = spawn_app_with(backend, env()).await;
    let office = office(&app).await;
    let first_owner = customer_profile(&app, &office).await;
    let phone = device(50);
    register_device(&app, &office.customer, &phone, "customer").await;
    // The phone changes hands: its new owner signs in and registers it.
    let (new_owner, user) = app.sms_login("305-555-0150", None).await;
    register_device(&app, &new_owner, &phone, "customer").await;
    let tokens_of = |user: &str| {
        let user = Uuid::parse_str(user).unwrap();
        let db = app.db.clone();
        async move {
            umuve_dispatch::storage::notifications::device_tokens(&db, user, "customer")
                .await
                .unwrap()
        }
    };
    assert!(tokens_of(&first_owner).await.is_empty());
    assert_eq!(
        tokens_of(user["id"].as_str().unwrap()).await,
        std::slice::from_ref(&phone)
    );

    // The first owner's cancellation is not pushed to the phone; the new owner's is.
    let old_job = id_of(&office.book(&app, DOWNTOWN_MIAMI).await);
    let cancel = |job: String, token: String| {
        let app = &app;
        async move {
            app.post(&format!("/api/jobs/{job}/cancel"), Some(&token), json!({}))
                .await
                .assert_status(200);
        }
    };
    cancel(old_job.clone(), office.customer.clone()).await;
    let rows = settled(&app, &office.admin, &old_job).await;
    let push = row(&rows, "job_cancelled", "push");
    assert_eq!(push["state"], "skipped");
    assert!(
        push["last_error"].as_str().unwrap().contains("no device"),
        "{push:#}"
    );
    let new_job = id_of(
        &crate::dispatch::book(&app, &new_owner, DOWNTOWN_MIAMI, None)
            .await
            .assert_status(201)
            .clone(),
    );
    cancel(new_job.clone(), new_owner.clone()).await;
    let push = app.fakes.push.next_push().await;
    assert_eq!(
        (push.token.as_str(), push.title()),
        (phone.as_str(), "Pickup cancelled")
    );
    assert_eq!(push.payload["job_id"], new_job.as_str());
    assert_eq!(app.fakes.push.attempts_to(&phone), 1);
}

async fn a_new_driver_is_announced_and_a_late_retry_says_nothing_stale(backend: Backend) {
    let app = spawn_app_with(backend, env()).await;
    let mut office = office(&app).await;
    customer_profile(&app, &office).await;
    register_device(&app, &office.customer, &device(60), "customer").await;
    let mut first = named_driver(&app, &mut office, "Dario Reyes").await;
    let job_id = id_of(&office.book(&app, DOWNTOWN_MIAMI).await);
    let offer = first.next_offer().await;
    accept(&app, &first.token, offer["offer_id"].as_str().unwrap()).await;
    assert_eq!(
        app.fakes.push.next_push().await.title(),
        "Dario is your driver"
    );
    settled(&app, &office.admin, &job_id).await;

    // A dispatcher takes the job back; another driver takes it: the customer hears of her.
    move_job(&app, &office.admin, &job_id, "dispatching").await;
    let mut second = named_driver(&app, &mut office, "Bea Santos").await;
    let offer = second.next_offer().await;
    accept(&app, &second.token, offer["offer_id"].as_str().unwrap()).await;
    assert_eq!(
        app.fakes.push.next_push().await.title(),
        "Bea is your driver"
    );
    let rows = settled(&app, &office.admin, &job_id).await;
    let assigned_sms: Vec<_> = rows
        .iter()
        .filter(|r| r["event"] == "job_assigned" && r["channel"] == "sms")
        .collect();
    assert_eq!(assigned_sms.len(), 2, "{rows:#?}");
    let sms = app.fakes.drain_notification_sms().await;
    sms_saying(&sms, "Dario is your driver");
    sms_saying(&sms, "Bea is your driver");
    let emails = app.fakes.drain_emails().await;
    email_titled(&emails, "Bea is your Umuve driver");

    // "On the way" fails once; by its retry the driver has arrived: it is not sent late.
    app.fakes.fail_twilio_times(1);
    move_job(&app, &second.token, &job_id, "en_route").await;
    rows_when(
        &app,
        &office.admin,
        &job_id,
        "the SMS failed once",
        |rows| {
            let waiting = row(rows, "driver_en_route", "sms");
            waiting["attempts"] == 1 && waiting["last_error"].is_string()
        },
    )
    .await;
    move_job(&app, &second.token, &job_id, "arrived").await;
    app.clock.advance(chrono::Duration::seconds(31));
    let rows = settled(&app, &office.admin, &job_id).await;
    let late = row(&rows, "driver_en_route", "sms");
    assert_eq!(late["state"], "skipped", "{late:#}");
    assert!(
        late["last_error"].as_str().unwrap().contains("moved on"),
        "{late:#}"
    );
    assert!(app.fakes.drain_notification_sms().await.is_empty());
}
