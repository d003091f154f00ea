//! Order rules, without I/O: the status machine, the saga's steps and the checks of
//! what clients send.

use std::collections::BTreeSet;

use mp_common::AuthUser;
use mp_events::catalog::OrderStatus;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// Every status, in the order the status machine walks them.
pub const ALL: [OrderStatus; 8] = [
    OrderStatus::Pending,
    OrderStatus::Paid,
    OrderStatus::Confirmed,
    OrderStatus::Shipped,
    OrderStatus::Delivered,
    OrderStatus::Cancelled,
    OrderStatus::PaymentFailed,
    OrderStatus::Rejected,
];

pub fn status_name(s: OrderStatus) -> &'static str {
    match s {
        OrderStatus::Pending => "pending",
        OrderStatus::Paid => "paid",
        OrderStatus::Confirmed => "confirmed",
        OrderStatus::Shipped => "shipped",
        OrderStatus::Delivered => "delivered",
        OrderStatus::Cancelled => "cancelled",
        OrderStatus::PaymentFailed => "payment_failed",
        OrderStatus::Rejected => "rejected",
    }
}

pub fn parse_status(s: &str) -> Option<OrderStatus> {
    ALL.into_iter().find(|st| status_name(*st) == s)
}

/// The statuses an order may move to from `from`.
pub fn next_statuses(from: OrderStatus) -> &'static [OrderStatus] {
    use OrderStatus::*;
    match from {
        Pending => &[Paid, PaymentFailed, Cancelled],
        Paid => &[Confirmed, Rejected, Cancelled],
        Confirmed => &[Shipped, Cancelled],
        Shipped => &[Delivered],
        Delivered | Cancelled | PaymentFailed | Rejected => &[],
    }
}

/// An illegal transition: the current status and what it could become.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IllegalTransition {
    pub current: OrderStatus,
    pub requested: OrderStatus,
    pub allowed: &'static [OrderStatus],
}

impl std::fmt::Display for IllegalTransition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let allowed: Vec<&str> = self.allowed.iter().map(|s| status_name(*s)).collect();
        write!(
            f,
            "The order is {}; it cannot become {} (allowed next: {}).",
            status_name(self.current),
            status_name(self.requested),
            if allowed.is_empty() {
                "none, the order is final".to_owned()
            } else {
                allowed.join(", ")
            }
        )
    }
}

pub fn check_transition(from: OrderStatus, to: OrderStatus) -> Result<(), IllegalTransition> {
    let allowed = next_statuses(from);
    if allowed.contains(&to) {
        Ok(())
    } else {
        Err(IllegalTransition {
            current: from,
            requested: to,
            allowed,
        })
    }
}

pub fn is_final(s: OrderStatus) -> bool {
    next_statuses(s).is_empty()
}

/// What the saga waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = SagaStep)]
pub enum Step {
    /// The payment gateway's answer to the charge (the driver calls it).
    Charge,
    /// Inventory's answer to `order.created`.
    Stock,
    /// The gateway's answer to a refund (the driver calls it).
    Refund,
}

impl Step {
    pub const ALL: [Step; 3] = [Step::Charge, Step::Stock, Step::Refund];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Charge => "charge",
            Step::Stock => "stock",
            Step::Refund => "refund",
        }
    }

    pub fn parse(s: &str) -> Option<Step> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// What a payment attempt was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentKind {
    Charge,
    Refund,
}

/// How a payment attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Sent to the provider, its answer not recorded yet (in flight, or lost and being
    /// asked for).
    Requested,
    Succeeded,
    Declined,
    /// Did not go through and captured nothing (the provider says so); retried.
    Failed,
}

impl PaymentKind {
    pub const ALL: [PaymentKind; 2] = [PaymentKind::Charge, PaymentKind::Refund];

    pub fn as_str(self) -> &'static str {
        match self {
            PaymentKind::Charge => "charge",
            PaymentKind::Refund => "refund",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl PaymentStatus {
    pub const ALL: [PaymentStatus; 4] = [
        PaymentStatus::Requested,
        PaymentStatus::Succeeded,
        PaymentStatus::Declined,
        PaymentStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Requested => "requested",
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::Declined => "declined",
            PaymentStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// How long an order may wait on a step: past `soft` it counts as stuck, past `hard`
/// it is compensated.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub soft: std::time::Duration,
    pub hard: std::time::Duration,
}

/// Who changed an order, as the status history records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    System,
    Customer(uuid::Uuid),
    Vendor(uuid::Uuid),
    Admin(uuid::Uuid),
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actor::System => f.write_str("system"),
            Actor::Customer(id) => write!(f, "customer:{id}"),
            Actor::Vendor(id) => write!(f, "vendor:{id}"),
            Actor::Admin(id) => write!(f, "admin:{id}"),
        }
    }
}

/// What a caller may see of an order: all of it (its customer, an admin), or the lines
/// of the vendors the caller is a member of (and their totals); `None` from
/// [`Visibility::of`] is nothing, which the API answers 404 so ids of others' orders
/// reveal nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visibility {
    Full,
    VendorLines(BTreeSet<Uuid>),
}

impl Visibility {
    /// What `user` may see of an order of `customer_id` with lines of `line_vendors`.
    pub fn of(
        user: &AuthUser,
        customer_id: Uuid,
        line_vendors: impl IntoIterator<Item = Uuid>,
    ) -> Option<Self> {
        if user.is_admin() || customer_id == user.id {
            return Some(Self::Full);
        }
        let vendors: BTreeSet<Uuid> = line_vendors
            .into_iter()
            .filter(|v| user.vendors.contains(v))
            .collect();
        (!vendors.is_empty()).then_some(Self::VendorLines(vendors))
    }

    /// Whether the lines (and shipments) of `vendor_id` are seen.
    pub fn sees(&self, vendor_id: Uuid) -> bool {
        match self {
            Self::Full => true,
            Self::VendorLines(v) => v.contains(&vendor_id),
        }
    }
}

/// A payment token as the cart hands it over: 1 to 255 visible ASCII characters.
pub fn check_payment_token(token: &str) -> Result<(), &'static str> {
    if token.is_empty() || token.len() > 255 {
        return Err("must be 1 to 255 characters");
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be visible ASCII characters without spaces");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use OrderStatus::*;

    #[test]
    fn the_happy_path_is_allowed_step_by_step() {
        for (from, to) in [
            (Pending, Paid),
            (Paid, Confirmed),
            (Confirmed, Shipped),
            (Shipped, Delivered),
        ] {
            assert_eq!(check_transition(from, to), Ok(()), "{from:?} -> {to:?}");
        }
    }

    #[test]
    fn an_illegal_transition_names_the_current_status_and_the_allowed_ones() {
        let err = check_transition(Shipped, Cancelled).unwrap_err();
        assert_eq!(err.current, Shipped);
        assert_eq!(err.allowed, &[Delivered]);
        let text = err.to_string();
        assert!(
            text.contains("shipped") && text.contains("delivered"),
            "{text}"
        );
    }

    #[test]
    fn final_statuses_go_nowhere() {
        for s in [Delivered, Cancelled, PaymentFailed, Rejected] {
            assert!(is_final(s));
            for to in ALL {
                assert!(check_transition(s, to).is_err());
            }
        }
    }

    #[test]
    fn statuses_and_steps_round_trip_through_their_names() {
        for s in ALL {
            assert_eq!(parse_status(status_name(s)), Some(s));
        }
        for s in Step::ALL {
            assert_eq!(Step::parse(s.as_str()), Some(s));
        }
        assert_eq!(parse_status("lost"), None);
    }

    #[test]
    fn shipping_texts_are_refused_not_trimmed() {
        assert_eq!(
            mp_common::text::parse_line("DHL Express", 100).as_deref(),
            Ok("DHL Express")
        );
        assert_eq!(mp_common::text::parse_line("x", 1).as_deref(), Ok("x"));
        for bad in [
            "",
            " DHL",
            "DHL ",
            "\u{a0}DHL",
            "DHL\u{3000}",
            "D\tHL",
            "D\u{85}HL",
        ] {
            assert!(mp_common::text::parse_line(bad, 100).is_err(), "{bad:?}");
        }
        assert!(mp_common::text::parse_line(&"é".repeat(100), 100).is_ok());
        assert!(mp_common::text::parse_line(&"é".repeat(101), 100).is_err());
    }

    fn user(roles: &[&str], vendors: &[Uuid]) -> AuthUser {
        AuthUser {
            id: Uuid::new_v4(),
            session_id: Uuid::new_v4(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            vendors: vendors.to_vec(),
        }
    }

    #[test]
    fn the_customer_and_admins_see_all_vendor_members_their_lines_others_nothing() {
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let customer = user(&["customer"], &[]);
        let lines = [a, b, a];
        assert_eq!(
            Visibility::of(&customer, customer.id, lines),
            Some(Visibility::Full)
        );
        let admin = user(&[mp_common::auth::ROLE_ADMIN], &[]);
        assert_eq!(
            Visibility::of(&admin, customer.id, lines),
            Some(Visibility::Full)
        );
        let member = user(&["customer"], &[b, c]);
        let seen = Visibility::of(&member, customer.id, lines).unwrap();
        assert_eq!(seen, Visibility::VendorLines(BTreeSet::from([b])));
        assert!(seen.sees(b) && !seen.sees(a) && !seen.sees(c));
        let stranger = user(&["customer"], &[c]);
        assert_eq!(Visibility::of(&stranger, customer.id, lines), None);
    }

    #[test]
    fn payment_tokens_are_short_visible_ascii() {
        assert!(check_payment_token("tok_visa").is_ok());
        assert!(check_payment_token("").is_err());
        assert!(check_payment_token("tok visa").is_err());
        assert!(check_payment_token(&"x".repeat(256)).is_err());
    }
}
