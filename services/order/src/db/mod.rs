//! Queries on the `orders` schema, one module per aggregate: orders (rows, lines,
//! history, transitions, lists), the saga's work queue on them, shipments, payments,
//! and the payment methods handed over before an order exists. Each takes a connection
//! (or a transaction), so the caller decides what runs together. The modules' items
//! are re-exported here, so callers name them `db::order`, `db::insert_payment`...

use crate::domain::{PaymentKind, PaymentStatus, Step};

mod orders;
mod payment_methods;
mod payments;
mod saga;
mod shipments;

pub use orders::*;
pub use payment_methods::*;
pub use payments::*;
pub use saga::*;
pub use shipments::*;

mp_common::text_enum!(Step, PaymentKind, PaymentStatus);
