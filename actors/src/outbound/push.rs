//! Push notifications to the iOS apps. The provider sits behind [`PushTransport`]: the web
//! crate implements it over APNs (a2), tests with a fake that records what was sent and can
//! answer with APNs's own refusals. The [`Apns`] actor sends with a bound on pushes in flight
//! and forgets tokens APNs reports dead.

use std::sync::Arc;

use actix::{Actor, Context, Handler, Message, ResponseFuture};
use async_trait::async_trait;
use tokio::sync::Semaphore;

use super::SENDER_MAILBOX_CAPACITY;

/// Which app a device token belongs to; decides the APNs topic (bundle id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PushApp {
    /// `APNS_BUNDLE_ID`, the customer app.
    Customer,
    /// `APNS_DRIVER_BUNDLE_ID`, the driver app.
    Driver,
}

/// One notification to one device.
#[derive(Debug, Clone, PartialEq)]
pub struct Push {
    /// The APNs device token, lower-case hex.
    pub token: String,
    pub app: PushApp,
    pub title: String,
    pub body: String,
    pub badge: Option<u32>,
    /// A sound name from the app bundle, or `default`.
    pub sound: Option<String>,
    /// Custom data the app opens: the job, and the offer for offer pushes.
    pub job_id: Option<String>,
    pub offer_id: Option<String>,
}

/// Why a push did not go out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The token is dead for this app (APNs 410 `Unregistered`, 400 `BadDeviceToken`): remove it
    /// and push to it no more.
    #[error("the device token is no longer valid")]
    TokenGone,
    /// Worth trying again later: network, timeout, 429, 5xx.
    #[error("{0}")]
    Temporary(String),
    /// APNs refused this notification itself (payload, topic, credentials).
    #[error("{0}")]
    Refused(String),
}

/// Sends one push.
#[async_trait]
pub trait PushTransport: Send + Sync + 'static {
    fn provider(&self) -> &'static str;
    async fn send(&self, push: &Push) -> Result<(), PushError>;
}

/// Development without APNs credentials: says what would have been pushed.
pub struct LogOnlyPush;

#[async_trait]
impl PushTransport for LogOnlyPush {
    fn provider(&self) -> &'static str {
        "log"
    }

    async fn send(&self, push: &Push) -> Result<(), PushError> {
        tracing::info!(app = ?push.app, title = %push.title, body = %push.body, job = ?push.job_id, offer = ?push.offer_id, "push not sent: APNs is not configured");
        Ok(())
    }
}

/// Where device tokens are kept: a dead one is forgotten there.
#[async_trait]
pub trait DeviceTokens: Send + Sync + 'static {
    async fn forget(&self, token: &str) -> Result<(), String>;
}

/// How many pushes the [`Apns`] actor sends at once; further ones wait for a slot, so a slow
/// APNs holds back pushes only, never the caller's other work.
pub const MAX_PUSHES_IN_FLIGHT: usize = 64;

/// Sends pushes through its transport and forgets tokens APNs reports dead. The handler only
/// starts the send (a future off the actor), so the actor never waits on the network.
pub struct Apns {
    transport: Arc<dyn PushTransport>,
    tokens: Arc<dyn DeviceTokens>,
    in_flight: Arc<Semaphore>,
}

impl Apns {
    pub fn new(transport: Arc<dyn PushTransport>, tokens: Arc<dyn DeviceTokens>) -> Self {
        Self::with_limit(transport, tokens, MAX_PUSHES_IN_FLIGHT)
    }

    pub fn with_limit(
        transport: Arc<dyn PushTransport>,
        tokens: Arc<dyn DeviceTokens>,
        in_flight: usize,
    ) -> Self {
        Self {
            transport,
            tokens,
            in_flight: Arc::new(Semaphore::new(in_flight)),
        }
    }
}

impl Actor for Apns {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(SENDER_MAILBOX_CAPACITY);
    }
}

/// Send this push; the answer says whether it went out (the caller decides about retries).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), PushError>")]
pub struct SendPush(pub Push);

impl Handler<SendPush> for Apns {
    type Result = ResponseFuture<Result<(), PushError>>;

    fn handle(&mut self, SendPush(push): SendPush, _: &mut Self::Context) -> Self::Result {
        let transport = self.transport.clone();
        let tokens = self.tokens.clone();
        let in_flight = self.in_flight.clone();
        Box::pin(async move {
            let _slot = in_flight
                .acquire_owned()
                .await
                .map_err(|_| PushError::Temporary("the push sender is shutting down".into()))?;
            let result = transport.send(&push).await;
            if result == Err(PushError::TokenGone) {
                tracing::info!(app = ?push.app, "device token unregistered by APNs; forgotten");
                if let Err(error) = tokens.forget(&push.token).await {
                    tracing::warn!(%error, "could not forget a dead device token");
                }
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Answers from a script (then `Ok`) and records what it was asked to send.
    #[derive(Default)]
    struct ScriptedTransport {
        answers: Mutex<Vec<Result<(), PushError>>>,
        sent: Mutex<Vec<Push>>,
    }

    #[async_trait]
    impl PushTransport for ScriptedTransport {
        fn provider(&self) -> &'static str {
            "scripted"
        }

        async fn send(&self, push: &Push) -> Result<(), PushError> {
            self.sent.lock().unwrap().push(push.clone());
            self.answers.lock().unwrap().pop().unwrap_or(Ok(()))
        }
    }

    #[derive(Default)]
    struct Forgotten(Mutex<Vec<String>>);

    #[async_trait]
    impl DeviceTokens for Forgotten {
        async fn forget(&self, token: &str) -> Result<(), String> {
            self.0.lock().unwrap().push(token.to_owned());
            Ok(())
        }
    }

    fn push(token: &str) -> Push {
        Push {
            token: token.into(),
            app: PushApp::Driver,
            title: "New pickup".into(),
            body: "1 Test Way".into(),
            badge: None,
            sound: Some("default".into()),
            job_id: Some("job".into()),
            offer_id: Some("offer".into()),
        }
    }

    #[actix_rt::test]
    async fn a_dead_token_is_forgotten_and_others_are_kept() {
        let transport = Arc::new(ScriptedTransport::default());
        // Popped from the end: first a dead token, then an outage, then success.
        *transport.answers.lock().unwrap() = vec![
            Ok(()),
            Err(PushError::Temporary("503".into())),
            Err(PushError::TokenGone),
        ];
        let forgotten = Arc::new(Forgotten::default());
        let apns = Apns::new(transport.clone(), forgotten.clone()).start();

        let gone = apns.send(SendPush(push("dead"))).await.unwrap();
        assert_eq!(gone, Err(PushError::TokenGone));
        let outage = apns.send(SendPush(push("alive"))).await.unwrap();
        assert!(matches!(outage, Err(PushError::Temporary(_))));
        assert_eq!(apns.send(SendPush(push("alive"))).await.unwrap(), Ok(()));

        assert_eq!(*forgotten.0.lock().unwrap(), ["dead"]);
        let sent = transport.sent.lock().unwrap();
        assert_eq!(sent.len(), 3);
        assert_eq!(sent[0], push("dead"));
    }
}
