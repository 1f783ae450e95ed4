/// A person's display name: trimmed, 1 to 200 characters, no control characters. Anything
/// else (quotes, SQL metacharacters, emoji) is kept as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonName(String);

/// Free text from a client, trimmed: at most `max` characters, not empty when `required`, no
/// control characters but those in `allowed_controls`. Errors name the `field`.
pub fn bounded_text(
    field: &str,
    input: &str,
    max: usize,
    required: bool,
    allowed_controls: &[char],
) -> Result<String, String> {
    let text = input.trim();
    if required && text.is_empty() {
        return Err(format!("{field} must not be empty"));
    }
    if text.chars().count() > max {
        return Err(format!("{field} must have at most {max} characters"));
    }
    if text
        .chars()
        .any(|c| c.is_control() && !allowed_controls.contains(&c))
    {
        return Err(format!("{field} must not contain control characters"));
    }
    Ok(text.to_owned())
}

impl PersonName {
    pub const MAX_CHARS: usize = 200;

    pub fn parse(input: &str) -> Result<Self, String> {
        bounded_text("name", input, Self::MAX_CHARS, true, &[]).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kept_verbatim_but_trimmed() {
        let tricky = "Robert'); DROP TABLE users;-- \"Bobby\" 🚚";
        assert_eq!(
            PersonName::parse(&format!("  {tricky} ")).unwrap().as_str(),
            tricky
        );
        assert!(PersonName::parse("   ").is_err());
        assert!(PersonName::parse("a\u{0}b").is_err());
        assert!(PersonName::parse(&"x".repeat(201)).is_err());
    }
}
