use std::sync::Arc;

use actix::{Actor, AsyncContext, Context, Handler, Message, ResponseFuture, WrapFuture};
use async_trait::async_trait;
use tokio::sync::Semaphore;

use super::{DeliveryError, MAX_DELIVERIES_IN_FLIGHT, RetryPolicy, SENDER_MAILBOX_CAPACITY};

/// What an email carries; decides what may be logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailKind {
    /// Holds a password-reset link: a secret, never logged in production.
    PasswordReset,
    /// Confirmations, receipts, reminders.
    Notification,
}

/// One email to one address, in text and HTML.
#[derive(Clone)]
pub struct Email {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub kind: EmailKind,
    /// The same key on a repeated attempt lets a provider that supports it (Resend) deliver the
    /// message once.
    pub idempotency_key: Option<String>,
}

impl std::fmt::Debug for Email {
    // The body may hold a reset link; keep it out of any debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Email")
            .field("subject", &self.subject)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// A way of delivering email (Resend, SendGrid, or the log).
#[async_trait]
pub trait EmailTransport: Send + Sync + 'static {
    /// The provider's name, for logs.
    fn provider(&self) -> &'static str;
    /// One delivery attempt.
    async fn send(&self, email: &Email) -> Result<(), DeliveryError>;
}

/// Used when no email provider is configured. Development logs the whole message (so a developer
/// can follow a reset link); otherwise only the fact that nothing was sent.
#[derive(Debug, Clone, Copy)]
pub struct LogOnlyEmail {
    pub reveal_body: bool,
}

#[async_trait]
impl EmailTransport for LogOnlyEmail {
    fn provider(&self) -> &'static str {
        "log"
    }

    async fn send(&self, email: &Email) -> Result<(), DeliveryError> {
        if self.reveal_body {
            tracing::info!(to = %email.to, subject = %email.subject, body = %email.text, "email not sent (no provider configured; development shows it here)");
        } else {
            tracing::warn!(subject = %email.subject, kind = ?email.kind, "email not sent: no provider configured");
        }
        Ok(())
    }
}

/// Delivers email in the background. Each try walks the providers in order (Resend first, then
/// SendGrid) and stops at the first that accepts; a try where all fail is retried with backoff.
pub struct EmailSender {
    providers: Arc<[Arc<dyn EmailTransport>]>,
    retry: RetryPolicy,
    in_flight: Arc<Semaphore>,
}

impl EmailSender {
    /// `providers` in order of preference; at least one.
    pub fn new(providers: Vec<Arc<dyn EmailTransport>>, retry: RetryPolicy) -> Self {
        assert!(!providers.is_empty(), "an EmailSender needs a provider");
        Self {
            providers: providers.into(),
            retry,
            in_flight: Arc::new(Semaphore::new(MAX_DELIVERIES_IN_FLIGHT)),
        }
    }
}

/// One try over every provider, in order.
async fn try_each_provider(
    providers: &[Arc<dyn EmailTransport>],
    email: &Email,
) -> Result<&'static str, DeliveryError> {
    let mut any_temporary = None;
    let mut last_rejection = None;
    for provider in providers {
        match provider.send(email).await {
            Ok(()) => return Ok(provider.provider()),
            Err(error) => {
                tracing::warn!(provider = provider.provider(), %error, "email provider failed");
                match error {
                    DeliveryError::Temporary(_) => any_temporary = Some(error),
                    DeliveryError::Rejected(_) => last_rejection = Some(error),
                }
            }
        }
    }
    // Retry when any provider might succeed later; give up when all of them refused.
    Err(any_temporary
        .or(last_rejection)
        .unwrap_or_else(|| DeliveryError::Rejected("no provider".into())))
}

impl Actor for EmailSender {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(SENDER_MAILBOX_CAPACITY);
    }
}

/// Command: deliver this email.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SendEmail(pub Email);

impl Handler<SendEmail> for EmailSender {
    type Result = ();

    fn handle(&mut self, SendEmail(email): SendEmail, ctx: &mut Self::Context) {
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            tracing::error!(subject = %email.subject, "email dropped: too many deliveries in flight");
            return;
        };
        let providers = self.providers.clone();
        let retry = self.retry;
        let delivery = async move {
            let _permit = permit;
            let attempt = || async { try_each_provider(&providers, &email).await.map(|_| ()) };
            match retry.run(attempt).await {
                Ok(()) => tracing::debug!(subject = %email.subject, "email delivered"),
                Err(error) => {
                    tracing::error!(subject = %email.subject, %error, "email not delivered")
                }
            }
        };
        ctx.spawn(delivery.into_actor(self));
    }
}

/// Command: one try at this email over every provider in order, answered with the provider
/// that took it. The caller owns the retries (the notifier's outbox).
#[derive(Debug, Message)]
#[rtype(result = "Result<&'static str, DeliveryError>")]
pub struct DeliverEmail(pub Email);

impl Handler<DeliverEmail> for EmailSender {
    type Result = ResponseFuture<Result<&'static str, DeliveryError>>;

    fn handle(&mut self, DeliverEmail(email): DeliverEmail, _: &mut Self::Context) -> Self::Result {
        let providers = self.providers.clone();
        let in_flight = self.in_flight.clone();
        Box::pin(async move {
            let _slot = in_flight.acquire_owned().await.map_err(|_| {
                DeliveryError::Temporary("the email sender is shutting down".into())
            })?;
            try_each_provider(&providers, &email).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::sync::mpsc;

    struct Provider {
        name: &'static str,
        outcome: Result<(), DeliveryError>,
        calls: mpsc::UnboundedSender<(&'static str, String)>,
    }

    #[async_trait]
    impl EmailTransport for Provider {
        fn provider(&self) -> &'static str {
            self.name
        }
        async fn send(&self, email: &Email) -> Result<(), DeliveryError> {
            let _ = self.calls.send((self.name, email.subject.clone()));
            self.outcome.clone()
        }
    }

    fn email() -> Email {
        Email {
            to: "a@example.com".into(),
            subject: "Reset your password".into(),
            text: "https://example.com/reset?token=secret".into(),
            html: "<a href=\"https://example.com/reset?token=secret\">reset</a>".into(),
            kind: EmailKind::PasswordReset,
            idempotency_key: None,
        }
    }

    #[actix_rt::test]
    async fn falls_back_to_the_second_provider() {
        let (calls_tx, mut calls) = mpsc::unbounded_channel();
        let sender = EmailSender::new(
            vec![
                Arc::new(Provider {
                    name: "resend",
                    outcome: Err(DeliveryError::Temporary("502".into())),
                    calls: calls_tx.clone(),
                }),
                Arc::new(Provider {
                    name: "sendgrid",
                    outcome: Ok(()),
                    calls: calls_tx,
                }),
            ],
            RetryPolicy {
                attempts: 3,
                base_delay: Duration::from_millis(1),
            },
        )
        .start();
        sender.try_send(SendEmail(email())).unwrap();
        assert_eq!(calls.recv().await.unwrap().0, "resend");
        assert_eq!(calls.recv().await.unwrap().0, "sendgrid");
        // Delivered on the first try: nothing more is attempted.
        drop(sender);
        assert!(calls.recv().await.is_none());
    }

    #[test]
    fn debug_output_hides_the_body() {
        let debug = format!("{:?}", email());
        assert!(!debug.contains("secret"), "{debug}");
    }
}
