//! Cart rules without I/O: quantities, prices and tax, checkout input, idempotency keys.
//!
//! Tax rule (the one rounding rule): tax is charged on the subtotal, not per line, at
//! `CART_TAX_RATE_BPS` basis points, rounded half up to the currency's minor unit:
//! `tax = (subtotal * bps + 5000) / 10000` in integer arithmetic. The total is
//! `subtotal + tax`; prices are net of tax.

use mp_events::catalog::ShippingAddress;
use mp_events::{Currency, Money};
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub const MAX_QUANTITY: i64 = 999;
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// A cart's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CartStatus {
    Open,
    CheckedOut,
    Abandoned,
}

impl CartStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CartStatus::Open => "open",
            CartStatus::CheckedOut => "checked_out",
            CartStatus::Abandoned => "abandoned",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(CartStatus::Open),
            "checked_out" => Some(CartStatus::CheckedOut),
            "abandoned" => Some(CartStatus::Abandoned),
            _ => None,
        }
    }
}

/// A line quantity: 1 to 999.
pub fn check_quantity(quantity: i64) -> Result<i64, String> {
    if (1..=MAX_QUANTITY).contains(&quantity) {
        Ok(quantity)
    } else {
        Err(format!("must be between 1 and {MAX_QUANTITY}"))
    }
}

/// Tax on `subtotal` at `rate_bps` basis points, rounded half up.
pub fn tax(subtotal: i64, rate_bps: u32) -> i64 {
    let t = (i128::from(subtotal) * i128::from(rate_bps) + 5_000) / 10_000;
    i64::try_from(t).unwrap_or(i64::MAX)
}

/// What a cart's lines add up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Totals {
    pub subtotal: i64,
    pub tax: i64,
    pub total: i64,
}

/// Totals of lines given as `(quantity, unit_price)`.
pub fn totals(lines: impl IntoIterator<Item = (i64, i64)>, rate_bps: u32) -> Totals {
    let subtotal = lines
        .into_iter()
        .map(|(q, p)| q.saturating_mul(p))
        .fold(0i64, i64::saturating_add);
    let tax = tax(subtotal, rate_bps);
    Totals {
        subtotal,
        tax,
        total: subtotal.saturating_add(tax),
    }
}

impl Totals {
    pub fn money(&self, currency: Currency) -> (Money, Money, Money) {
        (
            Money::new(self.subtotal, currency),
            Money::new(self.tax, currency),
            Money::new(self.total, currency),
        )
    }
}

/// An `Idempotency-Key` header value: 1 to 255 visible ASCII characters.
pub fn check_idempotency_key(key: &str) -> Result<&str, String> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(format!(
            "The Idempotency-Key header must have 1 to {MAX_IDEMPOTENCY_KEY} characters."
        ));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("The Idempotency-Key header must be visible ASCII characters.".into());
    }
    Ok(key)
}

/// The fingerprint of a checkout request: SHA-256 (hex) of the cart id and the parsed
/// body in a fixed field order, so key order and whitespace do not matter. The payment
/// token enters it only through the one-way hash.
pub fn fingerprint(cart_id: Uuid, payment_token: &str, address: &ShippingAddress) -> String {
    let mut h = Sha256::new();
    h.update(cart_id.as_bytes());
    h.update((payment_token.len() as u64).to_be_bytes());
    h.update(payment_token.as_bytes());
    h.update(serde_json::to_vec(address).unwrap_or_default());
    format!("{:x}", h.finalize())
}

/// A required line of text: 1 to `max` characters, no control characters, no whitespace
/// at either end (`mp_common::text`).
fn text(v: &mut Vec<(&'static str, String)>, field: &'static str, value: &str, max: usize) {
    if let Err(message) = mp_common::text::parse_line(value, max) {
        v.push((field, message));
    }
}

/// Field errors of a shipping address (`shipping_address.<field>`, message).
pub fn address_errors(a: &ShippingAddress) -> Vec<(&'static str, String)> {
    let mut v = Vec::new();
    text(&mut v, "shipping_address.name", &a.name, 200);
    text(&mut v, "shipping_address.line1", &a.line1, 200);
    if let Some(line2) = &a.line2
        && line2.chars().count() > 200
    {
        v.push((
            "shipping_address.line2",
            "must be at most 200 characters".into(),
        ));
    }
    text(&mut v, "shipping_address.city", &a.city, 100);
    text(&mut v, "shipping_address.postal_code", &a.postal_code, 20);
    if !(a.country.len() == 2 && a.country.bytes().all(|b| b.is_ascii_uppercase())) {
        v.push((
            "shipping_address.country",
            "must be an ISO 3166-1 alpha-2 code in upper case, e.g. DE".into(),
        ));
    }
    v
}

/// A payment token: 1 to 200 visible ASCII characters.
pub fn check_payment_token(token: &str) -> Result<(), String> {
    if token.is_empty() || token.len() > 200 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be 1 to 200 visible ASCII characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_lines_are_bounded_and_not_padded() {
        let mut a = ShippingAddress {
            name: " Ada".into(),
            line1: "1 Main St\n".into(),
            line2: Some(" flat 2 ".into()),
            city: "B".repeat(101),
            postal_code: "".into(),
            country: "de".into(),
        };
        let fields: Vec<_> = address_errors(&a).into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            [
                "shipping_address.name",
                "shipping_address.line1",
                "shipping_address.city",
                "shipping_address.postal_code",
                "shipping_address.country"
            ]
        );
        a.name = "Ada Lovelace".into();
        a.line1 = "1 Main St".into();
        a.city = "B".repeat(100);
        a.postal_code = "10115".into();
        a.country = "DE".into();
        assert!(address_errors(&a).is_empty());
    }

    #[test]
    fn tax_is_rounded_half_up_on_the_subtotal() {
        assert_eq!(tax(1000, 2000), 200);
        // 0.5 cent rounds up, 0.49 down.
        assert_eq!(tax(25, 2000), 5);
        assert_eq!(tax(1, 5000), 1);
        assert_eq!(tax(1, 4999), 0);
        assert_eq!(tax(0, 2000), 0);
    }

    #[test]
    fn totals_add_lines_then_tax_the_subtotal() {
        let t = totals([(2, 1299), (1, 1)], 2000);
        assert_eq!(t.subtotal, 2599);
        assert_eq!(t.tax, 520);
        assert_eq!(t.total, 3119);
    }

    #[test]
    fn quantities_run_from_1_to_999() {
        assert!(check_quantity(0).is_err());
        assert!(check_quantity(1000).is_err());
        assert_eq!(check_quantity(999), Ok(999));
    }

    #[test]
    fn idempotency_keys_are_bounded_visible_ascii() {
        assert!(check_idempotency_key("").is_err());
        assert!(check_idempotency_key("a b").is_err());
        assert!(check_idempotency_key(&"k".repeat(256)).is_err());
        assert!(check_idempotency_key("8e0f-11").is_ok());
    }

    #[test]
    fn fingerprints_differ_by_cart_token_and_address() {
        let a = ShippingAddress {
            name: "Ada".into(),
            line1: "1 Main St".into(),
            line2: None,
            city: "Berlin".into(),
            postal_code: "10115".into(),
            country: "DE".into(),
        };
        let mut b = a.clone();
        b.city = "Bonn".into();
        let (c1, c2) = (Uuid::new_v4(), Uuid::new_v4());
        let f = fingerprint(c1, "tok_visa", &a);
        assert_eq!(f, fingerprint(c1, "tok_visa", &a));
        assert_ne!(f, fingerprint(c2, "tok_visa", &a));
        assert_ne!(f, fingerprint(c1, "tok_declined", &a));
        assert_ne!(f, fingerprint(c1, "tok_visa", &b));
        assert!(!f.contains("tok_visa"));
    }
}
