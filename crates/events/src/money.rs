//! Money: an amount in minor units of an ISO 4217 currency, written
//! `{"amount": 1999, "currency": "EUR"}` in every API and event.
//!
//! Neither type can hold a currency that is not a known ISO 4217 code in upper case:
//! [`Currency::parse`] is the only way to make one from text, and everything else goes
//! through it (deserializing JSON, decoding a `text` column, [`Money::parse`]). So an
//! event carrying `"eur"` or `"XXQ"` is refused as malformed where it is read, and a corrupt
//! row fails loudly instead of rendering as a price. [`Money`]'s fields are private for the
//! same reason: it is built from a `Currency` or through `Money::parse`, never field by field.
//!
//! What the sign of an amount may be is the rule of whoever takes it (a price is positive, a
//! tax is not negative), checked where that rule lives, so `Money` holds any `i64`.

use std::borrow::Cow;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sqlx::Postgres;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};

/// A currency: a known ISO 4217 code written in upper case.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency(iso_currency::Currency);

/// Text that is not a known ISO 4217 code in upper case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an ISO 4217 currency code in upper case")]
pub struct InvalidCurrency(pub String);

impl Currency {
    pub const EUR: Currency = Currency(iso_currency::Currency::EUR);
    pub const USD: Currency = Currency(iso_currency::Currency::USD);

    pub fn parse(code: &str) -> Result<Self, InvalidCurrency> {
        iso_currency::Currency::from_code(code)
            .filter(|_| code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()))
            .map(Self)
            .ok_or_else(|| InvalidCurrency(code.to_owned()))
    }

    /// The three-letter code, e.g. `EUR`.
    pub fn code(self) -> &'static str {
        self.0.code()
    }

    /// How many digits of the amount are minor units (2 for EUR, 0 for JPY, 3 for BHD);
    /// `None` for codes without minor units (gold, SDRs).
    pub fn exponent(self) -> Option<u16> {
        self.0.exponent()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl std::str::FromStr for Currency {
    type Err = InvalidCurrency;

    fn from_str(code: &str) -> Result<Self, Self::Err> {
        Self::parse(code)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = Cow::<str>::deserialize(deserializer)?;
        Self::parse(&code).map_err(serde::de::Error::custom)
    }
}

/// Schemas show a currency as the string it is written as.
impl JsonSchema for Currency {
    fn schema_name() -> String {
        String::schema_name()
    }

    fn json_schema(generator: &mut schemars::r#gen::SchemaGenerator) -> schemars::schema::Schema {
        String::json_schema(generator)
    }

    fn is_referenceable() -> bool {
        false
    }
}

impl sqlx::Type<Postgres> for Currency {
    fn type_info() -> PgTypeInfo {
        <&str as sqlx::Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <&str as sqlx::Type<Postgres>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, Postgres> for Currency {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Self::parse(<&str as sqlx::Decode<Postgres>>::decode(
            value,
        )?)?)
    }
}

impl sqlx::Encode<'_, Postgres> for Currency {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <&str as sqlx::Encode<Postgres>>::encode_by_ref(&self.code(), buf)
    }
}

/// An amount of money in minor units of an ISO 4217 currency.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema,
)]
#[schema(example = json!({"amount": 1999, "currency": "EUR"}))]
#[serde(deny_unknown_fields)]
pub struct Money {
    /// Minor units (cents for EUR).
    amount: i64,
    /// ISO 4217 code, upper case, e.g. `EUR`.
    #[schema(value_type = String)]
    currency: Currency,
}

impl Money {
    pub const fn new(amount: i64, currency: Currency) -> Self {
        Self { amount, currency }
    }

    /// `amount` minor units of the currency written `currency`.
    pub fn parse(amount: i64, currency: &str) -> Result<Self, InvalidCurrency> {
        Ok(Self::new(amount, Currency::parse(currency)?))
    }

    pub const fn amount(&self) -> i64 {
        self.amount
    }

    pub const fn currency(&self) -> Currency {
        self.currency
    }

    /// The price of `quantity` units at this unit price, saturating at `i64::MAX`
    /// (the quantities and prices the services accept stay far below it).
    pub const fn times(self, quantity: i64) -> Self {
        Self::new(self.amount.saturating_mul(quantity), self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_currency_is_a_known_code_in_upper_case() {
        assert_eq!(Currency::parse("EUR"), Ok(Currency::EUR));
        assert_eq!(Currency::parse("JPY").unwrap().exponent(), Some(0));
        for bad in ["eur", "Eur", "XXQ", "EU", "EURO", "", "€"] {
            assert_eq!(
                Currency::parse(bad),
                Err(InvalidCurrency(bad.to_owned())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn money_reads_and_writes_the_api_shape_and_refuses_a_bad_currency() {
        let m: Money = serde_json::from_str(r#"{"amount": 1999, "currency": "EUR"}"#).unwrap();
        assert_eq!(m, Money::new(1999, Currency::EUR));
        assert_eq!(
            serde_json::to_value(m).unwrap(),
            serde_json::json!({"amount": 1999, "currency": "EUR"})
        );
        for bad in [
            r#"{"amount": 1999, "currency": "eur"}"#,
            r#"{"amount": 1999, "currency": "XXQ"}"#,
            r#"{"amount": 1999}"#,
            r#"{"amount": 1999, "currency": "EUR", "cents": 1}"#,
        ] {
            assert!(serde_json::from_str::<Money>(bad).is_err(), "{bad}");
        }
        let err = serde_json::from_str::<Money>(r#"{"amount": 1, "currency": "eur"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"eur\" is not an ISO 4217"), "{err}");
    }

    #[test]
    fn both_schemas_show_the_currency_as_a_described_string() {
        let events = serde_json::to_value(schemars::schema_for!(Money)).unwrap();
        let api = serde_json::to_value(<Money as utoipa::PartialSchema>::schema()).unwrap();
        for schema in [events, api] {
            let currency = &schema["properties"]["currency"];
            assert_eq!(currency["type"], "string", "{schema}");
            assert_eq!(
                currency["description"],
                "ISO 4217 code, upper case, e.g. `EUR`."
            );
            assert_eq!(schema["properties"]["amount"]["type"], "integer");
            assert_eq!(
                schema["required"],
                serde_json::json!(["amount", "currency"])
            );
        }
    }

    #[test]
    fn a_line_total_is_the_unit_price_times_the_quantity() {
        let unit = Money::new(1250, Currency::USD);
        assert_eq!(unit.times(3), Money::new(3750, Currency::USD));
        assert_eq!(unit.times(i64::MAX).amount(), i64::MAX);
    }
}
