//! A price in a request body: a JSON object only (`mp_common::serde_ext::object`, so an
//! error inside names `price.amount`), read as a [`PriceInput`].

use mp_common::serde_ext;
use serde::Deserializer;

use crate::domain::PriceInput;

/// A price: a JSON object only. Its rules are checked by the catalog with the other
/// fields' (`domain::parse_price`), so one answer lists every fault.
pub fn price<'de, D: Deserializer<'de>>(d: D) -> Result<PriceInput, D::Error> {
    serde_ext::object::<D, PriceInput>(d)
}

/// [`price`], or `null` (`None`). Use with `#[serde(default, deserialize_with = ...)]`.
pub fn optional_price<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PriceInput>, D::Error> {
    serde_ext::optional_object::<D, PriceInput>(d)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        #[serde(deserialize_with = "price")]
        price: PriceInput,
        #[serde(default, deserialize_with = "optional_price")]
        old: Option<PriceInput>,
    }

    #[test]
    fn a_price_is_an_object_with_a_whole_amount_and_errors_name_the_nested_field() {
        let b: Body = serde_json::from_str(
            r#"{"price": {"amount": 1999.0, "currency": "EUR"}, "old": null}"#,
        )
        .unwrap();
        let price = PriceInput {
            amount: 1999,
            currency: "EUR".into(),
        };
        assert_eq!((b.price, b.old), (price, None));
        for (json, field) in [
            (
                r#"{"price": {"amount": 1.5, "currency": "EUR"}}"#,
                "price.amount",
            ),
            (
                r#"{"price": {"amount": 1, "currency": 7}}"#,
                "price.currency",
            ),
            (
                r#"{"price": {"amount": 1, "currency": "EUR", "tax": 1}}"#,
                "price.tax",
            ),
            (r#"{"price": [1, "EUR"]}"#, "price"),
            (
                r#"{"price": {"amount": 1, "currency": "EUR"}, "old": [1, "EUR"]}"#,
                "old",
            ),
        ] {
            let problem = mp_common::problem::parse_json::<Body>(json.as_bytes()).unwrap_err();
            assert_eq!(problem.errors[0].field, field, "{json}");
        }
    }
}
