//! Contact data every service validates the same way: email addresses and phone numbers.

/// A syntactically valid email address, trimmed (letter case kept).
pub fn parse_email(raw: &str) -> Result<String, &'static str> {
    let s = raw.trim();
    if s.len() > 254 || !email_address::EmailAddress::is_valid(s) || !s.contains('.') {
        return Err("must be a valid email address");
    }
    Ok(s.to_owned())
}

/// The form uniqueness and login compare: trimmed and lower case.
pub fn normalize_email(raw: &str) -> String {
    raw.trim().to_lowercase()
}

/// A phone number in E.164 form: `+` and 8 to 15 digits; spaces, dashes, dots and
/// brackets are accepted and dropped.
pub fn parse_phone(raw: &str) -> Result<String, &'static str> {
    const MESSAGE: &str = "must be in international form, like +4930123456";
    let compact: String = raw
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect();
    let digits = compact.strip_prefix('+').ok_or(MESSAGE)?;
    if !(8..=15).contains(&digits.len())
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || digits.starts_with('0')
    {
        return Err(MESSAGE);
    }
    Ok(compact)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_validated_and_normalized() {
        assert_eq!(
            parse_email("  Ada.Lovelace@Example.ORG ").unwrap(),
            "Ada.Lovelace@Example.ORG"
        );
        assert_eq!(
            normalize_email(" Ada.Lovelace@Example.ORG"),
            "ada.lovelace@example.org"
        );
        for bad in [
            "",
            "no-at-sign",
            "a@b",
            "shop@example",
            "@example.org",
            "a b@example.org",
        ] {
            assert!(parse_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn phones_must_be_international() {
        assert_eq!(parse_phone("+49 (30) 123-456").unwrap(), "+4930123456");
        for bad in ["030123456", "+12", "+49abc12345", "+0123456789"] {
            assert!(parse_phone(bad).is_err(), "{bad}");
        }
    }
}
