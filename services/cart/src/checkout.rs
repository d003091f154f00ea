//! Checkout under an Idempotency-Key (IETF draft), scoped to the cart's customer.
//!
//! 1. Claim: in one short transaction the key's record is read (locked). Another body
//!    under the key is 422; a finished request is replayed (same 202, same order id);
//!    one whose lease still runs is 409. Otherwise the cart must be open and not empty,
//!    and the key is claimed with a lease (`CHECKOUT_LEASE_SECS`): a new record with a
//!    fresh order id, or, after a request that died or failed, the old record and its
//!    order id.
//! 2. With no transaction open: every line is re-reserved at inventory (lines that
//!    cannot be held give 409 naming them), then the payment token is handed to the
//!    order service (`PUT /api/internal/orders/{order_id}/payment-method`).
//! 3. One transaction locks the cart, checks that its lines are those just confirmed,
//!    marks it checked out, writes `cart.checkout` (no token) to the outbox and stores
//!    the key's response.
//!
//! 0. Past what the saga can complete, checkout sheds load: the order service refuses the
//!    hand-off with 503 (`checkout-busy`, Retry-After) while its queue is full, the cart
//!    passes that on, and for the next 200 ms refuses new checkouts itself before any
//!    work, so that shedding costs next to nothing. Nothing is changed; the client sends
//!    the same request again after Retry-After.
//!
//! Any failure in 2 or 3 gives the key back (its lease ends at once) so a retry with the
//! same key and body proceeds, with the same order id.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;

use futures::future::join_all;
use mp_events::catalog::{CartCheckout, LineItem, ShippingAddress};
use mp_events::{Money, Service};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use uuid::Uuid;

use crate::carts::{CartError, Carts, RepricedLine, UnavailableLine, is_open, not_open};
use crate::clients::Reservation;
use crate::db::{self, Cart};
use crate::domain;

/// A checkout request, parsed and validated.
pub struct CheckoutInput {
    pub idempotency_key: String,
    pub payment_token: SecretString,
    pub shipping_address: ShippingAddress,
}

/// What a checkout request ended in.
#[derive(Debug, Clone, Copy)]
pub struct Accepted {
    pub order_id: Uuid,
    /// The response is the stored one of an earlier request with the same key.
    pub replayed: bool,
}

impl Carts {
    /// Checks out `cart` under an Idempotency-Key (see the module docs for the rules).
    pub async fn checkout(&self, cart: &Cart, input: CheckoutInput) -> Result<Accepted, CartError> {
        let result = self.checkout_inner(cart, input).await;
        let label = match &result {
            Ok(a) if a.replayed => "replayed",
            Ok(_) => "accepted",
            Err(e) => e.kind(),
        };
        self.metrics.checkouts.with_label_values(&[label]).inc();
        result
    }

    async fn checkout_inner(
        &self,
        cart: &Cart,
        input: CheckoutInput,
    ) -> Result<Accepted, CartError> {
        // Shedding must cost next to nothing, or the work shed takes the capacity the
        // accepted checkouts need: while the order service said it is busy, a new
        // checkout is refused before it claims its key or reserves anything.
        if chrono::Utc::now().timestamp_millis() < self.busy_until.load(Relaxed) {
            return Err(CartError::Busy);
        }
        let customer_id = cart.customer_id;
        let key = input.idempotency_key.as_str();
        let fingerprint = domain::fingerprint(
            cart.id,
            input.payment_token.expose_secret(),
            &input.shipping_address,
        );
        let lease = self.checkout_lease.as_secs_f64();

        // 1. Claim the key (or replay, or refuse).
        let mut tx = self.db.begin().await?;
        let existing = db::request_for_update(&mut tx, customer_id, key).await?;
        if let Some(r) = &existing {
            if r.fingerprint != fingerprint {
                return Err(CartError::KeyReused);
            }
            if r.status == "done" {
                return Ok(Accepted {
                    order_id: r.order_id,
                    replayed: true,
                });
            }
            if r.leased {
                return Err(CartError::InProgress);
            }
        }
        // Read, not locked: the final transaction locks the cart, then this key's row;
        // locking them here in the other order could deadlock with it.
        let current = db::cart(&mut tx, cart.id)
            .await?
            .ok_or(CartError::CartNotFound)?;
        if !is_open(&current) {
            return Err(not_open(&current));
        }
        if db::items(&mut tx, cart.id).await?.is_empty() {
            return Err(CartError::Empty);
        }
        let order_id = match existing {
            // A request with this key died or failed: take over its order id.
            Some(r) => {
                db::lease_request(&mut tx, customer_id, key, lease).await?;
                r.order_id
            }
            None => {
                let order_id = Uuid::now_v7();
                if db::insert_request(
                    &mut tx,
                    customer_id,
                    key,
                    cart.id,
                    &fingerprint,
                    order_id,
                    lease,
                )
                .await?
                .is_none()
                {
                    return Err(CartError::InProgress);
                }
                order_id
            }
        };
        tx.commit().await?;

        // 2.-4. with the key held; any failure gives it back for a retry.
        match self.hand_over(cart, &input, order_id).await {
            Ok(replayed) => Ok(Accepted { order_id, replayed }),
            Err(e) => {
                if let Ok(mut conn) = self.db.acquire().await
                    && let Err(le) = db::lease_request(&mut conn, customer_id, key, 0.0).await
                {
                    tracing::warn!(error = %le, "could not give a checkout key back; its lease will end");
                }
                Err(e)
            }
        }
    }

    /// Re-confirms every line, hands the payment token to the order service, then marks
    /// the cart checked out with its event and the key's final response.
    /// Answers `true` when another request with this key (one whose lease ran out
    /// while it was still going, and which this one took over) checked the cart out
    /// first: its answer is this one's.
    async fn hand_over(
        &self,
        cart: &Cart,
        input: &CheckoutInput,
        order_id: Uuid,
    ) -> Result<bool, CartError> {
        let items = self.items(cart.id).await?;
        self.check_catalog(cart, &items).await?;
        let confirmations = items.iter().map(|i| async move {
            (
                i,
                self.clients
                    .reserve(cart.id, i.product_id, i.quantity)
                    .await,
            )
        });
        let mut unavailable = Vec::new();
        let mut confirmed = HashMap::new();
        for (item, answer) in join_all(confirmations).await {
            match answer? {
                Reservation::Reserved { generation } => {
                    db::record_renewal(
                        &mut *self.db.acquire().await?,
                        cart.id,
                        item.product_id,
                        item.quantity,
                        generation,
                    )
                    .await?;
                    confirmed.insert(item.product_id, item.quantity);
                }
                Reservation::Superseded => return Err(CartError::CartChanged),
                other => {
                    let available = match other {
                        Reservation::Insufficient { available } => available,
                        _ => 0,
                    };
                    unavailable.push(UnavailableLine {
                        product_id: item.product_id,
                        name: item.name.clone(),
                        requested: item.quantity,
                        available,
                        active: None,
                    });
                }
            }
        }
        if !unavailable.is_empty() {
            return Err(CartError::LinesUnheld(unavailable));
        }

        match self
            .clients
            .put_payment_method(order_id, cart.customer_id, cart.id, &input.payment_token)
            .await?
        {
            StatusCode::NO_CONTENT | StatusCode::OK | StatusCode::CREATED => {}
            StatusCode::CONFLICT => return Err(CartError::PaymentMethodConflict),
            StatusCode::SERVICE_UNAVAILABLE => {
                self.busy_until.store(
                    chrono::Utc::now().timestamp_millis() + BUSY_WINDOW_MS,
                    Relaxed,
                );
                return Err(CartError::Busy);
            }
            other => {
                return Err(CartError::Internal(anyhow::anyhow!(
                    "the order service refused the payment hand-off with {other}"
                )));
            }
        }

        let mut tx = self.db.begin().await?;
        let locked = match db::cart_for_update(&mut tx, cart.id).await? {
            Some(c) if is_open(&c) => c,
            // The same key's other request got here first: its 202 is ours.
            Some(c) if c.order_id == Some(order_id) => return Ok(true),
            Some(c) => {
                drop(tx);
                // Abandoned while this request re-reserved its lines: give them back,
                // or they would hold stock until their TTL.
                for product_id in confirmed.keys() {
                    self.release_if_abandoned(cart.id, *product_id).await;
                }
                return Err(not_open(&c));
            }
            None => return Err(CartError::CartNotFound),
        };
        let items = db::items(&mut tx, cart.id).await?;
        if items.is_empty() {
            return Err(CartError::Empty);
        }
        // What is checked out must be what was just re-confirmed at inventory.
        if items.len() != confirmed.len()
            || items
                .iter()
                .any(|i| confirmed.get(&i.product_id) != Some(&i.quantity))
        {
            return Err(CartError::CartChanged);
        }
        let totals = domain::totals(
            items.iter().map(|i| (i.quantity, i.unit_price)),
            self.tax_rate_bps,
        );
        let (subtotal, tax, total) = totals.money(locked.currency);
        let event = CartCheckout {
            cart_id: cart.id,
            customer_id: locked.customer_id,
            order_id,
            items: items
                .iter()
                .map(|i| LineItem {
                    product_id: i.product_id,
                    vendor_id: i.vendor_id,
                    name: i.name.clone(),
                    quantity: i.quantity,
                    unit_price: Money::new(i.unit_price, locked.currency),
                })
                .collect(),
            subtotal,
            tax,
            total,
            shipping_address: input.shipping_address.clone(),
        };
        if !db::mark_checked_out(&mut tx, cart.id, order_id).await? {
            return Err(not_open(&locked));
        }
        mp_events::enqueue(&mut tx, Service::Cart, event).await?;
        db::finish_request(
            &mut tx,
            locked.customer_id,
            &input.idempotency_key,
            202,
            &json!({"order_id": order_id}),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(cart_id = %cart.id, %order_id, "cart checked out");
        Ok(false)
    }
}

/// How long after the order service said it is busy checkouts are shed without asking
/// it: short, so admission resumes as soon as the saga has room again.
const BUSY_WINDOW_MS: i64 = 200;

impl Carts {
    /// What the catalog says now of each line: a product taken off sale refuses the
    /// checkout (409 `lines-unavailable`, naming it); a price that moved since the
    /// customer saw it (the line's price when added, or when last accepted) refuses it
    /// once (409 `prices-changed`, old and new price per line), and the cart takes the
    /// new prices, so the same request sent again checks out at them.
    async fn check_catalog(&self, cart: &Cart, items: &[db::Item]) -> Result<(), CartError> {
        let catalog = join_all(items.iter().map(|i| self.clients.product(i.product_id))).await;
        let (mut off_sale, mut repriced) = (Vec::new(), Vec::new());
        for (item, product) in items.iter().zip(catalog) {
            match product? {
                Some(p) if p.active => {
                    let now = if p.price.currency() == cart.currency
                        && p.revision >= item.price_revision
                    {
                        p.price.amount()
                    } else {
                        item.unit_price
                    };
                    if now != item.added_price {
                        repriced.push((item, now, p.revision.max(item.price_revision)));
                    }
                }
                _ => off_sale.push(UnavailableLine {
                    product_id: item.product_id,
                    name: item.name.clone(),
                    requested: item.quantity,
                    available: 0,
                    active: Some(false),
                }),
            }
        }
        if !off_sale.is_empty() {
            return Err(CartError::OffSale(off_sale));
        }
        if repriced.is_empty() {
            return Ok(());
        }
        let accepted: Vec<(Uuid, i64, i64)> = repriced
            .iter()
            .map(|(item, price, revision)| (item.product_id, *price, *revision))
            .collect();
        db::accept_prices(&mut *self.db.acquire().await?, cart.id, &accepted).await?;
        let lines = repriced
            .iter()
            .map(|(item, price, _)| RepricedLine {
                product_id: item.product_id,
                name: item.name.clone(),
                old_price: Money::new(item.added_price, cart.currency),
                new_price: Money::new(*price, cart.currency),
            })
            .collect();
        Err(CartError::PricesChanged(lines))
    }
}
