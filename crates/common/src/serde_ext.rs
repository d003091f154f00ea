//! Serde helpers for request bodies.

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

/// For a nested struct field of a request body: only a JSON object fills it (serde alone
/// would also accept an array of its fields in order). Use with
/// `#[serde(deserialize_with = "object")]`.
pub fn object<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    use serde::de::Error;
    match serde_json::Value::deserialize(d)? {
        value @ serde_json::Value::Object(_) => T::deserialize(value).map_err(D::Error::custom),
        other => Err(D::Error::custom(format_args!(
            "invalid type: {}, expected an object",
            kind(&other)
        ))),
    }
}

fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Inner {
        amount: i64,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Outer {
        #[serde(deserialize_with = "super::object")]
        price: Inner,
    }

    #[test]
    fn a_nested_struct_takes_an_object_only() {
        let ok: Outer = serde_json::from_str(r#"{"price": {"amount": 5}}"#).unwrap();
        assert_eq!(ok.price, Inner { amount: 5 });
        let err = serde_json::from_str::<Outer>(r#"{"price": [5]}"#).unwrap_err();
        assert!(err.to_string().contains("expected an object"), "{err}");
        assert!(serde_json::from_str::<Outer>(r#"{"price": {"amount": "5"}}"#).is_err());
    }
}
