//! Access tokens: HS256 JWTs with `sub` (user id), `role`, `iat`, `exp`, valid 30 days.

use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::Role;

/// How long an access token lives.
pub const TOKEN_LIFETIME: Duration = Duration::days(30);

/// The claims of our access tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: Uuid,
    pub role: Role,
    pub iat: i64,
    pub exp: i64,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("invalid token")]
    Invalid,
    #[error("token expired")]
    Expired,
}

/// Signs and verifies access tokens with `JWT_SECRET`.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl TokenKeys {
    pub fn new(secret: &[u8]) -> Self {
        // Only HS256 is accepted: a token claiming `none` or any other algorithm fails.
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is checked against the engine's clock (below), not the library's.
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "iat", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// A token for this user, valid from `now` for [`TOKEN_LIFETIME`].
    pub fn issue(&self, user_id: Uuid, role: Role, now: DateTime<Utc>) -> String {
        let claims = Claims {
            sub: user_id,
            role,
            iat: now.timestamp(),
            exp: (now + TOKEN_LIFETIME).timestamp(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing with an in-memory key cannot fail")
    }

    /// The claims of a valid, unexpired token.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Claims, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| TokenError::Invalid)?;
        if data.claims.exp <= now.timestamp() {
            return Err(TokenError::Expired);
        }
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_until_it_expires() {
        let keys = TokenKeys::new(b"test-secret-test-secret");
        let now = Utc::now();
        let user = Uuid::new_v4();
        let token = keys.issue(user, Role::Driver, now);
        let claims = keys.verify(&token, now).unwrap();
        assert_eq!(claims.sub, user);
        assert_eq!(claims.role, Role::Driver);
        assert_eq!(claims.exp - claims.iat, 30 * 24 * 3600);
        assert_eq!(
            keys.verify(&token, now + TOKEN_LIFETIME),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn another_secret_does_not_verify() {
        let now = Utc::now();
        let token =
            TokenKeys::new(b"one-secret-one-secret").issue(Uuid::new_v4(), Role::Admin, now);
        assert_eq!(
            TokenKeys::new(b"other-secret-other-secret").verify(&token, now),
            Err(TokenError::Invalid)
        );
    }
}
