//! Rate limits on the authentication endpoints, in memory (per engine process).
//!
//! - SMS send: at most one per phone per minute, `SMS_PER_PHONE_PER_HOUR` per phone and
//!   `SMS_PER_IP_PER_HOUR` per client IP.
//! - Verify, login, Apple, password forgot/reset, admin seed: `AUTH_PER_IP_PER_MINUTE` per IP.
//!
//! Limits are GCRA (governor): a budget that refills evenly, e.g. 5 per hour is a burst of 5,
//! then one more every 12 minutes.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::AuthRateLimits;

fn per_hour(n: u32) -> Quota {
    Quota::per_hour(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN))
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN))
}

/// The limiters of the auth endpoints.
pub struct AuthLimiter {
    sms_per_phone_minute: DefaultKeyedRateLimiter<String>,
    sms_per_phone_hour: DefaultKeyedRateLimiter<String>,
    sms_per_ip_hour: DefaultKeyedRateLimiter<IpAddr>,
    auth_per_ip_minute: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

/// Refused: come back after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl AuthLimiter {
    pub fn new(limits: &AuthRateLimits) -> Self {
        Self {
            sms_per_phone_minute: RateLimiter::keyed(per_minute(1)),
            sms_per_phone_hour: RateLimiter::keyed(per_hour(limits.sms_per_phone_per_hour)),
            sms_per_ip_hour: RateLimiter::keyed(per_hour(limits.sms_per_ip_per_hour)),
            auth_per_ip_minute: RateLimiter::keyed(per_minute(limits.auth_per_ip_per_minute)),
            clock: DefaultClock::default(),
        }
    }

    fn check<K: std::hash::Hash + Eq + Clone>(
        &self,
        limiter: &DefaultKeyedRateLimiter<K>,
        key: &K,
    ) -> Result<(), RetryAfter> {
        limiter
            .check_key(key)
            .map_err(|not_until| RetryAfter(not_until.wait_time_from(self.clock.now())))
    }

    /// May this IP send a code to this phone now?
    pub fn check_sms_send(&self, ip: IpAddr, phone: &str) -> Result<(), RetryAfter> {
        let phone = phone.to_owned();
        self.check(&self.sms_per_ip_hour, &ip)?;
        self.check(&self.sms_per_phone_minute, &phone)?;
        self.check(&self.sms_per_phone_hour, &phone)
    }

    /// May this IP make another authentication attempt now?
    pub fn check_auth_attempt(&self, ip: IpAddr) -> Result<(), RetryAfter> {
        self.check(&self.auth_per_ip_minute, &ip)
    }

    /// Forgets keys whose budget is full again, so memory follows recent traffic only.
    pub fn forget_idle_keys(&self) {
        self.sms_per_phone_minute.retain_recent();
        self.sms_per_phone_hour.retain_recent();
        self.sms_per_ip_hour.retain_recent();
        self.auth_per_ip_minute.retain_recent();
        self.sms_per_phone_minute.shrink_to_fit();
        self.sms_per_phone_hour.shrink_to_fit();
        self.sms_per_ip_hour.shrink_to_fit();
        self.auth_per_ip_minute.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> AuthRateLimits {
        AuthRateLimits {
            sms_per_phone_per_hour: 5,
            sms_per_ip_per_hour: 3,
            auth_per_ip_per_minute: 2,
        }
    }

    #[test]
    fn one_sms_per_phone_per_minute() {
        let limiter = AuthLimiter::new(&limits());
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        assert!(limiter.check_sms_send(ip, "+13055550100").is_ok());
        let RetryAfter(wait) = limiter.check_sms_send(ip, "+13055550100").unwrap_err();
        assert!(
            wait > Duration::from_secs(50) && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
        // Another phone from the same IP is fine until the IP's budget runs out.
        assert!(limiter.check_sms_send(ip, "+13055550101").is_ok());
        assert!(limiter.check_sms_send(ip, "+13055550102").is_err());
    }

    #[test]
    fn auth_attempts_per_ip() {
        let limiter = AuthLimiter::new(&limits());
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        let other: IpAddr = "198.51.100.2".parse().unwrap();
        assert!(limiter.check_auth_attempt(ip).is_ok());
        assert!(limiter.check_auth_attempt(ip).is_ok());
        assert!(limiter.check_auth_attempt(ip).is_err());
        assert!(limiter.check_auth_attempt(other).is_ok());
    }
}
