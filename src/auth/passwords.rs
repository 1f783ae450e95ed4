//! Password hashing with argon2id. Hashing costs tens of milliseconds of CPU and ~19 MiB, so it
//! runs on the blocking pool, never on the event loop, and a semaphore caps how many run at once.

use std::sync::{Arc, OnceLock};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use tokio::sync::Semaphore;

/// Hashes and verifies passwords (argon2id, the crate's defaults: m = 19 MiB, t = 2, p = 1).
#[derive(Clone)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
}

/// Hash of a random password, verified against when an account does not exist, so a login for
/// an unknown email takes as long as one for a known email.
static DUMMY_HASH: OnceLock<String> = OnceLock::new();

fn hash_now(password: &str) -> anyhow::Result<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| anyhow::anyhow!("argon2 hashing failed: {e}"))
}

fn verify_now(password: &str, stored: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

impl PasswordHasher {
    /// At most `concurrency` hashes at once.
    pub fn new(concurrency: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
        }
    }

    /// The PHC string (`$argon2id$v=19$...`) of a password.
    pub async fn hash(&self, password: &str) -> anyhow::Result<String> {
        // The permit moves into the blocking task: if the request is dropped (client gone), the
        // hash still runs to completion and keeps its slot until then.
        let permit = self.permits.clone().acquire_owned().await?;
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            hash_now(&password)
        })
        .await?
    }

    /// True when `password` matches `stored`. With no stored hash (no such account, or an account
    /// without a password) it still does the work and answers false.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> anyhow::Result<bool> {
        let permit = self.permits.clone().acquire_owned().await?;
        let password = password.to_owned();
        let stored = stored.map(str::to_owned);
        tokio::task::spawn_blocking(move || match stored {
            Some(stored) => {
                let _permit = permit;
                Ok(verify_now(&password, &stored))
            }
            None => {
                let _permit = permit;
                let dummy = match DUMMY_HASH.get() {
                    Some(hash) => hash,
                    None => {
                        let hash = hash_now(&super::one_time::new_reset_token())?;
                        DUMMY_HASH.get_or_init(|| hash)
                    }
                };
                verify_now(&password, dummy);
                Ok(false)
            }
        })
        .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_are_argon2id() {
        let hasher = PasswordHasher::new(2);
        let hash = hasher.hash("correct horse battery").await.unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(
            hasher
                .verify("correct horse battery", Some(&hash))
                .await
                .unwrap()
        );
        assert!(
            !hasher
                .verify("wrong horse battery", Some(&hash))
                .await
                .unwrap()
        );
        assert!(!hasher.verify("anything", None).await.unwrap());
        assert!(!hasher.verify("anything", Some("not a hash")).await.unwrap());
    }
}
