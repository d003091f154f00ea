//! Stock items: the product's copy of the vendor's data, on-hand stock and the
//! low-stock alert's state.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StockItem {
    pub product_id: Uuid,
    pub vendor_id: Uuid,
    pub sku: String,
    pub name: String,
    pub active: bool,
    pub low_stock_threshold: i64,
    pub on_hand: i64,
    pub revision: i64,
    pub initial_stock_recorded: bool,
    pub low_stock_armed: bool,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub(super) const ITEM_COLUMNS: &str = "product_id, vendor_id, sku, name, active, low_stock_threshold, \
    on_hand, revision, initial_stock_recorded, low_stock_armed, version, created_at, updated_at";

/// Product data carried by `vendor.product.created` and `vendor.product.updated`.
pub struct ProductData<'a> {
    pub product_id: Uuid,
    pub vendor_id: Uuid,
    pub sku: &'a str,
    pub name: &'a str,
    pub active: bool,
    pub low_stock_threshold: i64,
    pub revision: i64,
}

pub async fn item(conn: &mut PgConnection, product_id: Uuid) -> sqlx::Result<Option<StockItem>> {
    sqlx::query_as(&format!(
        "select {ITEM_COLUMNS} from stock_items where product_id = $1"
    ))
    .bind(product_id)
    .fetch_optional(conn)
    .await
}

pub async fn item_for_update(
    conn: &mut PgConnection,
    product_id: Uuid,
) -> sqlx::Result<Option<StockItem>> {
    sqlx::query_as(&format!(
        "select {ITEM_COLUMNS} from stock_items where product_id = $1 for update"
    ))
    .bind(product_id)
    .fetch_optional(conn)
    .await
}

/// Locks the items of `product_ids` in product id order (the one lock order everywhere).
pub async fn items_for_update(
    conn: &mut PgConnection,
    product_ids: &[Uuid],
) -> sqlx::Result<Vec<StockItem>> {
    sqlx::query_as(&format!(
        "select {ITEM_COLUMNS} from stock_items where product_id = any($1)
         order by product_id for update"
    ))
    .bind(product_ids)
    .fetch_all(conn)
    .await
}

/// Creates the item with no stock unless it exists; true if it was created.
pub async fn insert_item_if_absent(
    conn: &mut PgConnection,
    p: &ProductData<'_>,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "insert into stock_items
             (product_id, vendor_id, sku, name, active, low_stock_threshold, revision)
         values ($1, $2, $3, $4, $5, $6, $7)
         on conflict (product_id) do nothing",
    )
    .bind(p.product_id)
    .bind(p.vendor_id)
    .bind(p.sku)
    .bind(p.name)
    .bind(p.active)
    .bind(p.low_stock_threshold)
    .bind(p.revision)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Applies the product's metadata if `p.revision` is newer than the stored one.
pub async fn update_metadata(
    conn: &mut PgConnection,
    p: &ProductData<'_>,
) -> sqlx::Result<Option<StockItem>> {
    sqlx::query_as(&format!(
        "update stock_items
         set sku = $2, name = $3, active = $4, low_stock_threshold = $5, revision = $6,
             version = version + 1, updated_at = now()
         where product_id = $1 and revision < $6
         returning {ITEM_COLUMNS}"
    ))
    .bind(p.product_id)
    .bind(p.sku)
    .bind(p.name)
    .bind(p.active)
    .bind(p.low_stock_threshold)
    .bind(p.revision)
    .fetch_optional(conn)
    .await
}

pub async fn mark_initial_stock_recorded(
    conn: &mut PgConnection,
    product_id: Uuid,
) -> sqlx::Result<()> {
    // A change that publishes a level: it gets its own version.
    sqlx::query(
        "update stock_items set initial_stock_recorded = true, version = version + 1
         where product_id = $1",
    )
    .bind(product_id)
    .execute(conn)
    .await
    .map(drop)
}

pub async fn set_low_stock_armed(
    conn: &mut PgConnection,
    product_id: Uuid,
    armed: bool,
) -> sqlx::Result<()> {
    sqlx::query("update stock_items set low_stock_armed = $2 where product_id = $1")
        .bind(product_id)
        .bind(armed)
        .execute(conn)
        .await
        .map(drop)
}
