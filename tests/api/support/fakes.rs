//! Fake Twilio, Resend, SendGrid, Stripe and Apple key-set servers: one real HTTP server on 127.0.0.1
//! that answers like the providers do, checks credentials, and hands every message it receives
//! to the test through a channel (so tests await messages instead of sleeping).

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine;
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};

use super::fake_push::FakePush;
use super::fake_stripe::{self, FakeStripe};

pub const TWILIO_SID: &str = "AC00000000000000000000000000000001";
pub const TWILIO_TOKEN: &str = "twilio-test-token";
pub const TWILIO_FROM: &str = "+13055550199";
pub const RESEND_KEY: &str = "re_test_key";
pub const SENDGRID_KEY: &str = "SG.test_key";

/// How long a test waits for a message before failing.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct ReceivedSms {
    pub to: String,
    pub from: String,
    pub body: String,
}

impl ReceivedSms {
    /// The 6-digit code in the message.
    pub fn code(&self) -> String {
        self.body
            .split(|c: char| !c.is_ascii_digit())
            .find(|run| run.len() == 6)
            .unwrap_or_else(|| panic!("no code in SMS {:?}", self.body))
            .to_owned()
    }
}

#[derive(Debug, Clone)]
pub struct ReceivedEmail {
    pub provider: &'static str,
    pub to: String,
    pub from: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl ReceivedEmail {
    /// The `token` parameter of the reset link in the message.
    pub fn reset_token(&self) -> String {
        let link = self
            .text
            .split_whitespace()
            .find(|word| word.starts_with("http"))
            .unwrap_or_else(|| panic!("no link in email {:?}", self.text));
        let url = url::Url::parse(link).unwrap();
        url.query_pairs()
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_else(|| panic!("no token in {link}"))
    }
}

struct State {
    /// Login codes.
    sms: mpsc::UnboundedSender<ReceivedSms>,
    /// Every other SMS (job notifications).
    notification_sms: mpsc::UnboundedSender<ReceivedSms>,
    emails: mpsc::UnboundedSender<ReceivedEmail>,
    twilio_failures_left: AtomicU32,
    twilio_requests: AtomicU32,
    resend_failures_left: AtomicU32,
    sendgrid_failures_left: AtomicU32,
    resend_requests: AtomicU32,
    sendgrid_requests: AtomicU32,
    /// While set, Twilio holds each request until released (a provider that takes its time).
    twilio_gate: tokio::sync::watch::Sender<bool>,
    /// Told when a request reached Twilio, before it is answered.
    twilio_started: mpsc::UnboundedSender<()>,
    jwks: std::sync::Mutex<Value>,
    jwks_fetches: AtomicU32,
}

/// The fake Stripe as the server's shared state.
pub struct SharedStripe(pub Arc<FakeStripe>);

pub struct FakeServices {
    pub base_url: String,
    pub stripe: Arc<FakeStripe>,
    /// The push transport the test engines are given.
    pub push: Arc<FakePush>,
    state: Arc<State>,
    sms: Mutex<mpsc::UnboundedReceiver<ReceivedSms>>,
    notification_sms: Mutex<mpsc::UnboundedReceiver<ReceivedSms>>,
    twilio_started: Mutex<mpsc::UnboundedReceiver<()>>,
    emails: Mutex<mpsc::UnboundedReceiver<ReceivedEmail>>,
    handle: ServerHandle,
}

/// Counts one planned failure down; true when this request should fail.
fn take_failure(failures_left: &AtomicU32) -> bool {
    failures_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

fn bearer_is(req: &HttpRequest, key: &str) -> bool {
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {key}"))
}

async fn twilio_messages(
    state: web::Data<State>,
    req: HttpRequest,
    sid: web::Path<String>,
    form: web::Form<std::collections::HashMap<String, String>>,
) -> HttpResponse {
    state.twilio_requests.fetch_add(1, Ordering::SeqCst);
    let _ = state.twilio_started.send(());
    let mut gate = state.twilio_gate.subscribe();
    let _ = gate.wait_for(|held| !held).await;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{TWILIO_SID}:{TWILIO_TOKEN}"))
    );
    let authorized = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == expected);
    if !authorized || sid.as_str() != TWILIO_SID {
        return HttpResponse::Unauthorized()
            .json(json!({"code": 20003, "message": "Authenticate"}));
    }
    if take_failure(&state.twilio_failures_left) {
        return HttpResponse::InternalServerError().json(json!({"message": "fake outage"}));
    }
    let (Some(to), Some(from), Some(body)) = (form.get("To"), form.get("From"), form.get("Body"))
    else {
        return HttpResponse::BadRequest()
            .json(json!({"code": 21604, "message": "missing parameter"}));
    };
    let received = ReceivedSms {
        to: to.clone(),
        from: from.clone(),
        body: body.clone(),
    };
    // Login codes and notifications wait in separate queues, so a test signing in is not
    // handed a booking confirmation.
    let _ = if body.starts_with("Your Umuve code is") {
        state.sms.send(received)
    } else {
        state.notification_sms.send(received)
    };
    HttpResponse::Created()
        .json(json!({"sid": "SM00000000000000000000000000000001", "status": "queued"}))
}

async fn resend_emails(
    state: web::Data<State>,
    req: HttpRequest,
    body: web::Json<Value>,
) -> HttpResponse {
    if !bearer_is(&req, RESEND_KEY) {
        return HttpResponse::Unauthorized().json(json!({"message": "invalid api key"}));
    }
    state.resend_requests.fetch_add(1, Ordering::SeqCst);
    if take_failure(&state.resend_failures_left) {
        return HttpResponse::InternalServerError().json(json!({"message": "fake outage"}));
    }
    let _ = state.emails.send(ReceivedEmail {
        provider: "resend",
        to: body["to"][0].as_str().unwrap_or_default().to_owned(),
        from: body["from"].as_str().unwrap_or_default().to_owned(),
        subject: body["subject"].as_str().unwrap_or_default().to_owned(),
        text: body["text"].as_str().unwrap_or_default().to_owned(),
        html: body["html"].as_str().unwrap_or_default().to_owned(),
    });
    HttpResponse::Ok().json(json!({"id": "re_123"}))
}

async fn sendgrid_send(
    state: web::Data<State>,
    req: HttpRequest,
    body: web::Json<Value>,
) -> HttpResponse {
    if !bearer_is(&req, SENDGRID_KEY) {
        return HttpResponse::Unauthorized().json(json!({"errors": [{"message": "bad key"}]}));
    }
    state.sendgrid_requests.fetch_add(1, Ordering::SeqCst);
    if take_failure(&state.sendgrid_failures_left) {
        return HttpResponse::ServiceUnavailable().finish();
    }
    let content = |kind: &str| {
        body["content"]
            .as_array()
            .and_then(|parts| parts.iter().find(|p| p["type"] == kind))
            .and_then(|p| p["value"].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let _ = state.emails.send(ReceivedEmail {
        provider: "sendgrid",
        to: body["personalizations"][0]["to"][0]["email"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        from: body["from"]["email"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        subject: body["subject"].as_str().unwrap_or_default().to_owned(),
        text: content("text/plain"),
        html: content("text/html"),
    });
    HttpResponse::Accepted().finish()
}

async fn apple_keys(state: web::Data<State>) -> HttpResponse {
    state.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let keys = state.jwks.lock().unwrap().clone();
    HttpResponse::Ok().json(keys)
}

impl FakeServices {
    pub async fn start() -> Self {
        let (sms_tx, sms_rx) = mpsc::unbounded_channel();
        let (notification_sms_tx, notification_sms_rx) = mpsc::unbounded_channel();
        let (email_tx, email_rx) = mpsc::unbounded_channel();
        let (started_tx, started_rx) = mpsc::unbounded_channel();
        let state = Arc::new(State {
            resend_requests: AtomicU32::new(0),
            sendgrid_requests: AtomicU32::new(0),
            twilio_gate: tokio::sync::watch::Sender::new(false),
            twilio_started: started_tx,
            sms: sms_tx,
            notification_sms: notification_sms_tx,
            emails: email_tx,
            twilio_failures_left: AtomicU32::new(0),
            twilio_requests: AtomicU32::new(0),
            resend_failures_left: AtomicU32::new(0),
            sendgrid_failures_left: AtomicU32::new(0),
            jwks: std::sync::Mutex::new(json!({"keys": []})),
            jwks_fetches: AtomicU32::new(0),
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let data = web::Data::from(state.clone());
        let stripe = Arc::new(FakeStripe::default());
        let stripe_data = web::Data::new(SharedStripe(stripe.clone()));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(stripe_data.clone())
                .route("/v1/{resource}", web::post().to(fake_stripe::create))
                .route("/v1/{resource}", web::get().to(fake_stripe::list))
                .route(
                    "/2010-04-01/Accounts/{sid}/Messages.json",
                    web::post().to(twilio_messages),
                )
                .route("/emails", web::post().to(resend_emails))
                .route("/v3/mail/send", web::post().to(sendgrid_send))
                .route("/auth/keys", web::get().to(apple_keys))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self {
            base_url,
            stripe,
            push: Arc::new(FakePush::default()),
            state,
            sms: Mutex::new(sms_rx),
            notification_sms: Mutex::new(notification_sms_rx),
            twilio_started: Mutex::new(started_rx),
            emails: Mutex::new(email_rx),
            handle,
        }
    }

    /// The next login-code SMS Twilio accepted.
    pub async fn next_sms(&self) -> ReceivedSms {
        tokio::time::timeout(MESSAGE_TIMEOUT, self.sms.lock().await.recv())
            .await
            .expect("an SMS reached the fake Twilio in time")
            .expect("the fake Twilio is running")
    }

    /// The next email Resend or SendGrid accepted.
    pub async fn next_email(&self) -> ReceivedEmail {
        tokio::time::timeout(MESSAGE_TIMEOUT, self.emails.lock().await.recv())
            .await
            .expect("an email reached a fake provider in time")
            .expect("the fake providers are running")
    }

    /// Twilio answers 500 to the next `n` requests.
    pub fn fail_twilio_times(&self, n: u32) {
        self.state.twilio_failures_left.store(n, Ordering::SeqCst);
    }

    pub fn twilio_requests(&self) -> u32 {
        self.state.twilio_requests.load(Ordering::SeqCst)
    }

    /// The next SMS other than a login code that Twilio accepted.
    pub async fn next_notification_sms(&self) -> ReceivedSms {
        tokio::time::timeout(MESSAGE_TIMEOUT, self.notification_sms.lock().await.recv())
            .await
            .expect("an SMS reached the fake Twilio in time")
            .expect("the fake Twilio is running")
    }

    /// SMS other than login codes accepted so far and not yet taken.
    pub async fn drain_notification_sms(&self) -> Vec<ReceivedSms> {
        let mut received = self.notification_sms.lock().await;
        std::iter::from_fn(|| received.try_recv().ok()).collect()
    }

    /// Emails accepted so far and not yet taken.
    pub async fn drain_emails(&self) -> Vec<ReceivedEmail> {
        let mut received = self.emails.lock().await;
        std::iter::from_fn(|| received.try_recv().ok()).collect()
    }

    /// Twilio holds every request from now on until [`Self::release_twilio`].
    pub fn hold_twilio(&self) {
        self.state.twilio_gate.send_replace(true);
    }

    pub fn release_twilio(&self) {
        self.state.twilio_gate.send_replace(false);
    }

    /// Waits until a request reaches Twilio (answered or held).
    pub async fn twilio_request_started(&self) {
        tokio::time::timeout(MESSAGE_TIMEOUT, self.twilio_started.lock().await.recv())
            .await
            .expect("a request reached the fake Twilio in time")
            .expect("the fake Twilio is running");
    }

    pub fn resend_requests(&self) -> u32 {
        self.state.resend_requests.load(Ordering::SeqCst)
    }

    pub fn sendgrid_requests(&self) -> u32 {
        self.state.sendgrid_requests.load(Ordering::SeqCst)
    }

    /// Resend answers 500 to the next `n` requests.
    pub fn fail_resend_times(&self, n: u32) {
        self.state.resend_failures_left.store(n, Ordering::SeqCst);
    }

    /// SendGrid answers 503 to the next `n` requests.
    pub fn fail_sendgrid_times(&self, n: u32) {
        self.state.sendgrid_failures_left.store(n, Ordering::SeqCst);
    }

    /// Serves this JWK set at `/auth/keys`.
    pub fn publish_apple_keys(&self, jwks: Value) {
        *self.state.jwks.lock().unwrap() = jwks;
    }

    pub fn apple_key_fetches(&self) -> u32 {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }
}

impl Drop for FakeServices {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}
