//! Rate limits, in memory (per engine process) or in Redis when `RATELIMIT_STORAGE_URI` is set
//! (shared by every engine using it).
//!
//! - SMS send: at most one per phone per minute, `SMS_PER_PHONE_PER_HOUR` per phone,
//!   `SMS_PER_IP_PER_HOUR` per client IP, and `SMS_GLOBAL_PER_HOUR` in all (a ceiling on what
//!   SMS pumping through the login form can cost).
//! - Password-reset emails: the same per-recipient limits as SMS, per address.
//! - Verify, login, Apple, password forgot/reset, admin seed: `AUTH_PER_IP_PER_MINUTE` per IP.
//! - Bookings: `JOBS_PER_USER_PER_HOUR`; photo uploads: `UPLOADS_PER_USER_PER_HOUR` (requests).
//! - WebSocket connections: `WS_CONNECTS_PER_USER_PER_MINUTE` per user, so a client that keeps
//!   reconnecting is refused before any work is done. A user closed for flooding is refused for
//!   a cool-down that doubles for each repeat within [`STRIKE_MEMORY`] (up to [`MAX_COOLDOWN`]);
//!   cool-downs are per process (the flooding socket was on this one).
//!
//! Every limit is GCRA: a budget that refills evenly, e.g. 5 per hour is a burst of 5, then one
//! more every 12 minutes. In memory it is governor's; in Redis the same algorithm runs as one
//! Lua script per check (atomic across engines). Both run on the engine's clock. When Redis
//! cannot be reached the process falls back to its own memory (warned) for [`REDIS_BACKOFF`],
//! so limits weaken to per-process instead of disappearing, refusing everyone or making every
//! request wait for a timeout.
//!
//! A refused request has still used the budgets checked before the one that refused it: an
//! address hammering one phone spends its own budget too. SMS checks run per address, then per
//! phone, then the global ceiling, so refused requests never use the ceiling up.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use chrono::DateTime;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use secrecy::ExposeSecret;
use umuve_actors::clock::SharedClock;

use crate::config::{RateLimits, Settings};
use crate::http::client_ip::rate_limit_key;

/// The engine's clock, as governor sees it: time since the Unix epoch.
#[derive(Clone)]
struct EngineClock(SharedClock);

impl EngineClock {
    fn since_epoch(&self) -> Duration {
        (self.0.now() - DateTime::UNIX_EPOCH)
            .to_std()
            .unwrap_or_default()
    }
}

impl Clock for EngineClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.since_epoch()
    }
}

/// How long a flooding close is remembered for escalating the next cool-down.
pub const STRIKE_MEMORY: Duration = Duration::from_secs(3600);
/// The longest cool-down, however often a user floods.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(3600);
/// How long a check waits for Redis before deciding in memory.
const REDIS_TIMEOUT: Duration = Duration::from_millis(300);
/// After Redis failed a check, the next ones go straight to memory for this long, so an outage
/// costs one timeout per this period instead of one per request.
const REDIS_BACKOFF: Duration = Duration::from_secs(15);
/// At most one "Redis unreachable" warning per this long.
const REDIS_WARNING_EVERY: Duration = Duration::from_secs(60);

/// Every limit the engine applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Messages (SMS codes, reset emails) to one phone or address per minute: 1.
    RecipientPerMinute,
    RecipientPerHour,
    SmsPerIp,
    SmsGlobal,
    AuthPerIp,
    WsConnectsPerUser,
    JobsPerUser,
    UploadsPerUser,
}

const ALL_LIMITS: [Limit; 8] = [
    Limit::RecipientPerMinute,
    Limit::RecipientPerHour,
    Limit::SmsPerIp,
    Limit::SmsGlobal,
    Limit::AuthPerIp,
    Limit::WsConnectsPerUser,
    Limit::JobsPerUser,
    Limit::UploadsPerUser,
];

impl Limit {
    /// The limit's part of its Redis keys.
    fn key_name(self) -> &'static str {
        match self {
            Limit::RecipientPerMinute => "recipient-minute",
            Limit::RecipientPerHour => "recipient-hour",
            Limit::SmsPerIp => "sms-ip",
            Limit::SmsGlobal => "sms-global",
            Limit::AuthPerIp => "auth-ip",
            Limit::WsConnectsPerUser => "ws-connect",
            Limit::JobsPerUser => "jobs",
            Limit::UploadsPerUser => "uploads",
        }
    }

    /// (how many, per how long).
    fn budget(self, limits: &RateLimits) -> (u32, Duration) {
        const MINUTE: Duration = Duration::from_secs(60);
        const HOUR: Duration = Duration::from_secs(3600);
        match self {
            Limit::RecipientPerMinute => (1, MINUTE),
            Limit::RecipientPerHour => (limits.sms_per_phone_per_hour, HOUR),
            Limit::SmsPerIp => (limits.sms_per_ip_per_hour, HOUR),
            Limit::SmsGlobal => (limits.sms_global_per_hour, HOUR),
            Limit::AuthPerIp => (limits.auth_per_ip_per_minute, MINUTE),
            Limit::WsConnectsPerUser => (limits.ws_connects_per_user_per_minute, MINUTE),
            Limit::JobsPerUser => (limits.jobs_per_user_per_hour, HOUR),
            Limit::UploadsPerUser => (limits.uploads_per_user_per_hour, HOUR),
        }
    }
}

/// A user closed for flooding: refused until `until`; `strikes` closes in a row, each within
/// [`STRIKE_MEMORY`] of the previous cool-down's end.
#[derive(Debug, Clone, Copy)]
struct Cooldown {
    until: DateTime<chrono::Utc>,
    strikes: u32,
}

type KeyedLimiter =
    RateLimiter<String, DashMapStateStore<String>, EngineClock, NoOpMiddleware<Duration>>;

/// Refused: come back after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl From<RetryAfter> for crate::http::ApiError {
    fn from(RetryAfter(wait): RetryAfter) -> Self {
        crate::http::ApiError::rate_limited(wait)
    }
}

/// GCRA in Redis. KEYS[1]: the key; ARGV: now (ms since the epoch), the emission interval (ms),
/// the burst. Returns 0 when allowed (and records it), else how many ms to wait.
const GCRA_SCRIPT: &str = r"
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local allowed_at = tat - (burst - 1) * interval
if now < allowed_at then return allowed_at - now end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', new_tat - now)
return 0
";

/// The shared store: Redis, connected on first use.
struct RedisStore {
    client: redis::Client,
    connection: tokio::sync::OnceCell<redis::aio::ConnectionManager>,
    script: redis::Script,
    prefix: String,
    /// Keys are an HMAC of the limit and the phone, address, IP or user (with `SECRET_KEY`,
    /// which every engine shares), so the shared Redis holds no phone numbers or addresses.
    key_secret: Vec<u8>,
    /// Until when checks skip Redis after a failure (see [`REDIS_BACKOFF`]).
    down_until: std::sync::Mutex<Option<std::time::Instant>>,
    last_warning: std::sync::Mutex<Option<std::time::Instant>>,
}

fn locked<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl RedisStore {
    fn is_down(&self) -> bool {
        locked(&self.down_until).is_some_and(|until| std::time::Instant::now() < until)
    }

    fn key(&self, limit: Limit, key: &str) -> String {
        use hmac::{Hmac, KeyInit, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&self.key_secret)
            .expect("HMAC accepts keys of any length");
        mac.update(limit.key_name().as_bytes());
        mac.update(b"\0");
        mac.update(key.as_bytes());
        let digest = mac.finalize().into_bytes();
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        format!("{}{}:{hex}", self.prefix, limit.key_name())
    }

    async fn check(
        &self,
        limit: Limit,
        key: &str,
        budget: (u32, Duration),
        now: Duration,
    ) -> redis::RedisResult<Option<Duration>> {
        let connection = self
            .connection
            .get_or_try_init(|| {
                // Fail fast: the caller falls back to memory rather than wait.
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(REDIS_TIMEOUT))
                    .set_response_timeout(Some(REDIS_TIMEOUT))
                    .set_number_of_retries(1);
                redis::aio::ConnectionManager::new_with_config(self.client.clone(), config)
            })
            .await?;
        let (count, period) = budget;
        let interval_ms = (period.as_millis() / u128::from(count.max(1))).max(1) as u64;
        let wait_ms: u64 = self
            .script
            .key(self.key(limit, key))
            .arg(now.as_millis() as u64)
            .arg(interval_ms)
            .arg(count.max(1))
            .invoke_async(&mut connection.clone())
            .await?;
        Ok((wait_ms > 0).then(|| Duration::from_millis(wait_ms)))
    }

    fn failed(&self, error: &dyn std::fmt::Display) {
        *locked(&self.down_until) = Some(std::time::Instant::now() + REDIS_BACKOFF);
        let mut last = locked(&self.last_warning);
        if last.is_none_or(|at| at.elapsed() >= REDIS_WARNING_EVERY) {
            *last = Some(std::time::Instant::now());
            tracing::warn!(%error, "rate limits: Redis unreachable; limiting in this process's memory");
        }
    }
}

/// The engine's limiters.
pub struct Limiter {
    settings: RateLimits,
    /// One governor limiter per [`Limit`], in [`ALL_LIMITS`] order: the store without Redis,
    /// and the fallback when Redis fails.
    memory: Vec<KeyedLimiter>,
    redis: Option<RedisStore>,
    /// Users whose socket was closed for flooding, refused until the given time.
    ws_cooldowns: std::sync::Mutex<std::collections::HashMap<uuid::Uuid, Cooldown>>,
    clock: EngineClock,
}

impl Limiter {
    /// The limiter `settings` ask for; an invalid `RATELIMIT_STORAGE_URI` is an error.
    pub fn from_settings(settings: &Settings, clock: SharedClock) -> anyhow::Result<Self> {
        let redis = match &settings.ratelimit_storage_uri {
            None => None,
            Some(uri) => Some(RedisStore {
                client: redis::Client::open(uri.expose_secret()).map_err(|e| {
                    anyhow::anyhow!(
                        "RATELIMIT_STORAGE_URI is not a usable Redis URL (redis://… or \
                         redis+unix://…; TLS is not built in): {e}"
                    )
                })?,
                connection: tokio::sync::OnceCell::new(),
                script: redis::Script::new(GCRA_SCRIPT),
                prefix: settings.ratelimit_key_prefix.clone(),
                key_secret: settings.secret_key.expose_secret().as_bytes().to_vec(),
                down_until: std::sync::Mutex::new(None),
                last_warning: std::sync::Mutex::new(None),
            }),
        };
        Ok(Self::build(settings.rate_limits, redis, clock))
    }

    /// In memory only.
    #[cfg(test)]
    pub fn in_memory(settings: RateLimits, clock: SharedClock) -> Self {
        Self::build(settings, None, clock)
    }

    fn build(settings: RateLimits, redis: Option<RedisStore>, clock: SharedClock) -> Self {
        let clock = EngineClock(clock);
        let memory = ALL_LIMITS
            .iter()
            .map(|limit| {
                let (count, period) = limit.budget(&settings);
                let count = NonZeroU32::new(count).unwrap_or(NonZeroU32::MIN);
                let quota = Quota::with_period(period / count.get())
                    .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
                    .allow_burst(count);
                RateLimiter::dashmap_with_clock(quota, clock.clone())
            })
            .collect();
        Self {
            settings,
            memory,
            redis,
            ws_cooldowns: Default::default(),
            clock,
        }
    }

    fn in_memory_limiter(&self, limit: Limit) -> &KeyedLimiter {
        let index = ALL_LIMITS
            .iter()
            .position(|l| *l == limit)
            .expect("every limit is in ALL_LIMITS");
        &self.memory[index]
    }

    /// Charges one unit of `limit` to `key`.
    pub async fn check(&self, limit: Limit, key: &str) -> Result<(), RetryAfter> {
        if let Some(redis) = self.redis.as_ref().filter(|redis| !redis.is_down()) {
            let budget = limit.budget(&self.settings);
            let now = self.clock.since_epoch();
            match tokio::time::timeout(REDIS_TIMEOUT, redis.check(limit, key, budget, now)).await {
                Ok(Ok(None)) => return Ok(()),
                Ok(Ok(Some(wait))) => return Err(RetryAfter(wait)),
                Ok(Err(error)) => redis.failed(&error),
                Err(_) => redis.failed(&"timed out"),
            }
        }
        self.in_memory_limiter(limit)
            .check_key(&key.to_owned())
            .map_err(|not_until| RetryAfter(not_until.wait_time_from(self.clock.now())))
    }

    /// May this IP send a code to this phone now? The global ceiling is charged last, so a
    /// refused phone or IP does not use it up.
    pub async fn check_sms_send(&self, ip: IpAddr, phone: &str) -> Result<(), RetryAfter> {
        self.check(Limit::SmsPerIp, &rate_limit_key(ip).to_string())
            .await?;
        self.check_recipient(phone).await?;
        self.check(Limit::SmsGlobal, "all").await
    }

    /// May another message (code, reset link) go to this phone or address now?
    pub async fn check_recipient(&self, recipient: &str) -> Result<(), RetryAfter> {
        self.check(Limit::RecipientPerMinute, recipient).await?;
        self.check(Limit::RecipientPerHour, recipient).await
    }

    /// May this IP make another authentication attempt now?
    pub async fn check_auth_attempt(&self, ip: IpAddr) -> Result<(), RetryAfter> {
        self.check(Limit::AuthPerIp, &rate_limit_key(ip).to_string())
            .await
    }

    /// May this user book another pickup now?
    pub async fn check_job_creation(&self, user: uuid::Uuid) -> Result<(), RetryAfter> {
        self.check(Limit::JobsPerUser, &user.to_string()).await
    }

    /// May this user upload photos now?
    pub async fn check_upload(&self, user: uuid::Uuid) -> Result<(), RetryAfter> {
        self.check(Limit::UploadsPerUser, &user.to_string()).await
    }

    /// May this user open another WebSocket now?
    pub async fn check_ws_connect(&self, user: uuid::Uuid) -> Result<(), RetryAfter> {
        let now = self.clock.0.now();
        if let Some(cooldown) = self.cooldowns().get(&user).copied()
            && cooldown.until > now
        {
            return Err(RetryAfter(
                (cooldown.until - now).to_std().unwrap_or_default(),
            ));
        }
        self.check(Limit::WsConnectsPerUser, &user.to_string())
            .await
    }

    /// Refuses this user's WebSocket connections for `base` (their socket was closed for
    /// flooding: reconnecting at once would only repeat it), doubled for each earlier close
    /// within [`STRIKE_MEMORY`], at most [`MAX_COOLDOWN`]. Returns the cool-down applied.
    pub fn cool_down_ws(&self, user: uuid::Uuid, base: Duration) -> Duration {
        let now = self.clock.0.now();
        let mut cooldowns = self.cooldowns();
        let strikes = match cooldowns.get(&user) {
            Some(previous) if now < previous.until + strike_memory() => previous.strikes + 1,
            _ => 1,
        };
        let cooldown = base
            .saturating_mul(1 << (strikes - 1).min(16))
            .min(MAX_COOLDOWN.max(base));
        let until = now + chrono::Duration::from_std(cooldown).unwrap_or_default();
        cooldowns.insert(user, Cooldown { until, strikes });
        cooldown
    }

    fn cooldowns(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<uuid::Uuid, Cooldown>> {
        self.ws_cooldowns
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Forgets keys whose budget is full again, so memory follows recent traffic only.
    pub fn forget_idle_keys(&self) {
        for limiter in &self.memory {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        let now = self.clock.0.now();
        self.cooldowns()
            .retain(|_, cooldown| now < cooldown.until + strike_memory());
    }
}

fn strike_memory() -> chrono::Duration {
    chrono::Duration::from_std(STRIKE_MEMORY).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use umuve_actors::clock::ManualClock;

    fn limiter() -> (Limiter, ManualClock) {
        let clock = ManualClock::new(chrono::Utc::now());
        (Limiter::in_memory(limits(), Arc::new(clock.clone())), clock)
    }

    fn limits() -> RateLimits {
        RateLimits {
            sms_per_phone_per_hour: 5,
            sms_per_ip_per_hour: 3,
            sms_global_per_hour: 4,
            auth_per_ip_per_minute: 2,
            ws_connects_per_user_per_minute: 2,
            jobs_per_user_per_hour: 2,
            uploads_per_user_per_hour: 2,
        }
    }

    #[tokio::test]
    async fn one_sms_per_phone_per_minute() {
        let (limiter, clock) = limiter();
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        assert!(limiter.check_sms_send(ip, "+13055550100").await.is_ok());
        clock.advance(chrono::Duration::seconds(15));
        let RetryAfter(wait) = limiter
            .check_sms_send(ip, "+13055550100")
            .await
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(45));
        // Another phone from the same IP is fine until the IP's budget runs out.
        assert!(limiter.check_sms_send(ip, "+13055550101").await.is_ok());
        assert!(limiter.check_sms_send(ip, "+13055550102").await.is_err());
    }

    #[tokio::test]
    async fn the_global_sms_ceiling_holds_across_ips_and_phones() {
        let (limiter, _clock) = limiter();
        for n in 0..4 {
            let ip: IpAddr = format!("203.0.113.{n}").parse().unwrap();
            assert!(
                limiter
                    .check_sms_send(ip, &format!("+1305555020{n}"))
                    .await
                    .is_ok()
            );
        }
        let RetryAfter(wait) = limiter
            .check_sms_send("198.51.100.9".parse().unwrap(), "+13055550299")
            .await
            .unwrap_err();
        assert_eq!(
            wait,
            Duration::from_secs(15 * 60),
            "4 per hour: one per 15 min"
        );
    }

    #[tokio::test]
    async fn auth_attempts_per_ip() {
        let (limiter, clock) = limiter();
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        let other: IpAddr = "198.51.100.2".parse().unwrap();
        assert!(limiter.check_auth_attempt(ip).await.is_ok());
        assert!(limiter.check_auth_attempt(ip).await.is_ok());
        assert!(limiter.check_auth_attempt(ip).await.is_err());
        assert!(limiter.check_auth_attempt(other).await.is_ok());
        // Two per minute: one more after 30 s.
        clock.advance(chrono::Duration::seconds(30));
        assert!(limiter.check_auth_attempt(ip).await.is_ok());
        assert!(limiter.check_auth_attempt(ip).await.is_err());
    }

    #[tokio::test]
    async fn bookings_and_uploads_per_user() {
        let (limiter, _clock) = limiter();
        let user = uuid::Uuid::new_v4();
        assert!(limiter.check_job_creation(user).await.is_ok());
        assert!(limiter.check_job_creation(user).await.is_ok());
        assert_eq!(
            limiter.check_job_creation(user).await,
            Err(RetryAfter(Duration::from_secs(1800)))
        );
        assert!(limiter.check_upload(user).await.is_ok(), "separate budgets");
        assert!(
            limiter
                .check_job_creation(uuid::Uuid::new_v4())
                .await
                .is_ok()
        );
    }

    /// A limiter on Redis at `uri` (not connected until its first check).
    fn shared_limiter(uri: &str) -> anyhow::Result<Limiter> {
        let settings = crate::config::Settings::from_lookup(|name| match name {
            "RATELIMIT_STORAGE_URI" => Some(uri.to_owned()),
            "SECRET_KEY" => Some("0123456789abcdef0123456789abcdef".into()),
            _ => None,
        })
        .unwrap()
        .settings;
        let clock = ManualClock::new(chrono::Utc::now());
        Limiter::from_settings(&settings, Arc::new(clock))
    }

    #[test]
    fn a_storage_uri_that_is_not_redis_is_refused_at_start_up() {
        for uri in [
            "http://127.0.0.1:6379/",
            "not a url",
            "rediss://127.0.0.1:6379/",
        ] {
            let error = shared_limiter(uri)
                .err()
                .unwrap_or_else(|| panic!("{uri} accepted"));
            assert!(
                error
                    .to_string()
                    .contains("RATELIMIT_STORAGE_URI is not a usable Redis URL"),
                "{uri}: {error}"
            );
        }
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_left_alone_for_a_while() {
        // Nothing listens on port 1.
        let limiter = shared_limiter("redis://127.0.0.1:1/").unwrap();
        assert!(limiter.redis.is_some());
        let redis = limiter.redis.as_ref().unwrap();
        assert!(!redis.is_down());
        let user = uuid::Uuid::new_v4();
        assert!(
            limiter.check_upload(user).await.is_ok(),
            "decided in memory"
        );
        assert!(redis.is_down(), "checks skip Redis for {REDIS_BACKOFF:?}");
        // Memory holds the budget meanwhile: 60 per hour.
        for _ in 1..60 {
            assert!(limiter.check_upload(user).await.is_ok());
        }
        assert!(limiter.check_upload(user).await.is_err());
    }

    #[test]
    fn redis_keys_hold_no_phone_or_address() {
        let limiter = shared_limiter("redis://127.0.0.1:6379/").unwrap();
        let redis = limiter.redis.as_ref().unwrap();
        let key = redis.key(Limit::RecipientPerHour, "+13055550100");
        assert!(key.starts_with("umuve:ratelimit:recipient-hour:"), "{key}");
        assert!(!key.contains("3055550100"), "{key}");
        assert_eq!(
            key,
            redis.key(Limit::RecipientPerHour, "+13055550100"),
            "stable"
        );
        assert_ne!(key, redis.key(Limit::RecipientPerHour, "+13055550101"));
        assert_ne!(key, redis.key(Limit::RecipientPerMinute, "+13055550100"));
    }

    #[tokio::test]
    async fn flooding_cool_downs_double_for_repeat_offenders() {
        let (limiter, clock) = limiter();
        let flooder = uuid::Uuid::new_v4();
        let other = uuid::Uuid::new_v4();
        let minute = Duration::from_secs(60);
        assert_eq!(limiter.cool_down_ws(flooder, minute), minute);
        assert_eq!(
            limiter.check_ws_connect(flooder).await,
            Err(RetryAfter(minute)),
            "refused for the whole cool-down"
        );
        assert!(
            limiter.check_ws_connect(other).await.is_ok(),
            "others unaffected"
        );

        // Let back in, floods again at once: twice as long, then four times.
        clock.advance(chrono::Duration::seconds(61));
        assert!(limiter.check_ws_connect(flooder).await.is_ok());
        assert_eq!(limiter.cool_down_ws(flooder, minute), 2 * minute);
        clock.advance(chrono::Duration::seconds(121));
        assert_eq!(limiter.cool_down_ws(flooder, minute), 4 * minute);
        assert_eq!(
            limiter.check_ws_connect(flooder).await,
            Err(RetryAfter(4 * minute))
        );

        // Never more than an hour.
        for _ in 0..10 {
            limiter.cool_down_ws(flooder, minute);
        }
        assert_eq!(limiter.cool_down_ws(flooder, minute), MAX_COOLDOWN);

        // The strikes are kept for the strike memory after the last cool-down, then forgotten
        // (memory follows recent offenders only), and the next close starts at one again.
        let memory = chrono::Duration::from_std(MAX_COOLDOWN + STRIKE_MEMORY).unwrap();
        clock.advance(memory - chrono::Duration::seconds(1));
        limiter.forget_idle_keys();
        assert_eq!(limiter.cooldowns().len(), 1, "still remembered");
        clock.advance(chrono::Duration::seconds(1));
        limiter.forget_idle_keys();
        assert!(limiter.cooldowns().is_empty(), "forgotten");
        assert_eq!(limiter.cool_down_ws(flooder, minute), minute);
    }
}
