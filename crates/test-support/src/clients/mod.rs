//! Typed clients of the services' HTTP APIs, for tests: one method per operation, taking
//! and returning the API's JSON as Rust types written from the OpenAPI document (not the
//! services' own structs, so a test reads the answer as any client would, and a renamed
//! or retyped field fails it).
//!
//! Each call names the success status the operation documents (see
//! [`Api::send`](crate::client::Api::send)) and returns [`ApiResult`]: the typed body,
//! or the [`Problem`](crate::client::Problem) the service answered, which the test
//! asserts with [`Problem::assert`](crate::client::Problem::assert). Where the success
//! status itself tells something (200 for an existing cart, 201 for a new one), the call
//! returns a [`Reply`] with it.

pub mod cart;
pub mod customer;
pub mod inventory;
pub mod notification;
pub mod order;
pub mod vendor;

pub use crate::client::{ApiResult, Expect, Reply};

use serde::{Deserialize, Serialize};

/// A page of a list: its items and the cursor of the next page (`None` on the last).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Where an order is shipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub name: String,
    pub line1: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    pub country: String,
}

impl Default for Address {
    fn default() -> Self {
        Self {
            name: "Ada Lovelace".into(),
            line1: "12 St James's Square".into(),
            line2: None,
            city: "London".into(),
            postal_code: "SW1Y 4JH".into(),
            country: "GB".into(),
        }
    }
}
