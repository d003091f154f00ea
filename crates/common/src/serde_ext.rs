//! Serde helpers for request bodies.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// For PATCH fields that can be absent (leave as is), `null` (clear) or a value:
/// use with `#[serde(default, deserialize_with = "double_option")]` on `Option<Option<T>>`.
pub fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// An `i64` written as any whole JSON number: in JSON Schema `5.0` is an `integer` like
/// `5`, and a client serializing through floating point may send it, but serde refuses it
/// for an `i64`. `5.5`, strings and numbers past the `i64` range stay refused. Use with
/// `#[serde(deserialize_with = "integer")]`.
pub fn integer<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    d.deserialize_any(IntegerVisitor)
}

/// [`integer`], or `null` (`None`). Use with `#[serde(default, deserialize_with = ...)]`.
pub fn optional_integer<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    struct Whole(#[serde(deserialize_with = "integer")] i64);
    Ok(Option::<Whole>::deserialize(d)?.map(|w| w.0))
}

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

/// A nested struct of a request body, from a JSON object only (serde alone would also
/// take an array of its fields in order). The entries are read in place, so an error
/// inside names the nested field (`price.amount`). Use with
/// `#[serde(deserialize_with = "object")]`.
pub fn object<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    d.deserialize_map(ObjectVisitor(PhantomData))
}

/// [`object`], or `null` (`None`). Use with `#[serde(default, deserialize_with = ...)]`.
pub fn optional_object<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    d.deserialize_option(OptionalObjectVisitor(PhantomData))
}

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

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Price {
        #[serde(deserialize_with = "integer")]
        amount: i64,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        #[serde(deserialize_with = "integer")]
        stock: i64,
        #[serde(default, deserialize_with = "optional_integer")]
        threshold: Option<i64>,
        #[serde(deserialize_with = "object")]
        price: Price,
        #[serde(default, deserialize_with = "optional_object")]
        old_price: Option<Price>,
    }

    fn parse(json: &str) -> Result<Body, crate::Problem> {
        crate::problem::parse_json(json.as_bytes())
    }

    #[test]
    fn whole_numbers_are_integers_in_any_spelling() {
        let b = parse(r#"{"stock": 5.0, "threshold": 1e3, "price": {"amount": 1999.0}}"#).unwrap();
        assert_eq!(
            (b.stock, b.threshold, b.price.amount),
            (5, Some(1000), 1999)
        );
        let b =
            parse(r#"{"stock": -7, "threshold": null, "price": {"amount": 1}, "old_price": null}"#)
                .unwrap();
        assert_eq!((b.stock, b.threshold, b.old_price), (-7, None, None));
        let b =
            parse(r#"{"stock": 1, "price": {"amount": 1}, "old_price": {"amount": 2}}"#).unwrap();
        assert_eq!(b.old_price, Some(Price { amount: 2 }));
    }

    #[test]
    fn fractions_other_types_and_arrays_are_refused_naming_the_nested_field() {
        for (json, field) in [
            (r#"{"stock": 5.5, "price": {"amount": 1}}"#, "stock"),
            (r#"{"stock": "5", "price": {"amount": 1}}"#, "stock"),
            (r#"{"stock": 1e19, "price": {"amount": 1}}"#, "stock"),
            (
                r#"{"stock": 18446744073709551615, "price": {"amount": 1}}"#,
                "stock",
            ),
            (
                r#"{"stock": 1, "threshold": true, "price": {"amount": 1}}"#,
                "threshold",
            ),
            (r#"{"stock": 1, "price": {"amount": 1.5}}"#, "price.amount"),
            (
                r#"{"stock": 1, "price": {"amount": 1, "tax": 1}}"#,
                "price.tax",
            ),
            (r#"{"stock": 1, "price": [1]}"#, "price"),
            (
                r#"{"stock": 1, "price": {"amount": 1}, "old_price": [2]}"#,
                "old_price",
            ),
        ] {
            let problem = parse(json).unwrap_err();
            assert_eq!(
                (problem.status, problem.errors[0].field.as_str()),
                (422, field),
                "{json}"
            );
        }
    }
}
