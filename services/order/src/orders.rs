//! Operations on orders that the HTTP routes, the event handlers and the saga driver
//! share: guarded transitions with their history and events, and loading an order
//! with everything that belongs to it.

use std::sync::Arc;

use mp_events::catalog::{LineItem, OrderCreated, OrderStatus, OrderUpdated};
use mp_events::{Money, Service};
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;

use crate::db::{self, Change, ItemRow, OrderRow};
use crate::domain::Timeouts;
use crate::domain::{self, Actor, IllegalTransition};
use crate::metrics::OrderMetrics;
use crate::saga::Handoff;

/// Admission of new checkouts: a new order comes in while fewer than `max_in_flight`
/// orders are in the saga (waiting on their charge or their stock, or handed over but
/// not created yet; see `db::in_flight`). Past that the payment hand-off answers 503
/// with Retry-After, so the cart sheds checkouts instead of accepting work whose latency
/// would grow without bound: with the saga completing X orders a second, a checkout
/// waits about `max_in_flight / X`. Orders stuck for over a minute (a payment processing
/// for long) are not load.
///
/// The count is read from the database at most every [`Admission::FRESH`], and each
/// order admitted meanwhile is added to it, so a burst of checkouts asks once.
#[derive(Debug)]
pub struct Admission {
    pub max_in_flight: i64,
    counted: std::sync::Mutex<Option<(std::time::Instant, i64)>>,
}

impl Admission {
    pub const WINDOW_SECS: f64 = 60.0;
    pub const FRESH: std::time::Duration = std::time::Duration::from_millis(50);

    pub fn new(max_in_flight: i64) -> Self {
        Self {
            max_in_flight,
            counted: std::sync::Mutex::new(None),
        }
    }

    /// Whether a new order may come in (and counts it in if so).
    pub async fn admit(
        &self,
        conn: &mut PgConnection,
        metrics: &OrderMetrics,
    ) -> sqlx::Result<bool> {
        let fresh = {
            let counted = self.counted.lock().unwrap_or_else(|e| e.into_inner());
            counted.is_some_and(|(at, _)| at.elapsed() < Self::FRESH)
        };
        if !fresh {
            let in_flight = db::in_flight(conn, Self::WINDOW_SECS).await?;
            metrics.in_flight.set(in_flight);
            *self.counted.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((std::time::Instant::now(), in_flight));
        }
        let mut counted = self.counted.lock().unwrap_or_else(|e| e.into_inner());
        Ok(match counted.as_mut() {
            Some((_, n)) if *n < self.max_in_flight => {
                *n += 1;
                true
            }
            _ => false,
        })
    }
}

#[derive(Clone)]
pub struct Orders {
    pub db: PgPool,
    pub metrics: OrderMetrics,
    /// Wakes the saga driver when work became due (a refund to make).
    pub wake: Arc<Notify>,
    /// New orders, leased for this process, go to its saga driver in memory.
    pub handoff: Handoff,
    /// How long the driver's lease on an order lasts.
    pub lease: std::time::Duration,
    pub admission: Arc<Admission>,
    pub timeouts: Timeouts,
}

#[derive(Debug, thiserror::Error)]
pub enum TransitionError {
    #[error("{0}")]
    Illegal(IllegalTransition),
    /// Another transition changed the order since it was read.
    #[error("the order changed meanwhile")]
    Raced,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// The order's status as the domain knows it (a row always holds a valid one).
pub fn status_of(order: &OrderRow) -> OrderStatus {
    domain::parse_status(&order.status).unwrap_or(OrderStatus::Pending)
}

pub fn line_items(items: &[ItemRow], currency: &str) -> Vec<LineItem> {
    items
        .iter()
        .map(|i| LineItem {
            product_id: i.product_id,
            vendor_id: i.vendor_id,
            name: i.name.clone(),
            quantity: i.quantity,
            unit_price: Money::new(i.unit_price, currency),
        })
        .collect()
}

impl Orders {
    /// Moves `order` (read in this transaction, ideally locked) to `to`: checks the
    /// status machine, applies it only to the version read, records the history and
    /// publishes `order.updated` (and `order.created` when it is paid).
    pub async fn transition(
        &self,
        conn: &mut PgConnection,
        order: &OrderRow,
        to: OrderStatus,
        actor: Actor,
        change: Change<'_>,
    ) -> Result<(), TransitionError> {
        let from = status_of(order);
        domain::check_transition(from, to).map_err(TransitionError::Illegal)?;
        let to_name = domain::status_name(to);
        if !db::update_status(conn, order, to_name, &change).await? {
            return Err(TransitionError::Raced);
        }
        db::insert_history(
            conn,
            order.id,
            Some(&order.status),
            to_name,
            change.reason,
            &actor.to_string(),
        )
        .await?;
        let items = line_items(&db::items(conn, &[order.id]).await?, &order.currency);
        let total = Money::new(order.total, &order.currency);
        if to == OrderStatus::Paid {
            mp_events::enqueue(
                conn,
                Service::Order,
                OrderCreated {
                    order_id: order.id,
                    customer_id: order.customer_id,
                    cart_id: order.cart_id,
                    items: items.clone(),
                    total: total.clone(),
                },
            )
            .await?;
        }
        mp_events::enqueue(
            conn,
            Service::Order,
            OrderUpdated {
                order_id: order.id,
                customer_id: order.customer_id,
                cart_id: order.cart_id,
                status: to,
                previous_status: Some(from),
                reason: change.reason.map(str::to_owned),
                stock_committed: order.stock_committed || change.stock_committed,
                items,
                total,
            },
        )
        .await?;
        self.metrics.outcomes.with_label_values(&[to_name]).inc();
        tracing::info!(order_id = %order.id, from = %order.status, to = to_name, by = %actor,
                       reason = change.reason.unwrap_or_default(), "order status changed");
        Ok(())
    }
}
