//! One-time secrets: 6-digit SMS codes and password-reset tokens. The database keeps only an
//! HMAC-SHA256 of each, keyed with `SECRET_KEY`: a plain hash of a 6-digit code could be reversed
//! by trying all million codes, a keyed one cannot without the key.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use rand::RngExt;
use sha2::Sha256;

/// How a code or token is looked up: the hex HMAC of what the user holds.
pub struct OneTimeHasher {
    key: Vec<u8>,
}

impl OneTimeHasher {
    pub fn new(secret_key: &[u8]) -> Self {
        Self {
            key: secret_key.to_vec(),
        }
    }

    fn hash(&self, purpose: &str, parts: &[&str]) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC accepts keys of any length");
        mac.update(purpose.as_bytes());
        for part in parts {
            // Length-prefixed so ("ab", "c") and ("a", "bc") differ.
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The stored form of an SMS code; bound to the phone so a code is only good for its phone.
    pub fn sms_code(&self, phone: &str, code: &str) -> String {
        self.hash("sms-code", &[phone, code])
    }

    /// The stored form of a password-reset token.
    pub fn reset_token(&self, token: &str) -> String {
        self.hash("password-reset", &[token])
    }
}

/// A fresh 6-digit code, uniformly from 000000 to 999999.
pub fn new_sms_code() -> String {
    format!("{:06}", rand::rng().random_range(0..1_000_000u32))
}

/// True when the input has the shape of a code (exactly six ASCII digits).
pub fn looks_like_sms_code(input: &str) -> bool {
    input.len() == 6 && input.bytes().all(|b| b.is_ascii_digit())
}

/// A fresh reset token: 32 random bytes, URL-safe base64.
pub fn new_reset_token() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_six_digits() {
        for _ in 0..1000 {
            let code = new_sms_code();
            assert!(looks_like_sms_code(&code), "{code}");
        }
        assert!(!looks_like_sms_code("12345"));
        assert!(!looks_like_sms_code("12345a"));
        assert!(!looks_like_sms_code("1234567"));
    }

    #[test]
    fn hashes_depend_on_key_phone_and_code() {
        let a = OneTimeHasher::new(b"key-a");
        let b = OneTimeHasher::new(b"key-b");
        assert_eq!(
            a.sms_code("+13055550100", "123456"),
            a.sms_code("+13055550100", "123456")
        );
        assert_ne!(
            a.sms_code("+13055550100", "123456"),
            b.sms_code("+13055550100", "123456")
        );
        assert_ne!(
            a.sms_code("+13055550100", "123456"),
            a.sms_code("+13055550101", "123456")
        );
        assert_ne!(
            a.sms_code("+13055550100", "123456"),
            a.reset_token("123456")
        );
    }

    #[test]
    fn reset_tokens_are_unguessable() {
        let token = new_reset_token();
        assert_eq!(token.len(), 43);
        assert_ne!(token, new_reset_token());
    }
}
