use std::fmt;

/// A phone number in E.164 form (`+13055550100`). US and Canadian input without a country code
/// gets `+1`; separators (spaces, dashes, dots, parentheses) are ignored.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Phone(String);

impl Phone {
    pub fn parse(input: &str) -> Result<Self, String> {
        let not_a_phone = || format!("{input:?} is not a phone number");
        let trimmed = input.trim();
        let (international, rest) = match trimmed.strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (false, trimmed),
        };
        let mut digits = String::with_capacity(rest.len());
        for c in rest.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' | '.' | '(' | ')' => {}
                _ => return Err(not_a_phone()),
            }
        }
        let e164 = if international {
            if let Some(national) = digits.strip_prefix('1') {
                nanp(national).ok_or_else(not_a_phone)?
            } else if (8..=15).contains(&digits.len()) && !digits.starts_with('0') {
                format!("+{digits}")
            } else {
                return Err(not_a_phone());
            }
        } else if digits.len() == 10 {
            nanp(&digits).ok_or_else(not_a_phone)?
        } else if digits.len() == 11 && digits.starts_with('1') {
            nanp(&digits[1..]).ok_or_else(not_a_phone)?
        } else {
            return Err(not_a_phone());
        };
        Ok(Self(e164))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A North American number: 3-digit area code and exchange, neither starting with 0 or 1.
fn nanp(national: &str) -> Option<String> {
    let bytes = national.as_bytes();
    let valid =
        bytes.len() == 10 && (b'2'..=b'9').contains(&bytes[0]) && (b'2'..=b'9').contains(&bytes[3]);
    valid.then(|| format!("+1{national}"))
}

impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&umuve_actors::outbound::mask_phone(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn us_numbers_get_the_country_code() {
        for input in [
            "305-555-0100",
            "(305) 555-0100",
            "305.555.0100",
            "3055550100",
            "13055550100",
            "+1 305 555 0100",
            "+13055550100",
        ] {
            assert_eq!(
                Phone::parse(input).unwrap().as_str(),
                "+13055550100",
                "{input}"
            );
        }
    }

    #[test]
    fn other_countries_keep_their_code() {
        assert_eq!(
            Phone::parse("+44 20 7946 0958").unwrap().as_str(),
            "+442079460958"
        );
    }

    #[test]
    fn things_that_are_not_phones_are_refused() {
        for input in [
            "",
            "hello",
            "555-0100",
            "055-555-0100",
            "305-155-0100",
            "+0123456789",
            "+1234",
            "+1234567890123456",
            "305-555-0100 ext 3",
            "305'; DROP TABLE users;--",
            "３０５５５５０１００",
        ] {
            assert!(Phone::parse(input).is_err(), "{input:?} was accepted");
        }
    }
}
