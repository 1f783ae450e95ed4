//! Sign in with Apple: verifies identity tokens (RS256 JWTs) against Apple's published key set.
//!
//! The key set is fetched from `APPLE_JWKS_URL`, cached for a day, and fetched again when a token
//! names a key id the cache does not know (Apple rotates keys). Refetches for unknown key ids are
//! limited to one per minute, so tokens with made-up key ids cannot make us hammer Apple.

use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::Mutex;
use url::Url;

use umuve_actors::clock::SharedClock;

/// Apple's issuer claim.
pub const APPLE_ISSUER: &str = "https://appleid.apple.com";
/// How long a fetched key set is trusted.
const KEY_SET_TTL: Duration = Duration::hours(24);
/// Minimum time between refetches triggered by an unknown key id.
const UNKNOWN_KID_REFETCH_INTERVAL: Duration = Duration::minutes(1);
const FETCH_TIMEOUT: StdDuration = StdDuration::from_secs(5);

/// What a valid identity token says about the person.
#[derive(Debug, Clone)]
pub struct AppleIdentity {
    /// Apple's stable user id for our team.
    pub subject: String,
    pub email: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AppleError {
    /// The token is not one Apple issued for us, or no longer valid.
    #[error("{0}")]
    Invalid(String),
    /// We could not check it (key set unreachable, not configured).
    #[error("{0}")]
    Unavailable(String),
}

#[derive(Debug, Deserialize)]
struct AppleClaims {
    sub: String,
    exp: i64,
    #[serde(default)]
    email: Option<String>,
}

#[derive(Default)]
struct KeyCache {
    keys: Option<JwkSet>,
    fetched_at: Option<DateTime<Utc>>,
    last_unknown_kid_refetch: Option<DateTime<Utc>>,
}

/// Verifies Apple identity tokens; one per engine, shared by all workers.
pub struct AppleVerifier {
    http: reqwest::Client,
    jwks_url: Url,
    client_ids: Vec<String>,
    clock: SharedClock,
    /// Held across a fetch, so concurrent sign-ins trigger one fetch, not many.
    cache: Mutex<KeyCache>,
}

impl AppleVerifier {
    pub fn new(
        http: reqwest::Client,
        jwks_url: Url,
        client_ids: Vec<String>,
        clock: SharedClock,
    ) -> Self {
        Self {
            http,
            jwks_url,
            client_ids,
            clock,
            cache: Mutex::new(KeyCache::default()),
        }
    }

    async fn fetch(&self) -> Result<JwkSet, AppleError> {
        let unavailable = |e: reqwest::Error| {
            tracing::warn!(error = %e, "could not fetch Apple's key set");
            AppleError::Unavailable("Apple's key set is unreachable; try again".into())
        };
        self.http
            .get(self.jwks_url.clone())
            .timeout(FETCH_TIMEOUT)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(unavailable)?
            .json::<JwkSet>()
            .await
            .map_err(unavailable)
    }

    /// The decoding key for `kid`, fetching the key set when needed.
    async fn key_for(&self, kid: &str) -> Result<DecodingKey, AppleError> {
        let now = self.clock.now();
        let mut cache = self.cache.lock().await;
        let fresh = cache.fetched_at.is_some_and(|at| now - at < KEY_SET_TTL);
        let known = cache
            .keys
            .as_ref()
            .and_then(|keys| keys.find(kid))
            .is_some();
        let may_refetch_for_unknown = cache
            .last_unknown_kid_refetch
            .is_none_or(|at| now - at >= UNKNOWN_KID_REFETCH_INTERVAL);
        if !fresh || (!known && may_refetch_for_unknown) {
            if fresh {
                cache.last_unknown_kid_refetch = Some(now);
            }
            match self.fetch().await {
                Ok(keys) => {
                    cache.keys = Some(keys);
                    cache.fetched_at = Some(now);
                }
                // A stale key set still verifies tokens signed with keys it holds.
                Err(error) if cache.keys.is_none() => return Err(error),
                Err(_) => {}
            }
        }
        let jwk = cache
            .keys
            .as_ref()
            .and_then(|keys| keys.find(kid))
            .ok_or_else(|| {
                AppleError::Invalid("identity token is signed with an unknown key".into())
            })?;
        DecodingKey::from_jwk(jwk)
            .map_err(|_| AppleError::Invalid("Apple's key for this token is unusable".into()))
    }

    /// Verifies signature (by `kid`), `iss`, `aud` (one of `APPLE_CLIENT_IDS`) and `exp`.
    pub async fn verify(&self, identity_token: &str) -> Result<AppleIdentity, AppleError> {
        if self.client_ids.is_empty() {
            return Err(AppleError::Unavailable(
                "Sign in with Apple is not configured (APPLE_CLIENT_IDS)".into(),
            ));
        }
        let header = jsonwebtoken::decode_header(identity_token)
            .map_err(|_| AppleError::Invalid("identity token is not a JWT".into()))?;
        if header.alg != Algorithm::RS256 {
            return Err(AppleError::Invalid(
                "identity token must be signed with RS256".into(),
            ));
        }
        let kid = header
            .kid
            .ok_or_else(|| AppleError::Invalid("identity token has no key id".into()))?;
        let key = self.key_for(&kid).await?;

        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[APPLE_ISSUER]);
        validation.set_audience(&self.client_ids);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // Expiry is checked against the engine's clock below.
        validation.validate_exp = false;
        let claims = jsonwebtoken::decode::<AppleClaims>(identity_token, &key, &validation)
            .map_err(|error| {
                use jsonwebtoken::errors::ErrorKind;
                AppleError::Invalid(
                    match error.kind() {
                        ErrorKind::InvalidIssuer => "identity token was not issued by Apple",
                        ErrorKind::InvalidAudience => "identity token is for another app",
                        ErrorKind::InvalidSignature => "identity token signature does not verify",
                        ErrorKind::MissingRequiredClaim(_) => {
                            "identity token lacks a required claim"
                        }
                        _ => "identity token is invalid",
                    }
                    .into(),
                )
            })?
            .claims;
        if claims.exp <= self.clock.now().timestamp() {
            return Err(AppleError::Invalid("identity token expired".into()));
        }
        Ok(AppleIdentity {
            subject: claims.sub,
            email: claims.email,
        })
    }
}
