//! Outbound messages: SMS, email and push, each delivered by an actor that never waits on the network
//! in its handler. Providers sit behind small traits ([`SmsTransport`], [`EmailTransport`]) that
//! the web crate implements over HTTP; failures are retried with exponential backoff.

mod email;
mod push;
mod retry;
mod sms;

pub use email::{
    DeliverEmail, Email, EmailKind, EmailSender, EmailTransport, LogOnlyEmail, SendEmail,
};
pub use push::{
    Apns, DeviceTokens, LogOnlyPush, MAX_PUSHES_IN_FLIGHT, Push, PushApp, PushError, PushTransport,
    SendPush,
};
pub use retry::{DeliveryError, RetryPolicy, doubling_wait};
pub use sms::{DeliverSms, LogOnlySms, SendSms, Sms, SmsKind, SmsSender, SmsTransport, mask_phone};

/// How many messages may wait in a sender's mailbox; past this, `try_send` fails and the caller
/// answers "unavailable" instead of queueing without bound.
pub const SENDER_MAILBOX_CAPACITY: usize = 1024;

/// How many deliveries one sender runs at once; more are refused and logged, so a provider
/// outage cannot pile up unbounded work.
pub const MAX_DELIVERIES_IN_FLIGHT: usize = 256;
