use std::sync::Arc;

use actix::{Actor, AsyncContext, Context, Handler, Message, ResponseFuture, WrapFuture};
use async_trait::async_trait;
use tokio::sync::Semaphore;

use super::{DeliveryError, MAX_DELIVERIES_IN_FLIGHT, RetryPolicy, SENDER_MAILBOX_CAPACITY};

/// What an SMS carries; decides what may be logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmsKind {
    /// A login code: a secret, never logged in production.
    VerificationCode,
    /// Booking confirmations, job updates.
    Notification,
}

/// One text message to one phone.
#[derive(Clone)]
pub struct Sms {
    /// E.164 number.
    pub to: String,
    pub body: String,
    pub kind: SmsKind,
}

impl std::fmt::Debug for Sms {
    // The body may hold a login code; keep it out of any debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sms")
            .field("to", &mask_phone(&self.to))
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// A phone number with its middle hidden, for logs: `+13055550100` -> `+130*****100`.
pub fn mask_phone(phone: &str) -> String {
    let chars: Vec<char> = phone.chars().collect();
    if chars.len() <= 6 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 3..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 7))
}

/// A way of getting an SMS to a phone (Twilio over HTTP, or the log).
#[async_trait]
pub trait SmsTransport: Send + Sync + 'static {
    /// The provider's name, for logs.
    fn provider(&self) -> &'static str;
    /// One delivery attempt.
    async fn send(&self, sms: &Sms) -> Result<(), DeliveryError>;
}

/// Used when no SMS provider is configured. In development the whole message is logged so a
/// developer can read the login code; otherwise only the fact that nothing was sent.
#[derive(Debug, Clone, Copy)]
pub struct LogOnlySms {
    pub reveal_body: bool,
}

#[async_trait]
impl SmsTransport for LogOnlySms {
    fn provider(&self) -> &'static str {
        "log"
    }

    async fn send(&self, sms: &Sms) -> Result<(), DeliveryError> {
        if self.reveal_body {
            tracing::info!(to = %sms.to, body = %sms.body, "SMS not sent (no provider configured; development shows it here)");
        } else {
            tracing::warn!(to = %mask_phone(&sms.to), kind = ?sms.kind, "SMS not sent: no provider configured");
        }
        Ok(())
    }
}

/// Delivers SMS in the background: the handler only starts the delivery, which retries on its
/// own (see [`RetryPolicy`]).
pub struct SmsSender {
    transport: Arc<dyn SmsTransport>,
    retry: RetryPolicy,
    in_flight: Arc<Semaphore>,
}

impl SmsSender {
    pub fn new(transport: Arc<dyn SmsTransport>, retry: RetryPolicy) -> Self {
        Self {
            transport,
            retry,
            in_flight: Arc::new(Semaphore::new(MAX_DELIVERIES_IN_FLIGHT)),
        }
    }
}

impl Actor for SmsSender {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(SENDER_MAILBOX_CAPACITY);
    }
}

/// Command: deliver this SMS.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SendSms(pub Sms);

impl Handler<SendSms> for SmsSender {
    type Result = ();

    fn handle(&mut self, SendSms(sms): SendSms, ctx: &mut Self::Context) {
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            tracing::error!(to = %mask_phone(&sms.to), "SMS dropped: too many deliveries in flight");
            return;
        };
        let transport = self.transport.clone();
        let retry = self.retry;
        let delivery = async move {
            let _permit = permit;
            match retry.run(|| transport.send(&sms)).await {
                Ok(()) => {
                    tracing::debug!(to = %mask_phone(&sms.to), provider = transport.provider(), "SMS delivered")
                }
                Err(error) => tracing::error!(
                    to = %mask_phone(&sms.to),
                    provider = transport.provider(),
                    %error,
                    "SMS not delivered"
                ),
            }
        };
        ctx.spawn(delivery.into_actor(self));
    }
}

/// Command: one attempt at this SMS, answered with the provider that took it. The caller owns
/// the retries (the notifier's outbox); the attempt waits for a delivery slot.
#[derive(Debug, Message)]
#[rtype(result = "Result<&'static str, DeliveryError>")]
pub struct DeliverSms(pub Sms);

impl Handler<DeliverSms> for SmsSender {
    type Result = ResponseFuture<Result<&'static str, DeliveryError>>;

    fn handle(&mut self, DeliverSms(sms): DeliverSms, _: &mut Self::Context) -> Self::Result {
        let transport = self.transport.clone();
        let in_flight = self.in_flight.clone();
        Box::pin(async move {
            let _slot = in_flight
                .acquire_owned()
                .await
                .map_err(|_| DeliveryError::Temporary("the SMS sender is shutting down".into()))?;
            transport.send(&sms).await.map(|()| transport.provider())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;
    use tokio::sync::mpsc;

    struct FlakyTransport {
        failures_left: AtomicU32,
        delivered: mpsc::UnboundedSender<String>,
        attempts: mpsc::UnboundedSender<()>,
    }

    #[async_trait]
    impl SmsTransport for FlakyTransport {
        fn provider(&self) -> &'static str {
            "flaky"
        }
        async fn send(&self, sms: &Sms) -> Result<(), DeliveryError> {
            let _ = self.attempts.send(());
            if self
                .failures_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(DeliveryError::Temporary("503".into()));
            }
            let _ = self.delivered.send(sms.body.clone());
            Ok(())
        }
    }

    #[actix_rt::test]
    async fn retries_until_delivered() {
        let (delivered_tx, mut delivered) = mpsc::unbounded_channel();
        let (attempts_tx, mut attempts) = mpsc::unbounded_channel();
        let transport = Arc::new(FlakyTransport {
            failures_left: AtomicU32::new(2),
            delivered: delivered_tx,
            attempts: attempts_tx,
        });
        let sender = SmsSender::new(
            transport,
            RetryPolicy {
                attempts: 3,
                base_delay: Duration::from_millis(1),
            },
        )
        .start();
        sender
            .try_send(SendSms(Sms {
                to: "+13055550100".into(),
                body: "Your code is 123456".into(),
                kind: SmsKind::VerificationCode,
            }))
            .unwrap();
        assert_eq!(delivered.recv().await.unwrap(), "Your code is 123456");
        let mut tries = 0;
        while attempts.try_recv().is_ok() {
            tries += 1;
        }
        assert_eq!(tries, 3);
    }

    #[test]
    fn phones_are_masked_in_logs() {
        assert_eq!(mask_phone("+13055550100"), "+130*****100");
        assert_eq!(mask_phone("+1234"), "*****");
        let debug = format!(
            "{:?}",
            Sms {
                to: "+13055550100".into(),
                body: "Your code is 123456".into(),
                kind: SmsKind::VerificationCode
            }
        );
        assert!(!debug.contains("123456"), "{debug}");
        assert!(!debug.contains("5550100"), "{debug}");
    }
}
