//! Keyset pagination, one way for every list of the API.
//!
//! A list takes `limit` and `cursor` and answers [`Page<T>`]: `{"items": [...],
//! "next_cursor": "..." | null}`. The cursor is opaque to clients: base64url of the JSON of
//! the sort key of the last item returned (an id, a sequence number, a `(time, id)`
//! pair...). A handler parses the query with [`PageRequest::parse`], fetches `limit + 1`
//! rows after the cursor's key, and builds the page with [`Page::from_rows`], which tells
//! from the extra row whether there is a next page.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::problem::Validation;

/// One page of a list.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows fetched in page order: the extra row only
    /// says that there is a next page, whose cursor is the key of the last row kept.
    pub fn from_rows<R, K: Serialize>(
        mut rows: Vec<R>,
        limit: u32,
        key: impl Fn(&R) -> K,
        item: impl FnMut(R) -> T,
    ) -> Self {
        let limit = limit as usize;
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|r| encode_cursor(&key(r)))
        } else {
            None
        };
        Page {
            items: rows.into_iter().map(item).collect(),
            next_cursor,
        }
    }
}

/// The `limit` and `cursor` query parameters, flattened into a list's query.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// How many items, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page (opaque: only a value the API returned).
    #[param(min_length = 1, max_length = 512, pattern = "^[A-Za-z0-9_-]+$")]
    pub cursor: Option<String>,
}

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;

/// A validated page request: how many, and after which key.
#[derive(Debug, Clone, PartialEq)]
pub struct PageRequest<K> {
    pub limit: u32,
    /// The sort key of the last item of the previous page.
    pub after: Option<K>,
}

impl<K: DeserializeOwned> PageRequest<K> {
    /// Parses `limit` (1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] when absent) and `cursor`,
    /// recording errors against those field names.
    pub fn parse(query: &PageQuery, v: &mut Validation) -> Self {
        Self::parse_with(query, DEFAULT_LIMIT, MAX_LIMIT, v)
    }

    /// [`parse`](Self::parse) with a list's own default and maximum.
    pub fn parse_with(query: &PageQuery, default: u32, max: u32, v: &mut Validation) -> Self {
        let limit = query.limit.unwrap_or(default);
        v.check(
            (1..=max).contains(&limit),
            "limit",
            &format!("must be between 1 and {max}"),
        );
        let after = query
            .cursor
            .as_deref()
            .and_then(|c| v.field("cursor", decode_cursor(c)));
        Self {
            limit: limit.clamp(1, max),
            after,
        }
    }

    /// How many rows to fetch: one more than the page, to know whether another follows.
    pub fn fetch(&self) -> i64 {
        i64::from(self.limit) + 1
    }
}

/// The opaque cursor for a sort key.
pub fn encode_cursor<K: Serialize>(key: &K) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(key).expect("a sort key serializes"))
}

/// The sort key in a cursor this API returned.
pub fn decode_cursor<K: DeserializeOwned>(raw: &str) -> Result<K, &'static str> {
    const MESSAGE: &str = "is not a cursor this API returned";
    let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| MESSAGE)?;
    serde_json::from_slice(&bytes).map_err(|_| MESSAGE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn a_cursor_round_trips_its_key_and_rejects_anything_else() {
        let key = (42_i64, Uuid::now_v7());
        assert_eq!(decode_cursor::<(i64, Uuid)>(&encode_cursor(&key)), Ok(key));
        for bad in ["", "!!", "bm90IGpzb24", &encode_cursor(&"text")] {
            assert!(decode_cursor::<(i64, Uuid)>(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_page_keeps_limit_rows_and_points_after_the_last() {
        let page = Page::from_rows(vec![1, 2, 3], 2, |r| *r, |r| r * 10);
        assert_eq!(page.items, vec![10, 20]);
        assert_eq!(
            decode_cursor::<i32>(page.next_cursor.as_deref().unwrap()),
            Ok(2)
        );
        let last = Page::from_rows(vec![1, 2], 2, |r| *r, |r| r);
        assert_eq!(last.next_cursor, None);
    }

    #[test]
    fn limits_out_of_range_and_foreign_cursors_are_field_errors() {
        let mut v = Validation::new();
        let q = PageQuery {
            limit: Some(0),
            cursor: Some("nope".into()),
        };
        let req = PageRequest::<i64>::parse(&q, &mut v);
        assert_eq!(req.after, None);
        let problem = v.finish().unwrap_err();
        let text = serde_json::to_string(&problem).unwrap();
        assert!(text.contains("limit") && text.contains("cursor"), "{text}");
    }
}
