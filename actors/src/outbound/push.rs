//! Push notifications to the iOS apps. The provider sits behind [`PushTransport`]: the web
//! crate implements it over APNs (a2), tests with a fake that records what was sent and can
//! answer with APNs's own refusals.

use async_trait::async_trait;

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
