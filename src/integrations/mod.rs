//! HTTP clients of the outside services, each implementing a transport trait of the actors
//! crate: Twilio (SMS), Resend and SendGrid (email), APNs (push); and Stripe (payments).

use std::time::Duration;

use umuve_actors::outbound::DeliveryError;

pub mod apns;
pub mod resend;
pub mod sendgrid;
pub mod stripe;
pub mod twilio;

/// The one HTTP client of the engine (connection pools are per client).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .user_agent(concat!("umuve-dispatch/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client configuration is valid")
}

/// Classifies a provider's answer: 2xx is delivered; 408, 429 and 5xx are worth retrying;
/// any other status means the provider refused this message.
pub(crate) async fn outcome(
    provider: &str,
    response: Result<reqwest::Response, reqwest::Error>,
) -> Result<(), DeliveryError> {
    let response = response.map_err(|e| DeliveryError::Temporary(format!("{provider}: {e}")))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    // The provider's explanation helps operators; it never contains our credentials.
    let body: String = response
        .text()
        .await
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect();
    let description = format!("{provider} answered {status}: {body}");
    if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
        Err(DeliveryError::Temporary(description))
    } else {
        Err(DeliveryError::Rejected(description))
    }
}

/// Splits `Name <address>` into its parts; a bare address has no name.
pub(crate) fn split_mailbox(mailbox: &str) -> (Option<&str>, &str) {
    match (mailbox.find('<'), mailbox.rfind('>')) {
        (Some(open), Some(close)) if open < close => {
            let name = mailbox[..open].trim().trim_matches('"');
            (
                (!name.is_empty()).then_some(name),
                mailbox[open + 1..close].trim(),
            )
        }
        _ => (None, mailbox.trim()),
    }
}

#[cfg(test)]
mod tests {
    use super::split_mailbox;

    #[test]
    fn mailboxes_split_into_name_and_address() {
        assert_eq!(
            split_mailbox("Umuve <no-reply@goumuve.com>"),
            (Some("Umuve"), "no-reply@goumuve.com")
        );
        assert_eq!(
            split_mailbox("no-reply@goumuve.com"),
            (None, "no-reply@goumuve.com")
        );
        assert_eq!(
            split_mailbox("\"Umuve Ops\" <ops@goumuve.com>"),
            (Some("Umuve Ops"), "ops@goumuve.com")
        );
    }
}
