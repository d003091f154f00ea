//! Handlers of consumed events. Each runs in the consumer's transaction with its inbox
//! row, so an exact redelivery has no second effect; beyond that:
//!
//! * `order.create` (cart.checkout) creates the order once per cart and per order id;
//!   a repeated checkout of the same cart changes nothing.
//! * `order.stock` (inventory.updated) acts only on a `paid` order: a commit confirms
//!   it, a rejection rejects it and schedules the refund. Anything else (an order
//!   cancelled meanwhile, a second answer) is left alone: inventory releases by itself
//!   what it holds for failed and cancelled orders.

use async_trait::async_trait;
use mp_events::catalog::{CartCheckout, InventoryUpdated, OrderStatus, StockChange};
use mp_events::{Envelope, EventHandler, HandlerError};
use sqlx::PgConnection;

use crate::db::{self, Change};
use crate::domain::{self, Actor, Step};
use crate::orders::{Orders, TransitionError};

/// `cart.checkout`: the order, pending, waiting on its charge. A new order is created
/// leased for this process's saga driver and handed to it once committed.
pub struct CreateOrder {
    orders: Orders,
    /// Orders this handler created, by event id, until their transaction committed.
    created: std::sync::Mutex<std::collections::HashMap<uuid::Uuid, uuid::Uuid>>,
}

impl CreateOrder {
    pub fn new(orders: Orders) -> Self {
        Self {
            orders,
            created: Default::default(),
        }
    }
}

fn check_checkout(c: &CartCheckout) -> Result<(), String> {
    if c.items.is_empty() {
        return Err("a checkout without items".into());
    }
    let currency = c.total.currency();
    let mut sum: i64 = 0;
    for item in &c.items {
        if item.quantity < 1 || item.unit_price.amount() < 0 {
            return Err(format!(
                "line {} has a bad quantity or price",
                item.product_id
            ));
        }
        if item.unit_price.currency() != currency {
            return Err(format!("line {} is in another currency", item.product_id));
        }
        sum = item
            .quantity
            .checked_mul(item.unit_price.amount())
            .and_then(|l| l.checked_add(sum))
            .ok_or("the line totals overflow")?;
    }
    if [&c.subtotal, &c.tax]
        .iter()
        .any(|m| m.currency() != currency)
        || c.subtotal.amount() != sum
        || c.tax.amount() < 0
        || c.total.amount() != c.subtotal.amount() + c.tax.amount()
    {
        return Err("subtotal, tax and total do not add up".into());
    }
    Ok(())
}

#[async_trait]
impl EventHandler for CreateOrder {
    type Event = CartCheckout;
    const NAME: &'static str = "order.create";

    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &Envelope<CartCheckout>,
    ) -> Result<(), HandlerError> {
        let c = &event.payload;
        check_checkout(c).map_err(|e| {
            HandlerError::permanent(format!("cart.checkout of cart {}: {e}", c.cart_id))
        })?;
        if db::insert_order(conn, c, self.orders.lease.as_secs_f64()).await? {
            self.created
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(event.id, c.order_id);
            tracing::info!(order_id = %c.order_id, cart_id = %c.cart_id, "order created");
        } else {
            tracing::info!(order_id = %c.order_id, cart_id = %c.cart_id, "order exists already");
        }
        Ok(())
    }

    /// Hands a new order to the driver (only one this handler created: a repeated
    /// checkout's order is the driver's to claim when due).
    async fn after_commit(&self, event: &Envelope<CartCheckout>) {
        let created = self
            .created
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&event.id);
        if let Some(order_id) = created {
            self.orders.handoff.new_order(order_id);
        }
    }
}

/// `inventory.updated` with an order's commit or rejection.
pub struct StockOutcome(pub Orders);

#[async_trait]
impl EventHandler for StockOutcome {
    type Event = InventoryUpdated;
    const NAME: &'static str = "order.stock";

    /// Only an order's commit or rejection (not adjustments or releases).
    fn concerns(&self, event: &Envelope<InventoryUpdated>) -> bool {
        event.payload.order_id.is_some()
            && matches!(
                event.payload.change,
                StockChange::OrderCommitted | StockChange::OrderRejected
            )
    }

    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &Envelope<InventoryUpdated>,
    ) -> Result<(), HandlerError> {
        let p = &event.payload;
        let (Some(order_id), true) = (
            p.order_id,
            matches!(
                p.change,
                StockChange::OrderCommitted | StockChange::OrderRejected
            ),
        ) else {
            return Ok(());
        };
        let Some(order) = db::order_for_update(conn, order_id).await? else {
            tracing::warn!(%order_id, "stock outcome for an unknown order");
            return Ok(());
        };
        if order.status != OrderStatus::Paid {
            tracing::info!(%order_id, status = domain::status_name(order.status), "stock outcome for an order no longer paid; ignored");
            return Ok(());
        }
        let shortages: Vec<String> = p
            .shortages
            .iter()
            .map(|s| {
                format!(
                    "{} ({} wanted, {} available)",
                    s.product_id, s.requested, s.available
                )
            })
            .collect();
        let reason = format!("out of stock: {}", shortages.join(", "));
        let (to, change) = match p.change {
            StockChange::OrderCommitted => (
                OrderStatus::Confirmed,
                Change {
                    reason: None,
                    stock_committed: true,
                    step: Some(None),
                },
            ),
            _ => (
                OrderStatus::Rejected,
                Change {
                    reason: Some(&reason),
                    stock_committed: false,
                    step: Some(Some(Step::Refund)),
                },
            ),
        };
        match self
            .0
            .transition(conn, &order, to, Actor::System, change)
            .await
        {
            Ok(()) => Ok(()),
            Err(TransitionError::Db(e)) => Err(e.into()),
            Err(e) => Err(HandlerError::transient(e)),
        }
    }

    async fn after_commit(&self, _event: &Envelope<InventoryUpdated>) {
        self.0.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use mp_events::catalog::{LineItem, ShippingAddress};
    use mp_events::{Currency, Money};
    use uuid::Uuid;

    use super::*;

    fn checkout(lines: &[(i64, i64)], tax: i64) -> CartCheckout {
        let items: Vec<LineItem> = lines
            .iter()
            .map(|&(quantity, price)| LineItem {
                product_id: Uuid::now_v7(),
                vendor_id: Uuid::now_v7(),
                name: "Teapot".into(),
                quantity,
                unit_price: Money::new(price, Currency::EUR),
            })
            .collect();
        let subtotal: i64 = lines.iter().map(|(q, p)| q * p).sum();
        CartCheckout {
            cart_id: Uuid::now_v7(),
            customer_id: Uuid::now_v7(),
            order_id: Uuid::now_v7(),
            items,
            subtotal: Money::new(subtotal, Currency::EUR),
            tax: Money::new(tax, Currency::EUR),
            total: Money::new(subtotal + tax, Currency::EUR),
            shipping_address: ShippingAddress {
                name: "Ada".into(),
                line1: "1 Way".into(),
                line2: None,
                city: "London".into(),
                postal_code: "N1".into(),
                country: "GB".into(),
            },
        }
    }

    #[test]
    fn a_checkout_whose_amounts_add_up_is_accepted() {
        assert_eq!(
            check_checkout(&checkout(&[(2, 1999), (1, 500)], 900)),
            Ok(())
        );
    }

    #[test]
    fn checkouts_that_cannot_be_orders_are_refused() {
        assert!(check_checkout(&checkout(&[], 0)).is_err(), "no items");
        assert!(
            check_checkout(&checkout(&[(0, 100)], 0)).is_err(),
            "no quantity"
        );
        assert!(
            check_checkout(&checkout(&[(1, -5)], 0)).is_err(),
            "negative price"
        );
        assert!(
            check_checkout(&checkout(&[(1, 100)], -1)).is_err(),
            "negative tax"
        );
        let mut wrong_total = checkout(&[(1, 100)], 20);
        wrong_total.total = Money::new(wrong_total.total.amount() + 1, Currency::EUR);
        assert!(check_checkout(&wrong_total).is_err());
        let mut mixed = checkout(&[(1, 100)], 20);
        mixed.items[0].unit_price = Money::new(100, Currency::USD);
        assert!(check_checkout(&mixed).is_err());
    }
}
