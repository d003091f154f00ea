//! Cart API tests against real services: vendor (catalog), inventory (reservations),
//! order (payment hand-off and the saga) and cart, each test in its own environment.

mod carts;
mod checkout;
mod harness;
