use std::fmt;

/// A new password chosen by a user: long enough to resist guessing, short enough that hashing it
/// stays cheap.
pub struct Password(String);

impl Password {
    pub const MIN_CHARS: usize = 8;
    pub const MAX_BYTES: usize = 256;

    pub fn parse(input: String) -> Result<Self, String> {
        if input.chars().count() < Self::MIN_CHARS {
            return Err(format!(
                "password must have at least {} characters",
                Self::MIN_CHARS
            ));
        }
        if input.len() > Self::MAX_BYTES {
            return Err(format!(
                "password must have at most {} bytes",
                Self::MAX_BYTES
            ));
        }
        Ok(Self(input))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_bounds() {
        assert!(Password::parse("short".into()).is_err());
        assert!(Password::parse("long enough".into()).is_ok());
        assert!(Password::parse("x".repeat(257)).is_err());
        assert_eq!(
            format!("{:?}", Password::parse("hunter2hunter2".into()).unwrap()),
            "Password([REDACTED])"
        );
    }
}
