//! SendGrid v3: `POST {base}/v3/mail/send` with a bearer key and a JSON message.

use async_trait::async_trait;
use secrecy::ExposeSecret;
use serde_json::json;
use umuve_actors::outbound::{DeliveryError, Email, EmailTransport};

use crate::config::EmailProviderSettings;

pub struct SendGridEmail {
    http: reqwest::Client,
    settings: EmailProviderSettings,
    from: String,
}

impl SendGridEmail {
    pub fn new(http: reqwest::Client, settings: EmailProviderSettings, from: String) -> Self {
        Self {
            http,
            settings,
            from,
        }
    }
}

#[async_trait]
impl EmailTransport for SendGridEmail {
    fn provider(&self) -> &'static str {
        "sendgrid"
    }

    async fn send(&self, email: &Email) -> Result<(), DeliveryError> {
        let url = format!(
            "{}/v3/mail/send",
            self.settings.api_base.as_str().trim_end_matches('/')
        );
        let (from_name, from_address) = super::split_mailbox(&self.from);
        let mut from = json!({ "email": from_address });
        if let Some(name) = from_name {
            from["name"] = json!(name);
        }
        let response = self
            .http
            .post(url)
            .bearer_auth(self.settings.api_key.expose_secret())
            .json(&json!({
                "personalizations": [{ "to": [{ "email": email.to }] }],
                "from": from,
                "subject": email.subject,
                "content": [
                    { "type": "text/plain", "value": email.text },
                    { "type": "text/html", "value": email.html },
                ],
            }))
            .send()
            .await;
        super::outcome("sendgrid", response).await
    }
}
