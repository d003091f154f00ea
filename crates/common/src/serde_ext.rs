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
