//! Vendors' shipments of an order's lines.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgConnection};
use uuid::Uuid;

#[derive(Debug, Clone, FromRow)]
pub struct ShipmentRow {
    pub id: Uuid,
    pub order_id: Uuid,
    pub vendor_id: Uuid,
    pub carrier: String,
    pub tracking_number: String,
    pub created_at: DateTime<Utc>,
}

pub async fn shipments(conn: &mut PgConnection, order_id: Uuid) -> sqlx::Result<Vec<ShipmentRow>> {
    sqlx::query_as(
        "select id, order_id, vendor_id, carrier, tracking_number, created_at from shipments
         where order_id = $1 order by created_at, id",
    )
    .bind(order_id)
    .fetch_all(conn)
    .await
}

pub struct NewShipment<'a> {
    pub order_id: Uuid,
    pub vendor_id: Uuid,
    pub carrier: &'a str,
    pub tracking_number: &'a str,
    pub shipped_by: Uuid,
}

/// Records a vendor's shipment; `None` when the vendor has shipped already.
pub async fn insert_shipment(
    conn: &mut PgConnection,
    s: &NewShipment<'_>,
) -> sqlx::Result<Option<ShipmentRow>> {
    sqlx::query_as(
        "insert into shipments (id, order_id, vendor_id, carrier, tracking_number, shipped_by)
         values ($1, $2, $3, $4, $5, $6)
         on conflict (order_id, vendor_id) do nothing
         returning id, order_id, vendor_id, carrier, tracking_number, created_at",
    )
    .bind(Uuid::now_v7())
    .bind(s.order_id)
    .bind(s.vendor_id)
    .bind(s.carrier)
    .bind(s.tracking_number)
    .bind(s.shipped_by)
    .fetch_optional(conn)
    .await
}
