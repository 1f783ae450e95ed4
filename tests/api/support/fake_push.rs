//! The fake push transport: a2 cannot reach a local server, so the engine's push seam is
//! replaced by this recorder. It builds each payload with a2 exactly as the real transport does
//! (the tests read it as JSON) and can answer with a2's own error values, mapped by the engine's
//! own `classify`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use a2::request::payload::PayloadLike;
use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::{Mutex, mpsc};
use umuve_actors::outbound::{Push, PushApp, PushError, PushTransport};
use umuve_dispatch::integrations::apns::{classify, payload};

pub const CUSTOMER_TOPIC: &str = "com.goumuve.app";
pub const DRIVER_TOPIC: &str = "com.goumuve.pro";

/// How long a test waits for a push before failing.
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// A push as APNs would have received it.
#[derive(Debug, Clone)]
pub struct ReceivedPush {
    pub token: String,
    pub topic: String,
    /// The a2 payload as JSON: `aps.alert.title`, `aps.alert.body`, `aps.badge`, `aps.sound`,
    /// `job_id`, `offer_id`.
    pub payload: Value,
}

impl ReceivedPush {
    pub fn title(&self) -> &str {
        self.payload["aps"]["alert"]["title"]
            .as_str()
            .unwrap_or_default()
    }

    pub fn body(&self) -> &str {
        self.payload["aps"]["alert"]["body"]
            .as_str()
            .unwrap_or_default()
    }
}

pub struct FakePush {
    delivered: mpsc::UnboundedSender<ReceivedPush>,
    received: Mutex<mpsc::UnboundedReceiver<ReceivedPush>>,
    /// Refusals to answer per token, in order.
    scripted: std::sync::Mutex<HashMap<String, VecDeque<a2::Error>>>,
    /// Every attempt per token, answered or not.
    attempts: std::sync::Mutex<HashMap<String, u32>>,
}

impl Default for FakePush {
    fn default() -> Self {
        let (delivered, received) = mpsc::unbounded_channel();
        Self {
            delivered,
            received: Mutex::new(received),
            scripted: Default::default(),
            attempts: Default::default(),
        }
    }
}

impl FakePush {
    /// The next push that went out.
    pub async fn next_push(&self) -> ReceivedPush {
        tokio::time::timeout(PUSH_TIMEOUT, self.received.lock().await.recv())
            .await
            .expect("a push went out in time")
            .expect("the fake push transport is alive")
    }

    /// Pushes received so far and not yet taken.
    pub async fn drain(&self) -> Vec<ReceivedPush> {
        let mut received = self.received.lock().await;
        std::iter::from_fn(|| received.try_recv().ok()).collect()
    }

    /// The next push to `token` is answered with `error` (a2's own value).
    pub fn refuse_next(&self, token: &str, error: a2::Error) {
        self.scripted
            .lock()
            .unwrap()
            .entry(token.to_owned())
            .or_default()
            .push_back(error);
    }

    /// How many times the engine tried to push to `token`.
    pub fn attempts_to(&self, token: &str) -> u32 {
        self.attempts
            .lock()
            .unwrap()
            .get(token)
            .copied()
            .unwrap_or(0)
    }
}

/// The transport the engine is given.
pub struct FakePushTransport(pub Arc<FakePush>);

#[async_trait]
impl PushTransport for FakePushTransport {
    fn provider(&self) -> &'static str {
        "apns"
    }

    async fn send(&self, push: &Push) -> Result<(), PushError> {
        let fake = &self.0;
        *fake
            .attempts
            .lock()
            .unwrap()
            .entry(push.token.clone())
            .or_default() += 1;
        let topic = match push.app {
            PushApp::Customer => CUSTOMER_TOPIC,
            PushApp::Driver => DRIVER_TOPIC,
        };
        let built = payload(push, topic).map_err(classify)?;
        let scripted = fake
            .scripted
            .lock()
            .unwrap()
            .get_mut(&push.token)
            .and_then(VecDeque::pop_front);
        if let Some(error) = scripted {
            return Err(classify(error));
        }
        let json = built
            .to_json_string()
            .map_err(|e| PushError::Refused(e.to_string()))?;
        let _ = fake.delivered.send(ReceivedPush {
            token: push.token.clone(),
            topic: topic.to_owned(),
            payload: serde_json::from_str(&json).expect("a2 builds JSON"),
        });
        Ok(())
    }
}
