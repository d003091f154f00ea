//! A product as the API serves it: built from its committed row, serialized once by the
//! writer or the reader that loads it, and kept as those bytes by the Redis cache
//! ([`crate::cache`]) and the in-process cache ([`crate::local_cache`]).

use chrono::{DateTime, Utc};
use mp_events::Money;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::db::ProductView;

/// Stock figures as the inventory service last reported them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct StockFigures {
    pub on_hand: i64,
    pub reserved: i64,
    /// On hand minus reserved: what customers can still buy.
    pub available: i64,
    /// When inventory reported these figures.
    pub as_of: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProductResponse {
    pub id: Uuid,
    pub vendor_id: Uuid,
    pub sku: String,
    pub name: String,
    pub description: String,
    pub price: Money,
    pub active: bool,
    pub initial_stock: i64,
    pub low_stock_threshold: i64,
    /// 1 at creation, +1 with every change.
    pub revision: i64,
    /// `null` until inventory has reported the product's stock.
    pub stock: Option<StockFigures>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<ProductView> for ProductResponse {
    fn from(v: ProductView) -> Self {
        let stock = match (v.on_hand, v.reserved, v.available, v.stock_as_of) {
            (Some(on_hand), Some(reserved), Some(available), Some(as_of)) => Some(StockFigures {
                on_hand,
                reserved,
                available,
                as_of,
            }),
            _ => None,
        };
        let p = v.product;
        let price = p.price();
        Self {
            id: p.id,
            vendor_id: p.vendor_id,
            sku: p.sku,
            name: p.name,
            description: p.description,
            price,
            active: p.active,
            initial_stock: p.initial_stock,
            low_stock_threshold: p.low_stock_threshold,
            revision: p.revision,
            stock,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}
