//! Twilio's Messages API: `POST {base}/2010-04-01/Accounts/{sid}/Messages.json`, form `To`,
//! `From`, `Body`, basic auth `sid:token`.

use async_trait::async_trait;
use secrecy::ExposeSecret;
use umuve_actors::outbound::{DeliveryError, Sms, SmsTransport};

use crate::config::TwilioSettings;

pub struct TwilioSms {
    http: reqwest::Client,
    settings: TwilioSettings,
}

impl TwilioSms {
    pub fn new(http: reqwest::Client, settings: TwilioSettings) -> Self {
        Self { http, settings }
    }

    fn messages_url(&self) -> String {
        format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            self.settings.api_base.as_str().trim_end_matches('/'),
            self.settings.account_sid
        )
    }
}

#[async_trait]
impl SmsTransport for TwilioSms {
    fn provider(&self) -> &'static str {
        "twilio"
    }

    async fn send(&self, sms: &Sms) -> Result<(), DeliveryError> {
        let response = self
            .http
            .post(self.messages_url())
            .basic_auth(
                &self.settings.account_sid,
                Some(self.settings.auth_token.expose_secret()),
            )
            .form(&[
                ("To", sms.to.as_str()),
                ("From", self.settings.from_number.as_str()),
                ("Body", sms.body.as_str()),
            ])
            .send()
            .await;
        super::outcome("twilio", response).await
    }
}
