//! Payments against a fake Stripe (a real HTTP server on 127.0.0.1 answering with Stripe's own
//! example objects): booking → PaymentIntent → signed webhook → dispatch; webhooks handled once
//! whatever the delivery; payouts and refunds through the outbox, exactly once through
//! failures and a crash.

use serde_json::{Value, json};
use stripe_webhook::Webhook;
use umuve_actors::clock::Clock;

use crate::dispatch::{DOWNTOWN_MIAMI, Office, north_of, office, trail};
use crate::on_both_databases;
use crate::support::fake_stripe::{CONNECT_WEBHOOK_SECRET, EVENT, STRIPE_KEY, WEBHOOK_SECRET};
use crate::support::{
    Backend, Env, Reply, TestApp, TestDatabase, eventually, spawn_app_with, spawn_app_with_fakes,
};

const PAYMENT_INTENT: &str = include_str!("../data/stripe/payment_intent.json");
const ACCOUNT: &str = include_str!("../data/stripe/account.json");
const CHARGE: &str = include_str!("../data/stripe/charge.json");

pub(crate) fn payments_env() -> Env {
    crate::dispatch::env()
        .set("STRIPE_SECRET_KEY", STRIPE_KEY)
        .set("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
        .set("STRIPE_CONNECT_WEBHOOK_SECRET", CONNECT_WEBHOOK_SECRET)
        .set("OUTBOX_POLL_MS", "20")
}

/// An event as Stripe sends it: the fixture envelope around `object`.
fn event(id: &str, kind: &str, object: Value) -> Value {
    let mut event: Value = serde_json::from_str(EVENT).unwrap();
    event["id"] = json!(id);
    event["type"] = json!(kind);
    event["data"]["object"] = object;
    event
}

/// The PaymentIntent object of a webhook, in `status`.
fn intent(id: &str, job_id: &str, amount: i64, status: &str) -> Value {
    let mut pi: Value = serde_json::from_str(PAYMENT_INTENT).unwrap();
    pi["id"] = json!(id);
    pi["amount"] = json!(amount);
    pi["metadata"] = json!({ "job_id": job_id });
    pi["transfer_group"] = json!(job_id);
    pi["status"] = json!(status);
    pi["canceled_at"] = Value::Null;
    if status == "succeeded" {
        pi["amount_received"] = json!(amount);
        pi["latest_charge"] = json!("ch_fake_paid");
        pi["last_payment_error"] = Value::Null;
    } else {
        pi["last_payment_error"] =
            json!({ "type": "card_error", "message": "Your card was declined." });
    }
    pi
}

pub(crate) fn succeeded(event_id: &str, pi: &str, job_id: &str, amount: i64) -> Value {
    event(
        event_id,
        "payment_intent.succeeded",
        intent(pi, job_id, amount, "succeeded"),
    )
}

fn failed(event_id: &str, pi: &str, job_id: &str, amount: i64) -> Value {
    event(
        event_id,
        "payment_intent.payment_failed",
        intent(pi, job_id, amount, "requires_payment_method"),
    )
}

fn account_updated(event_id: &str, account: &str, payouts_enabled: bool) -> Value {
    let mut object: Value = serde_json::from_str(ACCOUNT).unwrap();
    object["id"] = json!(account);
    object["payouts_enabled"] = json!(payouts_enabled);
    event(event_id, "account.updated", object)
}

/// Posts `payload` with a signature made at `signed_at` (Unix seconds) with `secret`.
async fn deliver_raw(app: &TestApp, payload: &str, secret: &str, signed_at: i64) -> Reply {
    let header = Webhook::generate_test_header(payload, secret, Some(signed_at));
    app.send(
        app.client
            .post(app.url("/api/webhooks/stripe"))
            .header("content-type", "application/json")
            .header("stripe-signature", header)
            .body(payload.to_owned()),
    )
    .await
}

/// Delivers an event signed now (engine clock) with the right secret.
pub(crate) async fn deliver(app: &TestApp, event: &Value) -> Reply {
    let now = app.clock.now().timestamp();
    deliver_raw(app, &event.to_string(), WEBHOOK_SECRET, now).await
}

/// Delivers a connected account's event as Stripe's Connect endpoint signs it.
async fn deliver_connect(app: &TestApp, event: &Value) -> Reply {
    let now = app.clock.now().timestamp();
    deliver_raw(app, &event.to_string(), CONNECT_WEBHOOK_SECRET, now).await
}

fn id_of(value: &Value) -> String {
    value["id"].as_str().unwrap().to_owned()
}

async fn job_as(app: &TestApp, token: &str, job_id: &str) -> Value {
    app.get(&format!("/api/jobs/{job_id}"), Some(token))
        .await
        .assert_status(200)
        .clone()
}

async fn payment_intent(app: &TestApp, token: &str, job_id: &str) -> Reply {
    let path = format!("/api/jobs/{job_id}/payment-intent");
    app.post(&path, Some(token), json!({})).await
}

/// A booked job waiting for payment and its PaymentIntent: (job, id, total, PaymentIntent id).
pub(crate) async fn booked_unpaid(app: &TestApp, office: &Office) -> (Value, String, i64, String) {
    let job = office.book(app, DOWNTOWN_MIAMI).await;
    assert_eq!(job["status"], "pending_payment");
    let job_id = id_of(&job);
    let total = job["total_cents"].as_i64().unwrap();
    let pi = payment_intent(app, &office.customer, &job_id)
        .await
        .assert_status(200)["payment_intent_id"]
        .as_str()
        .unwrap()
        .to_owned();
    (job, job_id, total, pi)
}

/// A booked and paid job (dispatching); returns (job, PaymentIntent id).
pub(crate) async fn paid_job(app: &TestApp, office: &Office, event_id: &str) -> (Value, String) {
    let (job, job_id, total, pi) = booked_unpaid(app, office).await;
    deliver(app, &succeeded(event_id, &pi, &job_id, total))
        .await
        .assert_status(200);
    (job, pi)
}

/// The job's outbox entries as dispatchers see them.
async fn outbox_of(app: &TestApp, admin: &str, job_id: &str) -> Vec<Value> {
    let page = app.get("/api/admin/outbox?limit=100", Some(admin)).await;
    page.assert_status(200)["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["job_id"] == job_id)
        .cloned()
        .collect()
}

/// Drives an assigned job through to `completed` as its driver.
async fn work_through(app: &TestApp, driver_token: &str, job_id: &str) {
    for status in ["en_route", "arrived", "in_progress", "completed"] {
        app.post(
            &format!("/api/jobs/{job_id}/status"),
            Some(driver_token),
            json!({ "status": status }),
        )
        .await
        .assert_status(200);
    }
}

pub(crate) async fn assign(app: &TestApp, office: &Office, job_id: &str, driver_id: &str) {
    app.post(
        &format!("/api/jobs/{job_id}/assign"),
        Some(&office.admin),
        json!({ "driver_id": driver_id }),
    )
    .await
    .assert_status(200);
}

/// Onboards the driver at the fake Stripe and makes their account payable; returns its id.
async fn payable_account(app: &TestApp, driver_token: &str, event_id: &str) -> String {
    app.post(
        "/api/drivers/me/connect-account",
        Some(driver_token),
        json!({}),
    )
    .await
    .assert_status(200);
    let account = app.fakes.stripe.made("/v1/accounts").last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    deliver_connect(app, &account_updated(event_id, &account, true))
        .await
        .assert_status(200);
    account
}

on_both_databases!(
    a_paid_booking_is_dispatched_to_the_nearest_driver,
    a_webhook_event_is_handled_once_and_only_when_signed,
    a_failed_payment_can_be_retried_and_never_undoes_a_success,
    a_completed_job_pays_its_driver_once_through_stripe_failures,
    a_payout_interrupted_by_a_crash_is_made_once_after_restart,
    cancelling_a_paid_job_refunds_it,
    payouts_wait_for_a_payable_account,
    a_refused_refund_waits_for_a_dispatcher,
    a_job_paid_after_it_was_completed_still_pays_its_driver,
);

async fn a_paid_booking_is_dispatched_to_the_nearest_driver(backend: Backend) {
    let app = spawn_app_with(backend, payments_env()).await;
    let mut office = office(&app).await;
    let mut driver = office
        .free_driver(&app, north_of(DOWNTOWN_MIAMI, 1.0))
        .await;

    let job = office.book(&app, DOWNTOWN_MIAMI).await;
    let job_id = id_of(&job);
    assert_eq!(job["status"], "pending_payment");
    let total = job["total_cents"].as_i64().unwrap();

    let first = payment_intent(&app, &office.customer, &job_id).await;
    let first = first.assert_status(200).clone();
    let requests = app.fakes.stripe.requests_to("/v1/payment_intents");
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.field("amount"), Some(total.to_string().as_str()));
    assert_eq!(request.field("currency"), Some("usd"));
    assert_eq!(request.field("metadata[job_id]"), Some(job_id.as_str()));
    assert_eq!(request.field("transfer_group"), Some(job_id.as_str()));
    let key = request.idempotency_key.clone().expect("an Idempotency-Key");
    assert!(key.contains(&job_id), "{key}");
    assert_eq!(first["amount_cents"], total);
    let pi = first["payment_intent_id"].as_str().unwrap().to_owned();
    assert!(first["client_secret"].as_str().unwrap().starts_with(&pi));

    // Asked again: THE PaymentIntent, not a second one.
    let again = payment_intent(&app, &office.customer, &job_id).await;
    assert_eq!(again.assert_status(200), &first);
    assert_eq!(app.fakes.stripe.made("/v1/payment_intents").len(), 1);

    // Nothing is offered before the money is in.
    driver.assert_no_offer().await;
    let receipt = deliver(&app, &succeeded("evt_paid_1", &pi, &job_id, total)).await;
    assert_eq!(receipt.assert_status(200)["repeat"], false);
    let offer = driver.next_offer().await;
    assert_eq!(offer["job"]["id"], job_id.as_str());
    assert_eq!(offer["job"]["status"], "dispatching");
    let seen = job_as(&app, &office.customer, &job_id).await;
    assert_eq!(seen["status"], "dispatching");
    assert_eq!(seen["payment"]["status"], "succeeded");
    assert_eq!(seen["payment"]["payment_intent_id"], pi.as_str());
    assert_eq!(
        trail(&app, &job_id).await,
        [">pending_payment", "pending_payment>dispatching"]
    );
}

async fn a_webhook_event_is_handled_once_and_only_when_signed(backend: Backend) {
    let app = spawn_app_with(backend, payments_env()).await;
    let office = office(&app).await;
    let (_, job_id, total, pi) = booked_unpaid(&app, &office).await;
    let paid = succeeded("evt_once", &pi, &job_id, total);
    let payload = paid.to_string();
    let now = app.clock.now().timestamp();

    // Forged: signed with another secret, or tampered after signing.
    deliver_raw(&app, &payload, "whsec_someone_else", now)
        .await
        .assert_error(400, "bad_request");
    let header = Webhook::generate_test_header(&payload, WEBHOOK_SECRET, Some(now));
    let tampered = payload.replace(&total.to_string(), "1");
    let reply = app
        .send(
            app.client
                .post(app.url("/api/webhooks/stripe"))
                .header("stripe-signature", header)
                .body(tampered),
        )
        .await;
    reply.assert_error(400, "bad_request");
    // Signed 10 minutes ago: a replay.
    deliver_raw(&app, &payload, WEBHOOK_SECRET, now - 600)
        .await
        .assert_error(400, "bad_request");
    // No signature at all.
    app.post_raw("/api/webhooks/stripe", "application/json", payload.clone())
        .await
        .assert_error(400, "bad_request");
    assert_eq!(
        job_as(&app, &office.customer, &job_id).await["status"],
        "pending_payment"
    );
    let stored = umuve_dispatch::storage::payments::webhook_event(&app.db, "evt_once")
        .await
        .unwrap();
    assert_eq!(
        stored, None,
        "a refused delivery is not recorded as handled"
    );

    // Delivered five times: three at once as the first delivery, then twice more.
    let (a, b, c) = tokio::join!(
        deliver(&app, &paid),
        deliver(&app, &paid),
        deliver(&app, &paid)
    );
    let firsts: Vec<bool> = [a, b, c]
        .iter()
        .map(|reply| reply.assert_status(200)["repeat"] == false)
        .collect();
    assert_eq!(
        firsts.iter().filter(|first| **first).count(),
        1,
        "{firsts:?}"
    );
    for _ in 0..2 {
        assert_eq!(
            deliver(&app, &paid).await.assert_status(200)["repeat"],
            true
        );
    }
    assert_eq!(
        trail(&app, &job_id).await,
        [">pending_payment", "pending_payment>dispatching"]
    );
    let (kind, outcome) = umuve_dispatch::storage::payments::webhook_event(&app.db, "evt_once")
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(kind, "payment_intent.succeeded");
    assert_eq!(outcome, "applied: job dispatching");

    // A failure reported after the success (out of order) does not move the job back.
    let late = deliver(&app, &failed("evt_late_failure", &pi, &job_id, total)).await;
    assert!(
        late.assert_status(200)["outcome"]
            .as_str()
            .unwrap()
            .starts_with("ignored")
    );
    let seen = job_as(&app, &office.customer, &job_id).await;
    assert_eq!(seen["status"], "dispatching");
    assert_eq!(seen["payment"]["status"], "succeeded");

    // A type the engine does not act on is stored and acknowledged.
    let mut charge: Value = serde_json::from_str(CHARGE).unwrap();
    charge["payment_intent"] = json!(pi);
    let unknown = event("evt_unknown", "charge.captured", charge);
    deliver(&app, &unknown).await.assert_status(200);
    let (kind, outcome) = umuve_dispatch::storage::payments::webhook_event(&app.db, "evt_unknown")
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(
        (kind.as_str(), outcome.as_str()),
        ("charge.captured", "stored")
    );

    // Signed but not an event: 400, nothing stored.
    deliver_raw(&app, "{\"id\": \"evt_broken\"}", WEBHOOK_SECRET, now)
        .await
        .assert_error(400, "bad_request");
    assert_eq!(
        trail(&app, &job_id).await,
        [">pending_payment", "pending_payment>dispatching"]
    );
}

async fn a_failed_payment_can_be_retried_and_never_undoes_a_success(backend: Backend) {
    let app = spawn_app_with(backend, payments_env()).await;
    let office = office(&app).await;
    let (_, job_id, total, pi) = booked_unpaid(&app, &office).await;

    deliver(&app, &failed("evt_declined", &pi, &job_id, total))
        .await
        .assert_status(200);
    let seen = job_as(&app, &office.customer, &job_id).await;
    assert_eq!(seen["status"], "payment_failed");
    assert_eq!(seen["payment"]["status"], "failed");

    // The customer tries again: the same PaymentIntent, the job waits for payment again.
    let again = payment_intent(&app, &office.customer, &job_id).await;
    assert_eq!(again.assert_status(200)["payment_intent_id"], pi.as_str());
    assert_eq!(app.fakes.stripe.made("/v1/payment_intents").len(), 1);
    assert_eq!(
        job_as(&app, &office.customer, &job_id).await["status"],
        "pending_payment"
    );

    deliver(&app, &succeeded("evt_second_try", &pi, &job_id, total))
        .await
        .assert_status(200);
    assert_eq!(
        job_as(&app, &office.customer, &job_id).await["status"],
        "dispatching"
    );
    assert_eq!(
        trail(&app, &job_id).await,
        [
            ">pending_payment",
            "pending_payment>payment_failed",
            "payment_failed>pending_payment",
            "pending_payment>dispatching"
        ]
    );
}

async fn a_completed_job_pays_its_driver_once_through_stripe_failures(backend: Backend) {
    let app = spawn_app_with(backend, payments_env()).await;
    let mut office = office(&app).await;
    let driver = office.driver(&app, true).await;
    let account = payable_account(&app, &driver.token, "evt_account_ok").await;
    let (job, _) = paid_job(&app, &office, "evt_paid").await;
    let job_id = id_of(&job);
    let payout = job["driver_payout_cents"].as_i64().unwrap();
    assign(&app, &office, &job_id, &driver.id).await;

    // Stripe is down for the first two tries.
    app.fakes.stripe.fail_next("/v1/transfers", 2);
    work_through(&app, &driver.token, &job_id).await;
    for attempt in 1..=2 {
        app.fakes
            .stripe
            .await_requests("/v1/transfers", attempt)
            .await;
        eventually(
            "the failed transfer is scheduled again",
            || async { outbox_of(&app, &office.admin, &job_id).await[0].clone() },
            |entry| entry["attempts"] == attempt && entry["last_error"].is_string(),
        )
        .await;
        assert_eq!(
            outbox_of(&app, &office.admin, &job_id).await[0]["state"],
            "pending"
        );
        // The backoff runs on the engine's clock.
        app.clock.advance(chrono::Duration::hours(1));
    }
    let requests = app.fakes.stripe.await_requests("/v1/transfers", 3).await;
    let entry = eventually(
        "the transfer is recorded as sent",
        || async { outbox_of(&app, &office.admin, &job_id).await[0].clone() },
        |entry| entry["state"] == "sent",
    )
    .await;

    let made = app.fakes.stripe.made("/v1/transfers");
    assert_eq!(made.len(), 1, "exactly one transfer: {made:?}");
    assert_eq!(entry["stripe_id"], made[0]["id"]);
    assert_eq!(entry["amount_cents"], payout);
    assert_eq!(entry["attempts"], 3);
    // Before each retry the engine looked for a transfer an earlier attempt might have made.
    assert!(app.fakes.stripe.lookups_of("/v1/transfers") >= 2);
    let keys: Vec<_> = requests.iter().map(|r| r.idempotency_key.clone()).collect();
    assert!(
        keys.iter().all(|k| k.is_some() && *k == keys[0]),
        "{keys:?}"
    );
    let request = &requests[2];
    assert_eq!(request.field("amount"), Some(payout.to_string().as_str()));
    assert_eq!(request.field("currency"), Some("usd"));
    assert_eq!(request.field("destination"), Some(account.as_str()));
    assert_eq!(request.field("transfer_group"), Some(job_id.as_str()));
    assert_eq!(request.field("source_transaction"), Some("ch_fake_paid"));
    assert_eq!(request.field("metadata[job_id]"), Some(job_id.as_str()));

    let seen = job_as(&app, &driver.token, &job_id).await;
    assert_eq!(seen["status"], "completed");
    assert_eq!(seen["payment"]["payout"]["state"], "sent");
    let failed = app
        .get("/api/admin/outbox?state=failed", Some(&office.admin))
        .await;
    assert_eq!(failed.assert_status(200)["entries"], json!([]));
    // Operators see both on /metrics (process-wide counters, so only their presence is checked).
    let metrics = app.get("/metrics", None).await.text;
    for line in [
        "umuve_outbox_outcomes_total{kind=\"transfer\",result=\"retry\"}",
        "umuve_outbox_outcomes_total{kind=\"transfer\",result=\"sent\"}",
        "umuve_stripe_webhooks_total{result=\"applied\",type=\"payment_intent.succeeded\"}",
    ] {
        assert!(metrics.contains(line), "{line} missing from /metrics");
    }
    let sent = app
        .get("/api/admin/outbox?state=sent", Some(&office.admin))
        .await;
    assert_eq!(
        sent.assert_status(200)["entries"].as_array().unwrap().len(),
        1
    );
}

async fn a_payout_interrupted_by_a_crash_is_made_once_after_restart(backend: Backend) {
    let app = spawn_app_with(backend, payments_env()).await;
    let mut office = office(&app).await;
    let driver = office.driver(&app, true).await;
    payable_account(&app, &driver.token, "evt_account_ok").await;
    let (job, _) = paid_job(&app, &office, "evt_paid").await;
    let job_id = id_of(&job);
    assign(&app, &office, &job_id, &driver.id).await;

    // Stripe makes the transfer, but the engine dies before hearing so.
    app.fakes.stripe.hold_transfers();
    work_through(&app, &driver.token, &job_id).await;
    app.fakes.stripe.await_requests("/v1/transfers", 1).await;
    let fakes = app.fakes.clone();
    let database: TestDatabase = app.kill();

    let app = spawn_app_with_fakes(database, payments_env(), fakes).await;
    // Worse still, the engine comes back after Stripe forgot the idempotency key (24 hours).
    app.fakes.stripe.forget_keys();
    app.fakes.stripe.release();
    // The dead engine's claim lapses on the clock.
    app.clock.advance(chrono::Duration::minutes(5));
    let admin = &office.admin;
    let entry = eventually(
        "the transfer is recorded as sent after the restart",
        || async { outbox_of(&app, admin, &job_id).await[0].clone() },
        |entry| entry["state"] == "sent",
    )
    .await;
    // The new engine looked for what the first attempt made, found it, and made nothing.
    let made = app.fakes.stripe.made("/v1/transfers");
    assert_eq!(made.len(), 1, "exactly one transfer: {made:?}");
    assert_eq!(entry["stripe_id"], made[0]["id"]);
    assert_eq!(app.fakes.stripe.requests_to("/v1/transfers").len(), 1);
    assert!(app.fakes.stripe.lookups_of("/v1/transfers") >= 1);
}

async fn cancelling_a_paid_job_refunds_it(backend: Backend) {
    let app = spawn_app_with(backend, payments_env()).await;
    let mut office = office(&app).await;

    // Before the driver sets off: a full refund, once.
    let (job, pi) = paid_job(&app, &office, "evt_paid_1").await;
    let job_id = id_of(&job);
    let total = job["total_cents"].as_i64().unwrap();
    // Someone refunded 5.00 in Stripe's dashboard first: Stripe reports it.
    let mut charge: Value = serde_json::from_str(CHARGE).unwrap();
    charge["payment_intent"] = json!(pi);
    charge["amount_refunded"] = json!(500);
    let reported = deliver(&app, &event("evt_refunded", "charge.refunded", charge)).await;
    assert!(
        reported.assert_status(200)["outcome"]
            .as_str()
            .unwrap()
            .starts_with("applied")
    );
    assert_eq!(
        job_as(&app, &office.customer, &job_id).await["payment"]["refunded_cents"],
        500
    );
    let cancelled = app
        .post(
            &format!("/api/jobs/{job_id}/cancel"),
            Some(&office.customer),
            json!({}),
        )
        .await;
    assert_eq!(cancelled.assert_status(200)["status"], "cancelled");
    let requests = app.fakes.stripe.await_requests("/v1/refunds", 1).await;
    assert_eq!(requests[0].field("payment_intent"), Some(pi.as_str()));
    assert_eq!(
        requests[0].field("amount"),
        Some((total - 500).to_string().as_str())
    );
    let seen = eventually(
        "the refund shows on the job",
        || job_as(&app, &office.customer, &job_id),
        |job| {
            job["payment"]["refunds"][0]["state"] == "sent"
                && job["payment"]["refunded_cents"] == total
        },
    )
    .await;
    assert_eq!(
        seen["payment"]["refunds"][0]["stripe_id"],
        app.fakes.stripe.made("/v1/refunds")[0]["id"]
    );
    assert_eq!(app.fakes.stripe.made("/v1/refunds").len(), 1);
    // A cancelled job cannot be paid again.
    payment_intent(&app, &office.customer, &job_id)
        .await
        .assert_error(409, "conflict");

    // After the driver set off: the customer cannot cancel; a dispatcher chooses the refund.
    let driver = office.driver(&app, true).await;
    let (job, _) = paid_job(&app, &office, "evt_paid_2").await;
    let job_id = id_of(&job);
    assign(&app, &office, &job_id, &driver.id).await;
    app.post(
        &format!("/api/jobs/{job_id}/status"),
        Some(&driver.token),
        json!({ "status": "en_route" }),
    )
    .await
    .assert_status(200);
    let path = format!("/api/jobs/{job_id}/cancel");
    app.post(&path, Some(&office.customer), json!({}))
        .await
        .assert_error(409, "conflict");
    app.post(
        &path,
        Some(&office.customer),
        json!({ "refund_cents": 100 }),
    )
    .await
    .assert_error(403, "forbidden");
    app.post(&path, Some(&office.admin), json!({}))
        .await
        .assert_error(400, "bad_request");
    app.post(
        &path,
        Some(&office.admin),
        json!({ "refund_cents": total + 1 }),
    )
    .await
    .assert_error(400, "bad_request");
    app.post(&path, Some(&office.admin), json!({ "refund_cents": -1 }))
        .await
        .assert_error(400, "bad_request");
    for malformed in [
        "{\"refund_cents\": ",
        "{\"refund_cents\": \"lots\"}",
        "{\"refund\": 5}",
    ] {
        let reply = app
            .send(
                app.client
                    .post(app.url(&path))
                    .bearer_auth(&office.admin)
                    .header("content-type", "application/json")
                    .body(malformed),
            )
            .await;
        reply.assert_error(400, "bad_request");
    }
    let cancelled = app
        .post(&path, Some(&office.admin), json!({ "refund_cents": 2500 }))
        .await;
    assert_eq!(cancelled.assert_status(200)["status"], "cancelled");
    let requests = app.fakes.stripe.await_requests("/v1/refunds", 2).await;
    assert_eq!(requests[1].field("amount"), Some("2500"));
    eventually(
        "the partial refund shows on the job",
        || job_as(&app, &office.admin, &job_id),
        |job| job["payment"]["refunded_cents"] == 2500,
    )
    .await;

    // Paid after the customer cancelled (the app confirmed late): the money goes back.
    let (_, job_id, total, pi) = booked_unpaid(&app, &office).await;
    app.post(
        &format!("/api/jobs/{job_id}/cancel"),
        Some(&office.customer),
        json!({}),
    )
    .await
    .assert_status(200);
    deliver(&app, &succeeded("evt_paid_late", &pi, &job_id, total))
        .await
        .assert_status(200);
    let requests = app.fakes.stripe.await_requests("/v1/refunds", 3).await;
    assert_eq!(requests[2].field("payment_intent"), Some(pi.as_str()));
    assert_eq!(
        requests[2].field("amount"),
        Some(total.to_string().as_str())
    );
    assert_eq!(
        job_as(&app, &office.customer, &job_id).await["status"],
        "cancelled"
    );
}

async fn payouts_wait_for_a_payable_account(backend: Backend) {
    let app = spawn_app_with(backend, payments_env()).await;
    let mut office = office(&app).await;
    let driver = office.driver(&app, true).await;
    let (job, _) = paid_job(&app, &office, "evt_paid").await;
    let job_id = id_of(&job);
    assign(&app, &office, &job_id, &driver.id).await;
    work_through(&app, &driver.token, &job_id).await;
    let owed = eventually(
        "the payout is owed",
        || async { json!(outbox_of(&app, &office.admin, &job_id).await) },
        |entries| entries[0]["state"] == "owed",
    )
    .await;
    let owed = owed.as_array().unwrap().clone();
    assert_eq!(owed.len(), 1);
    assert_eq!(owed[0]["state"], "owed");
    assert_eq!(owed[0]["kind"], "transfer");

    // Onboarding: the Express account is made once; each call gets a fresh link.
    let link = app
        .post(
            "/api/drivers/me/connect-account",
            Some(&driver.token),
            json!({}),
        )
        .await;
    let url = link.assert_status(200)["url"].as_str().unwrap().to_owned();
    let accounts = app.fakes.stripe.made("/v1/accounts");
    assert_eq!(accounts.len(), 1);
    let account = accounts[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(accounts[0]["type"], "express");
    assert_eq!(url, app.fakes.stripe.made("/v1/account_links")[0]["url"]);
    assert!(url.contains(&account), "{url}");
    let links = app.fakes.stripe.requests_to("/v1/account_links");
    assert_eq!(links[0].field("type"), Some("account_onboarding"));
    assert!(
        links[0]
            .field("return_url")
            .unwrap()
            .starts_with("https://portal.goumuve.test/")
    );
    app.post(
        "/api/drivers/me/connect-account",
        Some(&driver.token),
        json!({}),
    )
    .await
    .assert_status(200);
    assert_eq!(app.fakes.stripe.made("/v1/accounts").len(), 1);
    assert_eq!(app.fakes.stripe.made("/v1/account_links").len(), 2);

    // Not payable yet: still owed, nothing sent.
    deliver_connect(&app, &account_updated("evt_acct_1", &account, false))
        .await
        .assert_status(200);
    assert_eq!(
        outbox_of(&app, &office.admin, &job_id).await[0]["state"],
        "owed"
    );
    assert!(app.fakes.stripe.requests_to("/v1/transfers").is_empty());

    // Payable: the owed payout goes out, once.
    deliver_connect(&app, &account_updated("evt_acct_2", &account, true))
        .await
        .assert_status(200);
    let requests = app.fakes.stripe.await_requests("/v1/transfers", 1).await;
    assert_eq!(requests[0].field("destination"), Some(account.as_str()));
    eventually(
        "the released payout is sent",
        || async { outbox_of(&app, &office.admin, &job_id).await[0].clone() },
        |entry| entry["state"] == "sent",
    )
    .await;
    assert_eq!(app.fakes.stripe.made("/v1/transfers").len(), 1);
}

async fn a_refused_refund_waits_for_a_dispatcher(backend: Backend) {
    let app = spawn_app_with(backend, payments_env()).await;
    let office = office(&app).await;
    let (job, _) = paid_job(&app, &office, "evt_paid").await;
    let job_id = id_of(&job);
    let total = job["total_cents"].as_i64().unwrap();

    // Stripe refuses the refund itself: no retry helps, a dispatcher must look.
    app.fakes.stripe.refuse_next("/v1/refunds", 1);
    app.post(
        &format!("/api/jobs/{job_id}/cancel"),
        Some(&office.customer),
        json!({}),
    )
    .await
    .assert_status(200);
    let failed = eventually(
        "the refused refund is listed as failed",
        || async {
            app.get("/api/admin/outbox?state=failed", Some(&office.admin))
                .await
                .assert_status(200)
                .clone()
        },
        |page| page["entries"].as_array().is_some_and(|e| e.len() == 1),
    )
    .await;
    let entry = &failed["entries"][0];
    assert_eq!(entry["job_id"], job_id.as_str());
    assert_eq!(entry["kind"], "refund");
    assert_eq!(entry["amount_cents"], total);
    assert_eq!(entry["attempts"], 1);
    assert!(
        entry["last_error"]
            .as_str()
            .unwrap()
            .contains("card_declined"),
        "{entry}"
    );
    assert!(app.fakes.stripe.made("/v1/refunds").is_empty());
    let entry_id = entry["id"].as_str().unwrap().to_owned();

    let retry = format!("/api/admin/outbox/{entry_id}/retry");
    app.post(&retry, Some(&office.customer), json!({}))
        .await
        .assert_error(403, "forbidden");
    let retried = app.post(&retry, Some(&office.admin), json!({})).await;
    assert_eq!(retried.assert_status(200)["state"], "pending");
    let requests = app.fakes.stripe.await_requests("/v1/refunds", 2).await;
    // Stripe would repeat its refusal for the old key: the retry carries a new one.
    assert_ne!(requests[0].idempotency_key, requests[1].idempotency_key);
    eventually(
        "the retried refund is sent",
        || job_as(&app, &office.customer, &job_id),
        |job| job["payment"]["refunds"][0]["state"] == "sent",
    )
    .await;
    assert_eq!(app.fakes.stripe.made("/v1/refunds").len(), 1);
    // Retrying what is not failed: 404.
    app.post(&retry, Some(&office.admin), json!({}))
        .await
        .assert_error(404, "not_found");
}

async fn a_job_paid_after_it_was_completed_still_pays_its_driver(backend: Backend) {
    let app = spawn_app_with(backend, payments_env()).await;
    let mut office = office(&app).await;
    let driver = office.driver(&app, true).await;
    let account = payable_account(&app, &driver.token, "evt_account_ok").await;
    let (job, job_id, total, pi) = booked_unpaid(&app, &office).await;
    // A dispatcher starts the job before the payment is in (a webhook outage, say).
    app.post(
        &format!("/api/jobs/{job_id}/status"),
        Some(&office.admin),
        json!({ "status": "dispatching" }),
    )
    .await
    .assert_status(200);
    assign(&app, &office, &job_id, &driver.id).await;
    work_through(&app, &driver.token, &job_id).await;
    assert!(outbox_of(&app, &office.admin, &job_id).await.is_empty());

    let paid = deliver(&app, &succeeded("evt_paid_late", &pi, &job_id, total)).await;
    assert_eq!(
        paid.assert_status(200)["outcome"],
        "applied: payment recorded; job completed, payout queued"
    );
    let requests = app.fakes.stripe.await_requests("/v1/transfers", 1).await;
    assert_eq!(requests[0].field("destination"), Some(account.as_str()));
    assert_eq!(
        requests[0].field("amount"),
        Some(job["driver_payout_cents"].to_string().as_str())
    );
    assert_eq!(
        job_as(&app, &office.customer, &job_id).await["status"],
        "completed"
    );
}

/// Refusals that need no second database.
#[actix_web::test]
async fn bad_payment_requests_get_clear_errors() {
    let app = spawn_app_with(Backend::Sqlite, payments_env()).await;
    let mut office = office(&app).await;
    let job = office.book(&app, DOWNTOWN_MIAMI).await;
    let job_id = id_of(&job);
    let path = format!("/api/jobs/{job_id}/payment-intent");

    app.post(&path, None, json!({}))
        .await
        .assert_error(401, "unauthorized");
    let driver = office.driver(&app, true).await;
    app.post(&path, Some(&driver.token), json!({}))
        .await
        .assert_error(403, "forbidden");
    app.post(&path, Some(&office.admin), json!({}))
        .await
        .assert_error(403, "forbidden");
    let stranger = app.token_for(&uuid::Uuid::new_v4().to_string(), "customer");
    app.post(&path, Some(&stranger), json!({}))
        .await
        .assert_error(404, "not_found");
    app.post(
        "/api/jobs/not-a-uuid/payment-intent",
        Some(&office.customer),
        json!({}),
    )
    .await
    .assert_error(400, "bad_request");
    assert!(
        app.fakes
            .stripe
            .requests_to("/v1/payment_intents")
            .is_empty()
    );

    // Stripe down: 503, and the next try works with the same key.
    app.fakes.stripe.fail_next("/v1/payment_intents", 1);
    app.post(&path, Some(&office.customer), json!({}))
        .await
        .assert_error(503, "unavailable");
    app.post(&path, Some(&office.customer), json!({}))
        .await
        .assert_status(200);
    let requests = app.fakes.stripe.requests_to("/v1/payment_intents");
    assert_eq!(requests[0].idempotency_key, requests[1].idempotency_key);

    app.post(
        "/api/drivers/me/connect-account",
        Some(&office.customer),
        json!({}),
    )
    .await
    .assert_error(403, "forbidden");
    app.get("/api/admin/outbox", Some(&office.customer))
        .await
        .assert_error(403, "forbidden");
    app.get("/api/admin/outbox?state=lost", Some(&office.admin))
        .await
        .assert_error(400, "bad_request");
    let nothing = uuid::Uuid::new_v4();
    app.post(
        &format!("/api/admin/outbox/{nothing}/retry"),
        Some(&office.admin),
        json!({}),
    )
    .await
    .assert_error(404, "not_found");

    // Bytes that are not UTF-8 cannot be a signed event.
    app.post_raw(
        "/api/webhooks/stripe",
        "application/json",
        vec![0xff_u8, 0xfe],
    )
    .await
    .assert_error(400, "bad_request");
}

/// With no Stripe key, payments are off: jobs dispatch at once and payment calls say so.
#[actix_web::test]
async fn with_payments_off_jobs_dispatch_at_once() {
    let app = spawn_app_with(Backend::Sqlite, crate::dispatch::env()).await;
    let office = office(&app).await;
    let job = office.book(&app, DOWNTOWN_MIAMI).await;
    assert_eq!(job["status"], "dispatching");
    let job_id = id_of(&job);
    payment_intent(&app, &office.customer, &job_id)
        .await
        .assert_error(503, "unavailable");
    assert_eq!(
        job_as(&app, &office.customer, &job_id).await["payment"],
        Value::Null
    );
    // Nothing was paid, so there is no refund to choose.
    app.post(
        &format!("/api/jobs/{job_id}/cancel"),
        Some(&office.admin),
        json!({ "refund_cents": 100 }),
    )
    .await
    .assert_error(400, "bad_request");
    let payload = succeeded("evt_x", "pi_x", &job_id, 100).to_string();
    deliver_raw(&app, &payload, WEBHOOK_SECRET, app.clock.now().timestamp())
        .await
        .assert_error(503, "unavailable");
}
