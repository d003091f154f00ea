//! Request-body deserializers that read JSON the way the API document states it.
//!
//! JSON has one number type: in JSON Schema `5.0` is an `integer` like `5`, and a client
//! serializing through floating point may send it. serde refuses `5.0` for an `i64`, so
//! integer fields take any number whose value is a whole number that fits in an `i64`
//! ([`integer`], [`optional_integer`]); `5.5` stays refused.

use std::fmt;
use std::marker::PhantomData;

use mp_events::Money;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

struct IntegerVisitor;

impl Visitor<'_> for IntegerVisitor {
    type Value = i64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        Ok(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        i64::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
        // -2^63 is exact in f64; 2^63 is the first value past i64::MAX.
        const LIMIT: f64 = 9_223_372_036_854_775_808.0;
        if v.fract() == 0.0 && (-LIMIT..LIMIT).contains(&v) {
            #[expect(clippy::cast_possible_truncation, reason = "whole and in range")]
            return Ok(v as i64);
        }
        Err(E::invalid_type(de::Unexpected::Float(v), &self))
    }
}

/// An `i64` written as any whole JSON number (`5` or `5.0`).
pub fn integer<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    d.deserialize_any(IntegerVisitor)
}

/// [`integer`], or `null` (`None`). Use with `#[serde(default, deserialize_with = ...)]`.
pub fn optional_integer<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    struct Whole(#[serde(deserialize_with = "integer")] i64);
    Ok(Option::<Whole>::deserialize(d)?.map(|w| w.0))
}

/// A price in a request body: [`Money`] with its amount read by [`integer`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Price {
    #[serde(deserialize_with = "integer")]
    amount: i64,
    currency: String,
}

impl From<Price> for Money {
    fn from(p: Price) -> Self {
        Money {
            amount: p.amount,
            currency: p.currency,
        }
    }
}

/// Fills `T` from a JSON object only (serde alone would also take an array of its fields
/// in order), reading the object's entries in place so an error names the nested field
/// (`price.amount`).
struct ObjectVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(map))
    }
}

/// `null` as `None`, else [`ObjectVisitor`].
struct OptionalObjectVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for OptionalObjectVisitor<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_map(ObjectVisitor(PhantomData)).map(Some)
    }
}

/// A price: a JSON object only.
pub fn price<'de, D: Deserializer<'de>>(d: D) -> Result<Money, D::Error> {
    d.deserialize_map(ObjectVisitor::<Price>(PhantomData))
        .map(Money::from)
}

/// [`price`], or `null` (`None`). Use with `#[serde(default, deserialize_with = ...)]`.
pub fn optional_price<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Money>, D::Error> {
    d.deserialize_option(OptionalObjectVisitor::<Price>(PhantomData))
        .map(|p| p.map(Money::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        #[serde(deserialize_with = "integer")]
        stock: i64,
        #[serde(default, deserialize_with = "optional_integer")]
        threshold: Option<i64>,
        #[serde(default, deserialize_with = "optional_price")]
        price: Option<Money>,
    }

    fn parse(json: &str) -> Result<Body, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn whole_numbers_are_integers_in_any_spelling() {
        let b = parse(
            r#"{"stock": 5.0, "threshold": 1e3, "price": {"amount": 1999.0, "currency": "EUR"}}"#,
        )
        .unwrap();
        assert_eq!((b.stock, b.threshold), (5, Some(1000)));
        assert_eq!(b.price, Some(Money::new(1999, "EUR")));
        let b = parse(r#"{"stock": -7, "threshold": null, "price": null}"#).unwrap();
        assert_eq!((b.stock, b.threshold, b.price), (-7, None, None));
        assert_eq!(parse(r#"{"stock": 1}"#).unwrap().threshold, None);
    }

    #[test]
    fn an_error_inside_a_price_names_the_nested_field() {
        for (json, field) in [
            (
                r#"{"stock": 1, "price": {"amount": 1.5, "currency": "EUR"}}"#,
                "price.amount",
            ),
            (
                r#"{"stock": 1, "price": {"amount": 1, "currency": 7}}"#,
                "price.currency",
            ),
            (
                r#"{"stock": 1, "price": {"amount": 1, "currency": "EUR", "tax": 1}}"#,
                "price.tax",
            ),
            (r#"{"stock": 1, "price": [1, "EUR"]}"#, "price"),
        ] {
            let problem = mp_common::problem::parse_json::<Body>(json.as_bytes()).unwrap_err();
            assert_eq!(problem.errors[0].field, field, "{json}");
        }
    }

    #[test]
    fn fractions_other_types_and_arrays_are_refused() {
        for bad in [
            r#"{"stock": 5.5}"#,
            r#"{"stock": "5"}"#,
            r#"{"stock": 1e19}"#,
            r#"{"stock": 18446744073709551615}"#,
            r#"{"stock": 1, "threshold": true}"#,
            r#"{"stock": 1, "price": [1999, "EUR"]}"#,
            r#"{"stock": 1, "price": {"amount": 1, "currency": "EUR", "tax": 1}}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
