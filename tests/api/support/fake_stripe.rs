//! A fake Stripe API on the fake services' server: the endpoints the engine uses, answering
//! with Stripe's own example objects (tests/data/stripe, from Stripe's OpenAPI fixtures) with
//! the fields of the request filled in. Like Stripe, it checks the secret key and honours
//! `Idempotency-Key`: a repeated key gets the first answer and makes nothing new. Tests can make
//! it fail (500, as an outage before anything was made) or hold transfers (made, but the answer
//! never comes: the caller dies or times out waiting).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};
use tokio::sync::Notify;

pub const STRIPE_KEY: &str = "sk_test_fake_0123456789";
pub const WEBHOOK_SECRET: &str = "whsec_test_0123456789abcdef";
/// The Connect endpoint's own signing secret (connected accounts' events).
pub const CONNECT_WEBHOOK_SECRET: &str = "whsec_connect_test_0123456789";

const PAYMENT_INTENT: &str = include_str!("../../data/stripe/payment_intent.json");
const TRANSFER: &str = include_str!("../../data/stripe/transfer.json");
const REFUND: &str = include_str!("../../data/stripe/refund.json");
const ACCOUNT: &str = include_str!("../../data/stripe/account.json");
const ACCOUNT_LINK: &str = include_str!("../../data/stripe/account_link.json");
const ERROR: &str = include_str!("../../data/stripe/error.json");
pub const EVENT: &str = include_str!("../../data/stripe/event.json");

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct StripeRequest {
    /// e.g. `/v1/transfers`.
    pub path: String,
    pub idempotency_key: Option<String>,
    pub form: HashMap<String, String>,
}

impl StripeRequest {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form.get(name).map(String::as_str)
    }
}

#[derive(Default)]
struct Books {
    requests: Vec<StripeRequest>,
    /// Listings asked for (`GET`), as path and query.
    lookups: Vec<(String, HashMap<String, String>)>,
    /// Idempotency key → the answer given.
    answers: HashMap<String, (u16, Value)>,
    /// Objects made, by path: what a dashboard would list.
    made: HashMap<String, Vec<Value>>,
    fail_next: HashMap<String, u32>,
    refuse_next: HashMap<String, u32>,
    hold: bool,
    counter: u32,
}

#[derive(Default)]
pub struct FakeStripe {
    books: Mutex<Books>,
    /// Notified on every request, so tests await requests instead of sleeping.
    arrived: Notify,
    released: Notify,
}

fn fixture(raw: &str) -> Value {
    serde_json::from_str(raw).expect("a valid fixture")
}

/// Stripe's nested form fields (`metadata[job_id]`) as one map.
fn form_of(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

impl FakeStripe {
    /// Makes the object `path` asks for, from the request's fields.
    fn make(&self, books: &mut Books, path: &str, form: &HashMap<String, String>) -> Value {
        books.counter += 1;
        let n = books.counter;
        let get = |k: &str| form.get(k).cloned();
        let amount = |k: &str| {
            get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .map_or(Value::Null, Value::from)
        };
        let metadata: serde_json::Map<String, Value> = form
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix("metadata[")
                    .and_then(|k| k.strip_suffix(']'))
                    .map(|k| (k.to_owned(), Value::from(v.clone())))
            })
            .collect();
        let object = match path {
            "/v1/payment_intents" => {
                let mut pi = fixture(PAYMENT_INTENT);
                let id = format!("pi_fake{n:06}");
                pi["client_secret"] = json!(format!("{id}_secret_fake{n}"));
                pi["id"] = json!(id);
                pi["amount"] = amount("amount");
                pi["currency"] = json!(get("currency"));
                pi["metadata"] = Value::Object(metadata);
                pi["transfer_group"] = json!(get("transfer_group"));
                pi["status"] = json!("requires_payment_method");
                pi["last_payment_error"] = Value::Null;
                pi["canceled_at"] = Value::Null;
                pi
            }
            "/v1/transfers" => {
                let mut transfer = fixture(TRANSFER);
                transfer["id"] = json!(format!("tr_fake{n:06}"));
                transfer["amount"] = amount("amount");
                transfer["currency"] = json!(get("currency"));
                transfer["destination"] = json!(get("destination"));
                transfer["transfer_group"] = json!(get("transfer_group"));
                transfer["source_transaction"] = json!(get("source_transaction"));
                transfer["metadata"] = Value::Object(metadata);
                transfer
            }
            "/v1/refunds" => {
                let mut refund = fixture(REFUND);
                refund["id"] = json!(format!("re_fake{n:06}"));
                refund["amount"] = amount("amount");
                refund["payment_intent"] = json!(get("payment_intent"));
                refund["metadata"] = Value::Object(metadata);
                refund
            }
            "/v1/accounts" => {
                let mut account = fixture(ACCOUNT);
                account["id"] = json!(format!("acct_fake{n:06}"));
                account["type"] = json!(get("type"));
                account["email"] = json!(get("email"));
                account["metadata"] = Value::Object(metadata);
                account
            }
            "/v1/account_links" => {
                let mut link = fixture(ACCOUNT_LINK);
                link["url"] = json!(format!(
                    "https://connect.stripe.test/setup/{}/{n}",
                    get("account").unwrap_or_default()
                ));
                link
            }
            other => panic!("the fake Stripe does not make {other}"),
        };
        books
            .made
            .entry(path.to_owned())
            .or_default()
            .push(object.clone());
        object
    }

    /// Every request so far to `path`.
    pub fn requests_to(&self, path: &str) -> Vec<StripeRequest> {
        let books = self.books.lock().unwrap();
        books
            .requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Objects made at `path` (repeats with a known key make none).
    pub fn made(&self, path: &str) -> Vec<Value> {
        let books = self.books.lock().unwrap();
        books.made.get(path).cloned().unwrap_or_default()
    }

    /// Waits until `path` has received `count` requests.
    pub async fn await_requests(&self, path: &str, count: usize) -> Vec<StripeRequest> {
        let wait = async {
            loop {
                let arrived = self.arrived.notified();
                let requests = self.requests_to(path);
                if requests.len() >= count {
                    return requests;
                }
                arrived.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the fake Stripe got {} of {count} requests to {path} in time",
                    self.requests_to(path).len()
                )
            })
    }

    /// The next `n` requests to `path` fail with 500 before anything is made.
    pub fn fail_next(&self, path: &str, n: u32) {
        self.books
            .lock()
            .unwrap()
            .fail_next
            .insert(path.to_owned(), n);
    }

    /// The next `n` requests to `path` are refused (402, Stripe's card error). Like Stripe, the
    /// refusal is the saved answer for the request's idempotency key.
    pub fn refuse_next(&self, path: &str, n: u32) {
        self.books
            .lock()
            .unwrap()
            .refuse_next
            .insert(path.to_owned(), n);
    }

    /// Forgets every idempotency key, as Stripe does after 24 hours.
    pub fn forget_keys(&self) {
        self.books.lock().unwrap().answers.clear();
    }

    /// Listings of `path` asked for so far.
    pub fn lookups_of(&self, path: &str) -> usize {
        let books = self.books.lock().unwrap();
        books.lookups.iter().filter(|(p, _)| p == path).count()
    }

    /// Transfers are made but not answered until [`Self::release`].
    pub fn hold_transfers(&self) {
        self.books.lock().unwrap().hold = true;
    }

    pub fn release(&self) {
        self.books.lock().unwrap().hold = false;
        self.released.notify_waiters();
    }
}

/// Stripe's answer to a request without the secret key.
fn unauthorized(req: &HttpRequest) -> Option<HttpResponse> {
    let authorized = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {STRIPE_KEY}"));
    (!authorized).then(|| {
        HttpResponse::Unauthorized().json(json!({"error": {
            "type": "invalid_request_error", "message": "Invalid API Key provided"}}))
    })
}

/// `POST /v1/{resource}`.
pub async fn create(
    fake: web::Data<super::fakes::SharedStripe>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let fake = &fake.0;
    if let Some(refusal) = unauthorized(&req) {
        return refusal;
    }
    let path = req.path().to_owned();
    let key = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let form = form_of(&body);
    let (status, answer, hold) = {
        let mut books = fake.books.lock().unwrap();
        books.requests.push(StripeRequest {
            path: path.clone(),
            idempotency_key: key.clone(),
            form: form.clone(),
        });
        let failures = books.fail_next.entry(path.clone()).or_default();
        if *failures > 0 {
            *failures -= 1;
            (
                500,
                json!({"error": {"type": "api_error", "message": "fake outage"}}),
                false,
            )
        } else if let Some(answer) = key.as_ref().and_then(|k| books.answers.get(k)).cloned() {
            (answer.0, answer.1, false)
        } else if books.refuse_next.get(&path).is_some_and(|n| *n > 0) {
            *books.refuse_next.get_mut(&path).unwrap() -= 1;
            let refusal = fixture(ERROR);
            if let Some(key) = &key {
                books.answers.insert(key.clone(), (402, refusal.clone()));
            }
            (402, refusal, false)
        } else {
            let object = fake.make(&mut books, &path, &form);
            if let Some(key) = &key {
                books.answers.insert(key.clone(), (200, object.clone()));
            }
            (200, object, books.hold && path == "/v1/transfers")
        }
    };
    fake.arrived.notify_waiters();
    if hold {
        let released = fake.released.notified();
        let still_held = fake.books.lock().unwrap().hold;
        if still_held {
            released.await;
        }
    }
    let mut response = match status {
        200 => HttpResponse::Ok(),
        402 => HttpResponse::PaymentRequired(),
        _ => HttpResponse::InternalServerError(),
    };
    response.json(answer)
}

/// `GET /v1/{resource}`: a list of what was made, filtered like Stripe by `transfer_group`
/// (transfers) or `payment_intent` (refunds).
pub async fn list(
    fake: web::Data<super::fakes::SharedStripe>,
    req: HttpRequest,
    query: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    let fake = &fake.0;
    if let Some(refusal) = unauthorized(&req) {
        return refusal;
    }
    let path = req.path().to_owned();
    let query = query.into_inner();
    let data: Vec<Value> = {
        let mut books = fake.books.lock().unwrap();
        books.lookups.push((path.clone(), query.clone()));
        books
            .made
            .get(&path)
            .into_iter()
            .flatten()
            .filter(|object| {
                ["transfer_group", "payment_intent"].iter().all(|field| {
                    query
                        .get(*field)
                        .is_none_or(|wanted| object[*field].as_str() == Some(wanted.as_str()))
                })
            })
            .cloned()
            .collect()
    };
    fake.arrived.notify_waiters();
    HttpResponse::Ok().json(json!({
        "object": "list", "data": data, "has_more": false, "url": path,
    }))
}
