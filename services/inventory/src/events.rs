//! Handlers of consumed events. Each runs in the consumer's transaction with its inbox
//! row, so an exact redelivery has no second effect; beyond that, every handler is
//! written so that repeated or out-of-order events of the same thing do no harm:
//!
//! * `inventory.create` / `inventory.update`: metadata is applied only from a newer
//!   product revision. An update that overtakes its create makes the stock item with no
//!   stock; the create then adds its initial stock, once (`initial_stock_recorded`).
//! * `inventory.check` / `inventory.release`: the synchronous reservation calls are
//!   authoritative and always precede the cart's events, which carry the generation of
//!   the reservation they are about. A check confirms (and extends) only the
//!   reservation of that generation; a release ends a reservation only up to that
//!   generation, so a late removal never ends a newer reservation. No clocks compare.
//! * `inventory.commit` / `inventory.restock`: `order_commits` records each order's
//!   fate, so an order commits at most once, releases at most once and only after a
//!   commit, and an order that failed before its commit can never commit later.
//!
//! `handle` is PostgreSQL only: levels come from the row and the reservations kept in
//! PostgreSQL, so no Redis round trip happens while the transaction holds row locks.
//! Redis follows in `after_commit`, which re-reads the committed state and applies it
//! (versions and generations order every write), so it is idempotent and also runs for
//! a redelivered duplicate.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::Utc;
use mp_events::catalog::{
    CartItemAdded, CartItemRemoved, InventoryCreated, InventoryUpdated, OrderCreated, OrderStatus,
    OrderUpdated, Shortage, StockChange, VendorProductCreated, VendorProductUpdated,
};
use mp_events::{Envelope, EventHandler, HandlerError, Service};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::db::{self, CommittedLine, NewMovement, ProductData, StockItem};
use crate::domain::{MovementKind, available_to, order_quantities, releases_stock};
use crate::stock::{Inventory, stock_level};

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
                .apply_movement(conn, p.product_id, &movement)
                .await?
                .ok_or_else(|| HandlerError::transient("the stock item vanished"))?;
        }
        db::mark_initial_stock_recorded(conn, p.product_id).await?;
        item.initial_stock_recorded = true;
        item.version += 1;
        let item = self.0.settle_low_stock(conn, item).await?;
        let level = self.0.level(conn, &item).await?;
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
        self.0
            .mirror_logged(&[event.payload.product_id], None)
            .await;
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
            Some(item) => drop(self.0.settle_low_stock(conn, item).await?),
            None => {
                tracing::info!(product_id = %p.product_id, revision = p.revision, "stale product revision ignored")
            }
        }
        Ok(())
    }

    async fn after_commit(&self, event: &Envelope<VendorProductUpdated>) {
        self.0
            .mirror_logged(&[event.payload.product_id], None)
            .await;
    }
}

/// `cart.item.added`: confirms the reservation the cart made synchronously and extends
/// its expiry. Only the reservation of the event's generation is confirmed (with
/// generation 0, from a cart that did not know it, the one of the event's quantity).
/// If it has lapsed meanwhile it is taken again only from stock nobody else holds; a
/// confirmation that finds too little is logged and counted, not retried: the commit at
/// checkout decides, from PostgreSQL, and never oversells.
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
        let Some(held) = held.filter(|r| confirms(r, p)) else {
            tracing::info!(cart_id = %p.cart_id, product_id = %p.product_id, generation = p.generation, "reservation changed or released since this event; nothing to confirm");
            return Ok(());
        };
        if held.expires_at <= Utc::now() {
            let Some(item) = db::item(conn, p.product_id).await? else {
                tracing::warn!(cart_id = %p.cart_id, product_id = %p.product_id, "no stock item for a reserved product");
                return Ok(());
            };
            let others = db::reserved_totals(conn, &[p.product_id], Some(p.cart_id))
                .await?
                .get(&p.product_id)
                .copied()
                .unwrap_or(0);
            let free = item.on_hand - others;
            if !item.active || free < held.quantity {
                self.0.metrics.check_shortfalls.inc();
                tracing::warn!(cart_id = %p.cart_id, product_id = %p.product_id, quantity = held.quantity, available = free.max(0), active = item.active, "lapsed reservation could not be confirmed");
                return Ok(());
            }
        }
        let ttl_ms = self.0.store.ttl().as_millis() as i64;
        db::extend_reservation(conn, p.product_id, p.cart_id, ttl_ms).await?;
        Ok(())
    }

    async fn after_commit(&self, event: &Envelope<CartItemAdded>) {
        let p = &event.payload;
        self.0.mirror_logged(&[p.product_id], Some(p.cart_id)).await;
    }
}

/// Whether `held` is the reservation `event` is about.
fn confirms(held: &db::Reservation, event: &CartItemAdded) -> bool {
    held.quantity > 0
        && if event.generation == 0 {
            held.quantity == event.quantity
        } else {
            held.generation == event.generation
        }
}

/// `cart.item.removed`: ends the reservation if its generation is the event's or
/// older; a newer reservation of the same cart (the item added again) is kept. An event
/// without a generation (0, from a cart that did not know it) ends nothing: without a
/// generation a late removal cannot be told from a current one, and the cart's
/// synchronous `DELETE` has already released the reservation (else it expires).
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
        if p.generation == 0 {
            tracing::info!(cart_id = %p.cart_id, product_id = %p.product_id, "removal without a generation; the reservation is left to its release or expiry");
            return Ok(());
        }
        let ended =
            db::end_reservations(conn, p.cart_id, &[p.product_id], Some(p.generation)).await?;
        if ended.is_empty() {
            tracing::info!(cart_id = %p.cart_id, product_id = %p.product_id, generation = p.generation, "nothing held up to this generation; a newer reservation is kept");
        }
        Ok(())
    }

    async fn after_commit(&self, event: &Envelope<CartItemRemoved>) {
        let p = &event.payload;
        if p.generation != 0 {
            self.0.mirror_logged(&[p.product_id], Some(p.cart_id)).await;
        }
    }
}

fn product_ids(lines: &[(Uuid, i64)]) -> Vec<Uuid> {
    lines.iter().map(|(id, _)| *id).collect()
}

/// `order.created`: the order's stock becomes a sale, all lines or none, in this
/// transaction: guarded decrements, ledger rows, the cart's reservations ended, the
/// order's commit record and `inventory.updated` (`order_committed`, or
/// `order_rejected` with the shortages and nothing changed).
///
/// A commit honours reservations: each line may take at most what is on hand less the
/// live reservations of other carts, decided here from PostgreSQL with the stock rows
/// locked (in product id order). A cart whose reservation is live holds its quantity
/// by construction; one whose reservation lapsed takes only what nobody else holds.
/// Where the live reservations add up to more than is on hand, they are honoured first
/// come, first served (`domain::available_to`).
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
        let committed: Vec<CommittedLine> = lines
            .iter()
            .map(|&(product_id, quantity)| CommittedLine {
                product_id,
                quantity,
            })
            .collect();
        if !db::claim_order(conn, p.order_id, p.cart_id, &committed).await? {
            tracing::info!(order_id = %p.order_id, "order already handled; nothing to commit");
            return Ok(());
        }
        let ids = product_ids(&lines);
        // Read before the stock rows are locked, to keep the lock short on a product
        // many carts hold. Reservations change without that lock anyway; the sum can
        // only be higher here than under the lock (a commit ending its reservations
        // meanwhile), and a line it makes look short is decided again under the lock.
        let held_by_others = db::reserved_totals(conn, &ids, Some(p.cart_id)).await?;
        let items: HashMap<Uuid, StockItem> = db::items_for_update(conn, &ids)
            .await?
            .into_iter()
            .map(|i| (i.product_id, i))
            .collect();
        let others = |product_id| held_by_others.get(&product_id).copied().unwrap_or(0);
        let mut shortages = Vec::new();
        for &(product_id, requested) in &lines {
            let on_hand = items.get(&product_id).map_or(0, |i| i.on_hand);
            let mut available = (on_hand - others(product_id)).max(0);
            if available < requested && others(product_id) > 0 {
                // Perhaps overbooked: reservations are honoured first come, first
                // served, so that some order still commits (see `available_to`).
                let held = db::live_reservations(conn, product_id).await?;
                available = available_to(p.cart_id, on_hand, &held);
            }
            if available < requested {
                shortages.push(Shortage {
                    product_id,
                    requested,
                    available,
                });
            }
        }

        if !shortages.is_empty() {
            db::settle_order(conn, p.order_id, "rejected", &[]).await?;
            let mut levels = Vec::with_capacity(items.len());
            for &id in &ids {
                if let Some(item) = items.get(&id) {
                    levels.push(self.0.level(conn, item).await?);
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
                .apply_movement(conn, product_id, &movement)
                .await?
                .ok_or_else(|| HandlerError::transient("stock changed under a row lock"))?;
            // Reserved after the sale: the others' (this cart's become the sale).
            levels.push(stock_level(&item, others(product_id)));
        }
        // The cart's reservations become the sale (after the stock rows: the lock order
        // everywhere is the order's record, the stock rows, then reservations).
        db::end_reservations(conn, p.cart_id, &ids, None).await?;
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
        self.0
            .mirror_logged(&ids, Some(event.payload.cart_id))
            .await;
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

    /// Only failures and cancellations give stock back.
    fn concerns(&self, event: &Envelope<OrderUpdated>) -> bool {
        releases_stock(event.payload.status)
    }

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
        // Lock order everywhere: the order's record, the stock rows (by product id),
        // then reservations.
        //
        // The order's record decides, and both sides write it before reading it: the
        // commit inserts it, this handler tries to insert it as void. An insert waits
        // for an uncommitted insert of the same order to end, so exactly one of the
        // two is first: if the void goes in, no commit can follow; if it meets a
        // record, that record is committed by now and the release below reads it. (An
        // update first would not see a commit still in flight, find nothing, and leave
        // its sale standing for a cancelled order.)
        if db::void_order(conn, p.order_id, p.cart_id).await? {
            db::end_reservations(conn, p.cart_id, &event_ids, None).await?;
            tracing::info!(order_id = %p.order_id, "no committed stock to release; the order can no longer commit");
            return Ok(());
        }
        let Some(mut lines) = db::release_order(conn, p.order_id).await? else {
            db::end_reservations(conn, p.cart_id, &event_ids, None).await?;
            tracing::info!(order_id = %p.order_id, "no committed stock to release (rejected, void or released already)");
            return Ok(());
        };
        lines.sort_by_key(|l| l.product_id);
        let line_ids: Vec<Uuid> = lines.iter().map(|l| l.product_id).collect();
        db::items_for_update(conn, &line_ids).await?;
        db::end_reservations(conn, p.cart_id, &event_ids, None).await?;
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
                .apply_movement(conn, line.product_id, &movement)
                .await?
                .ok_or_else(|| {
                    HandlerError::permanent(format!(
                        "committed product {} has no stock item",
                        line.product_id
                    ))
                })?;
            levels.push(self.0.level(conn, &item).await?);
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
            self.0
                .mirror_logged(&ids, Some(event.payload.cart_id))
                .await;
        }
    }
}
