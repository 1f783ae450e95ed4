//! What every handler shares: settings, storage, the clock, keys, limiters and the addresses of
//! the outbound actors. Built once per process and shared by all HTTP workers.

use std::sync::Arc;

use actix::{Actor, Addr, Arbiter, ArbiterHandle};
use anyhow::Context;
use secrecy::ExposeSecret;
use umuve_actors::clock::SharedClock;
use umuve_actors::outbound::{
    Apns, EmailSender, EmailTransport, LogOnlyEmail, LogOnlyPush, LogOnlySms, PushTransport,
    RetryPolicy, SmsSender, SmsTransport,
};

use crate::auth::apple::AppleVerifier;
use crate::auth::one_time::OneTimeHasher;
use crate::auth::passwords::PasswordHasher;
use crate::auth::tokens::TokenKeys;
use crate::config::Settings;
use crate::integrations::apns::ApnsTransport;
use crate::integrations::stripe::StripeGateway;
use crate::integrations::{
    http_client, resend::ResendEmail, sendgrid::SendGridEmail, twilio::TwilioSms,
};
use crate::jobs::Pricing;
use crate::notifications::notifier::{Notifier, Senders};
use crate::payments::outbox_worker::OutboxWorker;
use crate::rate_limit::Limiter;
use crate::storage::Db;
use crate::storage::devices::DbDeviceTokens;
use crate::storage::offers::DbDispatchStore;
use crate::storage::positions::DbPositionStore;
use crate::uploads::PhotoStore;
use umuve_actors::geo::ServiceArea;
use umuve_actors::realtime::hub::{Hub, HubSettings};
use umuve_actors::realtime::matcher::MatcherSettings;

pub struct AppState {
    pub settings: Arc<Settings>,
    pub db: Db,
    pub clock: SharedClock,
    pub tokens: TokenKeys,
    pub one_time: OneTimeHasher,
    pub passwords: PasswordHasher,
    pub limits: Limiter,
    /// Job photos in `UPLOAD_DIR`.
    pub photos: PhotoStore,
    /// `None` in production without Twilio: login codes cannot be delivered, so
    /// `sms/send` answers 503 instead of pretending.
    pub sms: Option<Addr<SmsSender>>,
    pub email: Addr<EmailSender>,
    pub apple: AppleVerifier,
    /// The realtime actors (geo index, rooms, map, session registry).
    pub hub: Hub,
    pub pricing: Pricing,
    /// `None` when payments are off (no `STRIPE_SECRET_KEY`).
    pub stripe: Option<StripeGateway>,
    /// Carries out payouts and refunds written to the outbox.
    pub outbox: Addr<OutboxWorker>,
    outbox_thread: ArbiterHandle,
    notify_thread: ArbiterHandle,
    /// Sends the push, SMS and email notifications written with job changes.
    pub notifier: Addr<Notifier>,
    /// Rung after a change that may have written notifications.
    pub notifications_written: Arc<tokio::sync::Notify>,
}

impl AppState {
    /// Stops the threads of the background workers (the outbox, the notifier); work in flight
    /// is dropped and picked up again by the next engine.
    pub fn stop_workers(&self) {
        self.outbox_thread.stop();
        self.notify_thread.stop();
    }

    /// Builds the state and starts the outbound actors on the current actix system. `push`
    /// replaces the push transport the settings would choose (tests record pushes with it).
    pub fn start(
        settings: Settings,
        db: Db,
        clock: SharedClock,
        push: Option<Arc<dyn PushTransport>>,
    ) -> anyhow::Result<Self> {
        let http = http_client();
        let retry = RetryPolicy {
            attempts: 3,
            base_delay: settings.outbound_retry_base,
        };
        let development = !settings.is_production();

        let sms_transport: Option<Arc<dyn SmsTransport>> = match &settings.twilio {
            Some(twilio) => Some(Arc::new(TwilioSms::new(http.clone(), twilio.clone()))),
            None if development => Some(Arc::new(LogOnlySms { reveal_body: true })),
            None => None,
        };
        let sms = sms_transport.map(|transport| SmsSender::new(transport, retry).start());

        let push: Arc<dyn PushTransport> = match push {
            Some(push) => push,
            None => match ApnsTransport::from_settings(&settings.apns)? {
                Some(apns) => Arc::new(apns),
                None => Arc::new(LogOnlyPush),
            },
        };
        let push_provider = push.provider();
        // Their own thread: provider calls and the notifier's queries never share a worker with
        // requests, and stopping the thread drops sends in flight as a crash would (their rows
        // are retried by lease).
        let notify_thread = Arbiter::new().handle();
        let apns = {
            let tokens = Arc::new(DbDeviceTokens { db: db.clone() });
            Apns::start_in_arbiter(&notify_thread, move |_| Apns::new(push, tokens))
        };

        let mut email_providers: Vec<Arc<dyn EmailTransport>> = Vec::new();
        if let Some(resend) = &settings.email.resend {
            email_providers.push(Arc::new(ResendEmail::new(
                http.clone(),
                resend.clone(),
                settings.email.from.clone(),
            )));
        }
        if let Some(sendgrid) = &settings.email.sendgrid {
            email_providers.push(Arc::new(SendGridEmail::new(
                http.clone(),
                sendgrid.clone(),
                settings.email.from.clone(),
            )));
        }
        if email_providers.is_empty() {
            email_providers.push(Arc::new(LogOnlyEmail {
                reveal_body: development,
            }));
        }
        let email = EmailSender::new(email_providers, retry).start();
        let notifications_written = Arc::new(tokio::sync::Notify::new());

        let apple = AppleVerifier::new(
            http,
            settings.apple.jwks_url.clone(),
            settings.apple.client_ids.clone(),
            clock.clone(),
        );
        let hub = Hub::start(
            HubSettings {
                driver_stale: settings.dispatch.driver_stale,
                driver_offline_grace: settings.dispatch.offline_grace,
                map_tick: settings.dispatch.map_tick,
                checkpoint_every: settings.realtime.checkpoint_every,
                matcher: MatcherSettings {
                    offer_timeout: settings.dispatch.offer_timeout,
                    radius_m: settings.dispatch.radius_m,
                    lead: settings.dispatch.lead,
                    tick: settings.dispatch.tick,
                    resync_every: settings.dispatch.resync_every,
                },
            },
            clock.clone(),
            Arc::new(ServiceArea::south_florida()),
            Arc::new(DbPositionStore { db: db.clone() }),
            Arc::new(DbDispatchStore {
                db: db.clone(),
                notifications_written: notifications_written.clone(),
            }),
        );
        let notifier = {
            let senders = Senders {
                registry: hub.sessions.clone(),
                apns,
                push_provider,
                sms: sms.clone(),
                email: email.clone(),
            };
            let (db, clock, config, wake) = (
                db.clone(),
                clock.clone(),
                settings.notify,
                notifications_written.clone(),
            );
            Notifier::start_in_arbiter(&notify_thread, move |_| {
                Notifier::new(db, clock, senders, config, wake)
            })
        };
        let stripe = StripeGateway::new(&settings.stripe)
            .map_err(|e| anyhow::anyhow!("cannot build the Stripe client: {e}"))?;
        // Its own thread: Stripe calls never share a worker with requests, and stopping the
        // thread drops calls in flight as a crash would (their rows are retried by lease).
        let outbox_thread = Arbiter::new().handle();
        let outbox = {
            let (db, clock, stripe, config) =
                (db.clone(), clock.clone(), stripe.clone(), settings.outbox);
            OutboxWorker::start_in_arbiter(&outbox_thread, move |_| {
                OutboxWorker::new(db, clock, stripe, config)
            })
        };
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Self {
            notifier,
            notifications_written,
            stripe,
            outbox,
            outbox_thread,
            notify_thread,
            tokens: TokenKeys::new(settings.jwt_secret.expose_secret().as_bytes()),
            one_time: OneTimeHasher::new(settings.secret_key.expose_secret().as_bytes()),
            passwords: PasswordHasher::new(cores),
            limits: Limiter::from_settings(&settings, clock.clone())?,
            photos: PhotoStore::open(&settings.upload_dir).with_context(|| {
                format!("cannot open UPLOAD_DIR {}", settings.upload_dir.display())
            })?,
            pricing: Pricing::new(settings.pricing),
            hub,
            settings: Arc::new(settings),
            db,
            clock,
            sms,
            email,
            apple,
        })
    }
}
