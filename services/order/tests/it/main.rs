//! The order service against real PostgreSQL, RabbitMQ and Redis, with the inventory
//! service beside it, one isolated environment per test. What the vendor and cart
//! services would send is published on the test's exchange.

mod api;
mod faults;
mod harness;
mod provider;
mod saga;
mod stripe;
