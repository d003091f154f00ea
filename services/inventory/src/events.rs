//! Handlers of consumed events. Each runs in the consumer's transaction with its inbox
//! row, so an exact redelivery has no second effect; beyond that, every handler is
//! written so that repeated or out-of-order events of the same thing do no harm:
//!
//! * `inventory.create` / `inventory.update`: metadata is applied only from a newer
//!   product revision. An update that overtakes its create makes the stock item with no
//!   stock; the create then adds its initial stock, once (`initial_stock_recorded`).
//! * `inventory.check` / `inventory.release`: the synchronous reservation calls are
//!   authoritative and always precede the cart's events, so a check only confirms (and
//!   extends) a reservation whose durable copy still has the event's quantity, and a
//!   release leaves a reservation written after the removal happened.
//! * `inventory.commit` / `inventory.restock`: `order_commits` records each order's
//!   fate, so an order commits at most once, releases at most once and only after a
//!   commit, and an order that failed before its commit can never commit later.
//!
//! Redis follow-ups that must see committed state (clearing a checked-out cart's
//! reservations, refreshing the on-hand mirror) run in `after_commit`.

use std::collections::HashMap;

use async_trait::async_trait;
use mp_events::catalog::{
    CartItemAdded, CartItemRemoved, InventoryCreated, InventoryUpdated, OrderCreated, OrderStatus,
    OrderUpdated, Shortage, StockChange, VendorProductCreated, VendorProductUpdated,
};
use mp_events::{Envelope, EventHandler, HandlerError, Service};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::db::{self, CommittedLine, NewMovement, ProductData, StockItem};
use crate::domain::{MovementKind, order_quantities, releases_stock};
use crate::stock::Inventory;
use crate::store::Reserve;

/// `vendor.product.created`: the stock item, with its initial stock as the first
/// ledger movement; then `inventory.created`.
pub struct CreateStockItem(pub Inventory);

#[async_trait]
impl EventHandler for CreateStockItem {
    type Event = VendorProductCreated;
    const NAME: &'static str = "inventory.create";

    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &Envelope<VendorProductCreated>,
    ) -> Result<(), HandlerError> {
        let p = &event.payload;
        if p.initial_stock < 0 || p.low_stock_threshold < 0 {
            return Err(HandlerError::permanent(format!(
                "product {} has initial_stock {} and low_stock_threshold {}; neither may be negative",
                p.product_id, p.initial_stock, p.low_stock_threshold
            )));
        }
        let data = ProductData {
            product_id: p.product_id,
            vendor_id: p.vendor_id,
            sku: &p.sku,
            name: &p.name,
            active: p.active,
            low_stock_threshold: p.low_stock_threshold,
            revision: p.revision,
        };
        db::insert_item_if_absent(conn, &data).await?;
        let mut item = db::item_for_update(conn, p.product_id)
            .await?
            .ok_or_else(|| HandlerError::transient("the stock item just written is missing"))?;
        if let Some(updated) = db::update_metadata(conn, &data).await? {
            item = updated;
        }
        if item.initial_stock_recorded {
            tracing::info!(product_id = %p.product_id, "initial stock already recorded; nothing to do");
            return Ok(());
        }
        if p.initial_stock > 0 {
            let reference = event.id.to_string();
            let movement = NewMovement {
                kind: MovementKind::InitialStock,
                delta: p.initial_stock,
                reason: "initial stock",
                reference: Some(&reference),
                actor_id: None,
            };
            (item, _) = self
                .0
                .apply_movement(conn, p.product_id, &movement, None)
                .await?
                .ok_or_else(|| HandlerError::transient("the stock item vanished"))?;
        }
        db::mark_initial_stock_recorded(conn, p.product_id).await?;
        item.initial_stock_recorded = true;
        let item = self.0.settle_low_stock(conn, item, None).await?;
        let level = self.0.level(&item, None).await;
        mp_events::enqueue(
            conn,
            Service::Inventory,
            InventoryCreated {
                level,
                low_stock_threshold: item.low_stock_threshold,
            },
        )
        .await?;
        tracing::info!(product_id = %p.product_id, on_hand = item.on_hand, "stock item created");
        Ok(())
    }

    async fn after_commit(&self, event: &Envelope<VendorProductCreated>) {
        self.0.refresh_logged(&[event.payload.product_id]).await;
    }
}

/// `vendor.product.updated`: name, SKU, active flag and threshold from a newer revision.
pub struct UpdateStockItem(pub Inventory);

#[async_trait]
impl EventHandler for UpdateStockItem {
    type Event = VendorProductUpdated;
    const NAME: &'static str = "inventory.update";

    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &Envelope<VendorProductUpdated>,
    ) -> Result<(), HandlerError> {
        let p = &event.payload;
        if p.low_stock_threshold < 0 {
            return Err(HandlerError::permanent(format!(
                "product {} has a negative low_stock_threshold",
                p.product_id
            )));
        }
        let data = ProductData {
            product_id: p.product_id,
            vendor_id: p.vendor_id,
            sku: &p.sku,
            name: &p.name,
            active: p.active,
            low_stock_threshold: p.low_stock_threshold,
            revision: p.revision,
        };
        if db::insert_item_if_absent(conn, &data).await? {
            tracing::info!(product_id = %p.product_id, "update before create: stock item made without stock");
            return Ok(());
        }
        match db::update_metadata(conn, &data).await? {
            // The threshold may have moved across on-hand stock.
            Some(item) => drop(self.0.settle_low_stock(conn, item, None).await?),
            None => {
                tracing::info!(product_id = %p.product_id, revision = p.revision, "stale product revision ignored")
            }
        }
        Ok(())
    }

    async fn after_commit(&self, event: &Envelope<VendorProductUpdated>) {
        self.0.refresh_logged(&[event.payload.product_id]).await;
    }
}

/// `cart.item.added`: confirms the reservation the cart made synchronously and extends
/// its expiry. A confirmation that finds too little stock (Redis lost the reservation
/// and others took the stock) is logged and counted, not retried: the commit at
/// checkout decides, and PostgreSQL's guard keeps it from overselling.
pub struct CheckReservation(pub Inventory);

#[async_trait]
impl EventHandler for CheckReservation {
    type Event = CartItemAdded;
    const NAME: &'static str = "inventory.check";

    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &Envelope<CartItemAdded>,
    ) -> Result<(), HandlerError> {
        let p = &event.payload;
        let held = db::reservation_for_update(conn, p.product_id, p.cart_id).await?;
        if held.as_ref().map(|r| r.quantity) != Some(p.quantity) {
            tracing::info!(cart_id = %p.cart_id, product_id = %p.product_id, "reservation changed or released since this event; nothing to confirm");
            return Ok(());
        }
        match self
            .0
            .reserve_in(conn, p.product_id, p.cart_id, p.quantity)
            .await?
        {
            Some(Reserve::Reserved { expires_at, .. }) => {
                db::upsert_reservation(conn, p.product_id, p.cart_id, p.quantity, expires_at)
                    .await?;
            }
            Some(Reserve::Insufficient { available }) => {
                self.0.metrics.check_shortfalls.inc();
                tracing::warn!(cart_id = %p.cart_id, product_id = %p.product_id, quantity = p.quantity, available, "reservation could not be confirmed: not enough stock");
            }
            Some(Reserve::Inactive) => {
                self.0.metrics.check_shortfalls.inc();
                tracing::warn!(cart_id = %p.cart_id, product_id = %p.product_id, "reservation could not be confirmed: product inactive");
            }
            None => {
                tracing::warn!(cart_id = %p.cart_id, product_id = %p.product_id, "no stock item for a reserved product")
            }
        }
        Ok(())
    }
}

/// `cart.item.removed`: releases the reservation, unless it was made again after the
/// removal.
pub struct ReleaseReservation(pub Inventory);

#[async_trait]
impl EventHandler for ReleaseReservation {
    type Event = CartItemRemoved;
    const NAME: &'static str = "inventory.release";

    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &Envelope<CartItemRemoved>,
    ) -> Result<(), HandlerError> {
        let p = &event.payload;
        let held = db::reservation_for_update(conn, p.product_id, p.cart_id).await?;
        if held.is_some_and(|r| r.updated_at > event.occurred_at) {
            tracing::info!(cart_id = %p.cart_id, product_id = %p.product_id, "reserved again after this removal; kept");
            return Ok(());
        }
        self.0.store.release(p.product_id, p.cart_id).await?;
        db::delete_reservations(conn, p.cart_id, &[p.product_id]).await?;
        Ok(())
    }
}

fn product_ids(lines: &[(Uuid, i64)]) -> Vec<Uuid> {
    lines.iter().map(|(id, _)| *id).collect()
}

/// `order.created`: the order's stock becomes a sale, all lines or none, in this
/// transaction: guarded decrements, ledger rows, the order's commit record and
/// `inventory.updated` (`order_committed`, or `order_rejected` with the shortages and
/// nothing changed).
pub struct CommitOrder(pub Inventory);

#[async_trait]
impl EventHandler for CommitOrder {
    type Event = OrderCreated;
    const NAME: &'static str = "inventory.commit";

    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &Envelope<OrderCreated>,
    ) -> Result<(), HandlerError> {
        let p = &event.payload;
        let lines = order_quantities(&p.items).map_err(HandlerError::permanent)?;
        if !db::claim_order(conn, p.order_id, p.cart_id).await? {
            tracing::info!(order_id = %p.order_id, "order already handled; nothing to commit");
            return Ok(());
        }
        let ids = product_ids(&lines);
        let items: HashMap<Uuid, StockItem> = db::items_for_update(conn, &ids)
            .await?
            .into_iter()
            .map(|i| (i.product_id, i))
            .collect();
        let shortages: Vec<Shortage> = lines
            .iter()
            .filter_map(|&(product_id, requested)| {
                let on_hand = items.get(&product_id).map_or(0, |i| i.on_hand);
                (on_hand < requested).then_some(Shortage {
                    product_id,
                    requested,
                    available: on_hand,
                })
            })
            .collect();

        if !shortages.is_empty() {
            db::settle_order(conn, p.order_id, "rejected", &[]).await?;
            let mut levels = Vec::with_capacity(items.len());
            for &id in &ids {
                if let Some(item) = items.get(&id) {
                    levels.push(self.0.level(item, Some(p.cart_id)).await);
                }
            }
            mp_events::enqueue(
                conn,
                Service::Inventory,
                InventoryUpdated {
                    change: StockChange::OrderRejected,
                    order_id: Some(p.order_id),
                    levels,
                    shortages,
                },
            )
            .await?;
            self.0.metrics.orders.with_label_values(&["rejected"]).inc();
            tracing::info!(order_id = %p.order_id, "order rejected: not enough stock");
            return Ok(());
        }

        let reference = p.order_id.to_string();
        let mut levels = Vec::with_capacity(lines.len());
        for &(product_id, quantity) in &lines {
            let movement = NewMovement {
                kind: MovementKind::Order,
                delta: -quantity,
                reason: "order",
                reference: Some(&reference),
                actor_id: None,
            };
            // The rows are locked and were checked above; the guard failing here
            // would mean a broken invariant, so the whole commit rolls back.
            let (item, _) = self
                .0
                .apply_movement(conn, product_id, &movement, Some(p.cart_id))
                .await?
                .ok_or_else(|| HandlerError::transient("stock changed under a row lock"))?;
            levels.push(self.0.level(&item, Some(p.cart_id)).await);
        }
        let committed: Vec<CommittedLine> = lines
            .iter()
            .map(|&(product_id, quantity)| CommittedLine {
                product_id,
                quantity,
            })
            .collect();
        db::settle_order(conn, p.order_id, "committed", &committed).await?;
        db::delete_reservations(conn, p.cart_id, &ids).await?;
        mp_events::enqueue(
            conn,
            Service::Inventory,
            InventoryUpdated {
                change: StockChange::OrderCommitted,
                order_id: Some(p.order_id),
                levels,
                shortages: vec![],
            },
        )
        .await?;
        self.0
            .metrics
            .orders
            .with_label_values(&["committed"])
            .inc();
        tracing::info!(order_id = %p.order_id, "order stock committed");
        Ok(())
    }

    async fn after_commit(&self, event: &Envelope<OrderCreated>) {
        let ids: Vec<Uuid> = event.payload.items.iter().map(|i| i.product_id).collect();
        self.0.release_logged(event.payload.cart_id, &ids).await;
        self.0.refresh_logged(&ids).await;
    }
}

fn status_name(status: OrderStatus) -> String {
    serde_json::to_value(status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{status:?}"))
}

/// `order.updated` to payment_failed, cancelled or rejected: an order whose stock was
/// committed (and not yet released) gets it back, with ledger rows and
/// `inventory.updated` (`order_released`); the cart's reservations go too.
pub struct RestockOrder(pub Inventory);

#[async_trait]
impl EventHandler for RestockOrder {
    type Event = OrderUpdated;
    const NAME: &'static str = "inventory.restock";

    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &Envelope<OrderUpdated>,
    ) -> Result<(), HandlerError> {
        let p = &event.payload;
        if !releases_stock(p.status) {
            return Ok(());
        }
        let event_ids: Vec<Uuid> = p.items.iter().map(|i| i.product_id).collect();
        db::delete_reservations(conn, p.cart_id, &event_ids).await?;
        let Some(mut lines) = db::release_order(conn, p.order_id).await? else {
            // Never committed: make sure a late order.created cannot commit it now.
            db::void_order(conn, p.order_id, p.cart_id).await?;
            tracing::info!(order_id = %p.order_id, "no committed stock to release");
            return Ok(());
        };
        lines.sort_by_key(|l| l.product_id);
        let reason = format!("order {}", status_name(p.status));
        let reference = p.order_id.to_string();
        let mut levels = Vec::with_capacity(lines.len());
        for line in &lines {
            let movement = NewMovement {
                kind: MovementKind::OrderRelease,
                delta: line.quantity,
                reason: &reason,
                reference: Some(&reference),
                actor_id: None,
            };
            let (item, _) = self
                .0
                .apply_movement(conn, line.product_id, &movement, Some(p.cart_id))
                .await?
                .ok_or_else(|| {
                    HandlerError::permanent(format!(
                        "committed product {} has no stock item",
                        line.product_id
                    ))
                })?;
            levels.push(self.0.level(&item, Some(p.cart_id)).await);
        }
        mp_events::enqueue(
            conn,
            Service::Inventory,
            InventoryUpdated {
                change: StockChange::OrderReleased,
                order_id: Some(p.order_id),
                levels,
                shortages: vec![],
            },
        )
        .await?;
        self.0.metrics.orders.with_label_values(&["released"]).inc();
        tracing::info!(order_id = %p.order_id, status = %reason, "order stock released");
        Ok(())
    }

    async fn after_commit(&self, event: &Envelope<OrderUpdated>) {
        if releases_stock(event.payload.status) {
            let ids: Vec<Uuid> = event.payload.items.iter().map(|i| i.product_id).collect();
            self.0.release_logged(event.payload.cart_id, &ids).await;
            self.0.refresh_logged(&ids).await;
        }
    }
}
