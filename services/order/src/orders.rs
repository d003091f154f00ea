//! The order service: what the HTTP routes, the event handlers and the saga driver do
//! to orders. Guarded transitions with their history and events; orders as one caller
//! may see them; cancelling, shipping and delivering, each in one transaction with its
//! outbox rows. The routes parse, call these and map [`OrderError`] to problem+json.
//!
//! * A customer sees and cancels their own orders. A vendor member sees the orders
//!   holding its products, with only its own lines (and their totals), and ships those
//!   lines. An admin sees and does everything (shipping on behalf of a vendor names it
//!   with `vendor_id`). Anyone else is told there is no such order.
//! * Cancelling hands whatever was charged to the saga driver to refund and publishes
//!   `order.updated(cancelled)`, so inventory returns the stock; once anything has
//!   shipped it is refused.
//! * Each vendor ships its own lines (`order.shipped` per shipment); the order becomes
//!   `shipped` with the last vendor's shipment, and then can be delivered.

use std::collections::BTreeSet;
use std::sync::Arc;

use mp_common::AuthUser;
use mp_events::catalog::{LineItem, OrderCreated, OrderShipped, OrderStatus, OrderUpdated};
use mp_events::{Currency, Money, Service};
use sqlx::{PgConnection, PgPool};
use tokio::sync::{Notify, mpsc};
use uuid::Uuid;

use crate::db::{
    self, Change, Claimed, HistoryRow, ItemRow, NewShipment, OrderRow, PaymentRow, Scope,
    ShipmentRow,
};
use crate::domain::{self, Actor, IllegalTransition, Step, Timeouts, Visibility};
use crate::metrics::OrderMetrics;

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

/// New orders passed from the handler that created them (and leased them for this
/// process) to the driver, so they need no claiming round trip. Survives restarts of
/// the driver: the receiving end is shared.
#[derive(Clone)]
pub struct Handoff {
    tx: mpsc::UnboundedSender<Claimed>,
    rx: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Claimed>>>,
}

impl Default for Handoff {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            tx,
            rx: Arc::new(tokio::sync::Mutex::new(rx)),
        }
    }
}

impl Handoff {
    /// Hands over an order created (and leased) in a committed transaction.
    pub fn new_order(&self, id: Uuid) {
        let _ = self.tx.send(Claimed {
            id,
            saga_step: Step::Charge,
            step_attempts: 1,
        });
    }

    /// The driver's end (one driver at a time holds its lock).
    pub fn receiver(&self) -> Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Claimed>>> {
        self.rx.clone()
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

pub fn line_items(items: &[ItemRow], currency: Currency) -> Vec<LineItem> {
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
        let from = order.status;
        domain::check_transition(from, to).map_err(TransitionError::Illegal)?;
        let to_name = domain::status_name(to);
        if !db::update_status(conn, order, to, &change).await? {
            return Err(TransitionError::Raced);
        }
        db::insert_history(
            conn,
            order.id,
            Some(from),
            to,
            change.reason,
            &actor.to_string(),
        )
        .await?;
        let items = line_items(&db::items(conn, &[order.id]).await?, order.currency);
        let total = order.total();
        if to == OrderStatus::Paid {
            mp_events::enqueue(
                conn,
                Service::Order,
                OrderCreated {
                    order_id: order.id,
                    customer_id: order.customer_id,
                    cart_id: order.cart_id,
                    items: items.clone(),
                    total,
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
        tracing::info!(order_id = %order.id, from = domain::status_name(from), to = to_name, by = %actor,
                       reason = change.reason.unwrap_or_default(), "order status changed");
        Ok(())
    }
}

/// Why an operation on an order was refused (or failed).
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// No such order, or none the caller may see.
    #[error("no such order")]
    NotFound,
    /// The vendor named has no lines in the order.
    #[error("the vendor has no lines in the order")]
    NoVendorLines,
    /// The caller sees the order but may not do this to it.
    #[error("{0}")]
    Forbidden(&'static str),
    /// The caller ships for several of the order's vendors and named none.
    #[error("the caller may ship for several vendors of this order")]
    VendorNeeded,
    /// Part of the order has shipped, so it can no longer be cancelled.
    #[error("part of the order has shipped")]
    PartShipped { status: OrderStatus },
    /// This vendor's lines have shipped already.
    #[error("the vendor has shipped its lines already")]
    AlreadyShipped,
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Why the cart's payment method for an order was not stored (or failed).
#[derive(Debug, thiserror::Error)]
pub enum PaymentMethodError {
    /// Another token is stored for the order, or the order is another customer's or
    /// cart's.
    #[error("another payment method is stored for the order")]
    Conflict,
    /// A new order while the saga is at its admission limit: shed.
    #[error("the saga is at its limit")]
    Busy,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// An order with the lines the caller may see and the amounts of those lines.
#[derive(Debug)]
pub struct VisibleOrder {
    pub order: OrderRow,
    pub lines: Vec<ItemRow>,
    pub visibility: Visibility,
    pub subtotal: Money,
    pub tax: Money,
    pub total: Money,
}

impl VisibleOrder {
    fn with(order: OrderRow, items: Vec<ItemRow>, visibility: Visibility) -> Self {
        let lines: Vec<ItemRow> = items
            .into_iter()
            .filter(|i| visibility.sees(i.vendor_id))
            .collect();
        let (subtotal, tax, total) = match visibility {
            Visibility::Full => (order.subtotal(), order.tax(), order.total()),
            Visibility::VendorLines(_) => {
                let sum = Money::new(
                    lines
                        .iter()
                        .map(|i| i.unit_price.saturating_mul(i.quantity))
                        .sum(),
                    order.currency,
                );
                (sum, Money::new(0, order.currency), sum)
            }
        };
        Self {
            order,
            lines,
            visibility,
            subtotal,
            tax,
            total,
        }
    }
}

/// An order as the caller may see it with its history, the shipments of the lines it
/// sees and (seeing all of it) its payments.
#[derive(Debug)]
pub struct OrderDetail {
    pub order: VisibleOrder,
    pub history: Vec<HistoryRow>,
    pub shipments: Vec<ShipmentRow>,
    pub payments: Vec<PaymentRow>,
}

/// A vendor's shipment as the caller asks for it (its texts already checked).
#[derive(Debug)]
pub struct ShipmentRequest {
    pub carrier: String,
    pub tracking_number: String,
    /// The vendor shipping; needed for admins and members of several of the order's
    /// vendors.
    pub vendor_id: Option<Uuid>,
}

/// Loads an order with all its lines and what `user` may see of it, locked for the
/// transaction if `lock`.
async fn load(
    conn: &mut PgConnection,
    user: &AuthUser,
    id: Uuid,
    lock: bool,
) -> Result<(OrderRow, Vec<ItemRow>, Visibility), OrderError> {
    let order = if lock {
        db::order_for_update(conn, id).await?
    } else {
        db::order(conn, id).await?
    }
    .ok_or(OrderError::NotFound)?;
    let items = db::items(conn, &[id]).await?;
    let visibility = Visibility::of(user, order.customer_id, items.iter().map(|i| i.vendor_id))
        .ok_or(OrderError::NotFound)?;
    Ok((order, items, visibility))
}

/// Who is acting on an order, as its history records it.
fn actor(user: &AuthUser, order: &OrderRow) -> Actor {
    if order.customer_id == user.id {
        Actor::Customer(user.id)
    } else if user.is_admin() {
        Actor::Admin(user.id)
    } else {
        Actor::Vendor(user.id)
    }
}

impl Orders {
    /// Stores the cart's payment token for `order_id` (checked already), before the cart
    /// commits `cart.checkout`. Idempotent for the same token; an order that is charged
    /// (or failed) already needs none, and the call succeeds without storing it. A new
    /// order must pass admission first.
    pub async fn put_payment_method(
        &self,
        order_id: Uuid,
        customer_id: Uuid,
        cart_id: Uuid,
        token: &str,
    ) -> Result<(), PaymentMethodError> {
        let mut conn = self.db.acquire().await?;
        if let Some(order) = db::order(&mut conn, order_id).await? {
            if order.customer_id != customer_id || order.cart_id != cart_id {
                return Err(PaymentMethodError::Conflict);
            }
            if order.saga_step != Some(Step::Charge) {
                // Charged (or failed) already: the token is no longer needed.
                return Ok(());
            }
        } else if !self.admission.admit(&mut conn, &self.metrics).await? {
            // A new checkout while the saga is at its limit: shed it (the cart answers
            // 503 with Retry-After and the client retries with the same key).
            self.metrics.shed.inc();
            return Err(PaymentMethodError::Busy);
        }
        match db::put_payment_method(&mut conn, order_id, customer_id, cart_id, token).await? {
            db::Stored::Same => Ok(()),
            db::Stored::Different => Err(PaymentMethodError::Conflict),
        }
    }

    /// Orders waiting on a saga step longer than the soft timeout, newest first, after
    /// the cursor `after`, at most `fetch` (for admins: the caller checks).
    pub async fn stuck(&self, after: Option<Uuid>, fetch: i64) -> sqlx::Result<Vec<OrderRow>> {
        db::stuck(
            &mut *self.db.acquire().await?,
            self.timeouts.soft.as_secs_f64(),
            after,
            fetch,
        )
        .await
    }

    /// Orders newest first that `user` may see (their own, those holding their vendors'
    /// products, all for an admin), after the cursor `after`, at most `fetch`.
    pub async fn list(
        &self,
        user: &AuthUser,
        status: Option<OrderStatus>,
        after: Option<Uuid>,
        fetch: i64,
    ) -> Result<Vec<VisibleOrder>, OrderError> {
        let mut conn = self.db.acquire().await?;
        let scope = Scope {
            admin: user.is_admin(),
            customer_id: user.id,
            vendors: &user.vendors,
        };
        let rows = db::list(&mut conn, &scope, status, after, fetch).await?;
        let ids: Vec<Uuid> = rows.iter().map(|o| o.id).collect();
        let items = db::items(&mut conn, &ids).await?;
        Ok(rows
            .into_iter()
            .map(|o| {
                let own: Vec<ItemRow> = items
                    .iter()
                    .filter(|i| i.order_id == o.id)
                    .cloned()
                    .collect();
                // The scope selected only orders the caller sees; should one have lost
                // the caller's lines meanwhile, it lists with none.
                let visibility =
                    Visibility::of(user, o.customer_id, own.iter().map(|i| i.vendor_id))
                        .unwrap_or(Visibility::VendorLines(BTreeSet::new()));
                VisibleOrder::with(o, own, visibility)
            })
            .collect())
    }

    /// One order as `user` may see it.
    pub async fn detail(&self, user: &AuthUser, id: Uuid) -> Result<OrderDetail, OrderError> {
        let mut conn = self.db.acquire().await?;
        let (order, items, visibility) = load(&mut conn, user, id, false).await?;
        Ok(Self::details(&mut conn, VisibleOrder::with(order, items, visibility)).await?)
    }

    /// Reads `id` again after a change, with the lines and visibility read before it.
    async fn reread(
        &self,
        id: Uuid,
        items: Vec<ItemRow>,
        visibility: Visibility,
    ) -> Result<OrderDetail, OrderError> {
        let mut conn = self.db.acquire().await?;
        let order = db::order(&mut conn, id)
            .await?
            .ok_or(OrderError::NotFound)?;
        Ok(Self::details(&mut conn, VisibleOrder::with(order, items, visibility)).await?)
    }

    async fn details(conn: &mut PgConnection, order: VisibleOrder) -> sqlx::Result<OrderDetail> {
        let id = order.order.id;
        let history = db::history(conn, id).await?;
        let shipments = db::shipments(conn, id)
            .await?
            .into_iter()
            .filter(|s| order.visibility.sees(s.vendor_id))
            .collect();
        let payments = if order.visibility == Visibility::Full {
            db::payments(conn, id).await?
        } else {
            vec![]
        };
        Ok(OrderDetail {
            order,
            history,
            shipments,
            payments,
        })
    }

    /// Cancels an order before it ships (its customer or an admin). Whatever the
    /// provider holds for it (captured, in flight, or an answer lost) is settled by the
    /// driver: refunded or cancelled; `order.updated(cancelled)` returns the stock.
    pub async fn cancel(&self, user: &AuthUser, id: Uuid) -> Result<OrderDetail, OrderError> {
        let mut tx = self.db.begin().await?;
        let (order, items, visibility) = load(&mut tx, user, id, true).await?;
        if visibility != Visibility::Full {
            return Err(OrderError::Forbidden(
                "Only the customer or an admin may cancel an order.",
            ));
        }
        let status = order.status;
        if status == OrderStatus::Confirmed && !db::shipments(&mut tx, id).await?.is_empty() {
            return Err(OrderError::PartShipped { status });
        }
        let started = order.charge_started || order.payment_intent.is_some();
        let change = Change {
            reason: Some(if user.id == order.customer_id {
                "cancelled by the customer"
            } else {
                "cancelled by an administrator"
            }),
            stock_committed: false,
            step: Some(started.then_some(Step::Refund)),
        };
        self.transition(
            &mut tx,
            &order,
            OrderStatus::Cancelled,
            actor(user, &order),
            change,
        )
        .await?;
        db::delete_payment_method(&mut tx, id).await?;
        tx.commit().await?;
        if started {
            self.wake.notify_one();
        }
        self.reread(id, items, visibility).await
    }

    /// Ships a vendor's lines of a confirmed order (`order.shipped`); the order is
    /// `shipped` once every vendor has shipped.
    pub async fn ship(
        &self,
        user: &AuthUser,
        id: Uuid,
        request: ShipmentRequest,
    ) -> Result<OrderDetail, OrderError> {
        let mut tx = self.db.begin().await?;
        let (order, items, visibility) = load(&mut tx, user, id, true).await?;
        let order_vendors: BTreeSet<Uuid> = items.iter().map(|i| i.vendor_id).collect();
        const NOT_MEMBER: &str = "Only the vendor's members ship its lines.";
        let vendor_id = match request.vendor_id {
            Some(vendor_id) if !user.can_manage_vendor(vendor_id) => {
                return Err(OrderError::Forbidden(NOT_MEMBER));
            }
            Some(vendor_id) if !order_vendors.contains(&vendor_id) => {
                return Err(OrderError::NoVendorLines);
            }
            Some(vendor_id) => vendor_id,
            None => {
                let mine: Vec<Uuid> = order_vendors
                    .iter()
                    .copied()
                    .filter(|v| user.can_manage_vendor(*v))
                    .collect();
                match mine.as_slice() {
                    [one] => *one,
                    [] if visibility == Visibility::Full => {
                        return Err(OrderError::Forbidden(NOT_MEMBER));
                    }
                    [] => return Err(OrderError::NotFound),
                    _ => return Err(OrderError::VendorNeeded),
                }
            }
        };
        // Lines ship from a confirmed order; the order itself stays confirmed until the
        // last vendor has shipped.
        domain::check_transition(order.status, OrderStatus::Shipped)
            .map_err(|e| OrderError::Transition(TransitionError::Illegal(e)))?;
        let shipment = db::insert_shipment(
            &mut tx,
            &NewShipment {
                order_id: id,
                vendor_id,
                carrier: &request.carrier,
                tracking_number: &request.tracking_number,
                shipped_by: user.id,
            },
        )
        .await?
        .ok_or(OrderError::AlreadyShipped)?;
        let shipped_vendors: BTreeSet<Uuid> = db::shipments(&mut tx, id)
            .await?
            .into_iter()
            .map(|s| s.vendor_id)
            .collect();
        let order_shipped = shipped_vendors == order_vendors;
        let vendor_lines: Vec<ItemRow> = items
            .iter()
            .filter(|i| i.vendor_id == vendor_id)
            .cloned()
            .collect();
        mp_events::enqueue(
            &mut tx,
            Service::Order,
            OrderShipped {
                order_id: id,
                customer_id: order.customer_id,
                shipment_id: shipment.id,
                vendor_id,
                carrier: request.carrier,
                tracking_number: request.tracking_number,
                items: line_items(&vendor_lines, order.currency),
                order_shipped,
            },
        )
        .await?;
        if order_shipped {
            self.transition(
                &mut tx,
                &order,
                OrderStatus::Shipped,
                actor(user, &order),
                Change {
                    reason: Some("every vendor has shipped"),
                    ..Change::default()
                },
            )
            .await?;
        }
        tx.commit().await?;
        tracing::info!(order_id = %id, %vendor_id, order_shipped, "vendor shipped its lines");
        self.reread(id, items, visibility).await
    }

    /// Marks a shipped order delivered (an admin, or a member of one of its vendors).
    pub async fn deliver(&self, user: &AuthUser, id: Uuid) -> Result<OrderDetail, OrderError> {
        let mut tx = self.db.begin().await?;
        let (order, items, visibility) = load(&mut tx, user, id, true).await?;
        let vendor = items.iter().any(|i| user.vendors.contains(&i.vendor_id));
        if !user.is_admin() && !vendor {
            return Err(OrderError::Forbidden(
                "Only the order's vendors or an admin mark delivery.",
            ));
        }
        let by = if user.is_admin() {
            Actor::Admin(user.id)
        } else {
            Actor::Vendor(user.id)
        };
        self.transition(
            &mut tx,
            &order,
            OrderStatus::Delivered,
            by,
            Change::default(),
        )
        .await?;
        tx.commit().await?;
        self.reread(id, items, visibility).await
    }
}
