//! APNs through a2: token authentication with the `.p8` key at `APNS_AUTH_KEY_PATH`
//! (`APNS_KEY_ID`, `APNS_TEAM_ID`), topic `APNS_BUNDLE_ID` (customer app) or
//! `APNS_DRIVER_BUNDLE_ID` (driver app), endpoint `production` or `sandbox`.
//!
//! a2 cannot be pointed at a local server, so what is ours is kept apart and tested on its own:
//! the payload a2 builds from a [`Push`] ([`payload`]) and how APNs's answers map to what the
//! engine does ([`classify`]: 410 `Unregistered` and 400 `BadDeviceToken` remove the token).

use std::fs::File;
use std::path::Path;

use a2::{
    Client, ClientConfig, DefaultNotificationBuilder, Endpoint, ErrorReason, NotificationBuilder,
    NotificationOptions, Priority, PushType,
};
use async_trait::async_trait;
use umuve_actors::outbound::{Push, PushApp, PushError, PushTransport};

use crate::config::{ApnsEndpoint, ApnsSettings};

/// How long one push may take.
const REQUEST_TIMEOUT_SECS: u64 = 10;

/// The a2 payload of `push` for `topic`: alert (title, body), badge, sound, and the custom data
/// `job_id` / `offer_id` the app opens.
pub fn payload<'a>(
    push: &'a Push,
    topic: &'a str,
) -> Result<a2::request::payload::Payload<'a>, a2::Error> {
    let mut builder = DefaultNotificationBuilder::new()
        .set_title(&push.title)
        .set_body(&push.body);
    if let Some(badge) = push.badge {
        builder = builder.set_badge(badge);
    }
    if let Some(sound) = &push.sound {
        builder = builder.set_sound(sound);
    }
    let options = NotificationOptions {
        apns_topic: Some(topic),
        apns_push_type: Some(PushType::Alert),
        apns_priority: Some(Priority::High),
        ..Default::default()
    };
    let mut payload = builder.build(&push.token, options);
    if let Some(job) = &push.job_id {
        payload.add_custom_data("job_id", job)?;
    }
    if let Some(offer) = &push.offer_id {
        payload.add_custom_data("offer_id", offer)?;
    }
    Ok(payload)
}

/// What an a2 failure means for the engine.
pub fn classify(error: a2::Error) -> PushError {
    match error {
        a2::Error::ResponseError(response) => {
            let reason = response.error.as_ref().map(|e| &e.reason);
            match (response.code, reason) {
                (410, _) | (_, Some(ErrorReason::Unregistered | ErrorReason::BadDeviceToken)) => {
                    PushError::TokenGone
                }
                (429, _) | (500.., _) => {
                    PushError::Temporary(format!("APNs answered {}: {reason:?}", response.code))
                }
                (code, reason) => PushError::Refused(format!("APNs answered {code}: {reason:?}")),
            }
        }
        a2::Error::ConnectionError(_)
        | a2::Error::ClientError(_)
        | a2::Error::RequestTimeout(_) => PushError::Temporary(error.to_string()),
        other => PushError::Refused(other.to_string()),
    }
}

/// Pushes through Apple's servers.
pub struct ApnsTransport {
    client: Client,
    customer_topic: String,
    driver_topic: String,
}

impl ApnsTransport {
    /// A client for the configured key; `None` when APNs is not configured (no key id, team,
    /// key file or bundle ids).
    pub fn from_settings(settings: &ApnsSettings) -> anyhow::Result<Option<Self>> {
        let (Some(key_id), Some(team_id), Some(path), Some(customer), Some(driver)) = (
            &settings.key_id,
            &settings.team_id,
            &settings.auth_key_path,
            &settings.bundle_id,
            &settings.driver_bundle_id,
        ) else {
            return Ok(None);
        };
        let endpoint = match settings.endpoint {
            ApnsEndpoint::Production => Endpoint::Production,
            ApnsEndpoint::Sandbox => Endpoint::Sandbox,
        };
        Self::with_key(path, key_id, team_id, endpoint, customer, driver).map(Some)
    }

    fn with_key(
        path: &Path,
        key_id: &str,
        team_id: &str,
        endpoint: Endpoint,
        customer_topic: &str,
        driver_topic: &str,
    ) -> anyhow::Result<Self> {
        use anyhow::Context;
        let key = File::open(path)
            .with_context(|| format!("cannot read APNS_AUTH_KEY_PATH {}", path.display()))?;
        let config = ClientConfig {
            endpoint,
            request_timeout_secs: Some(REQUEST_TIMEOUT_SECS),
            ..ClientConfig::default()
        };
        let client = Client::token(key, key_id, team_id, config).with_context(|| {
            format!(
                "APNS_AUTH_KEY_PATH {} is not an APNs .p8 key",
                path.display()
            )
        })?;
        Ok(Self {
            client,
            customer_topic: customer_topic.to_owned(),
            driver_topic: driver_topic.to_owned(),
        })
    }

    fn topic(&self, app: PushApp) -> &str {
        match app {
            PushApp::Customer => &self.customer_topic,
            PushApp::Driver => &self.driver_topic,
        }
    }
}

#[async_trait]
impl PushTransport for ApnsTransport {
    fn provider(&self) -> &'static str {
        "apns"
    }

    async fn send(&self, push: &Push) -> Result<(), PushError> {
        let payload = payload(push, self.topic(push.app)).map_err(classify)?;
        self.client
            .send(payload)
            .await
            .map(|_| ())
            .map_err(classify)
    }
}

#[cfg(test)]
mod tests {
    use a2::request::payload::PayloadLike;
    use a2::{ErrorBody, Response};
    use serde_json::{Value, json};

    use super::*;

    fn offer_push() -> Push {
        Push {
            token: "ab".repeat(32),
            app: PushApp::Driver,
            title: "New pickup 1.2 km away".into(),
            body: "Single item, 1 Test Way. Open to accept.".into(),
            badge: Some(1),
            sound: Some("default".into()),
            job_id: Some("4d6c6c1e-0000-4000-8000-000000000001".into()),
            offer_id: Some("4d6c6c1e-0000-4000-8000-000000000002".into()),
        }
    }

    #[test]
    fn the_payload_is_built_by_a2_with_alert_badge_sound_and_ids() {
        let push = offer_push();
        let payload = payload(&push, "com.goumuve.pro").unwrap();
        assert_eq!(payload.device_token, push.token);
        assert_eq!(payload.options.apns_topic, Some("com.goumuve.pro"));
        let json: Value = serde_json::from_str(&payload.to_json_string().unwrap()).unwrap();
        assert_eq!(
            json,
            json!({
                "aps": {
                    "alert": {
                        "title": "New pickup 1.2 km away",
                        "body": "Single item, 1 Test Way. Open to accept."
                    },
                    "badge": 1,
                    "sound": "default",
                    "mutable-content": 0
                },
                "job_id": "4d6c6c1e-0000-4000-8000-000000000001",
                "offer_id": "4d6c6c1e-0000-4000-8000-000000000002"
            })
        );
    }

    #[test]
    fn a_push_without_ids_carries_no_custom_data() {
        let push = Push {
            badge: None,
            sound: None,
            job_id: None,
            offer_id: None,
            ..offer_push()
        };
        let json: Value = serde_json::from_str(
            &payload(&push, "com.goumuve.app")
                .unwrap()
                .to_json_string()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(json.as_object().unwrap().len(), 1, "{json}");
        assert!(json["aps"].get("badge").is_none(), "{json}");
    }

    fn refusal(code: u16, reason: Option<ErrorReason>) -> a2::Error {
        a2::Error::ResponseError(Response {
            error: reason.map(|reason| ErrorBody {
                reason,
                timestamp: None,
            }),
            apns_id: None,
            code,
        })
    }

    #[test]
    fn dead_tokens_are_recognised_and_the_rest_classified() {
        assert_eq!(
            classify(refusal(410, Some(ErrorReason::Unregistered))),
            PushError::TokenGone
        );
        assert_eq!(
            classify(refusal(400, Some(ErrorReason::BadDeviceToken))),
            PushError::TokenGone
        );
        assert!(matches!(
            classify(refusal(429, Some(ErrorReason::TooManyRequests))),
            PushError::Temporary(_)
        ));
        assert!(matches!(
            classify(refusal(503, Some(ErrorReason::ServiceUnavailable))),
            PushError::Temporary(_)
        ));
        assert!(matches!(
            classify(refusal(400, Some(ErrorReason::PayloadTooLarge))),
            PushError::Refused(_)
        ));
        assert!(matches!(
            classify(refusal(403, Some(ErrorReason::InvalidProviderToken))),
            PushError::Refused(_)
        ));
        assert!(matches!(
            classify(a2::Error::RequestTimeout(10)),
            PushError::Temporary(_)
        ));
    }

    #[test]
    fn a_configured_key_builds_a_client_and_a_missing_one_is_a_clear_error() {
        use aws_lc_rs::rand::SystemRandom;
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
        use base64::Engine;
        let der =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        let body = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        let pem = format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("AuthKey_TEST.p8");
        std::fs::write(&path, pem).unwrap();
        let settings = ApnsSettings {
            key_id: Some("KEY1234567".into()),
            team_id: Some("TEAM123456".into()),
            auth_key_path: Some(path.clone()),
            bundle_id: Some("com.goumuve.app".into()),
            driver_bundle_id: Some("com.goumuve.pro".into()),
            endpoint: ApnsEndpoint::Sandbox,
        };
        let transport = ApnsTransport::from_settings(&settings).unwrap().unwrap();
        assert_eq!(transport.topic(PushApp::Driver), "com.goumuve.pro");
        assert_eq!(transport.topic(PushApp::Customer), "com.goumuve.app");

        let unconfigured = ApnsSettings {
            key_id: None,
            ..settings.clone()
        };
        assert!(
            ApnsTransport::from_settings(&unconfigured)
                .unwrap()
                .is_none()
        );
        let missing = ApnsSettings {
            auth_key_path: Some(dir.path().join("missing.p8")),
            ..settings.clone()
        };
        let error = ApnsTransport::from_settings(&missing).err().unwrap();
        assert!(error.to_string().contains("missing.p8"), "{error}");
        std::fs::write(&path, "not a key").unwrap();
        let error = ApnsTransport::from_settings(&settings).err().unwrap();
        assert!(error.to_string().contains("not an APNs .p8 key"), "{error}");
    }
}
