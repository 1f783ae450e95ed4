//! Settings, read once from the environment (plus `.env`) into typed values.
//!
//! Names and defaults follow API.md's configuration table, so deployments of the service this
//! replaces keep working. Secrets are [`SecretString`]s: their `Debug` output is redacted, and
//! reading one takes an explicit `expose_secret()`.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use rand::RngExt;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

/// `APP_ENV`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Production,
}

/// Where the data lives.
#[derive(Clone)]
pub enum DatabaseUrl {
    /// `sqlite://PATH`: the embedded default.
    Sqlite(String),
    /// `postgres://` or `postgresql://`.
    Postgres(SecretString),
}

impl DatabaseUrl {
    /// Parses `DATABASE_URL`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.starts_with("sqlite:") {
            Ok(Self::Sqlite(raw.to_owned()))
        } else if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            Url::parse(raw).map_err(|e| format!("not a valid URL: {e}"))?;
            Ok(Self::Postgres(SecretString::from(raw.to_owned())))
        } else {
            Err("must start with sqlite://, postgres:// or postgresql://".into())
        }
    }

    /// The URL with any password hidden, for logs.
    pub fn redacted(&self) -> String {
        match self {
            Self::Sqlite(url) => url.clone(),
            Self::Postgres(url) => match Url::parse(url.expose_secret()) {
                Ok(mut parsed) => {
                    if parsed.password().is_some() {
                        let _ = parsed.set_password(Some("***"));
                    }
                    parsed.to_string()
                }
                Err(_) => "postgres://***".into(),
            },
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Rate limits (see `crate::rate_limit`).
#[derive(Debug, Clone, Copy)]
pub struct RateLimits {
    pub sms_per_phone_per_hour: u32,
    pub sms_per_ip_per_hour: u32,
    /// `SMS_GLOBAL_PER_HOUR`: login codes sent in all, whoever asks.
    pub sms_global_per_hour: u32,
    pub auth_per_ip_per_minute: u32,
    /// `WS_CONNECTS_PER_USER_PER_MINUTE`.
    pub ws_connects_per_user_per_minute: u32,
    /// `JOBS_PER_USER_PER_HOUR`: bookings per customer.
    pub jobs_per_user_per_hour: u32,
    /// `UPLOADS_PER_USER_PER_HOUR`: photo upload requests per user.
    pub uploads_per_user_per_hour: u32,
}

/// Twilio, when configured.
#[derive(Debug, Clone)]
pub struct TwilioSettings {
    pub account_sid: String,
    pub auth_token: SecretString,
    pub from_number: String,
    pub api_base: Url,
}

/// An HTTP email provider (Resend or SendGrid).
#[derive(Debug, Clone)]
pub struct EmailProviderSettings {
    pub api_key: SecretString,
    pub api_base: Url,
}

#[derive(Debug, Clone)]
pub struct EmailSettings {
    pub resend: Option<EmailProviderSettings>,
    pub sendgrid: Option<EmailProviderSettings>,
    /// `EMAIL_FROM`, e.g. `Umuve <no-reply@goumuve.com>`.
    pub from: String,
}

#[derive(Debug, Clone)]
pub struct StripeSettings {
    pub secret_key: Option<SecretString>,
    pub webhook_secret: Option<SecretString>,
    /// `STRIPE_CONNECT_WEBHOOK_SECRET`: the signing secret of the Connect endpoint, which is
    /// where Stripe sends connected accounts' events (`account.updated`).
    pub connect_webhook_secret: Option<SecretString>,
    pub api_base: Url,
}

/// How the outbox worker (payouts, refunds) paces itself.
#[derive(Debug, Clone, Copy)]
pub struct OutboxConfig {
    /// `OUTBOX_POLL_MS`: how often due entries are looked for (besides when one is written).
    pub poll_every: Duration,
    /// `OUTBOX_RETRY_BASE_SECS`: the first wait after a temporary failure; it doubles.
    pub retry_base: Duration,
    /// `OUTBOX_MAX_ATTEMPTS`: attempts before an entry is marked failed.
    pub max_attempts: u32,
    /// `OUTBOX_CONCURRENCY`: Stripe calls in flight at most.
    pub concurrency: u32,
}

/// How the notifier (push, SMS, email about jobs) paces itself.
#[derive(Debug, Clone, Copy)]
pub struct NotifyConfig {
    /// `NOTIFY_POLL_MS`: how often due notifications and pickup reminders are looked for
    /// (besides when a change writes one).
    pub poll_every: Duration,
    /// `NOTIFY_RETRY_BASE_SECS`: the first wait after a failed attempt; it doubles.
    pub retry_base: Duration,
    /// `NOTIFY_MAX_ATTEMPTS`: attempts before a notification becomes a dead letter.
    pub max_attempts: u32,
    /// `NOTIFY_CONCURRENCY`: sends in flight at most, per channel.
    pub concurrency: u32,
}

#[derive(Debug, Clone, Copy)]
pub struct PricingSettings {
    pub commission_percent: u32,
    pub service_fee_cents: i64,
    /// `LOAD_SIZE_PRICES_CENTS`: the price of each load size, in the order of
    /// `LoadSize::ALL` (single item, quarter, half, three quarter, full truck).
    pub load_size_prices_cents: [i64; 5],
}

/// Default prices per load size (cents): single item, ¼, ½, ¾, full truck.
pub const DEFAULT_LOAD_SIZE_PRICES_CENTS: [i64; 5] = [9_900, 17_900, 29_900, 39_900, 49_900];

fn parse_load_size_prices(raw: &str) -> Result<[i64; 5], String> {
    use umuve_actors::realtime::model::LoadSize;
    let mut prices = DEFAULT_LOAD_SIZE_PRICES_CENTS;
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, cents) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} is not size=cents"))?;
        let size = LoadSize::parse(name.trim()).ok_or_else(|| {
            format!("{name:?} is not a load size (single_item, quarter, half, three_quarter, full)")
        })?;
        let cents: i64 = cents
            .trim()
            .parse()
            .ok()
            .filter(|c| *c > 0)
            .ok_or_else(|| format!("{cents:?} is not a positive number of cents"))?;
        prices[size.index()] = cents;
    }
    Ok(prices)
}

/// `APNS_ENDPOINT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApnsEndpoint {
    Production,
    Sandbox,
}

#[derive(Debug, Clone)]
pub struct ApnsSettings {
    pub key_id: Option<String>,
    pub team_id: Option<String>,
    pub auth_key_path: Option<PathBuf>,
    pub bundle_id: Option<String>,
    pub driver_bundle_id: Option<String>,
    pub endpoint: ApnsEndpoint,
}

impl ApnsSettings {
    /// Everything APNs needs is set: pushes can really be sent.
    pub fn is_complete(&self) -> bool {
        self.key_id.is_some()
            && self.team_id.is_some()
            && self.auth_key_path.is_some()
            && self.bundle_id.is_some()
            && self.driver_bundle_id.is_some()
    }
}

#[derive(Debug, Clone)]
pub struct AppleSettings {
    /// Accepted audiences of identity tokens (the apps' bundle ids / service ids).
    pub client_ids: Vec<String>,
    pub jwks_url: Url,
}

#[derive(Clone)]
pub struct SentrySettings {
    pub dsn: sentry::types::Dsn,
    pub traces_sample_rate: f32,
}

impl fmt::Debug for SentrySettings {
    // The DSN carries the project's public key; keep it out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentrySettings")
            .field("dsn", &"[REDACTED]")
            .field("traces_sample_rate", &self.traces_sample_rate)
            .finish()
    }
}

#[derive(Debug, Clone, Copy)]
pub struct DispatchSettings {
    pub offer_timeout: Duration,
    pub radius_m: f64,
    pub driver_stale: Duration,
    /// `DRIVER_OFFLINE_GRACE_SECS`: a driver whose socket closed (app in the background) is
    /// still offered jobs, by push, this long while their position is fresh; 0 = at once offline
    /// (the default without APNs credentials, 60 s with them).
    pub offline_grace: Duration,
    pub map_tick: Duration,
    pub lead: Duration,
    /// `DISPATCH_TICK_MS`: how often offer expiries and scheduled jobs are checked.
    pub tick: Duration,
    /// `DISPATCH_RESYNC_SECS`: how often the matcher reads the database's dispatching jobs
    /// again (jobs made ready by another engine process).
    pub resync_every: Duration,
}

/// WebSocket back-pressure and realtime knobs.
#[derive(Debug, Clone, Copy)]
pub struct RealtimeSettings {
    /// `WS_OUTBOUND_SOFT_KIB`: unread bytes past which a socket's locations are coalesced.
    pub soft_lag_bytes: u64,
    /// `WS_OUTBOUND_HARD_KIB`: unread bytes past which a socket is closed.
    pub hard_lag_bytes: u64,
    /// `WS_SLOW_READER_SECS`: a socket behind this long is closed.
    pub stall_limit: Duration,
    /// `TCP_SEND_BUFFER_BYTES`: the kernel send buffer of each connection (unset: the system's
    /// default, which lets a stalled reader absorb megabytes before back-pressure shows).
    pub tcp_send_buffer_bytes: Option<usize>,
    /// `POSITION_CHECKPOINT_SECS`: how often driver positions are written to storage.
    pub checkpoint_every: Duration,
    /// `WS_FRAMES_PER_SECOND`: messages one socket may send per second, sustained.
    pub frames_per_second: f64,
    /// `WS_FRAME_BURST`: messages one socket may send at once.
    pub frame_burst: f64,
}

/// `LOG_FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Every setting of the engine.
#[derive(Debug, Clone)]
pub struct Settings {
    pub env: AppEnv,
    pub host: IpAddr,
    pub port: u16,
    pub database_url: DatabaseUrl,
    pub jwt_secret: SecretString,
    pub secret_key: SecretString,
    pub redis_url: Option<SecretString>,
    pub ratelimit_storage_uri: Option<SecretString>,
    /// Prefixes every rate-limit key in Redis (several deployments may share one Redis).
    pub ratelimit_key_prefix: String,
    pub rate_limits: RateLimits,
    pub cors_origins: Vec<String>,
    pub admin_seed_secret: Option<SecretString>,
    pub stripe: StripeSettings,
    pub outbox: OutboxConfig,
    pub notify: NotifyConfig,
    pub pricing: PricingSettings,
    pub twilio: Option<TwilioSettings>,
    pub email: EmailSettings,
    pub apns: ApnsSettings,
    pub apple: AppleSettings,
    pub sentry: Option<SentrySettings>,
    pub upload_dir: PathBuf,
    pub dispatch: DispatchSettings,
    pub realtime: RealtimeSettings,
    /// `PUBLIC_URL`: where people reach the engine or its portal; reset links point here.
    pub public_url: Url,
    /// `TRUSTED_PROXY_HOPS`: how many proxies in front of the engine append to
    /// `X-Forwarded-For`; 0 (no proxy) takes the socket's peer as the client.
    pub trusted_proxy_hops: usize,
    /// `OUTBOUND_RETRY_BASE_MS`: first wait before an SMS/email is retried.
    pub outbound_retry_base: Duration,
    /// `HTTP_WORKERS`: worker threads (default: one per core).
    pub http_workers: Option<usize>,
    pub log_format: LogFormat,
}

/// What start-up should say about the settings.
#[derive(Debug)]
pub struct Loaded {
    pub settings: Settings,
    /// Each to be logged once at start-up.
    pub warnings: Vec<String>,
}

/// Settings that cannot be used; every problem is listed.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", problems.join("\n  - "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

/// Shortest signing secret accepted in production (HS256 wants a key of at least its hash size).
pub const MIN_SECRET_BYTES: usize = 32;

/// Variables production refuses to start without.
pub const REQUIRED_IN_PRODUCTION: [&str; 3] = ["JWT_SECRET", "SECRET_KEY", "DATABASE_URL"];
/// Variables production warns about when missing.
pub const RECOMMENDED_IN_PRODUCTION: [&str; 5] = [
    "ADMIN_SEED_SECRET",
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "CORS_ORIGINS",
    "SENTRY_DSN",
];

/// Reads variables through a lookup function, collecting every problem instead of stopping at
/// the first.
struct Reader<F> {
    lookup: F,
    problems: Vec<String>,
}

impl<F: Fn(&str) -> Option<String>> Reader<F> {
    /// The value, with an empty one treated as unset.
    fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name).and_then(|v| {
            let v = v.trim().to_owned();
            (!v.is_empty()).then_some(v)
        })
    }

    fn secret(&self, name: &str) -> Option<SecretString> {
        self.get(name).map(SecretString::from)
    }

    fn parsed<T>(
        &mut self,
        name: &str,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> T {
        match self.get(name) {
            None => default,
            Some(raw) => match parse(&raw) {
                Ok(v) => v,
                Err(why) => {
                    self.problems.push(format!("{name}: {why}"));
                    default
                }
            },
        }
    }

    fn number<T: std::str::FromStr>(&mut self, name: &str, default: T) -> T {
        self.parsed(name, default, |raw| {
            raw.parse()
                .map_err(|_| format!("{raw:?} is not a valid number"))
        })
    }

    fn url(&mut self, name: &str, default: &str) -> Url {
        let fallback = Url::parse(default).expect("default URLs are valid");
        self.parsed(name, fallback, |raw| {
            let url = Url::parse(raw).map_err(|e| format!("{raw:?} is not a valid URL: {e}"))?;
            match url.scheme() {
                "http" | "https" => Ok(url),
                other => Err(format!("scheme {other:?} is not http or https")),
            }
        })
    }

    fn list(&self, name: &str) -> Vec<String> {
        self.get(name)
            .map(|raw| {
                raw.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn positive_number(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 => Ok(n),
        _ => Err(format!("{raw:?} is not a positive number")),
    }
}

fn random_secret() -> SecretString {
    let bytes: [u8; 32] = rand::rng().random();
    SecretString::from(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

impl Settings {
    /// Reads the process environment (after loading `.env` when present).
    pub fn from_env() -> Result<Loaded, ConfigError> {
        // A missing .env is normal; a broken one is not silently ignored.
        if let Err(error) = dotenvy::dotenv()
            && !error.not_found()
        {
            return Err(ConfigError {
                problems: vec![format!(".env: {error}")],
            });
        }
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Loaded, ConfigError> {
        let mut r = Reader {
            lookup,
            problems: Vec::new(),
        };
        let mut warnings = Vec::new();

        let env = r.parsed("APP_ENV", AppEnv::Development, |raw| {
            match raw.to_ascii_lowercase().as_str() {
                "development" | "dev" => Ok(AppEnv::Development),
                "production" | "prod" => Ok(AppEnv::Production),
                _ => Err(format!("{raw:?} is not development or production")),
            }
        });
        let production = env == AppEnv::Production;

        if production {
            let missing: Vec<&str> = REQUIRED_IN_PRODUCTION
                .into_iter()
                .filter(|name| r.get(name).is_none())
                .collect();
            for name in &missing {
                r.problems
                    .push(format!("{name} is required when APP_ENV=production"));
            }
            for name in RECOMMENDED_IN_PRODUCTION {
                // Warned below, in every environment, with what it means.
                if name == "STRIPE_SECRET_KEY" {
                    continue;
                }
                if r.get(name).is_none() {
                    warnings.push(format!("{name} is not set (recommended in production)"));
                }
            }
        }

        let host = r.parsed("HOST", IpAddr::from([127, 0, 0, 1]), |raw| {
            raw.parse()
                .map_err(|_| format!("{raw:?} is not an IP address"))
        });
        let port = r.number("PORT", 8080u16);
        let database_url = r.parsed(
            "DATABASE_URL",
            DatabaseUrl::Sqlite("sqlite://umuve.db".into()),
            DatabaseUrl::parse,
        );

        let mut secret_or_ephemeral = |r: &mut Reader<_>, name: &str| match r.secret(name) {
            Some(secret) => {
                let bytes = secret.expose_secret().len();
                if bytes < MIN_SECRET_BYTES && production {
                    // A short HS256 key can be brute-forced offline from one token.
                    r.problems.push(format!(
                        "{name} must be at least {MIN_SECRET_BYTES} bytes in production (it has {bytes})"
                    ));
                } else if bytes < MIN_SECRET_BYTES {
                    warnings.push(format!(
                        "{name} is shorter than {MIN_SECRET_BYTES} bytes: production refuses it"
                    ));
                }
                secret
            }
            None => {
                if !production {
                    warnings.push(format!(
                        "{name} is not set: using an ephemeral random secret (tokens will not survive a restart)"
                    ));
                }
                random_secret()
            }
        };
        let jwt_secret = secret_or_ephemeral(&mut r, "JWT_SECRET");
        let secret_key = secret_or_ephemeral(&mut r, "SECRET_KEY");

        let rate_limits = RateLimits {
            sms_per_phone_per_hour: r.number("SMS_PER_PHONE_PER_HOUR", 5),
            sms_per_ip_per_hour: r.number("SMS_PER_IP_PER_HOUR", 20),
            sms_global_per_hour: r.number("SMS_GLOBAL_PER_HOUR", 500),
            auth_per_ip_per_minute: r.number("AUTH_PER_IP_PER_MINUTE", 30),
            ws_connects_per_user_per_minute: r.number("WS_CONNECTS_PER_USER_PER_MINUTE", 12),
            jobs_per_user_per_hour: r.number("JOBS_PER_USER_PER_HOUR", 20),
            uploads_per_user_per_hour: r.number("UPLOADS_PER_USER_PER_HOUR", 60),
        };
        for (name, value) in [
            ("SMS_PER_PHONE_PER_HOUR", rate_limits.sms_per_phone_per_hour),
            ("SMS_PER_IP_PER_HOUR", rate_limits.sms_per_ip_per_hour),
            ("SMS_GLOBAL_PER_HOUR", rate_limits.sms_global_per_hour),
            ("AUTH_PER_IP_PER_MINUTE", rate_limits.auth_per_ip_per_minute),
            (
                "WS_CONNECTS_PER_USER_PER_MINUTE",
                rate_limits.ws_connects_per_user_per_minute,
            ),
            ("JOBS_PER_USER_PER_HOUR", rate_limits.jobs_per_user_per_hour),
            (
                "UPLOADS_PER_USER_PER_HOUR",
                rate_limits.uploads_per_user_per_hour,
            ),
        ] {
            if value == 0 {
                r.problems.push(format!("{name}: must be at least 1"));
            }
        }

        let cors_origins = r.list("CORS_ORIGINS");
        for origin in &cors_origins {
            if Url::parse(origin).is_err() {
                r.problems.push(format!(
                    "CORS_ORIGINS: {origin:?} is not an origin like https://admin.goumuve.com"
                ));
            }
        }

        let stripe = StripeSettings {
            secret_key: r.secret("STRIPE_SECRET_KEY"),
            webhook_secret: r.secret("STRIPE_WEBHOOK_SECRET"),
            connect_webhook_secret: r.secret("STRIPE_CONNECT_WEBHOOK_SECRET"),
            api_base: r.url("STRIPE_API_BASE", "https://api.stripe.com"),
        };
        if stripe.secret_key.is_some() && stripe.webhook_secret.is_none() {
            warnings.push("STRIPE_WEBHOOK_SECRET is not set: Stripe's webhooks are refused, so paid jobs stay pending_payment".into());
        }
        if stripe.secret_key.is_none() {
            warnings.push("STRIPE_SECRET_KEY is not set: payments are off and new jobs go straight to dispatching".into());
        }
        let pricing = PricingSettings {
            commission_percent: r.number("PLATFORM_COMMISSION_PERCENT", 20),
            service_fee_cents: r.number("SERVICE_FEE_CENTS", 1500),
            load_size_prices_cents: r.parsed(
                "LOAD_SIZE_PRICES_CENTS",
                DEFAULT_LOAD_SIZE_PRICES_CENTS,
                parse_load_size_prices,
            ),
        };
        if pricing.commission_percent > 100 {
            r.problems
                .push("PLATFORM_COMMISSION_PERCENT: must be between 0 and 100".into());
        }
        if pricing.service_fee_cents < 0 {
            r.problems
                .push("SERVICE_FEE_CENTS: must not be negative".into());
        }

        let twilio_api_base = r.url("TWILIO_API_BASE", "https://api.twilio.com");
        let twilio_from = r
            .get("TWILIO_FROM_NUMBER")
            .or_else(|| r.get("TWILIO_PHONE_NUMBER"));
        let twilio = match (
            r.get("TWILIO_ACCOUNT_SID"),
            r.secret("TWILIO_AUTH_TOKEN"),
            twilio_from,
        ) {
            (Some(account_sid), Some(auth_token), Some(from_number)) => Some(TwilioSettings {
                account_sid,
                auth_token,
                from_number,
                api_base: twilio_api_base,
            }),
            (None, None, _) => {
                warnings.push(if production {
                    "Twilio is not configured: SMS sign-in answers 503 and no SMS is sent".into()
                } else {
                    "Twilio is not configured: SMS are logged, not sent".into()
                });
                None
            }
            _ => {
                r.problems.push(
                    "Twilio is partly configured: TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and TWILIO_FROM_NUMBER (or TWILIO_PHONE_NUMBER) go together".into(),
                );
                None
            }
        };

        let resend_base = r.url("RESEND_API_BASE", "https://api.resend.com");
        let sendgrid_base = r.url("SENDGRID_API_BASE", "https://api.sendgrid.com");
        let email = EmailSettings {
            resend: r
                .secret("RESEND_API_KEY")
                .map(|api_key| EmailProviderSettings {
                    api_key,
                    api_base: resend_base,
                }),
            sendgrid: r
                .secret("SENDGRID_API_KEY")
                .map(|api_key| EmailProviderSettings {
                    api_key,
                    api_base: sendgrid_base,
                }),
            from: r
                .get("EMAIL_FROM")
                .unwrap_or_else(|| "Umuve <no-reply@goumuve.com>".into()),
        };
        if email.resend.is_none() && email.sendgrid.is_none() {
            warnings.push("no email provider is configured (RESEND_API_KEY, SENDGRID_API_KEY): emails are logged, not sent".into());
        }

        let apns = ApnsSettings {
            key_id: r.get("APNS_KEY_ID"),
            team_id: r.get("APNS_TEAM_ID"),
            auth_key_path: r.get("APNS_AUTH_KEY_PATH").map(PathBuf::from),
            bundle_id: r.get("APNS_BUNDLE_ID"),
            driver_bundle_id: r.get("APNS_DRIVER_BUNDLE_ID"),
            endpoint: r.parsed("APNS_ENDPOINT", ApnsEndpoint::Production, |raw| {
                match raw.to_ascii_lowercase().as_str() {
                    "production" => Ok(ApnsEndpoint::Production),
                    "sandbox" | "development" => Ok(ApnsEndpoint::Sandbox),
                    _ => Err(format!("{raw:?} is not production or sandbox")),
                }
            }),
        };

        let apns_ready = apns.is_complete();
        if apns.key_id.is_none() || apns.auth_key_path.is_none() {
            warnings.push(
                "APNs is not configured (APNS_KEY_ID, APNS_AUTH_KEY_PATH): pushes are logged, not sent"
                    .into(),
            );
        } else if !apns_ready {
            warnings.push(
                "APNs is partly configured (APNS_TEAM_ID, APNS_BUNDLE_ID and APNS_DRIVER_BUNDLE_ID are needed too): pushes are logged, not sent"
                    .into(),
            );
        }

        let apple = AppleSettings {
            client_ids: r.list("APPLE_CLIENT_IDS"),
            jwks_url: r.url("APPLE_JWKS_URL", "https://appleid.apple.com/auth/keys"),
        };

        let traces_sample_rate = r.parsed("SENTRY_TRACES_SAMPLE_RATE", 0.1f32, |raw| {
            match raw.parse::<f32>() {
                Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
                _ => Err(format!("{raw:?} is not a number between 0 and 1")),
            }
        });
        let sentry = match r.get("SENTRY_DSN") {
            None => None,
            Some(raw) => match raw.parse::<sentry::types::Dsn>() {
                Ok(dsn) => Some(SentrySettings {
                    dsn,
                    traces_sample_rate,
                }),
                Err(error) => {
                    // Not echoing the value: a DSN carries a key.
                    r.problems
                        .push(format!("SENTRY_DSN: not a valid Sentry DSN ({error})"));
                    None
                }
            },
        };

        let upload_dir = PathBuf::from(r.get("UPLOAD_DIR").unwrap_or_else(|| "./uploads".into()));

        let dispatch = DispatchSettings {
            offer_timeout: Duration::from_secs(r.number("OFFER_TIMEOUT_SECS", 30)),
            radius_m: r.parsed("DISPATCH_RADIUS_M", 40_000.0, |raw| {
                match raw.parse::<f64>() {
                    Ok(m) if m.is_finite() && m > 0.0 => Ok(m),
                    _ => Err(format!("{raw:?} is not a positive distance in metres")),
                }
            }),
            driver_stale: Duration::from_secs(r.number("DRIVER_STALE_SECS", 60)),
            // Without push, a driver without a socket could not see an offer: no grace then.
            offline_grace: Duration::from_secs(
                r.number("DRIVER_OFFLINE_GRACE_SECS", if apns_ready { 60 } else { 0 }),
            ),
            map_tick: Duration::from_millis(r.number("MAP_TICK_MS", 250)),
            lead: Duration::from_secs(60 * r.number::<u64>("DISPATCH_LEAD_MINUTES", 60)),
            tick: Duration::from_millis(r.number::<u64>("DISPATCH_TICK_MS", 100).max(1)),
            resync_every: Duration::from_secs(r.number::<u64>("DISPATCH_RESYNC_SECS", 10).max(1)),
        };

        let notify = NotifyConfig {
            poll_every: Duration::from_millis(r.number::<u64>("NOTIFY_POLL_MS", 1000).max(1)),
            retry_base: Duration::from_secs(r.number::<u64>("NOTIFY_RETRY_BASE_SECS", 30).max(1)),
            max_attempts: r.number("NOTIFY_MAX_ATTEMPTS", 5u32).max(1),
            concurrency: r.number("NOTIFY_CONCURRENCY", 16u32).max(1),
        };
        let outbox = OutboxConfig {
            poll_every: Duration::from_millis(r.number::<u64>("OUTBOX_POLL_MS", 1000).max(1)),
            retry_base: Duration::from_secs(r.number::<u64>("OUTBOX_RETRY_BASE_SECS", 30).max(1)),
            max_attempts: r.number("OUTBOX_MAX_ATTEMPTS", 12u32).max(1),
            concurrency: r.number("OUTBOX_CONCURRENCY", 4u32).max(1),
        };

        let realtime = RealtimeSettings {
            soft_lag_bytes: 1024 * r.number::<u64>("WS_OUTBOUND_SOFT_KIB", 256).max(1),
            hard_lag_bytes: 1024 * r.number::<u64>("WS_OUTBOUND_HARD_KIB", 8 * 1024).max(1),
            stall_limit: Duration::from_secs(r.number("WS_SLOW_READER_SECS", 10).max(1)),
            tcp_send_buffer_bytes: r
                .get("TCP_SEND_BUFFER_BYTES")
                .is_some()
                .then(|| r.number("TCP_SEND_BUFFER_BYTES", 0usize))
                .filter(|b| *b > 0),
            checkpoint_every: Duration::from_secs(r.number("POSITION_CHECKPOINT_SECS", 15).max(1)),
            frames_per_second: r.parsed("WS_FRAMES_PER_SECOND", 10.0, positive_number),
            frame_burst: r.parsed("WS_FRAME_BURST", 40.0, positive_number),
        };
        if realtime.hard_lag_bytes <= realtime.soft_lag_bytes {
            r.problems
                .push("WS_OUTBOUND_HARD_KIB must be larger than WS_OUTBOUND_SOFT_KIB".into());
        }

        let default_public_url = format!("http://{host}:{port}");
        let public_url = r.url("PUBLIC_URL", &default_public_url);
        let trusted_proxy_hops = r.number("TRUSTED_PROXY_HOPS", 0usize);
        let outbound_retry_base = Duration::from_millis(r.number("OUTBOUND_RETRY_BASE_MS", 500));
        let http_workers = r
            .get("HTTP_WORKERS")
            .is_some()
            .then(|| r.number("HTTP_WORKERS", 1usize).max(1));
        let log_format = r.parsed("LOG_FORMAT", LogFormat::Text, |raw| {
            match raw.to_ascii_lowercase().as_str() {
                "text" => Ok(LogFormat::Text),
                "json" => Ok(LogFormat::Json),
                _ => Err(format!("{raw:?} is not text or json")),
            }
        });

        if r.get("REDIS_URL").is_some() {
            warnings.push(
                "REDIS_URL is set but not used yet: this engine runs as a single node (shared rate limits use RATELIMIT_STORAGE_URI)".into(),
            );
        }
        if production && r.get("PUBLIC_URL").is_none() {
            warnings.push(format!(
                "PUBLIC_URL is not set: password-reset links will point to {default_public_url}"
            ));
        }

        if !r.problems.is_empty() {
            // Report each problem once, in a stable order.
            let problems: BTreeSet<String> = r.problems.into_iter().collect();
            return Err(ConfigError {
                problems: problems.into_iter().collect(),
            });
        }

        Ok(Loaded {
            settings: Settings {
                env,
                host,
                port,
                database_url,
                jwt_secret,
                secret_key,
                redis_url: r.secret("REDIS_URL"),
                ratelimit_storage_uri: r
                    .secret("RATELIMIT_STORAGE_URI")
                    .filter(|uri| !uri.expose_secret().trim().is_empty()),
                ratelimit_key_prefix: r
                    .get("RATELIMIT_KEY_PREFIX")
                    .unwrap_or_else(|| "umuve:ratelimit:".into()),
                rate_limits,
                cors_origins,
                admin_seed_secret: r.secret("ADMIN_SEED_SECRET"),
                stripe,
                outbox,
                notify,
                pricing,
                twilio,
                email,
                apns,
                apple,
                sentry,
                upload_dir,
                dispatch,
                realtime,
                public_url,
                trusted_proxy_hops,
                outbound_retry_base,
                http_workers,
                log_format,
            },
            warnings,
        })
    }

    pub fn is_production(&self) -> bool {
        self.env == AppEnv::Production
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_follow_the_contract() {
        let loaded = load(&[]).unwrap();
        let s = loaded.settings;
        assert_eq!(s.env, AppEnv::Development);
        assert_eq!(s.port, 8080);
        assert_eq!(s.host.to_string(), "127.0.0.1");
        assert!(matches!(&s.database_url, DatabaseUrl::Sqlite(url) if url == "sqlite://umuve.db"));
        assert_eq!(s.rate_limits.sms_per_phone_per_hour, 5);
        assert_eq!(s.rate_limits.sms_per_ip_per_hour, 20);
        assert_eq!(s.rate_limits.auth_per_ip_per_minute, 30);
        assert_eq!(s.pricing.commission_percent, 20);
        assert_eq!(s.pricing.service_fee_cents, 1500);
        assert_eq!(s.dispatch.offer_timeout, Duration::from_secs(30));
        assert_eq!(s.dispatch.radius_m, 40_000.0);
        assert_eq!(s.dispatch.map_tick, Duration::from_millis(250));
        assert_eq!(s.dispatch.lead, Duration::from_secs(3600));
        assert_eq!(
            s.apple.jwks_url.as_str(),
            "https://appleid.apple.com/auth/keys"
        );
        assert!(
            loaded
                .warnings
                .iter()
                .any(|w| w.starts_with("JWT_SECRET is not set")),
            "{:?}",
            loaded.warnings
        );
    }

    #[test]
    fn production_names_every_missing_required_variable() {
        let error = load(&[("APP_ENV", "production")]).unwrap_err();
        for name in REQUIRED_IN_PRODUCTION {
            assert!(error.to_string().contains(name), "{error}");
        }
    }

    #[test]
    fn production_warns_for_each_missing_recommended_variable() {
        let loaded = load(&[
            ("APP_ENV", "production"),
            ("JWT_SECRET", "0123456789abcdef0123456789abcdef"),
            ("SECRET_KEY", "0123456789abcdef0123456789abcdef"),
            ("DATABASE_URL", "postgresql://app:pw@db/umuve"),
        ])
        .unwrap();
        for name in RECOMMENDED_IN_PRODUCTION {
            assert_eq!(
                loaded
                    .warnings
                    .iter()
                    .filter(|w| w.starts_with(name))
                    .count(),
                1,
                "{name}: {:?}",
                loaded.warnings
            );
        }
    }

    #[test]
    fn production_refuses_a_signing_secret_shorter_than_32_bytes() {
        let error = load(&[
            ("APP_ENV", "production"),
            ("JWT_SECRET", "only-31-bytes-long-0123456789ab"),
            ("SECRET_KEY", "0123456789abcdef0123456789abcdef"),
            ("DATABASE_URL", "postgresql://app:pw@db/umuve"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("JWT_SECRET must be at least 32 bytes"),
            "{error}"
        );
        assert!(
            !error.contains("only-31"),
            "the secret itself is not quoted: {error}"
        );
        let development = load(&[("JWT_SECRET", "only-31-bytes-long-0123456789ab")]).unwrap();
        assert!(
            development
                .warnings
                .iter()
                .any(|w| w.starts_with("JWT_SECRET is shorter than 32 bytes")),
            "{:?}",
            development.warnings
        );
    }

    #[test]
    fn missing_push_credentials_are_warned_about() {
        let production = [
            ("APP_ENV", "production"),
            ("JWT_SECRET", "0123456789abcdef0123456789abcdef"),
            ("SECRET_KEY", "0123456789abcdef0123456789abcdef"),
            ("DATABASE_URL", "postgresql://app:pw@db/umuve"),
        ];
        let unconfigured = load(&production).unwrap();
        assert!(
            unconfigured
                .warnings
                .iter()
                .any(|w| w.starts_with("APNs is not configured")),
            "{:?}",
            unconfigured.warnings
        );
        let mut partly = production.to_vec();
        partly.extend([
            ("APNS_KEY_ID", "ABC123DEFG"),
            ("APNS_AUTH_KEY_PATH", "/k.p8"),
        ]);
        let partly = load(&partly).unwrap();
        assert!(
            partly
                .warnings
                .iter()
                .any(|w| w.starts_with("APNs is partly configured")),
            "{:?}",
            partly.warnings
        );
    }

    #[test]
    fn both_postgres_schemes_are_accepted() {
        for url in ["postgres://u@h/db", "postgresql://u@h/db"] {
            let s = load(&[("DATABASE_URL", url)]).unwrap().settings;
            assert!(matches!(s.database_url, DatabaseUrl::Postgres(_)));
        }
        assert!(load(&[("DATABASE_URL", "mysql://u@h/db")]).is_err());
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        let s = load(&[
            ("JWT_SECRET", "jwt-secret-value-1234"),
            ("SECRET_KEY", "secret-key-value-1234"),
            ("DATABASE_URL", "postgres://app:db-password@db/umuve"),
            ("TWILIO_ACCOUNT_SID", "AC123"),
            ("TWILIO_AUTH_TOKEN", "twilio-token-value"),
            ("TWILIO_FROM_NUMBER", "+13055550100"),
            ("SENTRY_DSN", "https://publickey@o1.ingest.sentry.io/42"),
        ])
        .unwrap()
        .settings;
        let debug = format!("{s:?}");
        for secret in [
            "jwt-secret-value",
            "secret-key-value",
            "db-password",
            "twilio-token-value",
            "publickey",
        ] {
            assert!(!debug.contains(secret), "{secret} leaked in {debug}");
        }
    }

    #[test]
    fn invalid_values_are_reported_together() {
        let error = load(&[
            ("PORT", "eighty"),
            ("SENTRY_DSN", "not a dsn"),
            ("PLATFORM_COMMISSION_PERCENT", "150"),
        ])
        .unwrap_err();
        assert_eq!(error.problems.len(), 3, "{error}");
    }

    #[test]
    fn dispatch_timing_has_defaults_and_refuses_nonsense() {
        let s = load(&[]).unwrap().settings;
        assert_eq!(s.dispatch.tick, Duration::from_millis(100));
        assert_eq!(s.dispatch.resync_every, Duration::from_secs(10));
        let s = load(&[("DISPATCH_TICK_MS", "0"), ("DISPATCH_RESYNC_SECS", "0")])
            .unwrap()
            .settings;
        assert_eq!(
            s.dispatch.tick,
            Duration::from_millis(1),
            "a zero tick would spin"
        );
        assert_eq!(s.dispatch.resync_every, Duration::from_secs(1));
        let error = load(&[
            ("DISPATCH_TICK_MS", "fast"),
            ("DISPATCH_RESYNC_SECS", "-1"),
            ("DISPATCH_RADIUS_M", "NaN"),
        ])
        .unwrap_err();
        assert_eq!(error.problems.len(), 3, "{error}");
    }

    #[test]
    fn load_size_prices_override_the_defaults_one_by_one() {
        let s = load(&[("LOAD_SIZE_PRICES_CENTS", "half=31000, full=52000")])
            .unwrap()
            .settings;
        assert_eq!(
            s.pricing.load_size_prices_cents,
            [9_900, 17_900, 31_000, 39_900, 52_000]
        );
        assert!(load(&[("LOAD_SIZE_PRICES_CENTS", "huge=1")]).is_err());
        assert!(load(&[("LOAD_SIZE_PRICES_CENTS", "half=-5")]).is_err());
    }

    #[test]
    fn twilio_phone_number_is_an_alias_for_the_from_number() {
        let s = load(&[
            ("TWILIO_ACCOUNT_SID", "AC123"),
            ("TWILIO_AUTH_TOKEN", "t"),
            ("TWILIO_PHONE_NUMBER", "+13055550100"),
        ])
        .unwrap()
        .settings;
        assert_eq!(s.twilio.unwrap().from_number, "+13055550100");
    }
}
