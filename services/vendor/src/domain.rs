//! Vendor and product rules: what a valid name, SKU, price or stock figure is. No axum,
//! no sqlx: every check returns a message that the API attaches to the field it came
//! from.

use mp_events::{Currency, Money};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Largest price accepted, in minor units (ten billion of the major unit): far above any
/// real article, far below where cart and order totals could overflow.
pub const PRICE_MAX: i64 = 1_000_000_000_000;
/// Largest stock figure or threshold accepted.
pub const QUANTITY_MAX: i64 = 1_000_000_000;
pub const SKU_MAX: usize = 64;
pub const PRODUCT_NAME_MAX: usize = 200;
pub const DESCRIPTION_MAX: usize = 5000;
pub const VENDOR_NAME_MAX: usize = 120;
/// Longest catalog search text.
pub const QUERY_MAX: usize = 200;

/// A member's role in a vendor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Manages products and members.
    Owner,
    /// Manages products.
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Member => "member",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "owner" => Some(Role::Owner),
            "member" => Some(Role::Member),
            _ => None,
        }
    }
}

/// What a name ([`parse_vendor_name`], [`parse_product_name`]) may be, for the API
/// document: no control character (Unicode `Cc`), and at least one character that is not
/// white space (what `str::trim` removes).
pub const NAME_PATTERN: &str = r"^[^\x00-\x1F\x7F-\x9F]*[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\x00-\x1F\x7F-\x9F]*$";

/// What [`parse_description`] accepts: no control character but line breaks and tabs.
pub const DESCRIPTION_PATTERN: &str = r"^[^\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F]*$";

/// What [`parse_query`] accepts: no control character.
pub const QUERY_PATTERN: &str = r"^[^\x00-\x1F\x7F-\x9F]*$";

/// What [`parse_sku`] accepts: 1 to 64 letters, digits or `-_./`, with white space (what
/// `str::trim` removes) around them allowed and dropped.
pub const SKU_PATTERN: &str = r"^[\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[A-Za-z0-9_./-]{1,64}[\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$";

/// 1 to `max` characters as sent, not only white space, no control characters; the
/// value kept is trimmed. The rule judges the text as sent, so the API document can state
/// it exactly ([`NAME_PATTERN`], `maxLength`).
fn single_line(raw: &str, max: usize) -> Result<String, String> {
    let s = raw.trim();
    if s.is_empty() || raw.chars().count() > max || raw.chars().any(char::is_control) {
        return Err(format!(
            "must be 1 to {max} characters on one line, not only spaces"
        ));
    }
    Ok(s.to_owned())
}

pub fn parse_vendor_name(raw: &str) -> Result<String, String> {
    single_line(raw, VENDOR_NAME_MAX)
}

pub fn parse_product_name(raw: &str) -> Result<String, String> {
    single_line(raw, PRODUCT_NAME_MAX)
}

/// Free text, at most [`DESCRIPTION_MAX`] characters as sent; line breaks and tabs
/// allowed, other control characters not. The value kept is trimmed.
pub fn parse_description(raw: &str) -> Result<String, String> {
    let s = raw.trim();
    if raw.chars().count() > DESCRIPTION_MAX
        || raw
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(format!(
            "must be at most {DESCRIPTION_MAX} characters without control characters"
        ));
    }
    Ok(s.to_owned())
}

/// Letters, digits and `-_./`, 1 to 64 of them, trimmed. Kept as written; uniqueness
/// ignores case.
pub fn parse_sku(raw: &str) -> Result<String, String> {
    let s = raw.trim();
    if s.is_empty()
        || s.len() > SKU_MAX
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
    {
        return Err(format!(
            "must be 1 to {SKU_MAX} letters, digits or -_./ characters"
        ));
    }
    Ok(s.to_owned())
}

pub use mp_common::contact::{parse_email, parse_phone};

/// A price as a request writes it, not checked yet: its amount any whole JSON number
/// (`1999` or `1999.0`, as JSON Schema's `integer` allows), its currency any text.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceInput {
    #[serde(deserialize_with = "mp_common::serde_ext::integer")]
    pub amount: i64,
    pub currency: String,
}

/// A price: more than zero, at most [`PRICE_MAX`], in an ISO 4217 currency written in
/// upper case. Otherwise every fault, as `(sub-field, message)`.
pub fn parse_price(price: &PriceInput) -> Result<Money, Vec<(&'static str, String)>> {
    let mut errors = Vec::new();
    if price.amount <= 0 {
        errors.push((
            "amount",
            "must be greater than zero (minor units, e.g. 1999 for 19.99)".to_owned(),
        ));
    } else if price.amount > PRICE_MAX {
        errors.push(("amount", format!("must be at most {PRICE_MAX}")));
    }
    match Currency::parse(&price.currency) {
        Ok(currency) if errors.is_empty() => Ok(Money::new(price.amount, currency)),
        Ok(_) => Err(errors),
        Err(_) => {
            errors.push((
                "currency",
                "must be an ISO 4217 code in upper case, like EUR".to_owned(),
            ));
            Err(errors)
        }
    }
}

/// A stock figure or threshold: 0 to [`QUANTITY_MAX`].
pub fn check_quantity(value: i64) -> Result<(), String> {
    if !(0..=QUANTITY_MAX).contains(&value) {
        return Err(format!("must be between 0 and {QUANTITY_MAX}"));
    }
    Ok(())
}

/// Catalog search text: at most [`QUERY_MAX`] characters as sent, on one line; searched
/// for trimmed, and empty (or only white space) means no filter.
pub fn parse_query(raw: Option<&str>) -> Result<Option<String>, String> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    if raw.chars().count() > QUERY_MAX || raw.chars().any(char::is_control) {
        return Err(format!(
            "must be at most {QUERY_MAX} characters on one line"
        ));
    }
    Ok(Some(raw.trim())
        .filter(|q| !q.is_empty())
        .map(str::to_owned))
}

/// A `LIKE` pattern matching `q` anywhere, with its wildcards taken literally.
pub fn contains_pattern(q: &str) -> String {
    let mut p = String::with_capacity(q.len() + 2);
    p.push('%');
    for c in q.chars() {
        if matches!(c, '\\' | '%' | '_') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skus_are_trimmed_and_limited_to_a_safe_alphabet() {
        assert_eq!(parse_sku("  TSHIRT-RED/L ").unwrap(), "TSHIRT-RED/L");
        assert_eq!(
            parse_sku(&format!(" {} ", "A".repeat(SKU_MAX)))
                .unwrap()
                .len(),
            SKU_MAX
        );
        for bad in ["", "   ", "a b", "\u{1}TSHIRT", "ä", "x;y", &"A".repeat(65)] {
            assert!(parse_sku(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prices_must_be_positive_in_a_real_upper_case_currency() {
        let price = |amount: i64, currency: &str| {
            parse_price(&PriceInput {
                amount,
                currency: currency.to_owned(),
            })
        };
        let faults = |amount, currency| {
            price(amount, currency)
                .unwrap_err()
                .into_iter()
                .map(|(field, _)| field)
                .collect::<Vec<_>>()
        };
        assert_eq!(price(1, "EUR"), Ok(Money::new(1, Currency::EUR)));
        assert_eq!(
            price(PRICE_MAX, "JPY"),
            Ok(Money::parse(PRICE_MAX, "JPY").unwrap())
        );
        assert_eq!(faults(0, "EUR"), ["amount"]);
        assert_eq!(faults(-5, "EUR"), ["amount"]);
        assert_eq!(faults(PRICE_MAX + 1, "EUR"), ["amount"]);
        assert_eq!(faults(100, "eur"), ["currency"]);
        assert_eq!(faults(0, "XXQ"), ["amount", "currency"]);
    }

    #[test]
    fn quantities_are_between_zero_and_the_maximum() {
        assert!(check_quantity(0).is_ok());
        assert!(check_quantity(QUANTITY_MAX).is_ok());
        assert!(check_quantity(-1).is_err());
        assert!(check_quantity(QUANTITY_MAX + 1).is_err());
    }

    #[test]
    fn search_patterns_take_wildcards_literally() {
        assert_eq!(contains_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
        assert_eq!(parse_query(Some("  ")).unwrap(), None);
        assert_eq!(parse_query(Some(" mug ")).unwrap().as_deref(), Some("mug"));
        assert!(parse_query(Some(&"q".repeat(QUERY_MAX + 1))).is_err());
        assert!(parse_query(Some(&format!("{} ", "q".repeat(QUERY_MAX)))).is_err());
        assert!(parse_query(Some("mug\n")).is_err());
    }

    #[test]
    fn names_and_descriptions_are_judged_as_sent_and_kept_trimmed() {
        assert_eq!(parse_vendor_name(" Tea & Cups ").unwrap(), "Tea & Cups");
        assert!(parse_vendor_name(&"x".repeat(VENDOR_NAME_MAX)).is_ok());
        for bad in [
            "",
            " \u{3000}",
            "Tea\nCups",
            &"x".repeat(VENDOR_NAME_MAX + 1),
            &format!("{} ", "x".repeat(VENDOR_NAME_MAX)),
        ] {
            assert!(parse_vendor_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_description(" a\n\tb\r\n").unwrap(), "a\n\tb");
        assert_eq!(parse_description("").unwrap(), "");
        assert!(parse_description("a\u{7}b").is_err());
        assert!(parse_description(&format!("{} ", "x".repeat(DESCRIPTION_MAX))).is_err());
    }

    #[test]
    fn phones_and_emails_are_checked() {
        assert_eq!(parse_phone("+49 30 123456").unwrap(), "+4930123456");
        assert!(parse_phone("030123456").is_err());
        assert!(parse_email(" shop@example.org ").is_ok());
        assert!(parse_email("shop@example").is_err());
    }
}
