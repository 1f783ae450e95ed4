//! Rate limits on the authentication endpoints, in memory (per engine process).
//!
//! - SMS send: at most one per phone per minute, `SMS_PER_PHONE_PER_HOUR` per phone and
//!   `SMS_PER_IP_PER_HOUR` per client IP.
//! - Password-reset emails: the same per-recipient limits as SMS, per address (so nobody can
//!   flood a mailbox through the reset form).
//! - Verify, login, Apple, password forgot/reset, admin seed: `AUTH_PER_IP_PER_MINUTE` per IP.
//! - WebSocket connections: `WS_CONNECTS_PER_USER_PER_MINUTE` per user, so a client that keeps
//!   reconnecting (after being closed for flooding, say) is refused before any work is done.
//!   A user closed for flooding is refused for a cool-down that doubles for each repeat within
//!   [`STRIKE_MEMORY`] (up to [`MAX_COOLDOWN`]): a client that floods again the moment it is let
//!   back in would otherwise cost a burst of work every cool-down.
//!
//! Limits are GCRA (governor): a budget that refills evenly, e.g. 5 per hour is a burst of 5,
//! then one more every 12 minutes. They run on the engine's clock, like every other expiry.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use chrono::DateTime;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use umuve_actors::clock::SharedClock;

use crate::config::AuthRateLimits;
use crate::http::client_ip::rate_limit_key;

/// The engine's clock, as governor sees it: time since the Unix epoch.
#[derive(Clone)]
struct EngineClock(SharedClock);

impl Clock for EngineClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        (self.0.now() - DateTime::UNIX_EPOCH)
            .to_std()
            .unwrap_or_default()
    }
}

/// How long a flooding close is remembered for escalating the next cool-down.
pub const STRIKE_MEMORY: Duration = Duration::from_secs(3600);
/// The longest cool-down, however often a user floods.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(3600);

/// A user closed for flooding: refused until `until`; `strikes` closes in a row, each within
/// [`STRIKE_MEMORY`] of the previous cool-down's end.
#[derive(Debug, Clone, Copy)]
struct Cooldown {
    until: DateTime<chrono::Utc>,
    strikes: u32,
}

type KeyedLimiter<K> = RateLimiter<K, DashMapStateStore<K>, EngineClock, NoOpMiddleware<Duration>>;

fn keyed<K: Hash + Eq + Clone>(quota: Quota, clock: &EngineClock) -> KeyedLimiter<K> {
    RateLimiter::dashmap_with_clock(quota, clock.clone())
}

fn per_hour(n: u32) -> Quota {
    Quota::per_hour(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN))
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN))
}

/// The limiters of the auth endpoints.
pub struct AuthLimiter {
    /// Keyed by recipient: a phone (`+1...`) or an email address (`...@...`); they never collide.
    per_recipient_minute: KeyedLimiter<String>,
    per_recipient_hour: KeyedLimiter<String>,
    sms_per_ip_hour: KeyedLimiter<IpAddr>,
    auth_per_ip_minute: KeyedLimiter<IpAddr>,
    ws_connects_per_user: KeyedLimiter<uuid::Uuid>,
    /// Users whose socket was closed for flooding, refused until the given time.
    ws_cooldowns: std::sync::Mutex<std::collections::HashMap<uuid::Uuid, Cooldown>>,
    clock: EngineClock,
}

/// Refused: come back after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl AuthLimiter {
    pub fn new(limits: &AuthRateLimits, clock: SharedClock) -> Self {
        let clock = EngineClock(clock);
        Self {
            per_recipient_minute: keyed(per_minute(1), &clock),
            per_recipient_hour: keyed(per_hour(limits.sms_per_phone_per_hour), &clock),
            sms_per_ip_hour: keyed(per_hour(limits.sms_per_ip_per_hour), &clock),
            auth_per_ip_minute: keyed(per_minute(limits.auth_per_ip_per_minute), &clock),
            ws_connects_per_user: keyed(per_minute(limits.ws_connects_per_user_per_minute), &clock),
            ws_cooldowns: Default::default(),
            clock,
        }
    }

    fn check<K: Hash + Eq + Clone>(
        &self,
        limiter: &KeyedLimiter<K>,
        key: &K,
    ) -> Result<(), RetryAfter> {
        limiter
            .check_key(key)
            .map_err(|not_until| RetryAfter(not_until.wait_time_from(self.clock.now())))
    }

    /// May this IP send a code to this phone now?
    pub fn check_sms_send(&self, ip: IpAddr, phone: &str) -> Result<(), RetryAfter> {
        self.check(&self.sms_per_ip_hour, &rate_limit_key(ip))?;
        self.check_recipient(phone)
    }

    /// May another message (code, reset link) go to this phone or address now?
    pub fn check_recipient(&self, recipient: &str) -> Result<(), RetryAfter> {
        let recipient = recipient.to_owned();
        self.check(&self.per_recipient_minute, &recipient)?;
        self.check(&self.per_recipient_hour, &recipient)
    }

    /// May this IP make another authentication attempt now?
    pub fn check_auth_attempt(&self, ip: IpAddr) -> Result<(), RetryAfter> {
        self.check(&self.auth_per_ip_minute, &rate_limit_key(ip))
    }

    /// May this user open another WebSocket now?
    pub fn check_ws_connect(&self, user: uuid::Uuid) -> Result<(), RetryAfter> {
        let now = self.clock.0.now();
        if let Some(cooldown) = self.cooldowns().get(&user).copied()
            && cooldown.until > now
        {
            return Err(RetryAfter(
                (cooldown.until - now).to_std().unwrap_or_default(),
            ));
        }
        self.check(&self.ws_connects_per_user, &user)
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
        self.per_recipient_minute.retain_recent();
        self.per_recipient_hour.retain_recent();
        self.sms_per_ip_hour.retain_recent();
        self.auth_per_ip_minute.retain_recent();
        self.ws_connects_per_user.retain_recent();
        let now = self.clock.0.now();
        self.cooldowns()
            .retain(|_, cooldown| now < cooldown.until + strike_memory());
        self.per_recipient_minute.shrink_to_fit();
        self.per_recipient_hour.shrink_to_fit();
        self.sms_per_ip_hour.shrink_to_fit();
        self.auth_per_ip_minute.shrink_to_fit();
        self.ws_connects_per_user.shrink_to_fit();
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

    fn limiter() -> (AuthLimiter, ManualClock) {
        let clock = ManualClock::new(chrono::Utc::now());
        (AuthLimiter::new(&limits(), Arc::new(clock.clone())), clock)
    }

    fn limits() -> AuthRateLimits {
        AuthRateLimits {
            sms_per_phone_per_hour: 5,
            sms_per_ip_per_hour: 3,
            auth_per_ip_per_minute: 2,
            ws_connects_per_user_per_minute: 2,
        }
    }

    #[test]
    fn one_sms_per_phone_per_minute() {
        let (limiter, clock) = limiter();
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        assert!(limiter.check_sms_send(ip, "+13055550100").is_ok());
        clock.advance(chrono::Duration::seconds(15));
        let RetryAfter(wait) = limiter.check_sms_send(ip, "+13055550100").unwrap_err();
        assert_eq!(wait, Duration::from_secs(45));
        // Another phone from the same IP is fine until the IP's budget runs out.
        assert!(limiter.check_sms_send(ip, "+13055550101").is_ok());
        assert!(limiter.check_sms_send(ip, "+13055550102").is_err());
    }

    #[test]
    fn auth_attempts_per_ip() {
        let (limiter, clock) = limiter();
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        let other: IpAddr = "198.51.100.2".parse().unwrap();
        assert!(limiter.check_auth_attempt(ip).is_ok());
        assert!(limiter.check_auth_attempt(ip).is_ok());
        assert!(limiter.check_auth_attempt(ip).is_err());
        assert!(limiter.check_auth_attempt(other).is_ok());
        // Two per minute: one more after 30 s.
        clock.advance(chrono::Duration::seconds(30));
        assert!(limiter.check_auth_attempt(ip).is_ok());
        assert!(limiter.check_auth_attempt(ip).is_err());
    }

    #[test]
    fn flooding_cool_downs_double_for_repeat_offenders() {
        let (limiter, clock) = limiter();
        let flooder = uuid::Uuid::new_v4();
        let other = uuid::Uuid::new_v4();
        let minute = Duration::from_secs(60);
        assert_eq!(limiter.cool_down_ws(flooder, minute), minute);
        assert_eq!(
            limiter.check_ws_connect(flooder),
            Err(RetryAfter(minute)),
            "refused for the whole cool-down"
        );
        assert!(limiter.check_ws_connect(other).is_ok(), "others unaffected");

        // Let back in, floods again at once: twice as long, then four times.
        clock.advance(chrono::Duration::seconds(61));
        assert!(limiter.check_ws_connect(flooder).is_ok());
        assert_eq!(limiter.cool_down_ws(flooder, minute), 2 * minute);
        clock.advance(chrono::Duration::seconds(121));
        assert_eq!(limiter.cool_down_ws(flooder, minute), 4 * minute);
        assert_eq!(
            limiter.check_ws_connect(flooder),
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
