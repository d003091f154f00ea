//! Contact data every service validates the same way: email addresses and phone numbers,
//! and their JSON Schemas for the API documents (`#[schema(schema_with = ...)]`), which
//! say exactly what the parsers accept.

use utoipa::openapi::schema::{ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{KnownFormat, Object};

/// The longest email address accepted.
pub const EMAIL_MAX_LEN: usize = 254;

/// What [`parse_phone`] accepts: `+`, then 8 to 15 digits not starting with 0, with
/// spaces, dashes, dots and brackets anywhere.
pub const PHONE_PATTERN: &str = r"^[ ().-]*\+[ ().-]*[1-9]([ ().-]*[0-9]){7,14}[ ().-]*$";

/// The schema of an email field.
pub fn email_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Email)))
        .max_length(Some(EMAIL_MAX_LEN))
        .examples(["ada@example.org"])
        .build()
}

/// The schema of a phone field.
pub fn phone_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(PHONE_PATTERN))
        .examples(["+4930123456"])
        .build()
}

/// The schema of a phone field that may be `null` (no phone, or clear it).
pub fn optional_phone_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            Type::String,
            Type::Null,
        ]))
        .pattern(Some(PHONE_PATTERN))
        .examples(["+4930123456"])
        .build()
}

/// A syntactically valid email address, trimmed (letter case kept).
pub fn parse_email(raw: &str) -> Result<String, &'static str> {
    let s = raw.trim();
    if s.len() > EMAIL_MAX_LEN || !email_address::EmailAddress::is_valid(s) || !s.contains('.') {
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
    fn the_phone_pattern_says_what_the_parser_accepts() {
        let pattern = regex::Regex::new(PHONE_PATTERN).unwrap();
        for phone in [
            "+4930123456",
            "+49 (30) 123-456",
            " +1.555.123.4567 ",
            "+12345678",
            "+123456789012345",
            "030123456",
            "+1234567",
            "+1234567890123456",
            "+0123456789",
            "+49abc12345",
            "4930123456",
            "++4930123456",
            "",
        ] {
            assert_eq!(
                pattern.is_match(phone),
                parse_phone(phone).is_ok(),
                "{phone:?}"
            );
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
