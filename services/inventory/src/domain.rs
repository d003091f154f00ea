//! Rules of the inventory domain, free of HTTP, SQL and Redis: what valid quantities,
//! adjustments and reasons are, how order lines become per-product quantities, and when
//! a low-stock alert fires.

use std::collections::BTreeMap;

use mp_events::catalog::{LineItem, OrderStatus};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// Largest quantity one cart may reserve of one product.
pub const MAX_RESERVATION: i64 = 1_000_000;
/// Largest change of on-hand stock in one adjustment, either way.
pub const MAX_DELTA: i64 = 1_000_000_000;
pub const MAX_REASON_CHARS: usize = 200;

pub fn check_quantity(quantity: i64) -> Result<i64, String> {
    if quantity < 1 {
        Err("must be at least 1; release a reservation with DELETE".into())
    } else if quantity > MAX_RESERVATION {
        Err(format!("must be at most {MAX_RESERVATION}"))
    } else {
        Ok(quantity)
    }
}

pub fn check_delta(delta: i64) -> Result<i64, String> {
    if delta == 0 {
        Err("must not be zero".into())
    } else if delta.unsigned_abs() > MAX_DELTA.unsigned_abs() {
        Err(format!("must be between -{MAX_DELTA} and {MAX_DELTA}"))
    } else {
        Ok(delta)
    }
}

/// A reason has 1 to 200 characters, no control character and no whitespace at either
/// end (refused, not trimmed, so that what is stored is what was sent).
pub fn parse_reason(reason: &str) -> Result<String, String> {
    mp_common::text::parse_line(reason, MAX_REASON_CHARS)
}

/// Why a ledger movement happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MovementKind {
    /// The product's initial stock, from `vendor.product.created`.
    InitialStock,
    /// A vendor member or an admin changed on-hand stock.
    Adjustment,
    /// An order's stock was committed (a sale).
    Order,
    /// A failed or cancelled order's committed stock came back.
    OrderRelease,
}

impl MovementKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MovementKind::InitialStock => "initial_stock",
            MovementKind::Adjustment => "adjustment",
            MovementKind::Order => "order",
            MovementKind::OrderRelease => "order_release",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::InitialStock,
            Self::Adjustment,
            Self::Order,
            Self::OrderRelease,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// What a change of on-hand stock does to the low-stock alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LowStock {
    /// Stock reached the threshold while armed: alert once, then disarm.
    Fire,
    /// Stock is above the threshold again while disarmed: arm for the next crossing.
    Rearm,
    Unchanged,
}

/// The low-stock state machine. It looks at on-hand stock, PostgreSQL's truth, rather
/// than at on-hand minus reservations: reservations come and go with carts and expire
/// by themselves, and an alert that flapped with them would not be "once per crossing".
/// A commit turns a reservation into a sale, so on-hand falls exactly when stock is
/// really gone.
pub fn low_stock(armed: bool, on_hand: i64, threshold: i64) -> LowStock {
    match (armed, on_hand <= threshold) {
        (true, true) => LowStock::Fire,
        (false, false) => LowStock::Rearm,
        _ => LowStock::Unchanged,
    }
}

/// Order statuses that give committed stock back.
pub fn releases_stock(status: OrderStatus) -> bool {
    matches!(
        status,
        OrderStatus::PaymentFailed | OrderStatus::Cancelled | OrderStatus::Rejected
    )
}

/// An order's quantities per product, lines of the same product merged, sorted by
/// product id: the order in which rows are locked, so concurrent commits cannot
/// deadlock.
pub fn order_quantities(items: &[LineItem]) -> Result<Vec<(Uuid, i64)>, String> {
    let mut merged = BTreeMap::new();
    for item in items {
        if item.quantity < 1 {
            return Err(format!(
                "line of product {} has quantity {}",
                item.product_id, item.quantity
            ));
        }
        let total: &mut i64 = merged.entry(item.product_id).or_default();
        *total = total
            .checked_add(item.quantity)
            .ok_or_else(|| format!("quantity of product {} overflows", item.product_id))?;
    }
    Ok(merged.into_iter().collect())
}

/// A live reservation of one product, as the commit rule weighs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub cart_id: Uuid,
    pub quantity: i64,
    pub generation: i64,
}

/// What `cart` may take of a product with `on_hand` units when the live reservations
/// `held` add up to more than that (Redis took them against a mirror that showed more
/// than PostgreSQL has: an adjustment not yet mirrored, a mirror write that failed, a
/// partial loss of Redis).
///
/// Reservations are honoured first come, first served: in generation order, each one
/// that still fits beside those honoured before it is honoured; one that does not fit
/// is not, and holds nothing. The cart may take what is on hand less the others'
/// honoured reservations. So some order always commits when the stock allows it: the
/// first honoured cart gets its quantity, and with none honoured, anyone may take what
/// is on hand. (Counting every reservation would refuse them all: with 2 on hand, A
/// holding 3 and B holding 2, A would see 2 - 2 and B 2 - 3.)
pub fn available_to(cart: Uuid, on_hand: i64, held: &[Held]) -> i64 {
    let mut by_generation: Vec<&Held> = held.iter().filter(|h| h.quantity > 0).collect();
    by_generation.sort_by_key(|h| h.generation);
    let (mut honoured, mut honoured_others) = (0i64, 0i64);
    for h in by_generation {
        if honoured + h.quantity <= on_hand {
            honoured += h.quantity;
            if h.cart_id != cart {
                honoured_others += h.quantity;
            }
        }
    }
    (on_hand - honoured_others).max(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(quantity: i64, generation: i64) -> Held {
        Held {
            cart_id: Uuid::now_v7(),
            quantity,
            generation,
        }
    }

    #[test]
    fn an_overbooked_product_still_sells_to_the_first_reservation_that_fits() {
        // 2 on hand; A holds 3 (first), B holds 2: A does not fit, B does.
        let (a, b) = (held(3, 1), held(2, 2));
        let all = [a, b];
        assert_eq!(available_to(a.cart_id, 2, &all), 0, "A is short");
        assert_eq!(available_to(b.cart_id, 2, &all), 2, "B gets its 2");
    }

    #[test]
    fn the_earlier_of_two_reservations_that_each_take_everything_wins() {
        let (c, d) = (held(3, 7), held(3, 9));
        let all = [d, c];
        assert_eq!(available_to(c.cart_id, 3, &all), 3);
        assert_eq!(available_to(d.cart_id, 3, &all), 0);
    }

    #[test]
    fn with_nothing_honoured_anyone_may_take_what_is_on_hand() {
        let all = [held(5, 1), held(4, 2)];
        assert_eq!(available_to(Uuid::now_v7(), 3, &all), 3);
        assert_eq!(available_to(all[1].cart_id, 3, &all), 3);
    }

    #[test]
    fn reservations_that_fit_are_all_honoured() {
        let all = [held(1, 1), held(2, 2), held(3, 3)];
        assert_eq!(available_to(all[2].cart_id, 6, &all), 3);
        assert_eq!(available_to(Uuid::now_v7(), 6, &all), 0);
        assert_eq!(available_to(Uuid::now_v7(), 10, &all), 4);
    }
    use mp_events::{Currency, Money};

    fn line(product_id: Uuid, quantity: i64) -> LineItem {
        LineItem {
            product_id,
            vendor_id: Uuid::nil(),
            name: "x".into(),
            quantity,
            unit_price: Money::new(100, Currency::EUR),
        }
    }

    #[test]
    fn low_stock_fires_once_then_waits_to_be_rearmed() {
        assert_eq!(low_stock(true, 5, 5), LowStock::Fire);
        assert_eq!(low_stock(false, 4, 5), LowStock::Unchanged);
        assert_eq!(low_stock(false, 5, 5), LowStock::Unchanged);
        assert_eq!(low_stock(false, 6, 5), LowStock::Rearm);
        assert_eq!(low_stock(true, 6, 5), LowStock::Unchanged);
        assert_eq!(low_stock(true, 0, 0), LowStock::Fire);
    }

    #[test]
    fn order_lines_are_merged_per_product_in_lock_order() {
        let (a, b) = (Uuid::from_u128(2), Uuid::from_u128(1));
        let q = order_quantities(&[line(a, 2), line(b, 1), line(a, 3)]).unwrap();
        assert_eq!(q, vec![(b, 1), (a, 5)]);
        assert!(order_quantities(&[line(a, 0)]).is_err());
        assert!(order_quantities(&[line(a, i64::MAX), line(a, 1)]).is_err());
    }

    #[test]
    fn reasons_are_bounded_and_not_padded() {
        assert_eq!(parse_reason("re count").unwrap(), "re count");
        assert!(parse_reason("   ").is_err());
        assert!(parse_reason(" recount").is_err());
        assert!(parse_reason("recount\u{3000}").is_err());
        assert!(parse_reason(&"é".repeat(200)).is_ok());
        assert!(parse_reason(&"é".repeat(201)).is_err());
        assert!(parse_reason("a\u{0}b").is_err());
    }

    #[test]
    fn quantities_and_deltas_have_bounds() {
        assert!(check_quantity(0).is_err());
        assert!(check_quantity(-1).is_err());
        assert_eq!(check_quantity(1), Ok(1));
        assert!(check_quantity(MAX_RESERVATION + 1).is_err());
        assert!(check_delta(0).is_err());
        assert_eq!(check_delta(-3), Ok(-3));
        assert!(check_delta(i64::MIN).is_err());
    }

    #[test]
    fn movement_kinds_round_trip() {
        for k in [
            MovementKind::InitialStock,
            MovementKind::Adjustment,
            MovementKind::Order,
            MovementKind::OrderRelease,
        ] {
            assert_eq!(MovementKind::parse(k.as_str()), Some(k));
        }
    }
}
