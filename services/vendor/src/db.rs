//! Queries on the vendor schema. Each takes the caller's connection or transaction, so a
//! state change and its outbox event commit together.

use chrono::{DateTime, Utc};
use mp_events::catalog::StockLevel;
use mp_events::{Currency, Money};
use sqlx::{PgConnection, QueryBuilder};
use uuid::Uuid;

use crate::domain::Role;

mp_common::text_enum!(Role);

/// Unique index on `(vendor_id, lower(sku))`.
pub const SKU_UNIQUE: &str = "products_vendor_sku_unique";
/// Primary key of `vendor_members`.
pub const MEMBER_UNIQUE: &str = "vendor_members_pkey";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VendorRow {
    pub id: Uuid,
    pub name: String,
    pub email: String,
    pub phone: Option<String>,
    /// 1 at creation, one more with every change (carried by `vendor.updated`).
    pub revision: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const VENDOR_COLUMNS: &str = "id, name, email, phone, revision, created_at, updated_at";

pub async fn insert_vendor(
    conn: &mut PgConnection,
    id: Uuid,
    name: &str,
    email: &str,
    phone: Option<&str>,
) -> sqlx::Result<VendorRow> {
    sqlx::query_as(&format!(
        "insert into vendors (id, name, email, phone) values ($1, $2, $3, $4)
         returning {VENDOR_COLUMNS}"
    ))
    .bind(id)
    .bind(name)
    .bind(email)
    .bind(phone)
    .fetch_one(conn)
    .await
}

pub async fn vendor(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<VendorRow>> {
    sqlx::query_as(&format!(
        "select {VENDOR_COLUMNS} from vendors where id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// The vendor, locked until the transaction ends.
pub async fn vendor_for_update(
    conn: &mut PgConnection,
    id: Uuid,
) -> sqlx::Result<Option<VendorRow>> {
    sqlx::query_as(&format!(
        "select {VENDOR_COLUMNS} from vendors where id = $1 for update"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

pub async fn vendor_exists(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<bool> {
    sqlx::query_scalar("select exists (select 1 from vendors where id = $1)")
        .bind(id)
        .fetch_one(conn)
        .await
}

pub async fn update_vendor(
    conn: &mut PgConnection,
    id: Uuid,
    name: &str,
    email: &str,
    phone: Option<&str>,
) -> sqlx::Result<VendorRow> {
    sqlx::query_as(&format!(
        "update vendors set name = $2, email = $3, phone = $4, revision = revision + 1,
                            updated_at = now()
         where id = $1 returning {VENDOR_COLUMNS}"
    ))
    .bind(id)
    .bind(name)
    .bind(email)
    .bind(phone)
    .fetch_one(conn)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MemberRow {
    pub vendor_id: Uuid,
    pub customer_id: Uuid,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

pub async fn add_member(
    conn: &mut PgConnection,
    vendor_id: Uuid,
    customer_id: Uuid,
    role: Role,
) -> sqlx::Result<MemberRow> {
    sqlx::query_as(
        "insert into vendor_members (vendor_id, customer_id, role) values ($1, $2, $3)
         returning vendor_id, customer_id, role, created_at",
    )
    .bind(vendor_id)
    .bind(customer_id)
    .bind(role)
    .fetch_one(conn)
    .await
}

/// The customer's role in the vendor, if they are a member.
pub async fn member_role(
    conn: &mut PgConnection,
    vendor_id: Uuid,
    customer_id: Uuid,
) -> sqlx::Result<Option<Role>> {
    sqlx::query_scalar("select role from vendor_members where vendor_id = $1 and customer_id = $2")
        .bind(vendor_id)
        .bind(customer_id)
        .fetch_optional(conn)
        .await
}

/// Members in customer id order, after `after`, at most `limit`.
pub async fn members(
    conn: &mut PgConnection,
    vendor_id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<MemberRow>> {
    sqlx::query_as(
        "select vendor_id, customer_id, role, created_at from vendor_members
         where vendor_id = $1 and ($2::uuid is null or customer_id > $2)
         order by customer_id limit $3",
    )
    .bind(vendor_id)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// A product as it is stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProductRow {
    pub id: Uuid,
    pub vendor_id: Uuid,
    pub sku: String,
    pub name: String,
    pub description: String,
    pub price_amount: i64,
    pub price_currency: Currency,
    pub active: bool,
    pub initial_stock: i64,
    pub low_stock_threshold: i64,
    pub revision: i64,
    pub cache_version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ProductRow {
    pub fn price(&self) -> Money {
        Money::new(self.price_amount, self.price_currency)
    }
}

const PRODUCT_COLUMNS: &str = "id, vendor_id, sku, name, description, price_amount, \
    price_currency, active, initial_stock, low_stock_threshold, revision, cache_version, \
    created_at, updated_at";

/// A product with the stock figures inventory last reported: what a product read shows.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProductView {
    #[sqlx(flatten)]
    pub product: ProductRow,
    pub on_hand: Option<i64>,
    pub reserved: Option<i64>,
    pub available: Option<i64>,
    pub stock_as_of: Option<DateTime<Utc>>,
}

const VIEW_SELECT: &str = "select p.id, p.vendor_id, p.sku, p.name, p.description, \
    p.price_amount, p.price_currency, p.active, p.initial_stock, p.low_stock_threshold, \
    p.revision, p.cache_version, p.created_at, p.updated_at, s.on_hand, s.reserved, \
    s.available, s.as_of as stock_as_of \
    from products p left join product_stock s on s.product_id = p.id";

pub struct NewProduct<'a> {
    pub id: Uuid,
    pub vendor_id: Uuid,
    pub sku: &'a str,
    pub name: &'a str,
    pub description: &'a str,
    pub price: Money,
    pub initial_stock: i64,
    pub low_stock_threshold: i64,
}

pub async fn insert_product(
    conn: &mut PgConnection,
    p: &NewProduct<'_>,
) -> sqlx::Result<ProductRow> {
    sqlx::query_as(&format!(
        "insert into products (id, vendor_id, sku, name, description, price_amount,
             price_currency, initial_stock, low_stock_threshold)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9) returning {PRODUCT_COLUMNS}"
    ))
    .bind(p.id)
    .bind(p.vendor_id)
    .bind(p.sku)
    .bind(p.name)
    .bind(p.description)
    .bind(p.price.amount())
    .bind(p.price.currency())
    .bind(p.initial_stock)
    .bind(p.low_stock_threshold)
    .fetch_one(conn)
    .await
}

/// The product, locked until the transaction ends.
pub async fn product_for_update(
    conn: &mut PgConnection,
    id: Uuid,
) -> sqlx::Result<Option<ProductRow>> {
    sqlx::query_as(&format!(
        "select {PRODUCT_COLUMNS} from products where id = $1 for update"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// The new state of the fields a product update may change.
pub struct ProductChange<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub price: Money,
    pub active: bool,
    pub low_stock_threshold: i64,
}

/// Writes a change: the revision and the cache version go up by one.
pub async fn update_product(
    conn: &mut PgConnection,
    id: Uuid,
    c: &ProductChange<'_>,
) -> sqlx::Result<ProductRow> {
    sqlx::query_as(&format!(
        "update products set name = $2, description = $3, price_amount = $4,
             price_currency = $5, active = $6, low_stock_threshold = $7,
             revision = revision + 1, cache_version = cache_version + 1, updated_at = now()
         where id = $1 returning {PRODUCT_COLUMNS}"
    ))
    .bind(id)
    .bind(c.name)
    .bind(c.description)
    .bind(c.price.amount())
    .bind(c.price.currency())
    .bind(c.active)
    .bind(c.low_stock_threshold)
    .fetch_one(conn)
    .await
}

pub async fn product_view(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<ProductView>> {
    sqlx::query_as(&format!("{VIEW_SELECT} where p.id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// What a product list selects.
#[derive(Debug, Default)]
pub struct ProductFilter<'a> {
    pub vendor_id: Option<Uuid>,
    /// A `LIKE` pattern matched case-insensitively on name, SKU and description.
    pub pattern: Option<&'a str>,
    pub active_only: bool,
    pub after: Option<Uuid>,
    pub limit: i64,
}

/// Products in id (creation) order.
pub async fn products(
    conn: &mut PgConnection,
    f: &ProductFilter<'_>,
) -> sqlx::Result<Vec<ProductView>> {
    let mut q = QueryBuilder::new(VIEW_SELECT);
    q.push(" where true");
    if f.active_only {
        q.push(" and p.active");
    }
    if let Some(vendor_id) = f.vendor_id {
        q.push(" and p.vendor_id = ").push_bind(vendor_id);
    }
    if let Some(pattern) = f.pattern {
        q.push(" and (p.name ilike ")
            .push_bind(pattern)
            .push(" or p.sku ilike ")
            .push_bind(pattern)
            .push(" or p.description ilike ")
            .push_bind(pattern)
            .push(")");
    }
    if let Some(after) = f.after {
        q.push(" and p.id > ").push_bind(after);
    }
    q.push(" order by p.id limit ").push_bind(f.limit);
    q.build_query_as().fetch_all(conn).await
}

/// Records stock figures unless figures with a higher stock version are already there;
/// returns whether they were recorded. The version is the stock item's, carried in the
/// event, so the order holds whatever the clocks of the hosts say.
pub async fn record_stock(conn: &mut PgConnection, level: &StockLevel) -> sqlx::Result<bool> {
    let recorded = sqlx::query(
        "insert into product_stock (product_id, vendor_id, on_hand, reserved, available, version, as_of)
         values ($1, $2, $3, $4, $5, $6, now())
         on conflict (product_id) do update set
             vendor_id = excluded.vendor_id, on_hand = excluded.on_hand,
             reserved = excluded.reserved, available = excluded.available,
             version = excluded.version, as_of = excluded.as_of, updated_at = now()
         where product_stock.version < excluded.version",
    )
    .bind(level.product_id)
    .bind(level.vendor_id)
    .bind(level.on_hand)
    .bind(level.reserved)
    .bind(level.available)
    .bind(level.version)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if recorded {
        sqlx::query("update products set cache_version = cache_version + 1 where id = $1")
            .bind(level.product_id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(recorded)
}

/// The channel on which committed product changes are announced (see [`crate::cache`]).
pub fn changes_channel(schema: &str) -> String {
    format!("product_changed_{schema}")
}

/// Announces, when (and only if) the transaction commits, that a product read changed.
pub async fn notify_product_changed(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<()> {
    sqlx::query("select pg_notify('product_changed_' || current_schema(), $1)")
        .bind(id.to_string())
        .execute(conn)
        .await
        .map(drop)
}
