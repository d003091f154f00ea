//! The cart operations the HTTP routes and the idle worker share.
//!
//! Every change follows one shape: read and check, call inventory (or the catalog, or
//! the order service) with no transaction open, then write the change and its event in
//! one short transaction that locks the cart row and checks again that the cart is still
//! open. Follow-ups after the commit (releasing a removed line, renewing the other
//! lines' reservations) are best-effort: the events inventory consumes and the
//! reservations' TTL cover a call that fails.

use std::time::Duration;

use futures::future::join_all;
use mp_common::AuthUser;
use mp_events::catalog::{CartCreated, CartItemAdded, CartItemRemoved};
use mp_events::{Currency, Money, Service};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::clients::{Clients, Reservation, Unreachable};
use crate::db::{self, Cart, Item, LineUpdate};
use crate::domain::{self, CartStatus};
use crate::metrics::CartMetrics;

/// The cart service's state and rules.
#[derive(Clone)]
pub struct Carts {
    pub db: PgPool,
    pub clients: Clients,
    /// Tax rate in basis points (2000 = 20 %).
    pub tax_rate_bps: u32,
    /// The currency of new carts.
    pub currency: Currency,
    /// How long a checkout request holds its Idempotency-Key before a retry may take over.
    pub checkout_lease: Duration,
    pub metrics: CartMetrics,
    /// Until when (Unix ms) the order service said it is busy: checkouts until then are
    /// shed at once, before any work (see `checkout`).
    pub busy_until: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

/// Why a cart operation was refused (or failed). The routes turn each into its
/// problem+json; [`CartError::kind`] names it in metrics and in the problem's type.
#[derive(Debug, thiserror::Error)]
pub enum CartError {
    #[error("no such cart")]
    CartNotFound,
    #[error("no such product {0} in the catalog")]
    ProductNotFound(Uuid),
    #[error("no such line in the cart")]
    ItemNotFound,
    #[error("the cart is checked out")]
    CheckedOut {
        order_id: Option<Uuid>,
        status: CartStatus,
    },
    #[error("the cart was abandoned")]
    Abandoned { status: CartStatus },
    #[error("only {available} of {product_id} available; {requested} requested")]
    Insufficient {
        product_id: Uuid,
        requested: i64,
        available: i64,
    },
    #[error("product {0} is not for sale")]
    Inactive(Uuid),
    #[error("inventory holds no stock of {0} yet")]
    NotStocked(Uuid),
    #[error("product {product_id} is priced in {product_currency}, the cart takes {cart_currency}")]
    CurrencyMismatch {
        product_id: Uuid,
        product_currency: Currency,
        cart_currency: Currency,
    },
    #[error("the line of {product_id} holds {quantity}; adding {adding} is too many")]
    LineTooLarge {
        product_id: Uuid,
        quantity: i64,
        adding: i64,
    },
    /// The line kept changing under concurrent requests.
    #[error("the line kept changing")]
    ConcurrentChange,
    #[error("the Idempotency-Key was used with another request")]
    KeyReused,
    #[error("a request with this Idempotency-Key is in progress")]
    InProgress,
    #[error("the cart is empty")]
    Empty,
    #[error("the cart changed during checkout")]
    CartChanged,
    /// Lines inventory can no longer hold.
    #[error("lines cannot be held")]
    LinesUnheld(Vec<UnavailableLine>),
    /// Lines whose products were taken off sale.
    #[error("lines are off sale")]
    OffSale(Vec<UnavailableLine>),
    /// Prices moved since the lines were added; the cart took the new ones.
    #[error("prices changed")]
    PricesChanged(Vec<RepricedLine>),
    #[error("the order already holds another payment method")]
    PaymentMethodConflict,
    /// The order service sheds checkouts (the saga is at its limit).
    #[error("checkout is busy")]
    Busy,
    #[error(transparent)]
    Unavailable(#[from] Unreachable),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// A line a checkout could not take.
#[derive(Debug, Clone, Serialize)]
pub struct UnavailableLine {
    pub product_id: Uuid,
    pub name: String,
    pub requested: i64,
    pub available: i64,
    /// `false` for a product taken off sale.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
}

/// A line whose price moved since it was added.
#[derive(Debug, Clone, Serialize)]
pub struct RepricedLine {
    pub product_id: Uuid,
    pub name: String,
    pub old_price: Money,
    pub new_price: Money,
}

impl CartError {
    /// The problem's type (without `/problems/`), `unavailable` or `error`: the label of
    /// the outcome metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::CartNotFound | Self::ProductNotFound(_) | Self::ItemNotFound => "not-found",
            Self::CheckedOut { .. } => "cart-checked-out",
            Self::Abandoned { .. } => "cart-abandoned",
            Self::Insufficient { .. } => "insufficient-stock",
            Self::Inactive(_) => "product-inactive",
            Self::NotStocked(_) => "not-stocked",
            Self::CurrencyMismatch { .. } => "currency-mismatch",
            Self::LineTooLarge { .. } => "line-too-large",
            Self::ConcurrentChange => "concurrent-change",
            Self::KeyReused => "idempotency-key-reused",
            Self::InProgress => "request-in-progress",
            Self::Empty => "cart-empty",
            Self::CartChanged => "cart-changed",
            Self::LinesUnheld(_) | Self::OffSale(_) => "lines-unavailable",
            Self::PricesChanged(_) => "prices-changed",
            Self::PaymentMethodConflict => "payment-method-conflict",
            Self::Busy => "checkout-busy",
            Self::Unavailable(_) => "unavailable",
            Self::Db(e) if mp_common::problem::db_unavailable(e) => "unavailable",
            Self::Db(_) | Self::Internal(_) => "error",
        }
    }
}

pub(crate) fn not_open(cart: &Cart) -> CartError {
    match cart.status {
        CartStatus::CheckedOut => CartError::CheckedOut {
            order_id: cart.order_id,
            status: cart.status,
        },
        _ => CartError::Abandoned {
            status: cart.status,
        },
    }
}

pub(crate) fn is_open(cart: &Cart) -> bool {
    cart.status == CartStatus::Open
}

/// A reservation answer as the client's error, or its generation.
fn reserved(product_id: Uuid, requested: i64, r: Reservation) -> Result<i64, CartError> {
    match r {
        Reservation::Reserved { generation } => Ok(generation),
        Reservation::Insufficient { available } => Err(CartError::Insufficient {
            product_id,
            requested,
            available,
        }),
        Reservation::Inactive => Err(CartError::Inactive(product_id)),
        Reservation::Superseded => Err(CartError::ConcurrentChange),
        Reservation::Unknown => Err(CartError::NotStocked(product_id)),
    }
}

impl Carts {
    /// The cart if `user` may see it: its customer or an admin. Anyone else gets the
    /// same 404 as for a cart that does not exist.
    pub async fn owned(&self, user: &AuthUser, cart_id: Uuid) -> Result<Cart, CartError> {
        let cart = db::cart(&mut *self.db.acquire().await?, cart_id).await?;
        match cart {
            Some(c) if c.customer_id == user.id || user.is_admin() => Ok(c),
            _ => Err(CartError::CartNotFound),
        }
    }

    /// The cart and its lines as they are now.
    pub async fn current(&self, cart_id: Uuid) -> Result<(Cart, Vec<Item>), CartError> {
        let mut conn = self.db.acquire().await?;
        let cart = db::cart(&mut conn, cart_id)
            .await?
            .ok_or(CartError::CartNotFound)?;
        let items = db::items(&mut conn, cart_id).await?;
        Ok((cart, items))
    }

    pub async fn items(&self, cart_id: Uuid) -> Result<Vec<Item>, CartError> {
        Ok(db::items(&mut *self.db.acquire().await?, cart_id).await?)
    }

    /// The customer's open cart, made when there is none; `true` when it is new.
    pub async fn open(&self, customer_id: Uuid) -> Result<(bool, Cart), CartError> {
        let mut conn = self.db.acquire().await?;
        if let Some(cart) = db::open_cart(&mut conn, customer_id).await? {
            return Ok((false, cart));
        }
        drop(conn);
        let mut tx = self.db.begin().await?;
        if let Some(cart) =
            db::insert_cart(&mut tx, Uuid::now_v7(), customer_id, self.currency).await?
        {
            mp_events::enqueue(
                &mut tx,
                Service::Cart,
                CartCreated {
                    cart_id: cart.id,
                    customer_id,
                },
            )
            .await?;
            tx.commit().await?;
            self.metrics.carts_opened.inc();
            tracing::info!(cart_id = %cart.id, %customer_id, "cart opened");
            return Ok((true, cart));
        }
        drop(tx);
        // A concurrent request opened it first.
        let cart = db::open_cart(&mut *self.db.acquire().await?, customer_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("open cart vanished"))?;
        Ok((false, cart))
    }

    /// Locks the cart for a change and checks that it is still open.
    pub(crate) async fn lock_open(
        &self,
        conn: &mut PgConnection,
        cart_id: Uuid,
    ) -> Result<Cart, CartError> {
        let cart = db::cart_for_update(conn, cart_id)
            .await?
            .ok_or(CartError::CartNotFound)?;
        if !is_open(&cart) {
            return Err(not_open(&cart));
        }
        Ok(cart)
    }

    /// Adds `quantity` of a product (to the line's quantity when the cart has it).
    pub async fn add_item(
        &self,
        cart: &Cart,
        product_id: Uuid,
        quantity: i64,
    ) -> Result<Item, CartError> {
        self.counted(
            "added",
            self.add_item_inner(cart, product_id, quantity).await,
        )
    }

    /// Sets a line's quantity, reserving the new total.
    pub async fn set_quantity(
        &self,
        cart: &Cart,
        product_id: Uuid,
        quantity: i64,
    ) -> Result<Item, CartError> {
        self.counted(
            "changed",
            self.set_quantity_inner(cart, product_id, quantity).await,
        )
    }

    /// Removes a line and releases its reservation.
    pub async fn remove_item(&self, cart: &Cart, product_id: Uuid) -> Result<(), CartError> {
        self.counted("removed", self.remove_item_inner(cart, product_id).await)
    }

    fn counted<T>(&self, done: &str, result: Result<T, CartError>) -> Result<T, CartError> {
        let label = match &result {
            Ok(_) => done,
            Err(e) => e.kind(),
        };
        self.metrics.item_changes.with_label_values(&[label]).inc();
        result
    }

    async fn add_item_inner(
        &self,
        cart: &Cart,
        product_id: Uuid,
        quantity: i64,
    ) -> Result<Item, CartError> {
        if !is_open(cart) {
            return Err(not_open(cart));
        }
        // An unknown product is a missing resource (404); a product in another currency
        // and a line that would grow past its maximum conflict with the cart as it is
        // (409): neither is about the request's shape.
        let product = self
            .clients
            .product(product_id)
            .await?
            .ok_or(CartError::ProductNotFound(product_id))?;
        if !product.active {
            return Err(CartError::Inactive(product_id));
        }
        if product.price.currency() != cart.currency {
            return Err(CartError::CurrencyMismatch {
                product_id,
                product_currency: product.price.currency(),
                cart_currency: cart.currency,
            });
        }
        // Optimistic: the line's quantity is read, the new total reserved, and the write
        // applies only if no other change of the line came in between (same quantity,
        // no newer reservation); otherwise it starts over with the line as it is now.
        for _ in 0..MAX_ATTEMPTS {
            let existing = db::item(&mut *self.db.acquire().await?, cart.id, product_id).await?;
            let before = existing.as_ref().map(|i| i.quantity);
            let total = before.unwrap_or(0) + quantity;
            if total > domain::MAX_QUANTITY {
                return Err(CartError::LineTooLarge {
                    product_id,
                    quantity: before.unwrap_or(0),
                    adding: quantity,
                });
            }
            let answer = self.clients.reserve(cart.id, product_id, total).await?;
            if answer == Reservation::Superseded {
                continue;
            }
            let generation = reserved(product_id, total, answer)?;

            let mut tx = self.db.begin().await?;
            let locked = match self.lock_open(&mut tx, cart.id).await {
                Ok(c) => c,
                Err(e) => {
                    drop(tx);
                    self.undo_if_closed(cart.id, product_id, before.unwrap_or(0), generation)
                        .await;
                    return Err(e);
                }
            };
            let now = db::item(&mut tx, cart.id, product_id).await?;
            if now.as_ref().map(|i| i.quantity) != before
                || now.as_ref().is_some_and(|i| superseded(i, generation))
            {
                continue;
            }
            let item = db::upsert_item(
                &mut tx,
                &LineUpdate {
                    cart_id: cart.id,
                    product_id,
                    vendor_id: product.vendor_id,
                    name: &product.name,
                    quantity: total,
                    unit_price: product.price.amount(),
                    price_revision: product.revision,
                    generation,
                },
            )
            .await?;
            db::touch(&mut tx, cart.id).await?;
            mp_events::enqueue(
                &mut tx,
                Service::Cart,
                CartItemAdded {
                    cart_id: cart.id,
                    customer_id: locked.customer_id,
                    product_id,
                    quantity: total,
                    generation,
                },
            )
            .await?;
            tx.commit().await?;
            tracing::info!(cart_id = %cart.id, %product_id, quantity = total, "item added");
            self.renew_others(cart.id, product_id).await;
            return Ok(item);
        }
        Err(CartError::ConcurrentChange)
    }

    async fn set_quantity_inner(
        &self,
        cart: &Cart,
        product_id: Uuid,
        quantity: i64,
    ) -> Result<Item, CartError> {
        if !is_open(cart) {
            return Err(not_open(cart));
        }
        let Some(before) = db::item(&mut *self.db.acquire().await?, cart.id, product_id).await?
        else {
            return Err(CartError::ItemNotFound);
        };
        // Optimistic as in add: a newer reservation of the line (another change, or a
        // renewal with the quantity read before this change) sends it round again, so
        // inventory ends holding what the line says.
        for _ in 0..MAX_ATTEMPTS {
            let answer = self.clients.reserve(cart.id, product_id, quantity).await?;
            if answer == Reservation::Superseded {
                continue;
            }
            let generation = reserved(product_id, quantity, answer)?;

            let mut tx = self.db.begin().await?;
            let locked = match self.lock_open(&mut tx, cart.id).await {
                Ok(c) => c,
                Err(e) => {
                    drop(tx);
                    self.undo_if_closed(cart.id, product_id, before.quantity, generation)
                        .await;
                    return Err(e);
                }
            };
            match db::item(&mut tx, cart.id, product_id).await? {
                Some(current) if superseded(&current, generation) => continue,
                Some(_) => {}
                None => {
                    // Removed meanwhile: the reservation just made belongs to no line.
                    drop(tx);
                    self.release_logged(cart.id, product_id).await;
                    return Err(CartError::ItemNotFound);
                }
            }
            let item = db::set_quantity(&mut tx, cart.id, product_id, quantity, generation)
                .await?
                .ok_or_else(|| anyhow::anyhow!("a locked cart's line vanished"))?;
            db::touch(&mut tx, cart.id).await?;
            mp_events::enqueue(
                &mut tx,
                Service::Cart,
                CartItemAdded {
                    cart_id: cart.id,
                    customer_id: locked.customer_id,
                    product_id,
                    quantity,
                    generation,
                },
            )
            .await?;
            tx.commit().await?;
            tracing::info!(cart_id = %cart.id, %product_id, quantity, "quantity changed");
            self.renew_others(cart.id, product_id).await;
            return Ok(item);
        }
        Err(CartError::ConcurrentChange)
    }

    async fn remove_item_inner(&self, cart: &Cart, product_id: Uuid) -> Result<(), CartError> {
        let mut tx = self.db.begin().await?;
        let locked = self.lock_open(&mut tx, cart.id).await?;
        let item = db::delete_item(&mut tx, cart.id, product_id)
            .await?
            .ok_or(CartError::ItemNotFound)?;
        db::touch(&mut tx, cart.id).await?;
        mp_events::enqueue(
            &mut tx,
            Service::Cart,
            CartItemRemoved {
                cart_id: cart.id,
                customer_id: locked.customer_id,
                product_id,
                generation: item.generation,
            },
        )
        .await?;
        tx.commit().await?;
        tracing::info!(cart_id = %cart.id, %product_id, "item removed");
        // `cart.item.removed` releases it too; this makes it immediate.
        self.release_logged(cart.id, product_id).await;
        self.renew_others(cart.id, product_id).await;
        Ok(())
    }

    async fn release_logged(&self, cart_id: Uuid, product_id: Uuid) {
        if let Err(e) = self.clients.release(cart_id, product_id).await {
            tracing::warn!(%cart_id, %product_id, error = %e, "could not release a reservation now; the event or its TTL will");
        }
    }

    /// After a change (reservation `generation`, over a line of `before` units) lost the
    /// race with the cart closing: an abandoned cart gives back what it just reserved; a
    /// checked-out cart's reservation goes back to what the line held, the quantity its
    /// order took, unless a later change (the checkout's own, the order's commit) stands.
    async fn undo_if_closed(&self, cart_id: Uuid, product_id: Uuid, before: i64, generation: i64) {
        let status = match self.db.acquire().await {
            Ok(mut conn) => db::cart(&mut conn, cart_id)
                .await
                .ok()
                .flatten()
                .map(|c| c.status),
            Err(_) => None,
        };
        if status == Some(CartStatus::CheckedOut) {
            match self
                .clients
                .restore(cart_id, product_id, before, generation)
                .await
            {
                Ok(true) => {
                    tracing::info!(%cart_id, %product_id, quantity = before, "a change that lost to the checkout was undone");
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(%cart_id, %product_id, error = %e, "could not undo a change that lost to the checkout; the order's commit or the TTL ends it")
                }
            }
            return;
        }
        self.release_if_abandoned(cart_id, product_id).await;
    }

    /// After a change lost the race with abandonment, gives back what it just reserved.
    /// (A checked-out cart's reservations belong to its order: never released here.)
    pub(crate) async fn release_if_abandoned(&self, cart_id: Uuid, product_id: Uuid) {
        let abandoned = match self.db.acquire().await {
            Ok(mut conn) => db::cart(&mut conn, cart_id)
                .await
                .ok()
                .flatten()
                .is_some_and(|c| c.status == CartStatus::Abandoned),
            Err(_) => false,
        };
        if abandoned {
            self.release_logged(cart_id, product_id).await;
        }
    }

    /// Activity extends the cart's reservations: renews every line but `except` (which
    /// the change itself reserved) with its quantity, and records the new generations.
    async fn renew_others(&self, cart_id: Uuid, except: Uuid) {
        let items = match self.items(cart_id).await {
            Ok(items) => items,
            Err(e) => {
                tracing::warn!(%cart_id, error = %e, "could not renew reservations");
                return;
            }
        };
        let renewals = items
            .iter()
            .filter(|i| i.product_id != except)
            .map(|i| self.renew(cart_id, i.product_id, i.quantity));
        join_all(renewals).await;
    }

    /// Renews one line's reservation with `quantity`, the line's quantity as last read.
    /// The renewal is recorded only if the line still has that quantity; if it changed
    /// meanwhile the renewal may have set inventory back to the old quantity, so it
    /// reserves again with the line's current one (and releases a line that is gone).
    async fn renew(&self, cart_id: Uuid, product_id: Uuid, mut quantity: i64) {
        for _ in 0..MAX_ATTEMPTS {
            let generation = match self.clients.reserve(cart_id, product_id, quantity).await {
                Ok(Reservation::Reserved { generation }) => generation,
                // A concurrent change reserved the line anew: nothing to renew.
                Ok(Reservation::Superseded) => return,
                Ok(other) => {
                    tracing::info!(%cart_id, %product_id, answer = ?other, "a line's reservation could not be renewed; checkout will name it");
                    return;
                }
                Err(e) => {
                    tracing::warn!(%cart_id, %product_id, error = %e, "could not renew a reservation");
                    return;
                }
            };
            let recorded = async {
                let mut conn = self.db.acquire().await?;
                db::record_renewal(&mut conn, cart_id, product_id, quantity, generation).await
            };
            match recorded.await {
                Ok(db::Renewal::Recorded) => return,
                Ok(db::Renewal::Changed(now)) => quantity = now,
                Ok(db::Renewal::Gone) => {
                    self.release_logged(cart_id, product_id).await;
                    return;
                }
                Err(e) => {
                    tracing::warn!(%cart_id, %product_id, error = %e, "could not record a renewal");
                    return;
                }
            }
        }
        tracing::warn!(%cart_id, %product_id, "a line kept changing while renewed; checkout re-confirms it");
    }

    /// Abandons carts idle for `idle`: each becomes `abandoned` with a
    /// `cart.item.removed` per line in one transaction, then its reservations are
    /// released at inventory (outside it; the events release them if this fails).
    /// Returns how many carts were abandoned.
    pub async fn abandon_idle(&self, idle: Duration) -> anyhow::Result<usize> {
        let mut tx = self.db.begin().await?;
        let carts = db::abandon_idle(&mut tx, idle.as_secs_f64(), 100).await?;
        let mut released = Vec::new();
        for cart in &carts {
            for item in db::items(&mut tx, cart.id).await? {
                mp_events::enqueue(
                    &mut tx,
                    Service::Cart,
                    CartItemRemoved {
                        cart_id: cart.id,
                        customer_id: cart.customer_id,
                        product_id: item.product_id,
                        generation: item.generation,
                    },
                )
                .await?;
                released.push((cart.id, item.product_id));
            }
        }
        tx.commit().await?;
        mp_events::outbox::committed();
        for cart in &carts {
            self.metrics.carts_abandoned.inc();
            tracing::info!(cart_id = %cart.id, "idle cart abandoned");
        }
        join_all(
            released
                .iter()
                .map(|(cart_id, product_id)| self.release_logged(*cart_id, *product_id)),
        )
        .await;
        Ok(carts.len())
    }
}

/// Attempts of an item change that meets concurrent changes of the same line.
const MAX_ATTEMPTS: usize = 3;

/// Whether the line already holds a newer reservation than `generation` (0: unknown).
fn superseded(item: &Item, generation: i64) -> bool {
    generation > 0 && item.generation > generation
}
