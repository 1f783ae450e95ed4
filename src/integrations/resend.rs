//! Resend: `POST {base}/emails` with a bearer key and a JSON message.

use async_trait::async_trait;
use secrecy::ExposeSecret;
use serde_json::json;
use umuve_actors::outbound::{DeliveryError, Email, EmailTransport};

use crate::config::EmailProviderSettings;

pub struct ResendEmail {
    http: reqwest::Client,
    settings: EmailProviderSettings,
    from: String,
}

impl ResendEmail {
    pub fn new(http: reqwest::Client, settings: EmailProviderSettings, from: String) -> Self {
        Self {
            http,
            settings,
            from,
        }
    }
}

#[async_trait]
impl EmailTransport for ResendEmail {
    fn provider(&self) -> &'static str {
        "resend"
    }

    async fn send(&self, email: &Email) -> Result<(), DeliveryError> {
        let url = format!(
            "{}/emails",
            self.settings.api_base.as_str().trim_end_matches('/')
        );
        let mut request = self
            .http
            .post(url)
            .bearer_auth(self.settings.api_key.expose_secret());
        if let Some(key) = &email.idempotency_key {
            // Resend keeps the key for 24 hours: a repeat after a lost answer is not sent twice.
            request = request.header("Idempotency-Key", key);
        }
        let response = request
            .json(&json!({
                "from": self.from,
                "to": [email.to],
                "subject": email.subject,
                "text": email.text,
                "html": email.html,
            }))
            .send()
            .await;
        super::outcome("resend", response).await
    }
}
